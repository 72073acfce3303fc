package registry

// The certificate store: the certificates, pending_issuances and
// server_certificates tables behind typed operations (after Boulder's sa),
// with one row struct per table. Every SQL statement of the package that
// reads or writes these tables is in this file; the lifecycle (lifecycle.go,
// revoke.go), Verify, the CRL and OCSP (crl.go, ocsp.go), the issuer
// backfill (arl.go) and the server's own certificates (servercert.go) call
// these operations.
//
// An operation runs in the transaction or database it is given (certs(q)):
// the issuance commit runs inside the group-commit writer's batches
// (writer.go), so no operation opens, commits or locks a transaction of its
// own. Driver errors are converted by dbErr.

import (
	"cmp"
	"context"
	"slices"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"
)

// certRow is a row of certificates. Serial is in the canonical spelling of
// ca.FormatSerial (older replicas wrote some without their leading zero
// nibble; see Status). DER is only read by the operations that say so.
type certRow struct {
	Serial            string     `db:"serial"`
	Agent             string     `db:"agent_name"`
	Fingerprint       string     `db:"fingerprint_sha256"`
	Status            string     `db:"status"` // CertIssued, CertSuperseded or CertRevoked
	RevocationReason  *string    `db:"revocation_reason"`
	RevokedAt         *time.Time `db:"revoked_at"`
	PredecessorSerial *string    `db:"predecessor_serial"`
	SuccessorSerial   *string    `db:"successor_serial"`
	DER               []byte     `db:"der"`
	LogIndex          *int64     `db:"log_index"`
	NotBefore         time.Time  `db:"not_before"`
	NotAfter          time.Time  `db:"not_after"`
	GraceUntil        *time.Time `db:"grace_until"` // superseded: verifies until then
	CreatedAt         time.Time  `db:"created_at"`
	IssuerKeyID       *string    `db:"issuer_key_id"` // NULL on rows older than migration 007
}

// certStatusColumns are the columns of certRow except der: what status
// lookups read.
const certStatusColumns = `serial, agent_name, fingerprint_sha256, status, revocation_reason, revoked_at, predecessor_serial,
	successor_serial, log_index, not_before, not_after, grace_until, created_at, issuer_key_id`

// certColumns are all the columns of certRow.
const certColumns = certStatusColumns + `, der`

// record is the row as the package's callers see it.
func (row certRow) record() CertificateRecord {
	c := CertificateRecord{Serial: row.Serial, FingerprintSHA256: row.Fingerprint, Status: row.Status,
		NotBefore: row.NotBefore.UTC(), NotAfter: row.NotAfter.UTC(), RevokedAt: utcPtr(row.RevokedAt),
		GraceUntil: utcPtr(row.GraceUntil), DER: row.DER}
	if row.RevocationReason != nil {
		c.RevocationReason = *row.RevocationReason
	}
	if row.PredecessorSerial != nil {
		c.Predecessor = *row.PredecessorSerial
	}
	if row.SuccessorSerial != nil {
		c.Successor = *row.SuccessorSerial
	}
	if row.LogIndex != nil {
		c.LogIndex = *row.LogIndex
	}
	if row.IssuerKeyID != nil {
		c.IssuerKeyID = *row.IssuerKeyID
	}
	return c
}

// newCertRow is the row of a certificate rec of agent just issued at now.
func newCertRow(agent string, rec *CertificateRecord, now time.Time) certRow {
	row := certRow{Serial: rec.Serial, Agent: agent, Fingerprint: rec.FingerprintSHA256, Status: CertIssued,
		DER: rec.DER, LogIndex: &rec.LogIndex, NotBefore: dbTime(rec.NotBefore), NotAfter: dbTime(rec.NotAfter), CreatedAt: dbTime(now)}
	if rec.Predecessor != "" {
		row.PredecessorSerial = &rec.Predecessor
	}
	if rec.IssuerKeyID != "" {
		row.IssuerKeyID = &rec.IssuerKeyID
	}
	return row
}

// pendingRow is a row of pending_issuances: the serial and TBS recorded
// before the token signs (DESIGN.md "Issuance", step 5).
type pendingRow struct {
	Serial    string    `db:"serial"`
	Agent     string    `db:"agent_name"`
	Owner     string    `db:"owner"`
	Kind      string    `db:"kind"` // "register" or "rotate"
	TBS       []byte    `db:"tbs"`
	State     string    `db:"state"` // pendingPending, pendingIssued or pendingAbandoned
	CreatedAt time.Time `db:"created_at"`
	UpdatedAt time.Time `db:"updated_at"`
}

// certStore is the certificate store bound to the transaction or database
// its operations run in.
type certStore struct {
	q sqlx.ExtContext
}

// certs returns the certificate store running in q: a *sqlx.Tx (inside
// Store.inTx or inTxLogged) or the Store's *sqlx.DB for a lone statement.
func certs(q sqlx.ExtContext) certStore { return certStore{q: q} }

func (c certStore) get(ctx context.Context, dst any, query string, args ...any) error {
	return sqlx.GetContext(ctx, c.q, dst, c.q.Rebind(query), args...)
}

func (c certStore) sel(ctx context.Context, dst any, query string, args ...any) error {
	return sqlx.SelectContext(ctx, c.q, dst, c.q.Rebind(query), args...)
}

// exec runs a statement and returns the number of rows it changed.
func (c certStore) exec(ctx context.Context, query string, args ...any) (int64, error) {
	res, err := c.q.ExecContext(ctx, c.q.Rebind(query), args...)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

// ---------------------------------------------------------------------------
// pending_issuances

// opInsertPending names InsertPending's operation in its errors (and the
// pending batcher's, pendingbatch.go).
const opInsertPending = "recording pending issuance"

// InsertPending records an issuance before it is signed. A second issuance
// in flight for the same agent name is ErrConflict (a partial unique index).
func (c certStore) InsertPending(ctx context.Context, p pendingRow) error {
	_, err := c.exec(ctx, `INSERT INTO pending_issuances
		(serial, agent_name, owner, kind, tbs, state, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
		p.Serial, p.Agent, p.Owner, p.Kind, p.TBS, pendingPending, dbTime(p.CreatedAt), dbTime(p.UpdatedAt))
	return dbErr(opInsertPending, err)
}

// InsertPendingRows records several issuances in one statement (the
// pending batcher's, PostgreSQL) and reports which rows were inserted: a
// row a unique index refused — a second issuance in flight for its name,
// in the database or earlier in rows — is skipped (ON CONFLICT DO NOTHING)
// and reported false; a row is reported inserted only when its serial and
// its name came back. The rows go in the order of their names, so that two
// replicas' batches wait for each other's names in one order, never in a
// cycle. Any other error refuses every row.
func (c certStore) InsertPendingRows(ctx context.Context, rows []pendingRow) ([]bool, error) {
	const cols = 8
	order := make([]int, len(rows))
	for k := range order {
		order[k] = k
	}
	slices.SortFunc(order, func(i, j int) int {
		return cmp.Or(strings.Compare(rows[i].Agent, rows[j].Agent), strings.Compare(rows[i].Serial, rows[j].Serial))
	})
	var q strings.Builder
	q.WriteString(`INSERT INTO pending_issuances (serial, agent_name, owner, kind, tbs, state, created_at, updated_at) VALUES `)
	args := make([]any, 0, cols*len(rows))
	for k, i := range order {
		p := rows[i]
		if k > 0 {
			q.WriteString(", ")
		}
		q.WriteString("(?")
		q.WriteString(strings.Repeat(", ?", cols-1))
		q.WriteByte(')')
		args = append(args, p.Serial, p.Agent, p.Owner, p.Kind, p.TBS, pendingPending, dbTime(p.CreatedAt), dbTime(p.UpdatedAt))
	}
	q.WriteString(` ON CONFLICT DO NOTHING RETURNING serial, agent_name`)
	var back []struct {
		Serial string `db:"serial"`
		Agent  string `db:"agent_name"`
	}
	if err := c.sel(ctx, &back, q.String(), args...); err != nil {
		return nil, dbErr(opInsertPending, err)
	}
	type key struct{ serial, agent string }
	got := make(map[key]bool, len(back))
	for _, b := range back {
		got[key{b.Serial, b.Agent}] = true
	}
	inserted := make([]bool, len(rows))
	for k, p := range rows {
		inserted[k] = got[key{p.Serial, p.Agent}]
		delete(got, key{p.Serial, p.Agent})
	}
	return inserted, nil
}

// HasPending reports whether p's row is stored as it was recorded: its
// serial, name and TBS (the pending batcher's check after an INSERT whose
// outcome it could not learn).
func (c certStore) HasPending(ctx context.Context, p pendingRow) (bool, error) {
	var n int
	if err := c.get(ctx, &n, `SELECT count(*) FROM pending_issuances WHERE serial = ? AND agent_name = ? AND tbs = ?`, p.Serial, p.Agent, p.TBS); err != nil {
		return false, dbErr(opInsertPending, err)
	}
	return n == 1, nil
}

// Abandon moves the pending issuance serial to abandoned at now. It reports
// false when the row was no longer pending.
func (c certStore) Abandon(ctx context.Context, serial string, now time.Time) (bool, error) {
	return c.SettlePending(ctx, serial, pendingAbandoned, now)
}

// SettlePending moves the pending issuance serial to state at now, if it is
// still pending; it reports whether it was.
func (c certStore) SettlePending(ctx context.Context, serial, state string, now time.Time) (bool, error) {
	st := settlePending(serial, state, now)
	n, err := c.exec(ctx, st.query, st.args...)
	if err != nil {
		return false, dbErr("settling pending issuance "+serial, err)
	}
	return n == 1, nil
}

// settlePending is the statement that moves the pending issuance serial
// to state at now, if it is still pending.
func settlePending(serial, state string, now time.Time) stmt {
	return stmt{`UPDATE pending_issuances SET state = ?, updated_at = ? WHERE serial = ? AND state = ?`,
		[]any{state, dbTime(now), serial, pendingPending}}
}

// IssuedPendingSerials returns, in order, up to limit serials of issued
// issuances from from (included) to below floor: one range of the serial
// key, whatever the share of issued rows.
func (c certStore) IssuedPendingSerials(ctx context.Context, from, floor string, limit int) ([]string, error) {
	var serials []string
	err := c.sel(ctx, &serials, `SELECT serial FROM pending_issuances
		WHERE serial >= ? AND serial < ? AND state = '`+pendingIssued+`' ORDER BY serial LIMIT ?`, from, floor, limit)
	return serials, dbErr("reading issued pending issuances", err)
}

// DeleteIssuedPending deletes the rows of issued issuances with serials
// from first to last (included) and returns how many it deleted.
func (c certStore) DeleteIssuedPending(ctx context.Context, first, last string) (int64, error) {
	n, err := c.exec(ctx, `DELETE FROM pending_issuances WHERE serial >= ? AND serial <= ? AND state = '`+pendingIssued+`'`, first, last)
	return n, dbErr("pruning issued pending issuances", err)
}

// StalePending lists the issuances still pending that were recorded before
// cutoff, oldest first, without their TBS. The state is spelled in the
// query, not bound, so that both planners can use the partial index
// pending_issuances_stale (which holds only the pending rows) for it.
func (c certStore) StalePending(ctx context.Context, cutoff time.Time) ([]pendingRow, error) {
	var rows []pendingRow
	err := c.sel(ctx, &rows, `SELECT serial, agent_name, owner, kind, state, created_at, updated_at FROM pending_issuances
		WHERE state = '`+pendingPending+`' AND created_at < ? ORDER BY created_at`, dbTime(cutoff))
	return rows, dbErr("reading pending issuances", err)
}

// Pending lists every issuance record (all states), oldest first.
func (c certStore) Pending(ctx context.Context) ([]pendingRow, error) {
	var rows []pendingRow
	err := c.sel(ctx, &rows, `SELECT serial, agent_name, owner, kind, tbs, state, created_at, updated_at
		FROM pending_issuances ORDER BY created_at, serial`)
	return rows, dbErr("reading pending issuances", err)
}

// ---------------------------------------------------------------------------
// certificates: writes

// Insert stores a freshly issued certificate (row.Status CertIssued).
func (c certStore) Insert(ctx context.Context, row certRow) error {
	st := insertCert(row)
	_, err := c.exec(ctx, st.query, st.args...)
	return dbErr("inserting certificate", err)
}

// insertCert is Insert's statement (for execPlan).
func insertCert(row certRow) stmt {
	return stmt{`INSERT INTO certificates
		(serial, agent_name, fingerprint_sha256, status, predecessor_serial, der, log_index, not_before, not_after, created_at, issuer_key_id)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`, []any{
		row.Serial, row.Agent, row.Fingerprint, row.Status, row.PredecessorSerial, row.DER, row.LogIndex,
		dbTime(row.NotBefore), dbTime(row.NotAfter), dbTime(row.CreatedAt), row.IssuerKeyID}}
}

// Supersede marks the issued certificate serial superseded by successor;
// it keeps verifying until graceUntil (statusAt). A certificate that is not
// issued any more is left alone.
func (c certStore) Supersede(ctx context.Context, serial, successor string, graceUntil time.Time) error {
	st := supersedeCert(serial, successor, graceUntil)
	_, err := c.exec(ctx, st.query, st.args...)
	return dbErr("superseding certificate "+serial, err)
}

// supersedeCert is Supersede's statement (for execPlan).
func supersedeCert(serial, successor string, graceUntil time.Time) stmt {
	return stmt{`UPDATE certificates SET status = ?, successor_serial = ?, grace_until = ?
		WHERE serial = ? AND status = ?`, []any{CertSuperseded, successor, dbTime(graceUntil), serial, CertIssued}}
}

// Revoke marks the certificate serial revoked at at with reason (an RFC
// 5280 reason name, normalizeReason).
func (c certStore) Revoke(ctx context.Context, serial, reason string, at time.Time) error {
	_, err := c.exec(ctx, `UPDATE certificates SET status = ?, revocation_reason = ?, revoked_at = ? WHERE serial = ?`,
		CertRevoked, reason, dbTime(at), serial)
	return dbErr("revoking certificate "+serial, err)
}

// SetIssuer records the issuing CA's key id of a row that has none.
func (c certStore) SetIssuer(ctx context.Context, serial, keyID string) error {
	n, err := c.exec(ctx, `UPDATE certificates SET issuer_key_id = ? WHERE serial = ? AND issuer_key_id IS NULL`, keyID, serial)
	if err != nil || n == 0 || keyID == "" {
		return dbErr("recording certificate issuer", err)
	}
	// A revoked or superseded row was in no CRL while it named no issuer:
	// the revocation revision moves, so that its CA's stored CRL, made
	// without it, is made again (and other replicas learn of it).
	_, err = c.exec(ctx, `UPDATE revocation_state SET seq = seq + 1 WHERE id = ? AND EXISTS (SELECT 1 FROM certificates WHERE serial = ? AND status <> ?)`,
		singletonID, serial, CertIssued)
	return dbErr("recording certificate issuer", err)
}

// ---------------------------------------------------------------------------
// certificates: lookups

// ByFingerprint reads the row (without DER) of the certificate with SHA-256
// fingerprint fp (64 lowercase hex digits); ErrNotFound if there is none.
func (c certStore) ByFingerprint(ctx context.Context, fp string) (*certRow, error) {
	var row certRow
	if err := c.get(ctx, &row, `SELECT `+certStatusColumns+` FROM certificates WHERE fingerprint_sha256 = ?`, fp); err != nil {
		return nil, dbErr("certificate by fingerprint", err)
	}
	return &row, nil
}

// BySerial reads the row (without DER) of the certificate with serial;
// ErrNotFound if there is none.
func (c certStore) BySerial(ctx context.Context, serial string) (*certRow, error) {
	var row certRow
	if err := c.get(ctx, &row, `SELECT `+certStatusColumns+` FROM certificates WHERE serial = ?`, serial); err != nil {
		return nil, dbErr("certificate "+serial, err)
	}
	return &row, nil
}

// AgentAndCurrent reads the agent row of name and, in the same statement,
// the fingerprint of its current certificate (nil when it has none): a
// rotation's one read (Registry.Rotate).
func (c certStore) AgentAndCurrent(ctx context.Context, name string) (agentRow, *string, error) {
	var row struct {
		agentRow
		CurrentFingerprint *string `db:"current_fingerprint"`
	}
	err := c.get(ctx, &row, `SELECT `+agentColumns+`,
		(SELECT fingerprint_sha256 FROM certificates WHERE serial = agents.current_serial) AS current_fingerprint
		FROM agents WHERE name = ?`, name)
	return row.agentRow, row.CurrentFingerprint, err
}

// Status reads the row (without DER) of the certificate with serial in
// either spelling: a replica older than migration 004, still running during
// a rolling upgrade, writes serials without their leading zero nibble. One
// primary-key read; ErrNotFound if there is none.
func (c certStore) Status(ctx context.Context, serial string) (*certRow, error) {
	var row certRow
	if err := c.get(ctx, &row, `SELECT `+certStatusColumns+` FROM certificates WHERE serial IN (?, ?)`,
		serial, strings.TrimPrefix(serial, "0")); err != nil {
		return nil, dbErr("certificate status", err)
	}
	return &row, nil
}

// DER reads the DER of the certificate with serial; ErrNotFound if there
// is none.
func (c certStore) DER(ctx context.Context, serial string) ([]byte, error) {
	var der []byte
	if err := c.get(ctx, &der, `SELECT der FROM certificates WHERE serial = ?`, serial); err != nil {
		return nil, dbErr("certificate "+serial, err)
	}
	return der, nil
}

// Exists reports whether a certificate with serial is stored.
func (c certStore) Exists(ctx context.Context, serial string) (bool, error) {
	var n int
	if err := c.get(ctx, &n, `SELECT COUNT(*) FROM certificates WHERE serial = ?`, serial); err != nil {
		return false, dbErr("looking up certificate "+serial, err)
	}
	return n > 0, nil
}

// History reads every certificate of agent with its DER, oldest first.
func (c certStore) History(ctx context.Context, agent string) ([]certRow, error) {
	var rows []certRow
	err := c.sel(ctx, &rows, `SELECT `+certColumns+` FROM certificates
		WHERE agent_name = ? ORDER BY created_at, log_index, serial`, agent)
	return rows, dbErr("reading certificates of "+agent, err)
}

// Unrevoked reads, with their DER and newest first, the certificates of
// agent that still verify at now: the issued one and those superseded whose
// grace period has not ended (statusAt's good rows). Revoking an agent
// revokes these.
func (c certStore) Unrevoked(ctx context.Context, agent string, now time.Time) ([]certRow, error) {
	var rows []certRow
	err := c.sel(ctx, &rows, `SELECT `+certColumns+` FROM certificates
		WHERE agent_name = ? AND (status = ? OR (status = ? AND grace_until > ?)) ORDER BY created_at DESC, log_index DESC`,
		agent, CertIssued, CertSuperseded, dbTime(now))
	return rows, dbErr("reading certificates of "+agent, err)
}

// CRLRows calls fn, in serial order, with each unexpired certificate of the
// issuing CA issuer that belongs on its CRL at now: revoked ones, and
// superseded ones whose grace period ended (statusAt's revoked rows). With
// all, every unexpired certificate of issuer (a root CRL revoked it). A row
// holds only what statusAt reads (serial, status, revocation reason and
// time, validity, grace end), and rows are read one at a time: a CRL lists
// about one row per agent in a fleet that rotates, and reading them all
// into certRows first took 1.9 KB of allocations per row (100,000 rows:
// 186 MB, docs/performance-history.md, seventeenth pass).
func (c certStore) CRLRows(ctx context.Context, issuer string, now time.Time, all bool, fn func(certRow) error) error {
	const cols = `SELECT serial, status, revocation_reason, revoked_at, not_before, not_after, grace_until FROM certificates`
	query, args := cols+` WHERE issuer_key_id = ? AND not_after > ? ORDER BY serial`, []any{issuer, dbTime(now)}
	if !all {
		query = cols + ` WHERE issuer_key_id = ? AND not_after > ? AND (status = ? OR (status = ? AND (grace_until IS NULL OR grace_until <= ?)))
			ORDER BY serial`
		args = append(args, CertRevoked, CertSuperseded, dbTime(now))
	}
	rows, err := c.q.QueryContext(ctx, c.q.Rebind(query), args...)
	if err != nil {
		return dbErr("reading revoked certificates", err)
	}
	defer rows.Close()
	for rows.Next() {
		var row certRow
		if err := rows.Scan(&row.Serial, &row.Status, &row.RevocationReason, &row.RevokedAt, &row.NotBefore, &row.NotAfter, &row.GraceUntil); err != nil {
			return dbErr("reading revoked certificates", err)
		}
		if err := fn(row); err != nil {
			return err
		}
	}
	return dbErr("reading revoked certificates", rows.Err())
}

// NextGraceEnd returns the earliest grace end after now of a superseded
// certificate of issuer, when its CRL must next change; nil if none. The
// status is spelled in the query so that both planners use the partial
// index certificates_grace_ends: one index step, not a scan of every
// superseded certificate.
func (c certStore) NextGraceEnd(ctx context.Context, issuer string, now time.Time) (*time.Time, error) {
	var ends []time.Time
	if err := c.sel(ctx, &ends, `SELECT grace_until FROM certificates
		WHERE status = '`+CertSuperseded+`' AND issuer_key_id = ? AND grace_until > ? ORDER BY grace_until LIMIT 1`, issuer, dbTime(now)); err != nil {
		return nil, dbErr("reading next grace end", err)
	}
	if len(ends) == 0 {
		return nil, nil
	}
	t := dbTime(ends[0])
	return &t, nil
}

// SupersedesOnly reports whether every revocation revision in (after,
// upto] is a recorded supersede (superseded_changes) of a certificate with
// a grace end, and returns the earliest of those grace ends. A revision
// without its row (a revocation, a root CRL, a pruned row) or a
// certificate superseded without grace makes ok false.
func (c certStore) SupersedesOnly(ctx context.Context, after, upto int64) (firstEnd time.Time, ok bool, err error) {
	var n struct {
		Seqs   int64 `db:"seqs"`
		Rows   int64 `db:"n"`
		Graced int64 `db:"graced"`
	}
	const from = ` FROM superseded_changes s LEFT JOIN certificates c ON c.fingerprint_sha256 = s.fingerprint_sha256
		WHERE s.seq > ? AND s.seq <= ?`
	if err := c.get(ctx, &n, `SELECT COUNT(DISTINCT s.seq) AS seqs, COUNT(*) AS n, COUNT(c.grace_until) AS graced`+from, after, upto); err != nil {
		return time.Time{}, false, dbErr("reading superseded certificates", err)
	}
	// One joined row per revision (fingerprints are unique), each with a
	// grace end.
	if n.Seqs != upto-after || n.Rows != n.Seqs || n.Graced != n.Rows || n.Rows == 0 {
		return time.Time{}, false, nil
	}
	var ends []time.Time
	if err := c.sel(ctx, &ends, `SELECT c.grace_until`+from+` AND c.grace_until IS NOT NULL ORDER BY c.grace_until LIMIT 1`, after, upto); err != nil {
		return time.Time{}, false, dbErr("reading superseded certificates", err)
	}
	if len(ends) == 0 {
		return time.Time{}, false, nil
	}
	return dbTime(ends[0]), true, nil
}

// WithoutIssuer lists up to limit serials of rows with no issuer key id.
func (c certStore) WithoutIssuer(ctx context.Context, limit int) ([]string, error) {
	var serials []string
	err := c.sel(ctx, &serials, `SELECT serial FROM certificates WHERE issuer_key_id IS NULL LIMIT ?`, limit)
	return serials, dbErr("reading certificates without issuer", err)
}

// ---------------------------------------------------------------------------
// server_certificates: the registry's own TLS certificates (servercert.go),
// recorded before they are signed like agent certificates.

// serverCertRow is a row of server_certificates. Fingerprint, DER and
// LogIndex are set once State is issued.
type serverCertRow struct {
	Serial      string    `db:"serial"`
	State       string    `db:"state"` // pendingPending, pendingIssued or pendingAbandoned
	IssuerKeyID string    `db:"issuer_key_id"`
	DNSNames    string    `db:"dns_names"`    // JSON array
	IPAddresses string    `db:"ip_addresses"` // JSON array
	TBS         []byte    `db:"tbs"`
	Fingerprint *string   `db:"fingerprint_sha256"`
	DER         []byte    `db:"der"`
	LogIndex    *int64    `db:"log_index"`
	NotBefore   time.Time `db:"not_before"`
	NotAfter    time.Time `db:"not_after"`
	CreatedAt   time.Time `db:"created_at"`
	UpdatedAt   time.Time `db:"updated_at"`
}

const serverCertColumns = `serial, state, issuer_key_id, dns_names, ip_addresses, tbs, fingerprint_sha256, der,
	log_index, not_before, not_after, created_at, updated_at`

// InsertServerPending records a server certificate before it is signed.
func (c certStore) InsertServerPending(ctx context.Context, p serverCertRow) error {
	_, err := c.exec(ctx, `INSERT INTO server_certificates
		(serial, state, issuer_key_id, dns_names, ip_addresses, tbs, not_before, not_after, created_at, updated_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		p.Serial, pendingPending, p.IssuerKeyID, p.DNSNames, p.IPAddresses, p.TBS,
		dbTime(p.NotBefore), dbTime(p.NotAfter), dbTime(p.CreatedAt), dbTime(p.UpdatedAt))
	return dbErr("recording pending server certificate", err)
}

// MarkServerIssued stores the signed server certificate serial (its
// fingerprint, DER and log index) and moves it from pending to issued at
// now. It reports false when the row was no longer pending.
func (c certStore) MarkServerIssued(ctx context.Context, serial, fp string, der []byte, logIndex int64, now time.Time) (bool, error) {
	n, err := c.exec(ctx, `UPDATE server_certificates
		SET state = ?, fingerprint_sha256 = ?, der = ?, log_index = ?, updated_at = ? WHERE serial = ? AND state = ?`,
		pendingIssued, fp, der, logIndex, dbTime(now), serial, pendingPending)
	if err != nil {
		return false, dbErr("marking server certificate "+serial+" issued", err)
	}
	return n == 1, nil
}

// AbandonServer moves the pending server certificate serial to abandoned
// at now. It reports false when the row was no longer pending.
func (c certStore) AbandonServer(ctx context.Context, serial string, now time.Time) (bool, error) {
	n, err := c.exec(ctx, `UPDATE server_certificates SET state = ?, updated_at = ? WHERE serial = ? AND state = ?`,
		pendingAbandoned, dbTime(now), serial, pendingPending)
	if err != nil {
		return false, dbErr("abandoning server certificate "+serial, err)
	}
	return n == 1, nil
}

// StaleServerPending lists the serials of server certificates still
// pending that were recorded before cutoff, oldest first.
func (c certStore) StaleServerPending(ctx context.Context, cutoff time.Time) ([]string, error) {
	var serials []string
	err := c.sel(ctx, &serials, `SELECT serial FROM server_certificates
		WHERE state = ? AND created_at < ? ORDER BY created_at`, pendingPending, dbTime(cutoff))
	return serials, dbErr("reading pending server certificates", err)
}

// ServerStatus reads the issued server certificate with serial (either
// spelling, as Status), without TBS and DER; ErrNotFound if there is none.
func (c certStore) ServerStatus(ctx context.Context, serial string) (*serverCertRow, error) {
	var row serverCertRow
	if err := c.get(ctx, &row, `SELECT serial, state, issuer_key_id, not_before, not_after FROM server_certificates
		WHERE serial IN (?, ?) AND state = ?`, serial, strings.TrimPrefix(serial, "0"), pendingIssued); err != nil {
		return nil, dbErr("server certificate status", err)
	}
	return &row, nil
}

// ServerCertificates reads every server certificate row (all states),
// oldest first.
func (c certStore) ServerCertificates(ctx context.Context) ([]serverCertRow, error) {
	var rows []serverCertRow
	err := c.sel(ctx, &rows, `SELECT `+serverCertColumns+` FROM server_certificates ORDER BY created_at, serial`)
	return rows, dbErr("reading server certificates", err)
}
