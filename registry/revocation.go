package registry

// Revocation channels: the full CRL (RFC 5280, crl.go) and OCSP (RFC 6960,
// ocsp.go), both signed through the token, one responder per issuing CA.
// What they state about a certificate is the status rule of status.go,
// which Verify applies too.
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
// triggers of migration 002, so no code path can forget it). The CRL
// (crl.go) and the OCSP answers (ocsp.go) are tagged with the revision they
// were made at, so a revocation committed on any replica is in the very next
// CRL or OCSP answer of any replica.

import (
	"context"
	"crypto" //nolint:gosec // OCSP CertID hashes: SHA-1 is what most clients send (RFC 6960 4.1.1)
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/sirupsen/logrus"
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
	// ocspHits and ocspReads count OCSP answers made without a database
	// read and with one (atr_ocsp_status_lookups_total).
	ocspHits, ocspReads atomic.Int64
	arl                 *arlState // root CRLs and the intermediates they revoke
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
	making  sync.Mutex // held while this process makes or adopts a CRL of this CA (loadOrMakeCRL)
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
	err := s.store.execStatement(ctx, "revocation: pruning OCSP responses", `DELETE FROM ocsp_responses WHERE not_after < ?`, dbTime(s.now()))
	return errors.Join(append(errs, err)...)
}

// sync returns the current revocation revision, reloading the root CRLs
// when one was published since they were last read.
func (s *revocationService) sync(ctx context.Context) (int64, error) {
	rev, _, err := s.currentRevision(ctx)
	if err != nil {
		return 0, err
	}
	if err := s.arl.syncAt(ctx, s.db, rev); err != nil {
		return 0, err
	}
	return rev.seq, nil
}

// syncRootCRLs brings the root CRLs up to date, as sync does, for the
// callers that need nothing else (an issuance's check of its issuing CA,
// a root's CRL): while the notifier's root CRL revision is live and the
// root CRLs were loaded at it, nothing is read. In a fleet that rotates,
// every rotation moves the revocation revision and leaves it not live
// until the notifier's next read; before, an issuance in that window read
// revocation_state (TestIssuanceReadsNoRootCRLRevision).
//
// Without a live root CRL revision both revisions are read from the
// database, never taken from the notifier: a root CRL just published
// through this process's Store (which also moves seq) has cleared the one,
// but the revocation revision may still be live with the value before it.
func (s *revocationService) syncRootCRLs(ctx context.Context) error {
	if s.notify != nil {
		if crls, live := s.notify.rootCRLSeq(); live && s.arl.loadedAt(crls) {
			return nil
		}
	}
	rev, err := readRevision(ctx, s.db)
	if err != nil {
		return err
	}
	return s.arl.syncAt(ctx, s.db, rev)
}

// revision is revocation_state: seq moves with every revocation-relevant
// change, rootCRLs (root_crl_seq, migration 010) with every new root CRL
// only; -1 when it was not read.
type revision struct{ seq, rootCRLs int64 }

// currentRevision returns the current revocation revision: the notifier's
// seq when it is live (no database read; live reports that; rootCRLs is
// then -1), else both read from the database in one statement.
func (s *revocationService) currentRevision(ctx context.Context) (rev revision, live bool, err error) {
	if s.notify != nil {
		if seq, live := s.notify.revocationSeq(); live {
			return revision{seq: seq, rootCRLs: -1}, true, nil
		}
	}
	rev, err = readRevision(ctx, s.db)
	return rev, false, err
}

func (s *revocationService) revocationSeq(ctx context.Context, q sqlx.QueryerContext) (int64, error) {
	rev, err := readRevision(ctx, q)
	return rev.seq, err
}

func readRevision(ctx context.Context, q sqlx.QueryerContext) (revision, error) {
	var row struct {
		Seq      int64 `db:"seq"`
		RootCRLs int64 `db:"root_crl_seq"`
	}
	if err := sqlx.GetContext(ctx, q, &row, `SELECT seq, root_crl_seq FROM revocation_state WHERE id = $1`, singletonID); err != nil {
		return revision{}, dbErr("revocation: reading revision", err)
	}
	return revision{seq: row.Seq, rootCRLs: row.RootCRLs}, nil
}

// loadOrMakeCRL adopts the stored CRL of r if another replica made a fresh
// one, else regenerates it under r's crl_issuers row lock.

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
