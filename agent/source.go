package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/agent-trust-registry/atr/api/client"
	"github.com/agent-trust-registry/atr/ca"
)

// Config configures a Source. Server and an identity (Identity, or KeyFile
// and CertFile) are required.
type Config struct {
	// Server is the registry's base URL ("https://atr.example.org:8443").
	Server string
	// ServerRoots are trusted for the registry's own TLS certificate. nil
	// means the roots of Bundle when it is set (the development server's
	// certificate chains to the ATR root), else the system pool.
	ServerRoots *x509.CertPool
	// ClientOptions are passed to client.New for every request to the
	// registry (after the roots, before the client certificate).
	ClientOptions []client.Option

	// Identity is the starting key, certificate and chain, held in memory
	// only (see Register). Either Identity or KeyFile and CertFile.
	Identity *Identity
	// KeyFile, CertFile and ChainFile (default ChainPath(CertFile, "")) are
	// the agent's files, as `atr agent register` writes them. The Source
	// starts from them and persists every renewal to them with the
	// crash-safe order of Renewer.RenewOnce.
	KeyFile, CertFile, ChainFile string

	// Bundle is the ATR trust bundle (roots and issuing CAs) that peers'
	// certificates must chain to. nil means: fetched from the registry
	// (GET /v1/ca/bundle) when the Source starts, and again after every
	// renewal (a failed refresh keeps the previous bundle).
	Bundle []*x509.Certificate

	// KeyType is the type of the new keys; "" means the current key's type
	// (P-256 when that is RSA).
	KeyType string
	// RenewBefore, when positive, renews that long before expiry instead of
	// at 2/3 of the lifetime (±10%).
	RenewBefore time.Duration
	// MaxBackoff caps the retry backoff; 0 means DefaultMaxBackoff.
	MaxBackoff time.Duration
	// OnRenew, when set, is called after every renewal with the new
	// certificate (already served to new handshakes).
	OnRenew func(leaf *x509.Certificate)
	// Logger receives progress and warnings; nil discards them.
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Source holds an agent's identity in memory and keeps it current: a
// goroutine renews the certificate over mutual TLS with the registry
// (POST /v1/agents/{name}/rotate, authenticated by the current certificate,
// with a new key each time) at about 2/3 of its lifetime, retrying failures
// with backoff. It serves the identity to crypto/tls through
// GetCertificate and GetClientCertificate, and verifies peers against the
// ATR trust bundle (ServerTLSConfig, ClientTLSConfig).
//
// A renewal never drops a connection: an established connection keeps the
// certificate it was made with; every handshake after the renewal gets the
// new one. Close (or cancelling the context given to NewSource) stops the
// renewals; the last identity stays served. A Source is safe for concurrent
// use.
type Source struct {
	cfg     Config
	name    string // agent name
	td      string // trust domain
	id      atomic.Pointer[Identity]
	cert    atomic.Pointer[tls.Certificate]
	trust   atomic.Pointer[trust]
	renewer *Renewer // non-nil when persisting to files
	dial    Dialer
	serverR *x509.CertPool
	jwt     jwtSVIDCache // JWT-SVIDs by audience (jwtsvid.go)

	renewMu sync.Mutex // one renewal at a time
	cancel  context.CancelFunc
	done    chan struct{}
	err     error // of the renewal loop, set before done closes
}

// trust is the verified-bundle state swapped as a whole.
type trust struct {
	roots    *x509.CertPool
	verifier *ca.Verifier
	bundle   []*x509.Certificate
	pinned   []*x509.Certificate // the roots of the first bundle; a refresh may not add one
}

// NewSource loads or takes the identity of cfg, checks it (the certificate
// certifies the key, names an agent and has not expired), gets the trust
// bundle, and starts renewing in the background until ctx is done or Close
// is called.
func NewSource(ctx context.Context, cfg Config) (*Source, error) {
	if cfg.Server == "" {
		return nil, errors.New("agent: new source: Config.Server is empty")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = discard
	}
	s := &Source{cfg: cfg, done: make(chan struct{})}
	var id *Identity
	switch {
	case cfg.Identity != nil && cfg.KeyFile == "" && cfg.CertFile == "":
		id = cfg.Identity
	case cfg.Identity == nil && cfg.KeyFile != "" && cfg.CertFile != "":
		s.renewer = &Renewer{KeyFile: cfg.KeyFile, CertFile: cfg.CertFile, ChainFile: cfg.ChainFile, KeyType: cfg.KeyType,
			Logger: cfg.Logger, Now: cfg.Now}
		var err error
		if id, err = s.renewer.Load(); err != nil {
			return nil, fmt.Errorf("agent: new source: %w", err)
		}
	default:
		return nil, errors.New("agent: new source: give Config.Identity, or KeyFile and CertFile")
	}
	name, err := id.check("", cfg.Now())
	if err != nil {
		return nil, fmt.Errorf("agent: new source: %w", err)
	}
	s.name = name
	_, s.td, _ = ca.AgentIdentity(id.Leaf)

	s.serverR = cfg.ServerRoots
	if s.serverR == nil && cfg.Bundle != nil {
		s.serverR = RootPool(cfg.Bundle)
	}
	opts := slices.Clone(cfg.ClientOptions)
	if s.serverR != nil {
		opts = append([]client.Option{client.WithRootCAs(s.serverR)}, opts...)
	}
	s.dial = ClientDialer(cfg.Server, opts...)
	if s.renewer != nil {
		s.renewer.Dial = s.dial
		s.renewer.Name = name
	}
	bundle := cfg.Bundle
	if bundle == nil {
		if bundle, err = s.fetchBundle(ctx, opts); err != nil {
			return nil, fmt.Errorf("agent: new source: %w", err)
		}
	}
	if err := s.setTrust(bundle, id); err != nil {
		return nil, fmt.Errorf("agent: new source: %w", err)
	}
	s.set(id)

	ctx, s.cancel = context.WithCancel(ctx)
	go s.run(ctx, opts)
	return s, nil
}

// fetchBundle gets the trust bundle from the registry.
func (s *Source) fetchBundle(ctx context.Context, opts []client.Option) ([]*x509.Certificate, error) {
	c, err := client.New(s.cfg.Server, opts...)
	if err != nil {
		return nil, err
	}
	data, err := c.Bundle(ctx)
	if err != nil {
		return nil, Explain("getting the CA bundle", err)
	}
	certs, err := ca.ParseCertificatesPEM(data, maxBundleCerts)
	if err != nil {
		return nil, fmt.Errorf("the server's CA bundle: %w", err)
	}
	return certs, nil
}

// RootPool is a pool of the roots (the self-signed CA certificates) of an
// ATR trust bundle, for client.WithRootCAs when the registry's TLS
// certificate chains to the ATR root (as the development server's does).
func RootPool(bundle []*x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range bundle {
		if isRoot(c) {
			p.AddCert(c)
		}
	}
	return p
}

func isRoot(c *x509.Certificate) bool {
	return c.IsCA && c.CheckSignatureFrom(c) == nil
}

// setTrust builds the peer verifier from bundle: its self-signed
// certificates are the roots, the other CA certificates the intermediates.
// A bundle that does not verify id, the Source's own identity, is refused:
// it is not the bundle of the registry that issued it. The roots of the
// first bundle are pinned: a refreshed bundle may bring new intermediates
// (a rotation) and drop roots, but a root it adds is refused — whoever could
// impersonate the registry once would otherwise plant a root and mint agents.
func (s *Source) setTrust(bundle []*x509.Certificate, id *Identity) error {
	var roots, inter []*x509.Certificate
	for _, c := range bundle {
		switch {
		case isRoot(c):
			roots = append(roots, c)
		case c.IsCA:
			inter = append(inter, c)
		}
	}
	pinned := roots
	if prev := s.trust.Load(); prev != nil {
		pinned = prev.pinned
		for _, r := range roots {
			if !slices.ContainsFunc(pinned, r.Equal) {
				return fmt.Errorf("the CA bundle adds the root %q; roots are pinned by the first bundle", r.Subject)
			}
		}
	}
	v, err := ca.NewVerifier(roots, inter, s.td)
	if err != nil {
		return fmt.Errorf("the CA bundle: %w", err)
	}
	if err := v.Verify(id.Leaf, id.Chain, s.cfg.Now()); err != nil {
		return fmt.Errorf("the CA bundle does not verify the agent's own certificate: %w", err)
	}
	pool := x509.NewCertPool()
	for _, r := range roots {
		pool.AddCert(r)
	}
	s.trust.Store(&trust{roots: pool, verifier: v, bundle: bundle, pinned: pinned})
	return nil
}

func (s *Source) set(id *Identity) {
	tc := id.TLSCertificate()
	s.id.Store(id)
	s.cert.Store(&tc)
}

// run is the renewal loop.
func (s *Source) run(ctx context.Context, opts []client.Option) {
	defer close(s.done)
	sch := schedule{now: s.cfg.Now, sleep: sleepCtx, jitter: mrand.Float64, renewBefore: s.cfg.RenewBefore,
		maxBackoff: s.cfg.MaxBackoff, log: s.cfg.Logger.With("agent", s.name)}
	if sch.maxBackoff <= 0 {
		sch.maxBackoff = DefaultMaxBackoff
	}
	err := sch.run(ctx, func() (*x509.Certificate, error) { return s.id.Load().Leaf, nil }, func(ctx context.Context) error {
		_, err := s.renew(ctx)
		if err == nil && s.cfg.Bundle == nil {
			if b, berr := s.fetchBundle(ctx, opts); berr != nil {
				sch.log.Warn("could not refresh the CA bundle; keeping the previous one", "error", berr.Error())
			} else if berr := s.setTrust(b, s.id.Load()); berr != nil {
				sch.log.Warn("refusing the refreshed CA bundle; keeping the previous one", "error", berr.Error())
			}
		}
		return err
	})
	if err != nil {
		sch.log.Error("renewals stopped", "error", err.Error())
	}
	s.err = err
}

// Renew renews the certificate now (the background schedule continues from
// the new certificate's lifetime at its next wake-up) and returns the new
// certificate.
func (s *Source) Renew(ctx context.Context) (*x509.Certificate, error) {
	id, err := s.renew(ctx)
	if err != nil {
		return nil, err
	}
	return id.Leaf, nil
}

func (s *Source) renew(ctx context.Context) (*Identity, error) {
	s.renewMu.Lock()
	defer s.renewMu.Unlock()
	var (
		id  *Identity
		err error
	)
	if s.renewer != nil {
		id, err = s.renewer.renew(ctx)
	} else {
		id, err = s.rotateInMemory(ctx)
	}
	if err != nil {
		return nil, err
	}
	s.set(id)
	if s.renewer == nil { // the Renewer logs its own
		s.cfg.Logger.Info("certificate renewed", "agent", s.name, "serial", ca.FormatSerial(id.Leaf.SerialNumber),
			"not_after", id.Leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	if s.cfg.OnRenew != nil {
		s.cfg.OnRenew(id.Leaf)
	}
	return id, nil
}

// rotateInMemory renews without files: a new key in memory, rotated over
// mTLS with the current identity.
func (s *Source) rotateInMemory(ctx context.Context) (*Identity, error) {
	cur := s.id.Load()
	if _, err := cur.check(s.name, s.cfg.Now()); err != nil {
		return nil, err
	}
	k, err := GenerateKey(newKeyType(s.cfg.KeyType, cur.Key))
	if err != nil {
		return nil, err
	}
	iss, err := rotate(ctx, s.dial, s.name, cur, k)
	if err != nil {
		return nil, err
	}
	return &Identity{Key: k, Leaf: iss.Leaf, Chain: iss.Chain}, nil
}

// Close stops the renewals and waits for the renewal goroutine to end. The
// Source keeps serving its last identity. It returns the error that stopped
// the renewals before Close, if any (a refusal, or an expired certificate).
func (s *Source) Close() error {
	s.cancel()
	<-s.done
	return s.err
}

// Done is closed when the renewals stop: after Close, when the context given
// to NewSource is done, or when a renewal was refused for good (then Err
// says why).
func (s *Source) Done() <-chan struct{} { return s.done }

// Err returns why the renewals stopped; nil while they run and after a
// Close or cancellation.
func (s *Source) Err() error {
	select {
	case <-s.done:
		return s.err
	default:
		return nil
	}
}

// Name returns the agent name of the identity.
func (s *Source) Name() string { return s.name }

// TrustDomain returns the SPIFFE trust domain of the identity.
func (s *Source) TrustDomain() string { return s.td }

// Identity returns the current identity. Do not modify it.
func (s *Source) Identity() *Identity { return s.id.Load() }

// Certificate returns the current certificate.
func (s *Source) Certificate() *x509.Certificate { return s.id.Load().Leaf }

// GetCertificate returns the current identity; it is a
// tls.Config.GetCertificate hook for a server.
func (s *Source) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return s.cert.Load(), nil
}

// GetClientCertificate returns the current identity; it is a
// tls.Config.GetClientCertificate hook for a client.
func (s *Source) GetClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	return s.cert.Load(), nil
}

// Roots returns the roots of the ATR trust bundle, for code that verifies
// ATR certificates itself. The pool is replaced, never modified, when the
// bundle is refreshed.
func (s *Source) Roots() *x509.CertPool { return s.trust.Load().roots }

// Bundle returns the ATR trust bundle (roots and issuing CAs) in use.
func (s *Source) Bundle() []*x509.Certificate { return slices.Clone(s.trust.Load().bundle) }

// Authorizer decides whether a peer, already verified to hold a genuine ATR
// agent certificate of the trust domain, may talk to this agent: name is
// the peer's agent name, leaf its certificate. A non-nil error refuses the
// handshake.
type Authorizer func(name string, leaf *x509.Certificate) error

// AuthorizeAny accepts every agent of the trust domain.
func AuthorizeAny(string, *x509.Certificate) error { return nil }

// AuthorizeNames accepts only the named agents.
func AuthorizeNames(names ...string) Authorizer {
	return func(name string, _ *x509.Certificate) error {
		if slices.Contains(names, name) {
			return nil
		}
		return fmt.Errorf("agent: peer %q is not authorized", name)
	}
}

// VerifyPeer checks a certificate chain presented by a peer (leaf first) at
// the Source's current time: the leaf is a genuine ATR agent certificate of
// the trust domain, valid now (ca.Verifier.Verify against the trust
// bundle), with extended key usage usage (x509.ExtKeyUsageServerAuth or
// ClientAuth), and authorize accepts it. A nil authorize refuses every peer
// (fail closed: pass AuthorizeAny to accept any agent of the trust domain,
// which on a client lets any agent stand in for the server). It returns the
// peer's agent name. It does not ask the registry about revocation:
// certificates are short-lived; ask the registry (client.Verify) where that
// matters.
func (s *Source) VerifyPeer(certs []*x509.Certificate, usage x509.ExtKeyUsage, authorize Authorizer) (string, error) {
	if len(certs) == 0 {
		return "", errors.New("agent: the peer presented no certificate")
	}
	leaf := certs[0]
	if err := s.trust.Load().verifier.Verify(leaf, certs[1:], s.cfg.Now()); err != nil {
		return "", fmt.Errorf("agent: peer certificate: %w", err)
	}
	if !slices.Contains(leaf.ExtKeyUsage, usage) {
		return "", errors.New("agent: peer certificate: wrong extended key usage")
	}
	name, err := ca.AgentName(leaf, s.td)
	if err != nil {
		return "", fmt.Errorf("agent: peer certificate: %w", err)
	}
	if authorize == nil {
		return "", errors.New("agent: peer certificate: no Authorizer (use AuthorizeAny or AuthorizeNames)")
	}
	if err := authorize(name, leaf); err != nil {
		return "", err
	}
	return name, nil
}

// ServerTLSConfig returns a TLS 1.3 server configuration for mutual TLS:
// it presents the current identity (GetCertificate), requires a client
// certificate, and accepts only a client that VerifyPeer accepts for
// clientAuth with authorize.
func (s *Source) ServerTLSConfig(authorize Authorizer) *tls.Config {
	return &tls.Config{
		MinVersion:     tls.VersionTLS13,
		GetCertificate: s.GetCertificate,
		ClientAuth:     tls.RequireAnyClientCert,
		VerifyConnection: func(cs tls.ConnectionState) error {
			_, err := s.VerifyPeer(cs.PeerCertificates, x509.ExtKeyUsageClientAuth, authorize)
			return err
		},
	}
}

// ClientTLSConfig returns a TLS 1.3 client configuration for mutual TLS:
// it presents the current identity (GetClientCertificate) and accepts only
// a server that VerifyPeer accepts for serverAuth with authorize. Agent
// certificates name agents, not hosts, so the server is authenticated by
// its agent name (authorize) instead of the host name: crypto/tls's host
// name check is replaced by VerifyPeer (InsecureSkipVerify is set for that
// reason only; VerifyConnection does the verification).
func (s *Source) ClientTLSConfig(authorize Authorizer) *tls.Config {
	return &tls.Config{
		MinVersion:           tls.VersionTLS13,
		GetClientCertificate: s.GetClientCertificate,
		InsecureSkipVerify:   true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			_, err := s.VerifyPeer(cs.PeerCertificates, x509.ExtKeyUsageServerAuth, authorize)
			return err
		},
	}
}
