package faults

import (
	"cmp"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/jmoiron/sqlx"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/agent-trust-registry/atr/api/client"
	"github.com/agent-trust-registry/atr/registry/translog"
)

// LogWatcher follows one transparency log as an auditor would: it collects
// signed checkpoints (while the server runs, possibly just before it is
// killed), and on Check proves each of them consistent with the newest
// checkpoint, downloads the new entries and recomputes the root over all of
// them. It is safe for concurrent use.
type LogWatcher struct {
	verifier note.Verifier

	mu      sync.Mutex
	pending []translog.Checkpoint // observed since the last Check
	head    translog.Checkpoint   // the newest checked checkpoint
	leaves  [][]byte              // entries 0..head.Size-1 as downloaded
	seen    int                   // checkpoints proved consistent
}

// NewLogWatcher returns a watcher for the log of origin signed by the key
// keyPEM (GET /v1/log/key).
func NewLogWatcher(keyPEM []byte, origin string) (*LogWatcher, error) {
	b, _ := pem.Decode(keyPEM)
	if b == nil {
		return nil, errors.New("faults: log key is not PEM")
	}
	pub, err := x509.ParsePKIXPublicKey(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("faults: log key: %w", err)
	}
	v, err := translog.NewNoteVerifier(origin, pub)
	if err != nil {
		return nil, fmt.Errorf("faults: log key: %w", err)
	}
	return &LogWatcher{verifier: v}, nil
}

// Fetch gets and verifies the current checkpoint.
func (w *LogWatcher) Fetch(ctx context.Context, c *client.Client) (translog.Checkpoint, error) {
	msg, err := c.Checkpoint(ctx)
	if err != nil {
		return translog.Checkpoint{}, err
	}
	cp, err := translog.OpenCheckpoint(msg, w.verifier)
	if err != nil {
		return translog.Checkpoint{}, fmt.Errorf("faults: checkpoint does not verify: %w", err)
	}
	return cp, nil
}

// Observe fetches the current checkpoint and keeps it for the next Check.
// Transport errors (a killed server) are ignored; a bad signature is not.
func (w *LogWatcher) Observe(ctx context.Context, c *client.Client) error {
	msg, err := c.Checkpoint(ctx)
	if err != nil {
		return nil
	}
	cp, err := translog.OpenCheckpoint(msg, w.verifier)
	if err != nil {
		return fmt.Errorf("faults: checkpoint does not verify: %w", err)
	}
	w.mu.Lock()
	if n := len(w.pending); n == 0 || w.pending[n-1].Size != cp.Size || w.pending[n-1].Hash != cp.Hash {
		w.pending = append(w.pending, cp)
	}
	w.mu.Unlock()
	return nil
}

// Poll observes a checkpoint every interval until ctx is done and returns
// the first verification failure.
func (w *LogWatcher) Poll(ctx context.Context, c *client.Client, interval time.Duration) error {
	for {
		if err := w.Observe(ctx, c); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(interval):
		}
	}
}

func toHashes(p [][]byte) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(p))
	for i, h := range p {
		if len(h) != len(tlog.Hash{}) {
			return nil, fmt.Errorf("faults: proof hash %d has %d bytes", i, len(h))
		}
		copy(out[i][:], h)
	}
	return out, nil
}

// treeHash is the RFC 6962 Merkle tree hash of leaf hashes.
func treeHash(h []tlog.Hash) tlog.Hash {
	switch len(h) {
	case 0:
		return tlog.Hash(sha256.Sum256(nil))
	case 1:
		return h[0]
	}
	k := 1
	for k*2 < len(h) {
		k *= 2
	}
	return tlog.NodeHash(treeHash(h[:k]), treeHash(h[k:]))
}

// Check fetches the newest checkpoint from c, proves every checkpoint seen
// since the last Check (and the last checked head) consistent with it,
// downloads the new entries and checks that they hash to its root. It
// returns the new head.
func (w *LogWatcher) Check(ctx context.Context, c *client.Client) (translog.Checkpoint, error) {
	cp, err := w.Fetch(ctx, c)
	if err != nil {
		return cp, err
	}
	w.mu.Lock()
	olds, err := distinctHeads(append(w.pending, w.head))
	w.pending = nil
	w.mu.Unlock()
	if err != nil {
		return cp, err
	}
	for _, old := range olds {
		switch {
		case old.Size == 0:
			continue
		case old.Size > cp.Size:
			return cp, fmt.Errorf("faults: log shrank: a checkpoint of size %d was published, now the log has size %d", old.Size, cp.Size)
		case old.Size == cp.Size:
			if old.Hash != cp.Hash {
				return cp, fmt.Errorf("faults: two checkpoints of size %d with different roots (fork)", cp.Size)
			}
		default:
			p, err := politely(ctx, func() (*client.ConsistencyProof, error) { return c.ConsistencyProof(ctx, old.Size, cp.Size) })
			if err != nil {
				return cp, fmt.Errorf("faults: consistency proof %d→%d: %w", old.Size, cp.Size, err)
			}
			hs, err := toHashes(p.Proof)
			if err != nil {
				return cp, err
			}
			if err := translog.CheckConsistency(hs, cp.Size, cp.Hash, old.Size, old.Hash); err != nil {
				return cp, fmt.Errorf("faults: checkpoint of size %d is not a prefix of size %d: %w", old.Size, cp.Size, err)
			}
		}
		w.mu.Lock()
		w.seen++
		w.mu.Unlock()
	}
	// Entries: download what is new, then recompute the whole root.
	w.mu.Lock()
	leaves := slices.Clone(w.leaves)
	w.mu.Unlock()
	for int64(len(leaves)) < cp.Size {
		es, err := politely(ctx, func() (*client.LogEntries, error) { return c.LogEntries(ctx, int64(len(leaves)), cp.Size) })
		if err != nil {
			return cp, fmt.Errorf("faults: log entries from %d: %w", len(leaves), err)
		}
		if es.Start != int64(len(leaves)) || len(es.Entries) == 0 {
			return cp, fmt.Errorf("faults: log entries from %d: got start %d, %d entries", len(leaves), es.Start, len(es.Entries))
		}
		leaves = append(leaves, es.Entries...)
	}
	if int64(len(leaves)) > cp.Size {
		return cp, fmt.Errorf("faults: %d entries downloaded earlier but the log now has size %d", len(leaves), cp.Size)
	}
	hs := make([]tlog.Hash, len(leaves))
	for i, l := range leaves {
		hs[i] = tlog.RecordHash(l)
	}
	if got := treeHash(hs); got != cp.Hash {
		return cp, fmt.Errorf("faults: entries 0..%d hash to %x, checkpoint says %x", cp.Size-1, got[:], cp.Hash[:])
	}
	w.mu.Lock()
	w.head, w.leaves = cp, leaves
	w.mu.Unlock()
	return cp, nil
}

// Entries returns the checked entries, parsed.
func (w *LogWatcher) Entries() ([]translog.Entry, error) {
	w.mu.Lock()
	leaves := w.leaves
	w.mu.Unlock()
	out := make([]translog.Entry, len(leaves))
	for i, l := range leaves {
		e, err := translog.ParseEntry(l)
		if err != nil {
			return nil, fmt.Errorf("faults: log entry %d does not parse: %w", i, err)
		}
		out[i] = e
	}
	return out, nil
}

// Checked returns how many checkpoints were proved consistent.
func (w *LogWatcher) Checked() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.seen
}

// certRow is one row of certificates.
type certRow struct {
	Serial      string `db:"serial"`
	Agent       string `db:"agent_name"`
	Fingerprint string `db:"fingerprint_sha256"`
	Status      string `db:"status"`
}

// pendingRow is one row of pending_issuances.
type pendingRow struct {
	Serial    string    `db:"serial"`
	State     string    `db:"state"`
	CreatedAt time.Time `db:"created_at"`
}

// DBState is what CheckDB read.
type DBState struct {
	Certs   map[string]certRow // by serial
	Pending []pendingRow
}

// ReadDB reads certificates and pending issuances and refuses duplicates.
func ReadDB(ctx context.Context, db *sqlx.DB) (*DBState, error) {
	var certs []certRow
	if err := db.SelectContext(ctx, &certs, `SELECT serial, agent_name, fingerprint_sha256, status FROM certificates`); err != nil {
		return nil, fmt.Errorf("faults: reading certificates: %w", err)
	}
	st := &DBState{Certs: map[string]certRow{}}
	fps := map[string]string{}
	for _, c := range certs {
		if _, dup := st.Certs[c.Serial]; dup {
			return nil, fmt.Errorf("faults: serial %s appears twice in certificates", c.Serial)
		}
		if s, dup := fps[c.Fingerprint]; dup {
			return nil, fmt.Errorf("faults: fingerprint %s appears twice (serials %s and %s)", c.Fingerprint, s, c.Serial)
		}
		st.Certs[c.Serial], fps[c.Fingerprint] = c, c.Serial
	}
	if err := db.SelectContext(ctx, &st.Pending, `SELECT serial, state, created_at FROM pending_issuances`); err != nil {
		return nil, fmt.Errorf("faults: reading pending issuances: %w", err)
	}
	return st, nil
}

// CheckLedgerDB checks every acknowledged certificate against the database:
// present, for the right agent and fingerprint, with a status the ledger
// allows, and not abandoned as a pending issuance.
func CheckLedgerDB(st *DBState, agents []AgentRecord) []error {
	var errs []error
	abandoned := map[string]bool{}
	for _, p := range st.Pending {
		if p.State == "abandoned" {
			abandoned[p.Serial] = true
		}
	}
	for _, a := range agents {
		for i, c := range a.Certs {
			row, ok := st.Certs[c.Serial]
			switch {
			case !ok:
				errs = append(errs, fmt.Errorf("acknowledged certificate %s of %s is unknown to the registry", c.Serial, a.Name))
			case row.Agent != a.Name || row.Fingerprint != c.Fingerprint:
				errs = append(errs, fmt.Errorf("certificate %s: registry has agent %s fingerprint %s; client got %s %s", c.Serial, row.Agent, row.Fingerprint, a.Name, c.Fingerprint))
			case !slices.Contains(a.Expected(i), row.Status):
				errs = append(errs, fmt.Errorf("certificate %s (#%d of %s, doubt %q): status %s, want one of %v", c.Serial, i, a.Name, a.Doubt, row.Status, a.Expected(i)))
			}
			if abandoned[c.Serial] {
				errs = append(errs, fmt.Errorf("acknowledged certificate %s of %s is marked abandoned", c.Serial, a.Name))
			}
		}
	}
	return errs
}

// CheckPendingSettled checks that no pending issuance older than cutoff is
// still pending (serve reconciles at start-up with the registry's
// PendingTimeout).
func CheckPendingSettled(st *DBState, cutoff time.Time) []error {
	var errs []error
	for _, p := range st.Pending {
		if p.State == "pending" && p.CreatedAt.Before(cutoff) {
			errs = append(errs, fmt.Errorf("pending issuance %s from %s still pending after reconcile (cutoff %s)", p.Serial, p.CreatedAt.UTC().Format(time.RFC3339Nano), cutoff.UTC().Format(time.RFC3339Nano)))
		}
	}
	return errs
}

// CheckLogEvents checks the parsed log against the ledger and the database.
// Version 2 leaves carry no name or serial: an entry is tied to a
// certificate by its fingerprint, and to an agent through the certificate
// row that holds that fingerprint. It checks that every agent entry is
// version 2 with name indexes; every stored certificate has exactly one
// issuance (register or rotate) entry and every issuance entry a stored
// certificate (no duplicates, nothing unknown); every revoked certificate
// exactly one revoke entry and no other certificate any; and every
// acknowledged event is there exactly once with the right type, agent and
// previous fingerprint. API keys are not log events any more: they are
// not checked here.
func CheckLogEvents(entries []translog.Entry, st *DBState, agents []AgentRecord) []error {
	var errs []error
	byFP := make(map[string]certRow, len(st.Certs))
	for _, row := range st.Certs {
		byFP[row.Fingerprint] = row
	}
	issued := map[string][]translog.Entry{}
	revoked := map[string]int{}
	for i, e := range entries {
		switch e.Type {
		case translog.EventRegister, translog.EventRotate, translog.EventRevoke:
			if e.Version != translog.EntryVersion || len(e.NameIndexes) == 0 {
				errs = append(errs, fmt.Errorf("log entry %d (%s): version %d with %d name indexes, want version %d with at least one",
					i, e.Type, e.Version, len(e.NameIndexes), translog.EntryVersion))
			}
		case translog.EventCeremony, translog.EventServerCert: // CA certificates; the servers' own TLS certificates
		case translog.EventAgentCard: // a signed A2A agent card's digest (names the current certificate)
		default:
			errs = append(errs, fmt.Errorf("log entry %d: type %s is not a log event any more", i, e.Type))
		}
		switch e.Type {
		case translog.EventRegister, translog.EventRotate:
			issued[e.Fingerprint] = append(issued[e.Fingerprint], e)
		case translog.EventRevoke:
			revoked[e.Fingerprint]++
		}
	}
	for fp, es := range issued {
		if len(es) != 1 {
			errs = append(errs, fmt.Errorf("fingerprint %s has %d issuance entries in the log", fp, len(es)))
		}
		if _, ok := byFP[fp]; !ok {
			errs = append(errs, fmt.Errorf("log issuance entry for fingerprint %s has no certificate in the registry", fp))
		}
	}
	for fp, n := range revoked {
		if n != 1 {
			errs = append(errs, fmt.Errorf("fingerprint %s has %d revoke entries in the log", fp, n))
		}
		if _, ok := byFP[fp]; !ok {
			errs = append(errs, fmt.Errorf("log revoke entry for fingerprint %s has no certificate in the registry", fp))
		}
	}
	for s, row := range st.Certs {
		if len(issued[row.Fingerprint]) == 0 {
			errs = append(errs, fmt.Errorf("certificate %s of %s is stored but not in the log", s, row.Agent))
		}
		if (row.Status == StatusRevoked) != (revoked[row.Fingerprint] > 0) {
			errs = append(errs, fmt.Errorf("certificate %s: status %s but %d revoke entries", s, row.Status, revoked[row.Fingerprint]))
		}
	}
	for _, a := range agents {
		for i, c := range a.Certs {
			es := issued[c.Fingerprint]
			want := translog.EventRegister
			if i > 0 {
				want = translog.EventRotate
			}
			row, stored := byFP[c.Fingerprint]
			switch {
			case len(es) != 1:
				errs = append(errs, fmt.Errorf("acknowledged certificate %s: %d issuance entries, want 1", c.Serial, len(es)))
			case !stored || row.Agent != a.Name || row.Serial != c.Serial:
				errs = append(errs, fmt.Errorf("acknowledged certificate %s of %s: the log's fingerprint %s belongs to certificate row %+v", c.Serial, a.Name, c.Fingerprint, row))
			case es[0].Type != want:
				errs = append(errs, fmt.Errorf("acknowledged certificate %s: log entry type %s, want %s", c.Serial, es[0].Type, want))
			case i > 0 && es[0].Previous != a.Certs[i-1].Fingerprint:
				errs = append(errs, fmt.Errorf("acknowledged rotation %s: previous %s, want %s", c.Serial, es[0].Previous, a.Certs[i-1].Fingerprint))
			}
		}
		if a.Revoked {
			if last := a.Certs[len(a.Certs)-1]; revoked[last.Fingerprint] != 1 {
				errs = append(errs, fmt.Errorf("acknowledged revocation of %s: %d revoke entries for %s, want 1", a.Name, revoked[last.Fingerprint], last.Serial))
			}
		}
	}
	return errs
}

// CheckVerify asks POST /v1/verify about the certificates of agents and
// checks each answer against the statuses the ledger allows.
func CheckVerify(ctx context.Context, c *client.Client, agents []AgentRecord) []error {
	var errs []error
	for _, a := range agents {
		for i, cert := range a.Certs {
			res, err := politely(ctx, func() (*client.VerifyResult, error) { return c.Verify(ctx, []byte(cert.PEM), []byte(cert.ChainPEM)) })
			if err != nil {
				errs = append(errs, fmt.Errorf("verify %s: %w", cert.Serial, err))
				continue
			}
			want := a.Expected(i)
			got := res.Status
			if !res.Verified && res.Reason == "revoked" {
				got = StatusRevoked
			}
			ok := slices.Contains(want, got) && res.FingerprintSHA256 == cert.Fingerprint &&
				res.Verified == (got != StatusRevoked)
			if !ok {
				errs = append(errs, fmt.Errorf("verify %s (#%d of %s): verified=%v status=%q reason=%q fp=%s; want status in %v", cert.Serial, i, a.Name, res.Verified, res.Status, res.Reason, res.FingerprintSHA256, want))
			}
		}
	}
	return errs
}

// Sample returns agents whose registration was acknowledged after the
// previous Sample call plus up to extra random older ones.
func Sample(all []AgentRecord, from int, extra int) []AgentRecord {
	out := slices.Clone(all[min(from, len(all)):])
	for range extra {
		if from == 0 {
			break
		}
		out = append(out, all[randIntn(min(from, len(all)))])
	}
	return out
}

// distinctHeads returns one checkpoint per tree size, ordered by size: a
// poller sees the same head many times, and one consistency proof per size
// proves them all. Two checkpoints of one size with different roots are a
// fork, found here without asking the server.
func distinctHeads(cps []translog.Checkpoint) ([]translog.Checkpoint, error) {
	bySize := make(map[int64]translog.Checkpoint, len(cps))
	for _, cp := range cps {
		if seen, ok := bySize[cp.Size]; ok && seen.Hash != cp.Hash {
			return nil, fmt.Errorf("faults: two checkpoints of size %d with different roots (fork)", cp.Size)
		}
		bySize[cp.Size] = cp
	}
	out := slices.Collect(maps.Values(bySize))
	slices.SortFunc(out, func(a, b translog.Checkpoint) int { return cmp.Compare(a.Size, b.Size) })
	return out, nil
}

// politely calls f and, on 429, waits as long as Retry-After says and asks
// again, as a well-behaved client would: the harness keeps the server's rate
// limits as they are.
func politely[T any](ctx context.Context, f func() (T, error)) (T, error) {
	for try := 0; ; try++ {
		res, err := f()
		var ce *client.Error
		if err == nil || try == 100 || !errors.As(err, &ce) || ce.Status != http.StatusTooManyRequests {
			return res, err
		}
		select {
		case <-ctx.Done():
			return res, ctx.Err()
		case <-time.After(max(ce.RetryAfter, 20*time.Millisecond)):
		}
	}
}
