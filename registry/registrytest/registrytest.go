// Package registrytest builds a real, SoftHSM2-backed ATR for tests of
// registry, api and cmd: a root key on one token, the issuing key and the
// transparency log key on another, root and intermediate certificates made
// with the ca ceremony templates, a ca.Issuer and ca.Verifier, a migrated
// Store on SQLite (in t.TempDir) or on a fresh PostgreSQL database
// (127.0.0.1:5432, dropped when the test ends), and a *registry.Registry with
// a fake clock.
//
// A test binary that uses it must call hsmtest.Setup once, in TestMain:
//
//	func TestMain(m *testing.M) {
//		cleanup, err := hsmtest.Setup()
//		if err != nil { fmt.Fprintln(os.Stderr, err); os.Exit(1) }
//		code := m.Run(); cleanup(); os.Exit(code)
//	}
//
// and runs each storage test on both databases:
//
//	for _, db := range registrytest.Databases() {
//		t.Run(db, func(t *testing.T) {
//			f := registrytest.NewFixture(t, registrytest.WithDatabase(db))
//			owner := f.Owner("acme", "acme")
//			csr, _ := f.NewCSR()
//			iss, err := f.Registry.Register(ctx, owner, registry.RegisterRequest{Name: "bot.acme", CSR: csr})
//		})
//	}
//
// Without SoftHSM2 the fixture skips (fails under CI=true); without
// PostgreSQL the postgres variant skips (fails under CI=true).
package registrytest

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
	"golang.org/x/mod/sumdb/note"

	"github.com/agent-trust-registry/atr/ca"
	"github.com/agent-trust-registry/atr/hsm"
	"github.com/agent-trust-registry/atr/hsm/hsmtest"
	"github.com/agent-trust-registry/atr/registry"
	"github.com/agent-trust-registry/atr/registry/internal/testdb"
	"github.com/agent-trust-registry/atr/registry/redact"
	"github.com/agent-trust-registry/atr/registry/translog"
)

// TrustDomain is the fixture's SPIFFE trust domain.
const TrustDomain = "agents.atr.test"

// Databases lists the databases every storage test runs on: "sqlite" and
// "postgres".
func Databases() []string { return testdb.Names() }

// Fixture is a running registry over a real SoftHSM2 CA.
type Fixture struct {
	T           testing.TB
	Database    string // "sqlite" or "postgres"
	DatabaseURL string
	Store       *registry.Store
	Registry    *registry.Registry
	Config      registry.Config // what Registry was built from (Reopen reuses it)

	Root, Intermediate      *x509.Certificate
	RootToken, IssuingToken *hsm.Token
	RootKey, IssuingKey     *hsm.Signer
	LogKey                  *hsm.Signer
	JWTKey, CardKey         *hsm.Signer        // ES256 keys for JWT-SVIDs and A2A agent cards
	LogKeyEd25519           *hsm.Ed25519Signer // the log's second key, for witnesses
	NoteSignerEd25519       note.Signer        // type 0x01 note signer over LogKeyEd25519
	// VRFKey computes the log's name indexes. It is a software RSA-3072 key
	// shared by every fixture of the test binary: generating one on SoftHSM2
	// takes seconds, and the token-backed VRF is tested in registry/translog
	// and end to end in cmd/atr.
	VRFKey       crypto.Signer
	Issuer       *ca.Issuer
	Verifier     *ca.Verifier
	NoteSigner   note.Signer
	NoteVerifier note.Verifier
	LogOrigin    string
	Clock        *Clock
	Log          *logrus.Entry

	signer *FaultySigner
}

type options struct {
	database string
	grace    time.Duration
	pending  time.Duration
	profile  ca.Profile
	start    time.Time
}

// Option configures NewFixture.
type Option func(*options)

// WithDatabase selects "sqlite" (default) or "postgres".
func WithDatabase(name string) Option { return func(o *options) { o.database = name } }

// WithRotationGrace sets Config.RotationGrace.
func WithRotationGrace(d time.Duration) Option { return func(o *options) { o.grace = d } }

// WithPendingTimeout sets Config.PendingTimeout.
func WithPendingTimeout(d time.Duration) Option { return func(o *options) { o.pending = d } }

// WithProfile sets the leaf profile (TrustDomain is forced to TrustDomain).
func WithProfile(p ca.Profile) Option { return func(o *options) { o.profile = p } }

// WithStart sets the fake clock's start time (default: now).
func WithStart(t time.Time) Option { return func(o *options) { o.start = t } }

// NewFixture builds the CA on fresh SoftHSM2 tokens, opens and migrates the
// database and returns the fixture; everything is torn down in t.Cleanup.
func NewFixture(t testing.TB, opts ...Option) *Fixture {
	t.Helper()
	o := options{database: "sqlite", start: time.Now().UTC()}
	for _, opt := range opts {
		opt(&o)
	}
	ctx := context.Background()
	f := &Fixture{T: t, Database: o.database, Clock: NewClock(o.start), Log: Logger(t), LogOrigin: TrustDomain + "/log"}

	// Tokens and keys: the root on its own token, issuing and log keys on
	// the issuing token.
	rootCfg := hsmtest.NewToken(t, "atr-root")
	issCfg := hsmtest.NewToken(t, "atr-issuing")
	f.RootToken = hsmtest.Open(t, rootCfg)
	f.IssuingToken = hsmtest.Open(t, issCfg)
	var err error
	if f.RootKey, err = f.RootToken.GenerateKey(ctx, "root", hsm.ECDSAP256); err != nil {
		t.Fatalf("registrytest: generating root key: %v", err)
	}
	if f.IssuingKey, err = f.IssuingToken.GenerateKey(ctx, "issuing", hsm.ECDSAP256); err != nil {
		t.Fatalf("registrytest: generating issuing key: %v", err)
	}
	if f.LogKey, err = f.IssuingToken.GenerateKey(ctx, "log", hsm.ECDSAP256); err != nil {
		t.Fatalf("registrytest: generating log key: %v", err)
	}
	if f.JWTKey, err = f.IssuingToken.GenerateKey(ctx, "jwt", hsm.ECDSAP256); err != nil {
		t.Fatalf("registrytest: generating JWT-SVID key: %v", err)
	}
	if f.CardKey, err = f.IssuingToken.GenerateKey(ctx, "card", hsm.ECDSAP256); err != nil {
		t.Fatalf("registrytest: generating agent-card key: %v", err)
	}
	if f.LogKeyEd25519, err = f.IssuingToken.GenerateEd25519Key(ctx, "log-ed25519"); err != nil {
		t.Fatalf("registrytest: generating Ed25519 log key: %v", err)
	}
	if f.NoteSignerEd25519, err = translog.NewEd25519NoteSigner(f.LogOrigin, f.LogKeyEd25519); err != nil {
		t.Fatalf("registrytest: Ed25519 note signer: %v", err)
	}

	// Ceremony: self-signed root, intermediate certified by the root. The
	// CA certificates start an hour before the clock so that tests may move
	// the clock back a little.
	caNow := o.start.Add(-time.Hour)
	rootTmpl, err := ca.RootTemplate("ATR Test Root", 0, caNow)
	if err != nil {
		t.Fatalf("registrytest: root template: %v", err)
	}
	if f.Root, err = ca.CreateCertificate(rootTmpl, rootTmpl, f.RootKey.Public(), f.RootKey); err != nil {
		t.Fatalf("registrytest: root certificate: %v", err)
	}
	interTmpl, err := ca.IntermediateTemplate("ATR Test Issuing CA", TrustDomain, 0, caNow)
	if err != nil {
		t.Fatalf("registrytest: intermediate template: %v", err)
	}
	if f.Intermediate, err = ca.CreateCertificate(interTmpl, f.Root, f.IssuingKey.Public(), f.RootKey); err != nil {
		t.Fatalf("registrytest: intermediate certificate: %v", err)
	}

	p := o.profile
	p.TrustDomain = TrustDomain
	if p.CRLURL == "" {
		p.CRLURL = "https://registry.atr.test/v1/crl"
	}
	if p.OCSPURL == "" {
		p.OCSPURL = "https://registry.atr.test/v1/ocsp"
	}
	f.signer = &FaultySigner{Signer: f.IssuingKey}
	// The issuer gets the faulty signer with the token key's
	// ChecksSignatures mark, as atr serve's issuer gets the token's signer:
	// Issuer.Sign then does not verify each signature a second time, and
	// profiles of the fixture (cmd/atr-bench) count what the server does.
	// FaultySigner fails signatures; it never changes one.
	if f.Issuer, err = ca.NewIssuer(selfCheckingFaulty{f.signer}, f.Intermediate, []*x509.Certificate{f.Root}, p); err != nil {
		t.Fatalf("registrytest: issuer: %v", err)
	}
	if f.Verifier, err = ca.NewVerifier([]*x509.Certificate{f.Root}, []*x509.Certificate{f.Intermediate}, TrustDomain); err != nil {
		t.Fatalf("registrytest: verifier: %v", err)
	}
	if f.NoteSigner, err = translog.NewNoteSigner(f.LogOrigin, f.LogKey); err != nil {
		t.Fatalf("registrytest: note signer: %v", err)
	}
	if f.NoteVerifier, err = translog.NewNoteVerifier(f.LogOrigin, f.LogKey.Public()); err != nil {
		t.Fatalf("registrytest: note verifier: %v", err)
	}

	f.VRFKey = vrfKey(t)

	f.DatabaseURL = testdb.URL(t, o.database)
	f.Config = registry.Config{
		VRFSigner:      f.VRFKey,
		JWTSigner:      f.JWTKey,
		CardSigner:     f.CardKey,
		Issuer:         f.Issuer,
		Verifier:       f.Verifier,
		TrustDomain:    TrustDomain,
		RotationGrace:  o.grace,
		PendingTimeout: o.pending,
		LogSigner:      f.NoteSigner,
		LogVerifier:    f.NoteVerifier,
		LogOrigin:      f.LogOrigin,
		LogPublicKey:   f.LogKey.Public(),
		Token:          f.IssuingToken,
		Now:            f.Clock.Now,
		Log:            f.Log,
	}
	// Checkpoints carry both log signatures, as in production.
	f.Config.LogSignerEd25519 = f.NoteSignerEd25519
	f.Config.LogPublicKeyEd25519 = f.LogKeyEd25519.Public()
	f.open()
	return f
}

// open opens and migrates the Store and builds the Registry.
func (f *Fixture) open() {
	t := f.T
	t.Helper()
	ctx := context.Background()
	s, err := registry.Open(ctx, f.DatabaseURL, f.Log)
	if err != nil {
		t.Fatalf("registrytest: opening %s: %v", f.Database, err)
	}
	t.Cleanup(func() { s.Close() })
	if _, err := s.Migrate(ctx); err != nil {
		t.Fatalf("registrytest: migrating: %v", err)
	}
	f.Store = s
	f.Config.Store = s
	if f.Registry, err = registry.New(f.Config); err != nil {
		t.Fatalf("registrytest: registry.New: %v", err)
	}
}

// Reopen simulates a restart: the Store is closed (in-flight state in
// memory is lost) and a new Store and Registry are opened on the same
// database.
func (f *Fixture) Reopen() {
	f.T.Helper()
	if err := f.Store.Close(); err != nil {
		f.T.Fatalf("registrytest: closing store: %v", err)
	}
	f.open()
}

// FailSigning makes every signature of the issuing key fail (true) or work
// again (false), to simulate a broken token between "pending" and "issued".
func (f *Fixture) FailSigning(fail bool) { f.signer.fail.Store(fail) }

// OnSign installs a hook called before every real signature by the issuing
// key (nil removes it); a non-nil error from it fails the signature.
func (f *Fixture) OnSign(hook func() error) {
	f.signer.mu.Lock()
	f.signer.hook = hook
	f.signer.mu.Unlock()
}

// FaultySigner wraps the issuing key so tests can make signing fail.
type FaultySigner struct {
	crypto.Signer
	fail atomic.Bool
	mu   sync.Mutex
	hook func() error
}

// selfCheckingFaulty is a FaultySigner over the token's signer, which
// checks its signatures.
type selfCheckingFaulty struct{ *FaultySigner }

var _ ca.SelfCheckingSigner = (*hsm.Signer)(nil)

func (selfCheckingFaulty) ChecksSignatures() {}

// ErrInjected is the error of a signature failed on purpose.
var ErrInjected = errors.New("registrytest: injected signing failure")

// Sign implements crypto.Signer.
func (s *FaultySigner) Sign(r io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	if s.fail.Load() {
		return nil, ErrInjected
	}
	s.mu.Lock()
	hook := s.hook
	s.mu.Unlock()
	if hook != nil {
		if err := hook(); err != nil {
			return nil, err
		}
	}
	return s.Signer.Sign(r, digest, opts)
}

// NewCSR returns a PEM CSR over a fresh ECDSA P-256 key, and the key.
func (f *Fixture) NewCSR() ([]byte, crypto.Signer) {
	f.T.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.T.Fatalf("registrytest: agent key: %v", err)
	}
	return f.CSRFor(key), key
}

// CSRFor returns a PEM CSR signed by key (its subject is ignored by the CA).
func (f *Fixture) CSRFor(key crypto.Signer) []byte {
	f.T.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "ignored"}}, key)
	if err != nil {
		f.T.Fatalf("registrytest: csr: %v", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

// NewAPIKey creates an API key (through SystemActor) and returns the
// plaintext key.
func (f *Fixture) NewAPIKey(owner, namespace string, scopes ...string) string {
	f.T.Helper()
	_, key, err := f.Registry.CreateAPIKey(context.Background(), registry.SystemActor(), owner, namespace, scopes, 0)
	if err != nil {
		f.T.Fatalf("registrytest: creating api key for %s: %v", owner, err)
	}
	return key
}

// Actor creates an API key and returns the Actor that Authenticate yields
// for it, with a request ID and IP set.
func (f *Fixture) Actor(owner, namespace string, scopes ...string) registry.Actor {
	f.T.Helper()
	key := f.NewAPIKey(owner, namespace, scopes...)
	a, err := f.Registry.Authenticate(context.Background(), key)
	if err != nil {
		f.T.Fatalf("registrytest: authenticating new key: %v", err)
	}
	a.RequestID = "req-" + a.KeyID[:8]
	a.IP = "192.0.2.10"
	return *a
}

// Owner is Actor with scopes agents:read and agents:write.
func (f *Fixture) Owner(owner, namespace string) registry.Actor {
	f.T.Helper()
	return f.Actor(owner, namespace, registry.ScopeAgentsRead, registry.ScopeAgentsWrite)
}

// Admin is Actor with the admin scope and no namespace restriction.
func (f *Fixture) Admin() registry.Actor {
	f.T.Helper()
	return f.Actor("atr-admins", "", registry.ScopeAdmin)
}

// ParseCertificate parses a single PEM certificate or fails the test.
func (f *Fixture) ParseCertificate(pemText string) *x509.Certificate {
	f.T.Helper()
	certs, err := ca.ParseCertificatesPEM([]byte(pemText), 1)
	if err != nil {
		f.T.Fatalf("registrytest: parsing certificate: %v", err)
	}
	return certs[0]
}

// Clock is a fake clock safe for concurrent use.
type Clock struct {
	mu  sync.Mutex
	now time.Time
}

// NewClock returns a clock standing at start.
func NewClock(start time.Time) *Clock { return &Clock{now: start.UTC()} }

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// Set sets the clock.
func (c *Clock) Set(t time.Time) {
	c.mu.Lock()
	c.now = t.UTC()
	c.mu.Unlock()
}

// Logger returns a JSON logger with the redaction hook that writes to t.Log
// (warnings and above, to keep test output short).
func Logger(t testing.TB) *logrus.Entry {
	l := logrus.New()
	l.SetFormatter(&logrus.JSONFormatter{})
	l.SetOutput(tbWriter{t})
	l.SetLevel(logrus.WarnLevel)
	l.AddHook(redact.Hook{})
	return logrus.NewEntry(l)
}

type tbWriter struct{ t testing.TB }

func (w tbWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}

// sharedVRFKey is generated once per test binary (see Fixture.VRFKey).
var sharedVRFKey = sync.OnceValues(func() (*rsa.PrivateKey, error) { return rsa.GenerateKey(rand.Reader, 3072) })

func vrfKey(t testing.TB) crypto.Signer {
	t.Helper()
	k, err := sharedVRFKey()
	if err != nil {
		t.Fatalf("registrytest: VRF key: %v", err)
	}
	return k
}
