package registry

// Revocation channels: the full CRL (RFC 5280) and OCSP (RFC 6960), both
// signed through the token, one responder per issuing CA.
//
// # One responder per issuer
//
// Every certificate row names its issuing CA (issuer_key_id, the leaf's
// authority key identifier). After an intermediate rotation the previous
// intermediate keeps a responder for as long as it is valid (its leaves
// cannot outlive it): its own CRL at /v1/crl/{its key id} (the URL in its
// leaves' CDP) with its own monotonic CRL numbers (crl_issuers), and OCSP
// answers for requests whose CertID issuer hashes are its own. A request
// naming one CA for a serial another CA issued is answered "unknown".
//
// # Revoked intermediates
//
// A root revokes an intermediate in a key ceremony (atr ceremony root-crl):
// a root-signed CRL stored in root_crls (arl.go). From then on that CA's
// leaves are revoked (reason cACompromise, at the intermediate's revocation
// time, unless revoked earlier for their own reason) on its CRL and in OCSP,
// Verify refuses them, and the bundles drop the intermediate.
//
// # Freshness across replicas
//
// Every change to a certificate's status, revocation reason, revocation time
// or grace period bumps revocation_state.seq in the same transaction (SQL
// triggers of migration 002, so no code path can forget it). A CRL fetch
// costs one read of that counter: the stored CRL is served while it was made
// at the current seq, before 2/3 of its validity, and before the next end of
// a rotation grace period (when a superseded certificate enters the list);
// otherwise it is regenerated under the crl_state row lock (FOR UPDATE on
// PostgreSQL, BEGIN IMMEDIATE on SQLite), which also serializes CRL numbers
// across replicas. A revocation committed on any replica is therefore in the
// very next CRL fetched from any replica.
//
// An OCSP query costs one primary-key read of the certificate's row. The
// answer is a pre-signed response from a bounded in-process cache or from
// the shared ocsp_responses table, served only while the status it states
// still equals the row just read and it is younger than 2/3 of its
// validity; otherwise it is signed again, at most once at a time per
// (serial, hash algorithm, status) thanks to singleflight. So a flood of
// queries is a flood of cheap reads, not of HSM signatures, and a revocation
// made anywhere is answered at the next query.

import (
	"container/list"
	"context"
	"crypto"
	"crypto/sha1" //nolint:gosec // OCSP CertID hashes: SHA-1 is what most clients send (RFC 6960 4.1.1)
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"math/big"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/sirupsen/logrus"
	"golang.org/x/crypto/ocsp"
	"golang.org/x/sync/singleflight"
	"golang.org/x/time/rate"

	"github.com/agent-trust-registry/atr/ca"
)

// Defaults for RevocationConfig fields left zero.
const (
	DefaultCRLValidity      = 24 * time.Hour
	DefaultOCSPValidity     = time.Hour
	DefaultOCSPCacheSize    = 10000
	DefaultUnknownSignRate  = 10
	MaxOCSPRequestSize      = 4 << 10 // bytes of DER; requests are ~100 bytes
	maxOCSPGetPathSize      = (MaxOCSPRequestSize*4)/3 + 3*8
	revocationFlightTimeout = 30 * time.Second
)

// RevocationConfig tunes the CRL and OCSP channels.
type RevocationConfig struct {
	// CRLValidity is nextUpdate − thisUpdate of every CRL. A CRL is
	// regenerated when 2/3 of it has passed (or at once after a revocation).
	// Zero means DefaultCRLValidity (24 h).
	CRLValidity time.Duration
	// OCSPValidity is nextUpdate − thisUpdate of every OCSP response (RFC
	// 6960 4.2.2.1): how long a relying party may keep using a response it
	// fetched. A response is re-signed once 2/3 of it has passed, or at once
	// when the status changes. A "good" response of a superseded certificate
	// never outlives its grace period. Zero means DefaultOCSPValidity (1 h).
	OCSPValidity time.Duration
	// OCSPCacheSize bounds the in-process cache of signed responses
	// (entries, least recently used evicted; ~0.5 KiB each). Zero means
	// DefaultOCSPCacheSize.
	OCSPCacheSize int
	// UnknownSignRate bounds the "unknown" responses signed per second (for
	// serials the registry never issued, which clients choose freely, so
	// they cannot be pre-signed); beyond it the answer is the unsigned
	// "unauthorized" (RFC 5019 2.2.3). Zero means DefaultUnknownSignRate;
	// negative means never sign them (always "unauthorized").
	UnknownSignRate int
}

func (c RevocationConfig) withDefaults() RevocationConfig {
	if c.CRLValidity <= 0 {
		c.CRLValidity = DefaultCRLValidity
	}
	if c.OCSPValidity <= 0 {
		c.OCSPValidity = DefaultOCSPValidity
	}
	if c.OCSPCacheSize <= 0 {
		c.OCSPCacheSize = DefaultOCSPCacheSize
	}
	if c.UnknownSignRate == 0 {
		c.UnknownSignRate = DefaultUnknownSignRate
	}
	return c
}

// refreshPoint is 2/3 of the way from this to next.
func refreshPoint(this, next time.Time) time.Time {
	return this.Add(next.Sub(this) * 2 / 3)
}

// revocationService produces CRLs and OCSP responses. Safe for concurrent
// use; every replica has its own and they share state through the database.
type revocationService struct {
	store   *Store
	db      *sqlx.DB
	dialect Dialect
	issuer  *ca.Issuer
	cfg     RevocationConfig
	now     func() time.Time
	log     *logrus.Entry

	current    *responder            // the issuing CA: GET /v1/crl
	responders map[string]*responder // by issuer key id: current and earlier issuing CAs
	flight     singleflight.Group
	unknown    *rate.Limiter // nil: never sign "unknown"
	cache      *ocspCache
	arl        *arlState // root CRLs and the intermediates they revoke
	// notify, when running, tells the current revocation revision without a
	// database read (notify.go); nil or not live: read it.
	notify *notifier
}

// responder is one issuing CA's revocation channel.
type responder struct {
	ca     *ca.Responder
	keyID  string
	hashes map[crypto.Hash]issuerHashes // its CertID hashes

	mu      sync.Mutex // guards lastCRL
	lastCRL *storedCRL
}

func newResponder(r *ca.Responder) (*responder, error) {
	hashes, err := certIDHashes(r.Certificate())
	if err != nil {
		return nil, err
	}
	return &responder{ca: r, keyID: r.KeyID(), hashes: hashes}, nil
}

// newRevocationService returns the revocation channels of the issuing CA of
// issuer and of the earlier issuing CAs others over store. now is the clock
// (UTC). Root CRLs are checked against the roots given to setCAs.
func newRevocationService(store *Store, issuer *ca.Issuer, cfg RevocationConfig, now func() time.Time, log *logrus.Entry, others ...*ca.Responder) *revocationService {
	cfg = cfg.withDefaults()
	s := &revocationService{
		store:      store,
		db:         store.db,
		dialect:    store.dialect,
		issuer:     issuer,
		cfg:        cfg,
		now:        func() time.Time { return now().UTC() },
		log:        log,
		cache:      newOCSPCache(cfg.OCSPCacheSize),
		responders: map[string]*responder{},
		arl:        newARLState(log),
	}
	if cfg.UnknownSignRate > 0 {
		s.unknown = rate.NewLimiter(rate.Limit(cfg.UnknownSignRate), cfg.UnknownSignRate)
	}
	for k, r := range append([]*ca.Responder{issuer.Responder()}, others...) {
		resp, err := newResponder(r)
		if err != nil {
			// Cannot happen for a parsed certificate; requests for that CA
			// are then answered "unauthorized", which is safe.
			log.WithError(err).WithField("issuer", r.KeyID()).Error("computing OCSP issuer hashes")
			continue
		}
		if k == 0 {
			s.current = resp
		}
		if _, dup := s.responders[resp.keyID]; !dup {
			s.responders[resp.keyID] = resp
		}
	}
	if s.current == nil {
		s.current = &responder{ca: issuer.Responder(), keyID: issuer.Responder().KeyID()}
	}
	return s
}

// ---------------------------------------------------------------------------
// CRL

// storedCRL is the crl_state row.
type storedCRL struct {
	Number     int64      `db:"number"`
	Seq        int64      `db:"seq"`
	DER        []byte     `db:"der"`
	ThisUpdate *time.Time `db:"this_update"`
	NextUpdate *time.Time `db:"next_update"`
	StaleAt    *time.Time `db:"stale_at"`
}

// fresh reports whether c may be served at revision seq and time now.
func (c *storedCRL) fresh(seq int64, now time.Time) bool {
	if c == nil || len(c.DER) == 0 || c.ThisUpdate == nil || c.NextUpdate == nil || c.Seq != seq {
		return false
	}
	if c.StaleAt != nil && !now.Before(*c.StaleAt) {
		return false
	}
	return now.Before(refreshPoint(*c.ThisUpdate, *c.NextUpdate))
}

// crl returns the issuing CA's current full CRL (DER) and its nextUpdate.
func (s *revocationService) crl(ctx context.Context) ([]byte, time.Time, error) {
	return s.crlOf(ctx, s.current)
}

// crlOf returns the current full CRL (DER) of one issuing CA and its
// nextUpdate, regenerating it when it is stale (see the comment at the top
// of this file).
func (s *revocationService) crlOf(ctx context.Context, r *responder) ([]byte, time.Time, error) {
	seq, err := s.sync(ctx)
	if err != nil {
		return nil, time.Time{}, err
	}
	r.mu.Lock()
	cur := r.lastCRL
	r.mu.Unlock()
	if cur.fresh(seq, s.now()) {
		return cur.DER, cur.NextUpdate.UTC(), nil
	}
	// The revision is part of the key: a fetch that saw a newer revision
	// never joins a regeneration that started before it.
	v, err, _ := s.flight.Do(fmt.Sprintf("crl|%s|%d", r.keyID, seq), func() (any, error) {
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), revocationFlightTimeout)
		defer cancel()
		return s.loadOrMakeCRL(fctx, r)
	})
	if err != nil {
		return nil, time.Time{}, err
	}
	c := v.(*storedCRL)
	return c.DER, c.NextUpdate.UTC(), nil
}

// refresh is for a background ticker (every few seconds to a minute): it
// regenerates the CRL when a revocation happened or 2/3 of its validity has
// passed, so that the CRL is renewed even when nobody fetches it, and prunes
// stored OCSP responses of expired certificates.
func (s *revocationService) refresh(ctx context.Context) error {
	var errs []error
	for _, r := range s.responders {
		if !s.now().Before(r.ca.Certificate().NotAfter) {
			continue // expired: so are all its leaves
		}
		if _, _, err := s.crlOf(ctx, r); err != nil {
			errs = append(errs, err)
		}
	}
	_, err := s.db.ExecContext(ctx, s.db.Rebind(`DELETE FROM ocsp_responses WHERE not_after < ?`), dbTime(s.now()))
	return errors.Join(append(errs, dbErr("revocation: pruning OCSP responses", err))...)
}

// sync returns the current revocation revision, reloading the root CRLs
// when it changed since they were last read (a new one bumps it).
func (s *revocationService) sync(ctx context.Context) (int64, error) {
	seq, _, err := s.currentSeq(ctx)
	if err != nil {
		return 0, err
	}
	if err := s.arl.syncAt(ctx, s.db, seq); err != nil {
		return 0, err
	}
	return seq, nil
}

// currentSeq returns the current revocation revision: the notifier's when it
// is live (no database read; live reports that), else read from the
// database.
func (s *revocationService) currentSeq(ctx context.Context) (seq int64, live bool, err error) {
	if s.notify != nil {
		if seq, live := s.notify.revocationSeq(); live {
			return seq, true, nil
		}
	}
	seq, err = s.revocationSeq(ctx, s.db)
	return seq, false, err
}

func (s *revocationService) revocationSeq(ctx context.Context, q sqlx.QueryerContext) (int64, error) {
	var seq int64
	if err := sqlx.GetContext(ctx, q, &seq, `SELECT seq FROM revocation_state WHERE id = 1`); err != nil {
		return 0, dbErr("revocation: reading revision", err)
	}
	return seq, nil
}

// loadOrMakeCRL adopts the stored CRL of r if another replica made a fresh
// one, else regenerates it under r's crl_issuers row lock.
func (s *revocationService) loadOrMakeCRL(ctx context.Context, r *responder) (*storedCRL, error) {
	const sel = `SELECT number, seq, der, this_update, next_update, stale_at FROM crl_issuers WHERE issuer_key_id = ?`
	// A CA's first row continues the numbers of the single CRL of
	// migration 002 (see migration 007).
	if _, err := s.db.ExecContext(ctx, s.db.Rebind(`INSERT INTO crl_issuers (issuer_key_id, number, seq)
		SELECT ?, number, -1 FROM crl_state WHERE id = 1 ON CONFLICT (issuer_key_id) DO NOTHING`), r.keyID); err != nil {
		return nil, dbErr("crl: creating state", err)
	}
	var row storedCRL
	if err := s.db.GetContext(ctx, &row, s.db.Rebind(sel), r.keyID); err != nil {
		return nil, dbErr("crl: reading state", err)
	}
	seq, err := s.revocationSeq(ctx, s.db)
	if err != nil {
		return nil, err
	}
	if row.fresh(seq, s.now()) && signedBy(row.DER, r.ca.Certificate()) {
		r.setCRL(&row)
		return &row, nil
	}
	var out *storedCRL
	err = s.store.inTx(ctx, "crl: regenerating", func(tx *sqlx.Tx) error {
		var locked storedCRL
		if err := tx.GetContext(ctx, &locked, tx.Rebind(sel+forUpdate(s.dialect)), r.keyID); err != nil {
			return dbErr("crl: locking state", err)
		}
		// The revision is read before the entries, so the CRL reflects at
		// least every change up to seq (a later one only makes it stale
		// early).
		seq, err := s.revocationSeq(ctx, tx)
		if err != nil {
			return err
		}
		now := s.now()
		if locked.fresh(seq, now) && signedBy(locked.DER, r.ca.Certificate()) {
			out = &locked // another replica won the lock and made it
			return nil
		}
		made, n, err := s.makeCRL(ctx, tx, r, locked.Number+1, seq, now)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, tx.Rebind(`UPDATE crl_issuers SET number = ?, seq = ?, der = ?, this_update = ?, next_update = ?, stale_at = ? WHERE issuer_key_id = ?`),
			made.Number, made.Seq, made.DER, made.ThisUpdate, made.NextUpdate, made.StaleAt, r.keyID); err != nil {
			return dbErr("crl: storing", err)
		}
		s.log.WithFields(logrus.Fields{"issuer": r.keyID, "crl_number": made.Number, "entries": n, "revision": seq}).Info("CRL regenerated")
		out = made
		return nil
	})
	if err != nil {
		return nil, err
	}
	r.setCRL(out)
	return out, nil
}

func (r *responder) setCRL(c *storedCRL) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.lastCRL == nil || c.Number >= r.lastCRL.Number {
		r.lastCRL = c
	}
}

// signedBy reports whether der is a CRL signed by the CA of cert.
func signedBy(der []byte, cert *x509.Certificate) bool {
	crl, err := x509.ParseRevocationList(der)
	return err == nil && crl.CheckSignatureFrom(cert) == nil
}

// crlRow is a certificate that belongs on the CRL.
type crlRow struct {
	Serial     string     `db:"serial"`
	Status     string     `db:"status"`
	Reason     *string    `db:"revocation_reason"`
	RevokedAt  *time.Time `db:"revoked_at"`
	GraceUntil *time.Time `db:"grace_until"`
	NotBefore  time.Time  `db:"not_before"`
}

// makeCRL signs r's CRL number number: every unexpired certificate of r
// that is revoked, with its reason and time, and every unexpired superseded
// one whose grace period ended, as superseded at the end of its grace
// period. When a root CRL revoked r, every unexpired certificate of r is on
// it (revokedByCA).
func (s *revocationService) makeCRL(ctx context.Context, tx *sqlx.Tx, r *responder, number, seq int64, now time.Time) (*storedCRL, int, error) {
	revokedCA, caRevoked := s.arl.revoked(r.keyID)
	var rows []crlRow
	q := `SELECT serial, status, revocation_reason, revoked_at, grace_until, not_before
		FROM certificates
		WHERE issuer_key_id = ? AND not_after > ? AND (status = ? OR (status = ? AND (grace_until IS NULL OR grace_until <= ?)))
		ORDER BY serial`
	args := []any{r.keyID, dbTime(now), CertRevoked, CertSuperseded, dbTime(now)}
	if caRevoked {
		q = `SELECT serial, status, revocation_reason, revoked_at, grace_until, not_before
			FROM certificates WHERE issuer_key_id = ? AND not_after > ? ORDER BY serial`
		args = args[:2]
	}
	if err := tx.SelectContext(ctx, &rows, tx.Rebind(q), args...); err != nil {
		return nil, 0, dbErr("crl: reading revoked certificates", err)
	}
	var staleAt []time.Time
	if err := tx.SelectContext(ctx, &staleAt, tx.Rebind(`SELECT grace_until FROM certificates
		WHERE status = ? AND grace_until > ? AND issuer_key_id = ? ORDER BY grace_until LIMIT 1`), CertSuperseded, dbTime(now), r.keyID); err != nil {
		return nil, 0, dbErr("crl: reading next grace end", err)
	}
	entries := make([]x509.RevocationListEntry, 0, len(rows))
	for _, row := range rows {
		serial, ok := new(big.Int).SetString(row.Serial, 16)
		if !ok {
			s.log.WithField("serial", row.Serial).Error("crl: unparsable serial in certificates; skipped")
			continue
		}
		st := effectiveStatus(row.Status, row.Reason, row.RevokedAt, row.GraceUntil, row.NotBefore, now, s.log)
		if caRevoked {
			st = revokedCA.overrides(st)
		}
		entries = append(entries, x509.RevocationListEntry{SerialNumber: serial, RevocationTime: st.revokedAt, ReasonCode: st.reason})
	}
	this := now.Truncate(time.Second)
	next := this.Add(s.cfg.CRLValidity)
	der, err := r.ca.SignCRL(big.NewInt(number), this, next, entries)
	if err != nil {
		return nil, 0, fmt.Errorf("registry: crl: signing: %w: %v", ErrUnavailable, err)
	}
	c := &storedCRL{Number: number, Seq: seq, DER: der, ThisUpdate: &this, NextUpdate: &next}
	if len(staleAt) > 0 {
		t := dbTime(staleAt[0])
		c.StaleAt = &t
	}
	return c, len(entries), nil
}

// ---------------------------------------------------------------------------
// Certificate status

// certState is what an OCSP response states about a certificate, computed
// from its row at a given time.
type certState struct {
	status    int       // ocsp.Good, ocsp.Revoked or ocsp.Unknown
	reason    int       // RFC 5280 reason code when revoked
	revokedAt time.Time // when revoked
	goodUntil time.Time // superseded inside its grace period: the grace end; else zero
	notAfter  time.Time // the certificate's
}

// same reports whether a response signed for a still states b.
func (a certState) same(b certState) bool {
	return a.status == b.status && a.reason == b.reason && a.revokedAt.Equal(b.revokedAt) && a.goodUntil.Equal(b.goodUntil)
}

func (a certState) flightKey() string {
	return fmt.Sprintf("%d|%d|%d|%d", a.status, a.reason, a.revokedAt.UnixMicro(), a.goodUntil.UnixMicro())
}

// effectiveStatus maps a certificate row to what CRL and OCSP state at now:
// issued → good; superseded → good until its grace period ends (the same
// rule as Verify), then revoked with reason superseded at the grace end;
// revoked → revoked with its reason and time.
func effectiveStatus(status string, reason *string, revokedAt, graceUntil *time.Time, notBefore, now time.Time, log *logrus.Entry) certState {
	switch status {
	case CertIssued:
		return certState{status: ocsp.Good}
	case CertSuperseded:
		if graceUntil != nil && now.Before(*graceUntil) {
			return certState{status: ocsp.Good, goodUntil: graceUntil.UTC()}
		}
		at := notBefore // a superseded row without grace end: never verified after rotation
		if graceUntil != nil {
			at = *graceUntil
		}
		return certState{status: ocsp.Revoked, reason: ocsp.Superseded, revokedAt: at.UTC()}
	}
	st := certState{status: ocsp.Revoked, reason: ocsp.Unspecified, revokedAt: notBefore.UTC()}
	if status != CertRevoked {
		log.WithField("status", status).Error("unexpected certificate status; treated as revoked")
	}
	if revokedAt != nil {
		st.revokedAt = revokedAt.UTC()
	}
	if reason != nil {
		code, err := ca.ReasonCode(*reason)
		if err != nil {
			log.WithField("reason", *reason).Error("unexpected revocation reason; published as unspecified")
		} else {
			st.reason = code
		}
	}
	return st
}

// certificateState reads one certificate's row by serial (primary key) and
// returns its state at now as r states it; serials r never issued have
// status ocsp.Unknown.
func (s *revocationService) certificateState(ctx context.Context, r *responder, serial string, now time.Time) (certState, error) {
	var row struct {
		Serial     string     `db:"serial"`
		Status     string     `db:"status"`
		Reason     *string    `db:"revocation_reason"`
		RevokedAt  *time.Time `db:"revoked_at"`
		GraceUntil *time.Time `db:"grace_until"`
		NotBefore  time.Time  `db:"not_before"`
		NotAfter   time.Time  `db:"not_after"`
		Issuer     *string    `db:"issuer_key_id"`
	}
	// Both spellings: a replica older than migration 004, still running during a
	// rolling upgrade, writes serials without their leading zero nibble.
	err := s.db.GetContext(ctx, &row, s.db.Rebind(`SELECT serial, status, revocation_reason, revoked_at, grace_until, not_before, not_after, issuer_key_id
		FROM certificates WHERE serial IN (?, ?)`), serial, strings.TrimPrefix(serial, "0"))
	if err != nil {
		if err = dbErr("ocsp: reading certificate status", err); errors.Is(err, ErrNotFound) {
			return s.serverCertificateState(ctx, r, serial, now)
		}
		return certState{}, err
	}
	issuer := ""
	if row.Issuer != nil {
		issuer = *row.Issuer
	} else if issuer, err = s.store.issuerOf(ctx, row.Serial); err != nil {
		return certState{}, err // a row from a replica older than migration 007
	}
	if issuer != r.keyID {
		return certState{status: ocsp.Unknown}, nil // another CA's serial
	}
	st := effectiveStatus(row.Status, row.Reason, row.RevokedAt, row.GraceUntil, row.NotBefore, now, s.log)
	if ca, revoked := s.arl.revoked(r.keyID); revoked {
		st = ca.overrides(st)
	}
	st.notAfter = row.NotAfter.UTC()
	return st, nil
}

// serverCertificateState is certificateState for the registry's own TLS
// server certificates (servercert.go): an issued one is good until it
// expires (they are never revoked; a new one replaces it), unless its issuer
// was revoked by its root; anything else is unknown, as for agent serials.
func (s *revocationService) serverCertificateState(ctx context.Context, r *responder, serial string, now time.Time) (certState, error) {
	var row struct {
		Issuer    string    `db:"issuer_key_id"`
		NotBefore time.Time `db:"not_before"`
		NotAfter  time.Time `db:"not_after"`
	}
	err := s.db.GetContext(ctx, &row, s.db.Rebind(`SELECT issuer_key_id, not_before, not_after FROM server_certificates
		WHERE serial IN (?, ?) AND state = 'issued'`), serial, strings.TrimPrefix(serial, "0"))
	if err = dbErr("ocsp: reading server certificate status", err); errors.Is(err, ErrNotFound) || (err == nil && row.Issuer != r.keyID) {
		return certState{status: ocsp.Unknown}, nil
	} else if err != nil {
		return certState{}, err
	}
	st := certState{status: ocsp.Good, notAfter: row.NotAfter.UTC()}
	if ca, revoked := s.arl.revoked(r.keyID); revoked {
		st = ca.overrides(st)
	}
	return st, nil
}

// ---------------------------------------------------------------------------
// OCSP

// issuerHashes are the CertID hashes (RFC 6960 4.1.1) of the issuing CA.
type issuerHashes struct{ name, key []byte }

// certIDHashAlgs are the request hash algorithms golang.org/x/crypto/ocsp
// parses.
func certIDHashAlgs() []crypto.Hash {
	return []crypto.Hash{crypto.SHA1, crypto.SHA256, crypto.SHA384, crypto.SHA512}
}

// hashName is how ocsp_responses.hash_alg names h.
func hashName(h crypto.Hash) string {
	switch h {
	case crypto.SHA1:
		return "sha1"
	case crypto.SHA256:
		return "sha256"
	case crypto.SHA384:
		return "sha384"
	case crypto.SHA512:
		return "sha512"
	}
	return h.String()
}

func newHash(h crypto.Hash) hash.Hash {
	switch h {
	case crypto.SHA1:
		return sha1.New() //nolint:gosec // CertID hash, see import
	case crypto.SHA256:
		return sha256.New()
	case crypto.SHA384:
		return sha512.New384()
	case crypto.SHA512:
		return sha512.New()
	}
	return nil
}

// certIDHashes computes issuerNameHash (over the DER subject) and
// issuerKeyHash (over the subjectPublicKey BIT STRING value) of issuer.
func certIDHashes(issuer *x509.Certificate) (map[crypto.Hash]issuerHashes, error) {
	var spki struct {
		Algorithm pkix.AlgorithmIdentifier
		PublicKey asn1.BitString
	}
	if _, err := asn1.Unmarshal(issuer.RawSubjectPublicKeyInfo, &spki); err != nil {
		return nil, fmt.Errorf("registry: ocsp: parsing issuer public key: %w", err)
	}
	out := map[crypto.Hash]issuerHashes{}
	for _, h := range certIDHashAlgs() {
		n, k := newHash(h), newHash(h)
		n.Write(issuer.RawSubject)
		k.Write(spki.PublicKey.RightAlign())
		out[h] = issuerHashes{name: n.Sum(nil), key: k.Sum(nil)}
	}
	return out, nil
}

// ocspVerdict is the outcome of checking a request before any lookup.
type ocspVerdict int

const (
	ocspOK           ocspVerdict = iota
	ocspMalformed                // unparsable, or a serial RFC 5280 forbids
	ocspUnauthorized             // a CA other than ours
)

// parseOCSPRequest parses an untrusted DER request and checks that it asks
// about a certificate of the CA with the given CertID hashes. It never fails
// otherwise.
func parseOCSPRequest(raw []byte, hashes map[crypto.Hash]issuerHashes) (*ocsp.Request, ocspVerdict) {
	req, verdict := parseOCSPRequestOnly(raw)
	if verdict != ocspOK {
		return nil, verdict
	}
	if !hashesMatch(req, hashes) {
		return nil, ocspUnauthorized
	}
	return req, ocspOK
}

// matchOCSPRequest parses an untrusted DER request and picks the responder
// whose CertID hashes it names.
func matchOCSPRequest(raw []byte, rs map[string]*responder) (*ocsp.Request, *responder, ocspVerdict) {
	req, verdict := parseOCSPRequestOnly(raw)
	if verdict != ocspOK {
		return nil, nil, verdict
	}
	for _, r := range rs {
		if hashesMatch(req, r.hashes) {
			return req, r, ocspOK
		}
	}
	return nil, nil, ocspUnauthorized
}

func parseOCSPRequestOnly(raw []byte) (*ocsp.Request, ocspVerdict) {
	if len(raw) == 0 || len(raw) > MaxOCSPRequestSize {
		return nil, ocspMalformed
	}
	req, err := ocsp.ParseRequest(raw)
	if err != nil || req == nil || req.SerialNumber == nil {
		return nil, ocspMalformed
	}
	if req.SerialNumber.Sign() <= 0 || len(req.SerialNumber.Bytes()) > 20 {
		return nil, ocspMalformed
	}
	return req, ocspOK
}

func hashesMatch(req *ocsp.Request, hashes map[crypto.Hash]issuerHashes) bool {
	want, ok := hashes[req.HashAlgorithm]
	return ok && subtle.ConstantTimeCompare(req.IssuerNameHash, want.name) == 1 && subtle.ConstantTimeCompare(req.IssuerKeyHash, want.key) == 1
}

// ocsp answers a DER OCSP request with a DER OCSP response: good, revoked
// (reason and time; superseded certificates after their grace period as
// revoked/superseded) or, for serials never issued, unknown. A malformed
// request gets malformedRequest and a request for another CA unauthorized
// (both unsigned, RFC 6960 2.3); neither is an error. The error is only for
// a database or token failure (ErrUnavailable and friends). The returned
// slice may be shared with other callers: do not modify it.
func (s *revocationService) ocsp(ctx context.Context, raw []byte) ([]byte, error) {
	req, r, verdict := matchOCSPRequest(raw, s.responders)
	switch verdict {
	case ocspMalformed:
		return slices.Clone(ocsp.MalformedRequestErrorResponse), nil
	case ocspUnauthorized:
		return slices.Clone(ocsp.UnauthorizedErrorResponse), nil
	}
	serial := ca.FormatSerial(req.SerialNumber) // "" (unknown) for a zero or negative serial
	now := s.now()
	// The revision is read before the row: a cached answer tagged with it
	// is as new as the row read (a later change moves the revision).
	seq, live, err := s.currentSeq(ctx)
	if err != nil {
		return nil, err
	}
	if err := s.arl.syncAt(ctx, s.db, seq); err != nil {
		return nil, err
	}
	key := ocspKey{issuer: r.keyID, serial: serial, alg: req.HashAlgorithm}
	if e := s.cache.get(key); live && e != nil && e.seq == seq && e.state.status != ocsp.Unknown && now.Before(e.refreshAt) {
		return e.der, nil // nothing changed anywhere since it was checked: no database read
	}
	st, err := s.certificateState(ctx, r, serial, now)
	if err != nil {
		return nil, err
	}
	if e := s.cache.get(key); e != nil && e.state.same(st) && now.Before(e.refreshAt) {
		if e.seq != seq {
			s.cache.put(&ocspEntry{key: e.key, state: e.state, der: e.der, refreshAt: e.refreshAt, seq: seq})
		}
		return e.der, nil
	}
	v, err, _ := s.flight.Do("ocsp|"+r.keyID+"|"+serial+"|"+hashName(req.HashAlgorithm)+"|"+st.flightKey(), func() (any, error) {
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), revocationFlightTimeout)
		defer cancel()
		return s.ocspResponse(fctx, r, key, req.SerialNumber, st, seq)
	})
	if err != nil {
		return nil, err
	}
	return v.([]byte), nil
}

// ocspResponse returns a response stating st for key: from the cache, from
// ocsp_responses, or freshly signed (and then stored and cached).
func (s *revocationService) ocspResponse(ctx context.Context, r *responder, key ocspKey, serial *big.Int, st certState, seq int64) ([]byte, error) {
	now := s.now()
	if e := s.cache.get(key); e != nil && e.state.same(st) && now.Before(e.refreshAt) {
		return e.der, nil // a flight that ended just before ours cached it
	}
	algName := hashName(key.alg)
	if st.status == ocsp.Unknown {
		if s.unknown == nil || !s.unknown.Allow() {
			return slices.Clone(ocsp.UnauthorizedErrorResponse), nil
		}
	} else {
		var row struct {
			Status     string     `db:"status"`
			Reason     int        `db:"reason"`
			RevokedAt  *time.Time `db:"revoked_at"`
			GraceUntil *time.Time `db:"grace_until"`
			DER        []byte     `db:"der"`
			ThisUpdate time.Time  `db:"this_update"`
			NextUpdate time.Time  `db:"next_update"`
		}
		err := s.db.GetContext(ctx, &row, s.db.Rebind(`SELECT status, reason, revoked_at, grace_until, der, this_update, next_update
			FROM ocsp_responses WHERE serial = ? AND hash_alg = ?`), key.serial, algName)
		if err = dbErr("ocsp: reading stored response", err); err != nil && !errors.Is(err, ErrNotFound) {
			return nil, err
		}
		if err == nil {
			stored := certState{status: ocsp.Good, reason: row.Reason, notAfter: st.notAfter}
			if row.Status == "revoked" {
				stored.status = ocsp.Revoked
			}
			if row.RevokedAt != nil {
				stored.revokedAt = row.RevokedAt.UTC()
			}
			if row.GraceUntil != nil {
				stored.goodUntil = row.GraceUntil.UTC()
			}
			e := &ocspEntry{key: key, state: stored, der: row.DER, refreshAt: refreshPoint(row.ThisUpdate, row.NextUpdate), seq: seq}
			if stored.same(st) && now.Before(e.refreshAt) {
				s.cache.put(e)
				return e.der, nil
			}
		}
	}
	// Sign a new response.
	this := now.Truncate(time.Second)
	next := this.Add(s.cfg.OCSPValidity)
	if !st.goodUntil.IsZero() && next.After(st.goodUntil) {
		// Never vouch for a superseded certificate past its grace end.
		next = st.goodUntil.Truncate(time.Second)
		if !next.After(this) {
			next = this.Add(time.Second)
		}
	}
	tmpl := ocsp.Response{Status: st.status, SerialNumber: serial, IssuerHash: key.alg, ThisUpdate: this, NextUpdate: next}
	if st.status == ocsp.Revoked {
		tmpl.RevokedAt, tmpl.RevocationReason = st.revokedAt, st.reason
	}
	der, err := r.ca.SignOCSP(tmpl)
	if err != nil {
		return nil, fmt.Errorf("registry: ocsp: signing: %w: %v", ErrUnavailable, err)
	}
	e := &ocspEntry{key: key, state: st, der: der, refreshAt: refreshPoint(this, next), seq: seq}
	if st.status != ocsp.Unknown {
		status := "good"
		if st.status == ocsp.Revoked {
			status = "revoked"
		}
		var revokedAt, goodUntil *time.Time
		if !st.revokedAt.IsZero() {
			t := dbTime(st.revokedAt)
			revokedAt = &t
		}
		if !st.goodUntil.IsZero() {
			t := dbTime(st.goodUntil)
			goodUntil = &t
		}
		if _, err := s.db.ExecContext(ctx, s.db.Rebind(`INSERT INTO ocsp_responses
			(serial, hash_alg, status, reason, revoked_at, grace_until, der, this_update, next_update, not_after)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (serial, hash_alg) DO UPDATE SET status = excluded.status, reason = excluded.reason,
				revoked_at = excluded.revoked_at, grace_until = excluded.grace_until, der = excluded.der,
				this_update = excluded.this_update, next_update = excluded.next_update, not_after = excluded.not_after`),
			key.serial, algName, status, st.reason, revokedAt, goodUntil, der, dbTime(this), dbTime(next), dbTime(st.notAfter)); err != nil {
			// The response is valid; other replicas will sign their own.
			s.log.WithError(dbErr("ocsp: storing response", err)).WithField("serial", key.serial).Warn("storing OCSP response")
		}
	}
	s.cache.put(e)
	return der, nil
}

// DecodeOCSPGet decodes the {req} path element of GET /v1/ocsp/{req} (RFC
// 6960 appendix A.1: the URL-encoding of the base64 of the DER request) into
// the DER request. It accepts the element still URL-encoded or already
// decoded, standard base64 with or without padding, and '+' mangled into ' '
// by form decoding. Errors wrap ErrInvalid; the api layer then answers what
// OCSP(ctx, nil) returns (malformedRequest).
func DecodeOCSPGet(path string) ([]byte, error) {
	return decodeOCSPGet(path)
}

func decodeOCSPGet(path string) ([]byte, error) {
	if path == "" || len(path) > maxOCSPGetPathSize {
		return nil, invalid("ocsp request path empty or too long", nil)
	}
	p, err := url.PathUnescape(path)
	if err != nil {
		return nil, invalid("ocsp request path is not URL-encoded", nil)
	}
	p = strings.ReplaceAll(p, " ", "+")
	der, err := base64.StdEncoding.DecodeString(p)
	if err != nil {
		der, err = base64.RawStdEncoding.DecodeString(p)
	}
	if err != nil || len(der) == 0 || len(der) > MaxOCSPRequestSize {
		return nil, invalid("ocsp request path is not base64 of a request", nil)
	}
	return der, nil
}

// ---------------------------------------------------------------------------
// The bounded in-process cache of signed OCSP responses.

type ocspKey struct {
	issuer string // the responder's key id
	serial string
	alg    crypto.Hash
}

type ocspEntry struct {
	key       ocspKey
	state     certState
	der       []byte // shared, never modified
	refreshAt time.Time
	seq       int64 // the revocation revision read before the row that state came from
}

// ocspCache is an LRU map of at most max entries.
type ocspCache struct {
	mu  sync.Mutex
	max int
	ll  *list.List // of *ocspEntry, most recent first
	m   map[ocspKey]*list.Element
}

func newOCSPCache(max int) *ocspCache {
	return &ocspCache{max: max, ll: list.New(), m: make(map[ocspKey]*list.Element)}
}

func (c *ocspCache) get(k ocspKey) *ocspEntry {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.m[k]
	if !ok {
		return nil
	}
	c.ll.MoveToFront(el)
	return el.Value.(*ocspEntry)
}

func (c *ocspCache) put(e *ocspEntry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.m[e.key]; ok {
		el.Value = e
		c.ll.MoveToFront(el)
		return
	}
	c.m[e.key] = c.ll.PushFront(e)
	for c.ll.Len() > c.max {
		last := c.ll.Back()
		c.ll.Remove(last)
		delete(c.m, last.Value.(*ocspEntry).key)
	}
}

func (c *ocspCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ll.Len()
}

// CRL returns the current full CRL of the issuing CA (DER, for GET /v1/crl
// as application/pkix-crl) and its nextUpdate. A revocation committed on any
// replica is in the very next CRL returned by any replica, so HTTP caches
// must not keep it long: serve it with a short max-age (≤ 1 s) or an ETag,
// and nextUpdate as Expires. ErrUnavailable without an issuer or when the
// database or token fails.
func (r *Registry) CRL(ctx context.Context) ([]byte, time.Time, error) {
	if r.revocation == nil {
		return nil, time.Time{}, fmt.Errorf("registry: crl: no issuer configured: %w", ErrUnavailable)
	}
	return r.revocation.crl(ctx)
}

// OCSP answers a DER OCSP request (POST body, or DecodeOCSPGet of the GET
// path; at most MaxOCSPRequestSize bytes) with a DER OCSP response
// (application/ocsp-response, HTTP 200): good, revoked with reason and time,
// or unknown, pre-signed and cached; malformedRequest and unauthorized are
// responses too, not errors. The error is only for a database or token
// failure (ErrUnavailable), never for client input.
func (r *Registry) OCSP(ctx context.Context, req []byte) ([]byte, error) {
	if r.revocation == nil {
		return nil, fmt.Errorf("registry: ocsp: no issuer configured: %w", ErrUnavailable)
	}
	return r.revocation.ocsp(ctx, req)
}

// RefreshRevocation renews the CRL when a revocation happened or 2/3 of its
// validity passed, and prunes stored OCSP responses of expired
// certificates. Call it from a ticker (every 10–60 s) in `atr serve`; safe
// on every replica at once.
func (r *Registry) RefreshRevocation(ctx context.Context) error {
	if r.revocation == nil {
		return nil
	}
	return r.revocation.refresh(ctx)
}
