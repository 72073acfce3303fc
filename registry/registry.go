package registry

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/sirupsen/logrus"
	"golang.org/x/mod/sumdb/note"

	"github.com/agent-trust-registry/atr/ca"
	"github.com/agent-trust-registry/atr/registry/translog"
)

// Scopes an API key may hold.
const (
	ScopeAgentsRead  = "agents:read"  // list and read own agents and their certificates
	ScopeAgentsWrite = "agents:write" // register, rotate, revoke own agents (implies agents:read)
	ScopeAdmin       = "admin"        // everything, all owners; API keys; audit trail
)

// Defaults for Config fields left zero.
const (
	DefaultRotationGrace   = 5 * time.Minute
	DefaultPendingTimeout  = 30 * time.Second
	DefaultAPIKeyLifetime  = 90 * 24 * time.Hour
	MaxAPIKeyLifetime      = 2 * 365 * 24 * time.Hour
	DefaultMaxAuthFailures = 10
	// MaxPEMSize caps every PEM document Verify accepts (SEC-006).
	MaxPEMSize = 64 << 10
)

// Config holds a Registry's dependencies. Store, TrustDomain and Log are
// required; the rest is optional.
type Config struct {
	// Store is the migrated database.
	Store *Store
	// Issuer signs agent certificates through the token. Without it Register
	// and Rotate fail with ErrUnavailable (e.g. `atr apikey create`).
	Issuer *ca.Issuer
	// Responders are the revocation responders of earlier issuing CAs whose
	// leaves may still be valid (intermediates replaced by a rotation, keys
	// still on the token): each keeps its own CRL and OCSP answers. The
	// Issuer's own responder is always there.
	Responders []*ca.Responder
	// Verifier builds chains to the token-held roots. Without it Verify and
	// AuthenticateAgent fail with ErrUnavailable.
	Verifier *ca.Verifier
	// TrustDomain is the SPIFFE trust domain of agent certificates.
	TrustDomain string
	// RotationGrace is how long a superseded certificate keeps verifying
	// after a rotation. Zero means DefaultRotationGrace; negative means none.
	RotationGrace time.Duration
	// PendingTimeout is how old a pending issuance must be before Reconcile
	// settles it; it must exceed the longest signing time of any replica.
	// Zero means DefaultPendingTimeout.
	PendingTimeout time.Duration
	// MaxAuthFailures: every this many wrong secrets for one API key are
	// reported in the log (a key is never locked; see Authenticate).
	// Zero means the defaults.
	MaxAuthFailures int
	// LogSigner and LogVerifier sign and check transparency log checkpoints
	// (a C2SP note key on the token); LogOrigin is the checkpoint origin line
	// (default "<trust domain>/log"); LogPublicKey is published by LogKeyPEM.
	LogSigner    note.Signer
	LogVerifier  note.Verifier
	LogOrigin    string
	LogPublicKey crypto.PublicKey
	// LogSignerEd25519, optional, is the log's Ed25519 key (signed-note type
	// 0x01, the one type every C2SP witness verifies) under the same key name
	// LogOrigin: when set, every checkpoint is signed by LogSigner and then by
	// it. LogPublicKeyEd25519 is its public key, published by LogVerifierKey.
	LogSignerEd25519    note.Signer
	LogPublicKeyEd25519 crypto.PublicKey
	// VRFSigner is the RSA key on the token that computes the name indexes of
	// log leaves (translog.VRFProve). Required for agent events.
	VRFSigner crypto.Signer
	// JWTSigner is the ECDSA P-256 key on the token that signs JWT-SVIDs
	// (ES256). Optional: while nil, no JWT-SVIDs are issued.
	// JWTPreviousKeys are the public keys of earlier JWT-SVID keys, still
	// published (JWKS, SPIFFE bundle) after a rotation but never signing.
	JWTSigner       crypto.Signer
	JWTPreviousKeys []crypto.PublicKey
	// CardSigner is the ECDSA P-256 key on the token that signs A2A agent
	// cards (ES256). Optional: while nil, no cards are signed.
	CardSigner crypto.Signer
	// Token reports token health for Ready. Optional.
	Token interface {
		Healthy(ctx context.Context) error
	}
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// Rand is the randomness for serials and API keys. Default crypto/rand.
	Rand io.Reader
	// Log receives operational logs (audit events go to the database).
	Log *logrus.Entry
	// Revocation tunes CRL/OCSP validity, the OCSP cache size and the
	// signing rate for unknown serials. Zero values mean the defaults.
	Revocation RevocationConfig
	// StatusCacheTTL is how long Verify may answer from a certificate
	// status this replica read earlier (see statuscache.go). Zero means
	// DefaultStatusCacheTTL, negative disables the cache; at most
	// MaxStatusCacheTTL, so a revocation on another replica shows within a
	// second.
	StatusCacheTTL time.Duration
}

// Registry is the agent lifecycle over a Store and an Issuer. Its methods are
// what the api package calls; each takes the authenticated caller (Actor)
// where authorization applies. A Registry is safe for concurrent use.
type Registry struct {
	cfg    Config
	store  *Store
	issuer *ca.Issuer
	// chainPEM is the issuer's chain as PEM (chainPEMOf), made once.
	chainPEM string
	verify   *ca.Verifier
	tlog     *transparencyLog
	// seal is tlog.sealBatch as installed on the Store (Store.sealLog).
	seal *func(ctx context.Context, tx *sqlx.Tx, early bool) batchSeal
	now  func() time.Time
	rand io.Reader
	log  *logrus.Entry
	// revocation serves CRL and OCSP; nil without an Issuer.
	revocation *revocationService
	// pendingPrune is where PrunePendingIssuances goes on (pendingprune.go).
	pendingPrune pendingPruner
	// checkpointPrune is where PruneCheckpoints goes on (checkpointprune.go).
	checkpointPrune checkpointPruner
	// status caches Verify's status lookups for a short while.
	status *statusCache
	// vrf caches the VRF proofs of agent names (logentry.go).
	vrf vrfCache
	// openKey is the MAC key of stored log openings (logentry.go).
	openKey openingKey
	// verifyProof is translog.VRFVerify (a test counts its calls).
	verifyProof func(pub crypto.PublicKey, trustDomain, name string, proof []byte) ([32]byte, error)
	// parsedPEM caches Verify's parsed inputs (verify.go).
	parsedPEM pemCache
	// verifyReceipts caches the receipts of VerifyWithReceipt (receipt.go).
	verifyReceipts receiptCache
	// proofHashes keeps the stored hashes receipts' proofs read
	// (proofhashes.go).
	proofHashes proofHashCache
	// notify tells of log growth and revocation changes on any replica
	// (notify.go); running between Start and Close.
	notify *notifier
	// keys caches the API keys Authenticate read (apikeys.go).
	keys keyCache
	// events is what the LogEvents calls share (events.go).
	events eventCache
}

// New checks cfg and returns a Registry.
func New(cfg Config) (*Registry, error) {
	if cfg.Store == nil {
		return nil, errors.New("registry: new: nil Store")
	}
	if cfg.Log == nil {
		return nil, errors.New("registry: new: nil Log")
	}
	if cfg.TrustDomain == "" {
		return nil, errors.New("registry: new: empty TrustDomain")
	}
	if cfg.RotationGrace == 0 {
		cfg.RotationGrace = DefaultRotationGrace
	} else if cfg.RotationGrace < 0 {
		cfg.RotationGrace = 0
	}
	switch {
	case cfg.StatusCacheTTL == 0:
		cfg.StatusCacheTTL = DefaultStatusCacheTTL
	case cfg.StatusCacheTTL > MaxStatusCacheTTL:
		return nil, fmt.Errorf("registry: new: StatusCacheTTL %v exceeds %v", cfg.StatusCacheTTL, MaxStatusCacheTTL)
	}
	if cfg.PendingTimeout <= 0 {
		cfg.PendingTimeout = DefaultPendingTimeout
	}
	if cfg.MaxAuthFailures <= 0 {
		cfg.MaxAuthFailures = DefaultMaxAuthFailures
	}
	if cfg.LogOrigin == "" {
		cfg.LogOrigin = cfg.TrustDomain + "/log"
	}
	if cfg.LogSigner != nil && cfg.VRFSigner == nil {
		return nil, errors.New("registry: new: LogSigner without VRFSigner")
	}
	if cfg.VRFSigner != nil {
		if _, err := translog.CheckVRFKey(cfg.VRFSigner.Public()); err != nil {
			return nil, fmt.Errorf("registry: new: VRFSigner: %w", err)
		}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Rand == nil {
		cfg.Rand = rand.Reader
	}
	log := cfg.Log.WithField("component", "registry")
	r := &Registry{
		cfg:    cfg,
		store:  cfg.Store,
		issuer: cfg.Issuer,
		verify: cfg.Verifier,
		now:    func() time.Time { return cfg.Now().UTC() },
		rand:   cfg.Rand,
		log:    log,

		verifyProof: translog.VRFVerify,
	}
	r.status = newStatusCache(cfg.StatusCacheTTL)
	r.verifyReceipts.maxAge = verifyReceiptMaxAge
	r.notify = newNotifier(cfg.Store, log.WithField("component", "notify"))
	r.tlog = newTransparencyLog(cfg.Store, cfg.LogSigner, cfg.LogVerifier, cfg.LogOrigin, log.WithField("component", "translog"))
	if cfg.LogSignerEd25519 != nil {
		if cfg.LogSignerEd25519.Name() != cfg.LogOrigin {
			return nil, fmt.Errorf("registry: new: LogSignerEd25519 key name %q is not the log origin %q", cfg.LogSignerEd25519.Name(), cfg.LogOrigin)
		}
		r.tlog.signerEd25519 = cfg.LogSignerEd25519
	}
	if cfg.Issuer != nil {
		r.chainPEM = chainPEMOf(cfg.Issuer)
		r.revocation = newRevocationService(cfg.Store, cfg.Issuer, cfg.Revocation, r.now, log.WithField("component", "revocation"), cfg.Responders...)
		r.revocation.notify = r.notify
		roots, inters := cfg.Issuer.Chain()[1:], []*x509.Certificate{cfg.Issuer.Certificate()}
		for _, resp := range cfg.Responders {
			inters = append(inters, resp.Certificate())
		}
		if cfg.Verifier != nil {
			roots, inters = append(roots, cfg.Verifier.Roots()...), append(inters, cfg.Verifier.Intermediates()...)
		}
		r.revocation.arl.setCAs(roots, inters)
	}
	// The first registry on a Store seals its batches of issuance commits
	// with its log's checkpoints (writer.go); Close takes it back.
	seal := r.tlog.sealBatch
	r.seal = &seal
	cfg.Store.sealLog.CompareAndSwap(nil, r.seal)
	return r, nil
}

// Actor is the authenticated caller of a lifecycle method. The api package
// builds it from a verified API key (Authenticate) or an mTLS agent
// certificate (AuthenticateAgent); it is trusted input.
type Actor struct {
	KeyID, Owner, Namespace string   // from the API key; Namespace is the name suffix it may use
	Scopes                  []string // ScopeAgentsRead, ScopeAgentsWrite, ScopeAdmin
	AgentName               string   // set instead of KeyID when the caller is an agent over mTLS
	IP, RequestID           string
}

// SystemActor is the actor of local administrative commands (`atr apikey
// create`, reconciliation): admin scope, recorded as "system" in the audit
// trail. Never hand it to request handlers.
func SystemActor() Actor {
	return Actor{KeyID: "system", Owner: "system", Scopes: []string{ScopeAdmin}}
}

// IsAdmin reports whether a holds the admin scope (agents never do).
func (a Actor) IsAdmin() bool {
	return a.AgentName == "" && a.KeyID != "" && slices.Contains(a.Scopes, ScopeAdmin)
}

// can reports whether an API key actor holds scope (admin implies every
// scope, agents:write implies agents:read). Agent actors hold no scopes.
func (a Actor) can(scope string) bool {
	if a.AgentName != "" || a.KeyID == "" {
		return false
	}
	if a.IsAdmin() || slices.Contains(a.Scopes, scope) {
		return true
	}
	return scope == ScopeAgentsRead && slices.Contains(a.Scopes, ScopeAgentsWrite)
}

// label is how the actor appears in audit events and log entries.
func (a Actor) label() string {
	switch {
	case a.AgentName != "":
		return "agent:" + a.AgentName
	case a.KeyID == "system":
		return "system"
	case a.KeyID != "":
		return "key:" + a.KeyID
	}
	return "anonymous"
}

// inNamespace reports whether name lies in ns: name == ns or ends in "."+ns.
// An empty namespace (admin keys only) covers every name.
func inNamespace(name, ns string, admin bool) bool {
	if ns == "" {
		return admin
	}
	return name == ns || (len(name) > len(ns)+1 && name[len(name)-len(ns)-1] == '.' && name[len(name)-len(ns):] == ns)
}

// Agent statuses.
const (
	AgentActive  = "active"
	AgentRevoked = "revoked"
)

// Certificate statuses.
const (
	CertIssued     = "issued"
	CertSuperseded = "superseded"
	CertRevoked    = "revoked"
)

// RegisterRequest is what an owner sends to register an agent. The owner is
// never part of it: it comes from the Actor.
type RegisterRequest struct {
	Name         string
	CSR          []byte
	Capabilities []string
	Metadata     map[string]string
}

// Agent is a registered agent.
type Agent struct {
	Name, Owner, Status  string
	Capabilities         []string
	Metadata             map[string]string
	CurrentSerial        string
	CreatedAt, UpdatedAt time.Time
}

// CertificateRecord is one certificate of an agent. Serial is in the
// canonical spelling of ca.FormatSerial (even-length lowercase hex);
// FingerprintSHA256 is 64 lowercase hex digits.
type CertificateRecord struct {
	Serial, FingerprintSHA256, Status, RevocationReason string
	NotBefore, NotAfter                                 time.Time
	RevokedAt                                           *time.Time
	GraceUntil                                          *time.Time // superseded: verifies until then
	Predecessor, Successor                              string
	LogIndex                                            int64
	DER                                                 []byte
	// IssuerKeyID is the issuing CA's subject key identifier (lowercase
	// hex), when recorded (rows older than migration 007 may lack it until
	// BackfillIssuers ran; it stays empty for a row whose DER does not
	// parse).
	IssuerKeyID string
}

// Issued is the result of Register and Rotate.
type Issued struct {
	Agent                    Agent
	Certificate              CertificateRecord
	CertificatePEM, ChainPEM string
	LogIndex                 int64
	// Opened is the leaf's opening with every VRF proof (translog.Opened,
	// JSON), and Receipt its receipt (translog.Receipt, JSON); Receipt is nil
	// when one could not be made (the issuance stands; OpenedEntries retries).
	Opened, Receipt []byte
}

// AgentDetail is an agent with its certificate history, oldest first.
type AgentDetail struct {
	Agent
	Certificates []CertificateRecord
}

// VerifyResult answers "is this certificate genuine, current and not
// revoked?". Reason is empty when Verified, else one of the Reason* values.
type VerifyResult struct {
	Verified                                         bool
	Agent, Status, Serial, FingerprintSHA256, Reason string
	NotAfter                                         time.Time
	LogIndex                                         *int64
	// Receipt is the certificate's log receipt (translog.Receipt, JSON), set
	// by VerifyWithReceipt only.
	Receipt []byte
}

// Verification failure reasons (a fixed set; safe to show to clients).
const (
	ReasonUntrustedChain     = "untrusted_chain"
	ReasonExpired            = "expired"
	ReasonNotYetValid        = "not_yet_valid"
	ReasonRevoked            = "revoked"
	ReasonSuperseded         = "superseded"
	ReasonUnknownCertificate = "unknown_certificate"
	ReasonWrongUsage         = "wrong_usage"
	// ReasonIssuerRevoked: the issuing intermediate was revoked by its root
	// (a root CRL from `atr ceremony root-crl`).
	ReasonIssuerRevoked = "issuer_revoked"
)

// APIKey describes an API key; the secret is never part of it.
type APIKey struct {
	ID, Owner, Namespace             string
	Scopes                           []string
	CreatedAt                        time.Time
	ExpiresAt, RevokedAt, LastUsedAt *time.Time
}

// AuditEvent is one entry of the audit trail. Actor is "key:<id>",
// "agent:<name>", "system" or "anonymous"; Result is "success", "denied",
// "error", "noop" or "abandoned".
type AuditEvent struct {
	ID                                                       int64
	Time                                                     time.Time
	Actor, ActorOwner, RequestID, IP, Action, Target, Result string
	Metadata                                                 map[string]string
	LogIndex                                                 *int64
}

// Bundle returns the PEM CA bundle: the issuing certificate and the chain
// above it, then the verifier's intermediates and roots, without duplicates
// and without the intermediates a root CRL revoked (as of the last revision
// this replica saw; every CRL, OCSP or verify request syncs it).
func (r *Registry) Bundle() []byte {
	var certs []*x509.Certificate
	if r.issuer != nil {
		certs = append(certs, r.issuer.Chain()...)
	}
	if r.verify != nil {
		certs = append(append(certs, r.verify.Intermediates()...), r.verify.Roots()...)
	}
	var out []byte
	seen := map[string]bool{}
	for _, c := range certs {
		if seen[string(c.Raw)] || r.revokedByRoot(c) {
			continue
		}
		seen[string(c.Raw)] = true
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}

// Ready reports whether the database answers and the token is healthy.
func (r *Registry) Ready(ctx context.Context) error {
	if err := r.store.Ping(ctx); err != nil {
		return err
	}
	if r.cfg.Token != nil {
		if err := r.cfg.Token.Healthy(ctx); err != nil {
			return fmt.Errorf("registry: token: %w: %v", ErrUnavailable, err)
		}
	}
	return nil
}
