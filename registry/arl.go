package registry

// Root CRLs (ARLs): CRLs signed by a root in a key ceremony (`atr ceremony
// root-crl`), listing the intermediates that root revoked. They are stored
// in root_crls (migration 007), served at /v1/crl/{root key id} (the URL in
// the intermediates' CRL distribution point) and applied by every replica:
// a revoked intermediate's leaves are revoked on its CRL and in OCSP,
// Verify refuses them, issuance under it stops and the bundles drop it.

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/sirupsen/logrus"

	"github.com/agent-trust-registry/atr/ca"
)

// revokedCA is an intermediate a root CRL lists.
type revokedCA struct {
	keyID  string // the intermediate's subject key identifier, hex
	serial string
	at     time.Time
	reason int // the root CRL's reason code for the intermediate
}

// rootCRL is the newest stored CRL of one root.
type rootCRL struct {
	der        []byte
	number     *big.Int
	nextUpdate time.Time
	// crl is der parsed, its signature checked under root: a reload that
	// finds the same DER for the same root does not parse and check it
	// again (every rotation moves the revocation revision).
	crl  *x509.RevocationList
	root *x509.Certificate
}

// arlState is what this replica knows of the root CRLs, reloaded whenever
// the revocation revision changes (a new root CRL bumps it).
type arlState struct {
	log *logrus.Entry

	// reload serializes the reads of the root CRLs and their installation,
	// so that a reload never installs rows older than those another one
	// installed (each reads after the one before it ended).
	reload sync.Mutex

	mu sync.RWMutex
	// seq: the revocation revision the root CRLs were last found current
	// at; crlSeq: the root CRLs' own revision (root_crl_seq) they were
	// loaded at. -1: never.
	seq, crlSeq int64
	roots       map[string]*x509.Certificate // trust anchors by key id
	inters      []*x509.Certificate          // every known intermediate
	crls        map[string]rootCRL           // by root key id
	revokedCAs  map[string]revokedCA         // by intermediate key id
}

func newARLState(log *logrus.Entry) *arlState {
	return &arlState{log: log, seq: -1, crlSeq: -1, roots: map[string]*x509.Certificate{}, crls: map[string]rootCRL{}, revokedCAs: map[string]revokedCA{}}
}

// setCAs gives the roots whose CRLs count and the intermediates they may
// revoke, and forces a reload.
func (a *arlState) setCAs(roots, intermediates []*x509.Certificate) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, r := range roots {
		a.roots[ca.KeyID(r)] = r
	}
	a.inters = append(a.inters, intermediates...)
	a.seq, a.crlSeq = -1, -1
}

// revoked reports whether a root CRL revoked the intermediate with key id
// keyID, as of the last sync.
func (a *arlState) revoked(keyID string) (revokedCA, bool) {
	a.mu.RLock()
	defer a.mu.RUnlock()
	c, ok := a.revokedCAs[keyID]
	return c, ok
}

// rootCRL returns the newest CRL of the root with key id keyID.
func (a *arlState) rootCRL(keyID string) (rootCRL, bool) {
	a.mu.RLock()
	defer a.mu.RUnlock()
	c, ok := a.crls[keyID]
	return c, ok
}

// loadedAt reports whether the root CRLs were loaded at root_crl_seq crls.
func (a *arlState) loadedAt(crls int64) bool {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return a.crlSeq >= 0 && a.crlSeq == crls
}

// syncAt brings the root CRLs up to revision rev. Nothing is read when they
// were found current at rev.seq; else the root CRLs' own revision
// (rev.rootCRLs, read here when -1) tells whether one was published since
// they were loaded — every revocation and rotation moves rev.seq, a root CRL
// rarely — and only then are they read again.
func (a *arlState) syncAt(ctx context.Context, q sqlx.QueryerContext, rev revision) error {
	a.mu.RLock()
	seq, crlSeq := a.seq, a.crlSeq
	a.mu.RUnlock()
	if seq == rev.seq {
		return nil
	}
	if rev.rootCRLs < 0 {
		// Read after rev.seq was: as new as it, or newer.
		if err := sqlx.GetContext(ctx, q, &rev.rootCRLs, `SELECT root_crl_seq FROM revocation_state WHERE id = $1`, singletonID); err != nil {
			return dbErr("root CRL: reading revision", err)
		}
	}
	if rev.rootCRLs == crlSeq {
		a.mu.Lock()
		if a.crlSeq == crlSeq {
			a.seq = rev.seq
		}
		a.mu.Unlock()
		return nil
	}
	a.reload.Lock()
	defer a.reload.Unlock()
	// Read after their revision was: as new as it, or newer (a newer one
	// only makes the next sync read them again), and after every earlier
	// reload installed what it read.
	rows, err := latestRootCRLs(ctx, q)
	if err != nil {
		return err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	crls := map[string]rootCRL{}
	revoked := map[string]revokedCA{}
	for _, row := range rows {
		root := a.roots[row.Root]
		crl := a.crls[row.Root].crl
		if had := a.crls[row.Root]; crl == nil || had.root != root || !bytes.Equal(had.der, row.DER) {
			var err error
			if crl, err = checkRootCRL(row.DER, root); err != nil {
				// Only PublishRootCRL writes the table, after the same check.
				a.log.WithError(err).WithField("root", row.Root).Error("stored root CRL does not verify; ignored")
				continue
			}
		}
		crls[row.Root] = rootCRL{der: row.DER, number: crl.Number, nextUpdate: crl.NextUpdate.UTC(), crl: crl, root: root}
		for _, e := range crl.RevokedCertificateEntries {
			for _, in := range a.inters {
				if in.SerialNumber.Cmp(e.SerialNumber) == 0 && bytes.Equal(in.AuthorityKeyId, root.SubjectKeyId) {
					revoked[ca.KeyID(in)] = revokedCA{keyID: ca.KeyID(in), serial: ca.FormatSerial(in.SerialNumber), at: e.RevocationTime.UTC(), reason: e.ReasonCode}
				}
			}
		}
	}
	for k, c := range revoked {
		if _, was := a.revokedCAs[k]; !was {
			a.log.WithFields(logrus.Fields{"intermediate": k, "serial": c.serial, "revoked_at": c.at.Format(time.RFC3339)}).Warn("intermediate revoked by its root: its leaves are no longer trusted")
		}
	}
	a.crls, a.revokedCAs, a.seq, a.crlSeq = crls, revoked, rev.seq, rev.rootCRLs
	return nil
}

type rootCRLRow struct {
	Root string `db:"root_key_id"`
	DER  []byte `db:"der"`
}

func latestRootCRLs(ctx context.Context, q sqlx.QueryerContext) ([]rootCRLRow, error) {
	var rows []rootCRLRow
	err := sqlx.SelectContext(ctx, q, &rows, `SELECT c.root_key_id, c.der FROM root_crls c
		JOIN (SELECT root_key_id, MAX(number) AS n FROM root_crls GROUP BY root_key_id) m
		ON c.root_key_id = m.root_key_id AND c.number = m.n`)
	return rows, dbErr("root CRL: reading", err)
}

// rootCRLChecks counts checkRootCRL's signature checks (tests).
var rootCRLChecks atomic.Int64

// checkRootCRL parses der and checks that root signed it.
func checkRootCRL(der []byte, root *x509.Certificate) (*x509.RevocationList, error) {
	rootCRLChecks.Add(1)
	if root == nil {
		return nil, errors.New("not signed by a known root")
	}
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		return nil, fmt.Errorf("parsing: %w", err)
	}
	if err := crl.CheckSignatureFrom(root); err != nil {
		return nil, fmt.Errorf("signature: %w", err)
	}
	if crl.Number == nil || crl.Number.Sign() <= 0 {
		return nil, errors.New("no positive CRL number")
	}
	return crl, nil
}

// PublishRootCRL stores der, a CRL signed by one of roots (a root key
// ceremony's output), as that root's current CRL. It refuses (ErrInvalid) a
// CRL no root signed, one without a CRL number, and (ErrConflict) one whose
// number is not above every stored CRL of that root, so numbers stay
// monotonic and an older list can never replace a newer one. It returns the
// root's key id. Every replica applies it at its next revision.
func (s *Store) PublishRootCRL(ctx context.Context, der []byte, roots []*x509.Certificate) (string, error) {
	var root *x509.Certificate
	var crl *x509.RevocationList
	for _, r := range roots {
		if c, err := checkRootCRL(der, r); err == nil {
			root, crl = r, c
			break
		}
	}
	if root == nil {
		return "", invalid("root CRL: not a CRL signed by a trusted root", nil)
	}
	keyID := ca.KeyID(root)
	if !crl.Number.IsInt64() {
		return "", invalid("root CRL: CRL number too large", nil)
	}
	number := crl.Number.Int64()
	s.runRootCRLHooks(true)
	defer s.runRootCRLHooks(false)
	err := s.inTx(ctx, "root CRL: publishing", func(tx *sqlx.Tx) error {
		var max []int64
		if err := tx.SelectContext(ctx, &max, tx.Rebind(`SELECT number FROM root_crls WHERE root_key_id = ? ORDER BY number DESC LIMIT 1`+forUpdate(s.dialect)), keyID); err != nil {
			return dbErr("root CRL: reading", err)
		}
		if len(max) > 0 && number <= max[0] {
			return fmt.Errorf("registry: root CRL: number %d is not above the published %d: %w", number, max[0], bare(ErrConflict))
		}
		_, err := tx.ExecContext(ctx, tx.Rebind(`INSERT INTO root_crls (root_key_id, number, der, this_update, next_update, created_at) VALUES (?, ?, ?, ?, ?, ?)`),
			keyID, number, der, dbTime(crl.ThisUpdate), dbTime(crl.NextUpdate), dbTime(time.Now()))
		return dbErr("root CRL: storing", err)
	})
	if err != nil {
		return "", err
	}
	return keyID, nil
}

// LatestRootCRL returns the published CRL of the root with key id keyID
// (DER), or ErrNotFound.
func (s *Store) LatestRootCRL(ctx context.Context, keyID string) ([]byte, error) {
	var der []byte
	err := s.db.GetContext(ctx, &der, s.db.Rebind(`SELECT der FROM root_crls WHERE root_key_id = ? ORDER BY number DESC LIMIT 1`), keyID)
	return der, dbErr("root CRL: reading", err)
}

// errUnparsableDER marks a certificate row whose stored DER does not parse.
var errUnparsableDER = errors.New("stored DER does not parse")

// issuerOf returns the issuer key id of the certificate with serial, from
// its DER, and stores it in the row (a row written before migration 007).
// A row whose DER does not parse is left as it is, with an error wrapping
// errUnparsableDER.
func (s *Store) issuerOf(ctx context.Context, serial string) (string, error) {
	der, err := certs(s.db).DER(ctx, serial)
	if err != nil {
		return "", err
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return "", fmt.Errorf("registry: certificate %s: %w: %v", serial, errUnparsableDER, err)
	}
	id := hex.EncodeToString(c.AuthorityKeyId)
	return id, s.inStatement(ctx, "certificate issuer", func(q sqlx.ExtContext) error {
		return certs(q).SetIssuer(ctx, serial, id)
	})
}

// BackfillIssuers fills the issuer key id of certificate rows that have none
// (written before migration 007, or by an older replica during a rolling
// upgrade) from their DER, and returns how many it filled. A row whose DER
// does not parse cannot name its CA: it gets the empty issuer (no CRL lists
// it, OCSP answers unknown for it) and a warning with its serial, status
// and expiry, and the backfill goes on with the other rows; before, the
// first such row stopped every backfill (and start-up) for good, leaving
// every row after it out of its CA's CRL. After a repair of such a row,
// setting its issuer_key_id back to NULL has the next backfill read it
// again (docs/operator.md, section 8). serve runs it at start-up and on
// every maintenance tick.
func (r *Registry) BackfillIssuers(ctx context.Context) (int, error) {
	n, bad := 0, 0
	for {
		serials, err := certs(r.store.db).WithoutIssuer(ctx, 500)
		if err != nil {
			return n, wrap("backfilling issuers", err)
		}
		if len(serials) == 0 {
			if bad > 0 {
				r.log.WithField("certificates", bad).Warn("certificates whose stored DER does not parse were recorded with no issuing CA: no CRL lists them")
			}
			return n, nil
		}
		for _, s := range serials {
			_, err := r.store.issuerOf(ctx, s)
			if errors.Is(err, errUnparsableDER) {
				err = r.store.inStatement(ctx, "certificate issuer", func(q sqlx.ExtContext) error {
					return certs(q).SetIssuer(ctx, s, "")
				})
				if err == nil {
					if bad++; bad <= maxUnparsableLogged {
						l := r.log.WithField("serial", s)
						if row, err := certs(r.store.db).Status(ctx, s); err == nil {
							l = l.WithFields(logrus.Fields{"status": row.Status, "not_after": row.NotAfter.UTC()})
						}
						l.Warn("certificate's stored DER does not parse: recorded with no issuing CA, so no CRL lists it")
					}
					continue
				}
			}
			if err != nil {
				return n, wrap("backfilling issuers", err)
			}
			n++
		}
	}
}

// maxUnparsableLogged bounds the warnings one backfill writes, one per row
// whose DER does not parse; the count of them all follows.
const maxUnparsableLogged = 10

// rootCRL returns the published CRL of the root with key id keyID (DER)
// and its nextUpdate, as of the last revision this replica saw; ErrNotFound
// when that root published none.
func (r *Registry) rootCRL(ctx context.Context, keyID string) ([]byte, time.Time, error) {
	if r.revocation == nil {
		return nil, time.Time{}, fmt.Errorf("registry: crl: no issuer configured: %w", bare(ErrUnavailable))
	}
	if err := r.revocation.syncRootCRLs(ctx); err != nil {
		return nil, time.Time{}, err
	}
	c, ok := r.revocation.arl.rootCRL(keyID)
	if !ok {
		return nil, time.Time{}, fmt.Errorf("registry: crl: no CRL for %q: %w", keyID, bare(ErrNotFound))
	}
	return c.der, c.nextUpdate, nil
}

// CRLOf returns the current CRL (DER) of the CA with subject key identifier
// keyID (lowercase hex) and its nextUpdate: an issuing CA's CRL of agent
// certificates (made per issuer, for the current and every earlier issuing
// CA still valid), or a root's published CRL of intermediates. ErrNotFound
// for any other key id.
func (r *Registry) CRLOf(ctx context.Context, keyID string) ([]byte, time.Time, error) {
	if r.revocation == nil {
		return nil, time.Time{}, fmt.Errorf("registry: crl: no issuer configured: %w", bare(ErrUnavailable))
	}
	if resp, ok := r.revocation.responders[keyID]; ok {
		return r.revocation.crlOf(ctx, resp)
	}
	return r.rootCRL(ctx, keyID)
}

// CRLNextUpdate returns the nextUpdate of the CRL CRLOf serves for keyID
// ("" for the current issuing CA) without making a new one — for metrics:
// an issuing CA's stored CRL (one is made only when none was stored yet;
// while the revocation state changed since it was made, the next fetch
// replaces it with a later nextUpdate), or a root's published CRL.
func (r *Registry) CRLNextUpdate(ctx context.Context, keyID string) (time.Time, error) {
	if r.revocation == nil {
		return time.Time{}, fmt.Errorf("registry: crl: no issuer configured: %w", bare(ErrUnavailable))
	}
	resp := r.revocation.current
	if keyID != "" {
		var ok bool
		if resp, ok = r.revocation.responders[keyID]; !ok {
			_, next, err := r.rootCRL(ctx, keyID)
			return next, err
		}
	}
	return r.revocation.storedNextUpdate(ctx, resp)
}

// issuerRevoked reports whether a root CRL revoked the CA with key id keyID,
// after syncing with the current revision.
func (r *Registry) issuerRevoked(ctx context.Context, keyID string) (bool, error) {
	if r.revocation == nil {
		return false, nil
	}
	if err := r.revocation.syncRootCRLs(ctx); err != nil {
		return false, err
	}
	_, revoked := r.revocation.arl.revoked(keyID)
	return revoked, nil
}

// revokedByRoot reports whether c is an intermediate a root CRL revoked.
func (r *Registry) revokedByRoot(c *x509.Certificate) bool {
	if r.revocation == nil || !c.IsCA {
		return false
	}
	_, revoked := r.revocation.arl.revoked(ca.KeyID(c))
	return revoked
}

// CRLKeyIDs returns the subject key identifiers (lowercase hex) of the CRLs
// this replica serves at /v1/crl/{key id}: its issuing CAs still valid, and
// the roots that published a CRL (as of the last revision it saw).
func (r *Registry) CRLKeyIDs() (issuers, roots []string) {
	if r.revocation == nil {
		return nil, nil
	}
	now := r.now()
	for id, resp := range r.revocation.responders {
		if now.Before(resp.ca.Certificate().NotAfter) {
			issuers = append(issuers, id)
		}
	}
	r.revocation.arl.mu.RLock()
	for id := range r.revocation.arl.crls {
		roots = append(roots, id)
	}
	r.revocation.arl.mu.RUnlock()
	slices.Sort(issuers)
	slices.Sort(roots)
	return issuers, roots
}
