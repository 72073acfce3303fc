package api

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"time"

	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/agent-trust-registry/atr/api/ratelimit"
	"github.com/agent-trust-registry/atr/registry"
)

// Lifecycle is the part of *registry.Registry the agent and verify endpoints use.
type Lifecycle interface {
	Register(ctx context.Context, a registry.Actor, req registry.RegisterRequest) (*registry.Issued, error)
	Rotate(ctx context.Context, a registry.Actor, name string, csr []byte) (*registry.Issued, error)
	Revoke(ctx context.Context, a registry.Actor, name, reason string) (*registry.Agent, error)
	ListAgents(ctx context.Context, a registry.Actor, cursor string, limit int) ([]registry.Agent, string, error)
	GetAgent(ctx context.Context, a registry.Actor, name string) (*registry.AgentDetail, error)
	CurrentCertificate(ctx context.Context, a registry.Actor, name string) (string, error)
	Verify(ctx context.Context, leafPEM, chainPEM []byte) (*registry.VerifyResult, error)
	Bundle() []byte
	Ready(ctx context.Context) error
}

// Authenticator turns presented credentials into an Actor. Both methods return an error
// wrapping registry.ErrUnauthenticated for credentials that are wrong, expired or revoked.
type Authenticator interface {
	Authenticate(ctx context.Context, presentedKey string) (*registry.Actor, error)
	AuthenticateAgent(ctx context.Context, chain []*x509.Certificate) (*registry.Actor, error)
}

// Admin is the part of *registry.Registry behind /v1/admin.
type Admin interface {
	CreateAPIKey(ctx context.Context, a registry.Actor, owner, namespace string, scopes []string, expiresIn time.Duration) (*registry.APIKey, string, error)
	RevokeAPIKey(ctx context.Context, a registry.Actor, id string) error
	ListAudit(ctx context.Context, a registry.Actor, cursor string, limit int) ([]registry.AuditEvent, string, error)
}

// TransparencyLog serves the /v1/log endpoints.
type TransparencyLog interface {
	Checkpoint(ctx context.Context) ([]byte, error)
	LogKeyPEM() []byte
	// VRFPublicKeyPEM is the public name-index VRF key (PKIX, PEM), nil when
	// there is none (GET /v1/log/vrf-key answers 501 then).
	VRFPublicKeyPEM() []byte
	// LogVerifierKey is the C2SP signed-note verifier key string of the log.
	LogVerifierKey() string
	LogEntries(ctx context.Context, start, end int64) ([][]byte, error)
	InclusionProof(ctx context.Context, index, size int64) ([]tlog.Hash, error)
	ConsistencyProof(ctx context.Context, oldSize, newSize int64) ([]tlog.Hash, error)
	// Tile returns a C2SP tlog-tiles resource for a path such as
	// "tile/0/000" or "tile/entries/000.p/5".
	Tile(ctx context.Context, path string) ([]byte, error)
}

// Revocation serves /v1/crl and /v1/ocsp.
type Revocation interface {
	// CRL is the issuing CA's CRL; CRLOf the CRL of the CA with a given
	// subject key identifier (hex): an issuing CA, current or earlier, or a
	// root (its ceremony-signed CRL of intermediates).
	CRL(ctx context.Context) ([]byte, time.Time, error)
	CRLOf(ctx context.Context, keyID string) ([]byte, time.Time, error)
	OCSP(ctx context.Context, req []byte) ([]byte, error)
}

// Deps are the Server's collaborators. *registry.Registry implements Lifecycle,
// Authenticator and Admin (and, with the transparency log, TransparencyLog and
// Revocation).
type Deps struct {
	Lifecycle Lifecycle     // required
	Auth      Authenticator // required
	Admin     Admin         // required
	// Log and Revocation are optional: while nil, their routes answer 501.
	Log        TransparencyLog
	Revocation Revocation
	// Limiter is the shared rate-limit backend (ratelimit.Redis for several replicas).
	// Nil means in-process limits. When the shared backend fails, privileged endpoints
	// fail closed (503) and public ones fall back to in-process limits.
	Limiter ratelimit.Limiter
	// Collectors are extra Prometheus collectors exposed on /metrics (token health,
	// DB pool stats, ...). The Server already registers the Go and process collectors.
	Collectors []prometheus.Collector
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

// Server is the HTTP layer. Build it with New and serve Handler().
type Server struct {
	cfg     Config
	deps    Deps
	log     *logrus.Entry
	now     func() time.Time
	proxies []netip.Prefix
	limits  limiters
	metrics *metrics
	router  *mux.Router
	handler http.Handler
	// distribution serves the plain-http channels (distribution.go).
	distribution http.Handler
	// events counts the open GET /v1/log/events streams (handlers_events.go).
	events eventStreams
}

// New checks cfg and deps and builds the Server.
func New(cfg Config, deps Deps, log *logrus.Entry) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	if deps.Lifecycle == nil || deps.Auth == nil || deps.Admin == nil {
		return nil, errors.New("api: Deps.Lifecycle, Deps.Auth and Deps.Admin are required")
	}
	if log == nil {
		return nil, errors.New("api: a logger is required")
	}
	proxies, err := ParseTrustedProxies(cfg.TrustedProxies)
	if err != nil {
		return nil, fmt.Errorf("api: %w", err)
	}
	s := &Server{cfg: cfg, deps: deps, log: log.WithField("component", "api"), now: deps.Now, proxies: proxies}
	if s.now == nil {
		s.now = time.Now
	}
	s.limits = newLimiters(deps.Limiter, s.now)
	if s.metrics, err = newMetrics(deps.Collectors); err != nil {
		return nil, err
	}
	if err := s.registerOpsMetrics(); err != nil {
		return nil, fmt.Errorf("api: registering metrics: %w", err)
	}
	s.router = s.routes()
	s.handler = s.outer(s.router, cfg.TLS)
	s.distribution = s.outer(s.distributionRoutes(), false)
	return s, nil
}

// Handler returns the root handler (every route, every middleware).
func (s *Server) Handler() http.Handler { return s.handler }

// Router returns the gorilla/mux router (for route walking in tests and tools).
func (s *Server) Router() *mux.Router { return s.router }

// Metrics returns the Server's Prometheus registry.
func (s *Server) Metrics() *prometheus.Registry { return s.metrics.reg }
