package api

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/gorilla/mux"
	"golang.org/x/text/unicode/norm"

	"github.com/agent-trust-registry/atr/api/ratelimit"
	"github.com/agent-trust-registry/atr/registry"
)

// authMode says which credentials a route accepts.
type authMode int

const (
	authNone          authMode = iota // public
	authKey                           // Authorization: Bearer atr_...
	authKeyOrAgentTLS                 // API key, or the agent's own TLS client certificate
)

// Scopes of API keys (the registry's names).
const (
	ScopeAgentsRead  = registry.ScopeAgentsRead
	ScopeAgentsWrite = registry.ScopeAgentsWrite
	ScopeAdmin       = registry.ScopeAdmin
)

// limitClass names a per-route rate limit, applied after authentication.
type limitClass int

const (
	limitNone limitClass = iota
	limitList
	limitRegister
	limitRotate
	limitRevoke
	limitCard
)

// handlerFunc is a handler that returns its error to the one error writer.
type handlerFunc func(w http.ResponseWriter, r *http.Request) error

type route struct {
	method, path string
	auth         authMode
	scope        string
	public       bool  // per-IP limit of the public class, and fall back to local limits
	bodyLimit    int64 // 0: the server-wide cap
	class        limitClass
	// est marks an RFC 7030 route (est.go): text/plain errors with an HTTP
	// Basic challenge, the API key also as the Basic password, and over mTLS
	// the agent from the client certificate (no {name} in the path).
	est bool
	h   handlerFunc
}

func (s *Server) routeTable() []route {
	return []route{
		{method: "POST", path: "/v1/agents", auth: authKey, scope: ScopeAgentsWrite, class: limitRegister, h: s.handleRegister},
		{method: "GET", path: "/v1/agents", auth: authKey, scope: ScopeAgentsRead, class: limitList, h: s.handleList},
		{method: "GET", path: "/v1/agents/{name}", auth: authKey, scope: ScopeAgentsRead, h: s.handleGet},
		{method: "GET", path: "/v1/agents/{name}/certificate", auth: authKey, scope: ScopeAgentsRead, h: s.handleCertificate},
		{method: "GET", path: "/v1/agents/{name}/log", auth: authKey, scope: ScopeAgentsRead, class: limitList, h: s.handleAgentLog},
		{method: "POST", path: "/v1/agents/{name}/rotate", auth: authKeyOrAgentTLS, scope: ScopeAgentsWrite, class: limitRotate, h: s.handleRotate},
		{method: "POST", path: "/v1/agents/{name}/revoke", auth: authKey, scope: ScopeAgentsWrite, class: limitRevoke, h: s.handleRevoke},
		// JWT-SVIDs (handlers_jwt.go): for the agent itself over mTLS (an API key gets 403),
		// limited per agent by the per-key class; the keys and discovery for verifiers.
		{method: "POST", path: "/v1/agents/{name}/jwt-svid", auth: authKeyOrAgentTLS, scope: ScopeAgentsWrite, bodyLimit: jwtSVIDBodyLimit, h: s.handleJWTSVID},
		{method: "GET", path: "/.well-known/jwks.json", public: true, h: s.handleJWKS},
		{method: "GET", path: "/.well-known/openid-configuration", public: true, h: s.handleOpenIDConfiguration},
		// Signed A2A agent cards (handlers_card.go): the owner or the agent itself; each
		// signed card is a permanent public log leaf, so the agent has its own card budget
		// (not its rotate budget).
		{method: "POST", path: "/v1/agents/{name}/card", auth: authKeyOrAgentTLS, scope: ScopeAgentsWrite, class: limitCard, bodyLimit: cardBodyLimit, h: s.handleSignCard},
		{method: "POST", path: "/v1/verify", public: true, bodyLimit: verifyBodyLimit, h: s.handleVerify},
		{method: "GET", path: "/v1/ca/bundle", public: true, h: s.handleBundle},
		{method: "GET", path: "/v1/ca/spiffe-bundle", public: true, h: s.handleSPIFFEBundle},
		{method: "GET", path: "/v1/crl", public: true, h: s.handleCRL},
		{method: "GET", path: "/v1/crl/{keyid}", public: true, h: s.handleCRLOf},
		{method: "POST", path: "/v1/ocsp", public: true, bodyLimit: ocspBodyLimit, h: s.handleOCSPPost},
		{method: "GET", path: "/v1/ocsp/{req:.+}", public: true, h: s.handleOCSPGet},
		{method: "GET", path: "/v1/log/checkpoint", public: true, h: s.handleCheckpoint},
		{method: "GET", path: "/v1/log/key", public: true, h: s.handleLogKey},
		{method: "GET", path: "/v1/log/vkey", public: true, h: s.handleLogVerifierKey},
		{method: "GET", path: "/v1/log/vrf-key", public: true, h: s.handleVRFKey},
		{method: "POST", path: "/v1/log/vrf", auth: authKey, scope: ScopeAgentsRead, class: limitList, h: s.handleVRFIndex},
		{method: "GET", path: "/v1/log/entries", public: true, h: s.handleLogEntries},
		{method: "GET", path: "/v1/log/tile/{tile:.+}", public: true, h: s.handleTile},
		{method: "GET", path: "/v1/log/proof/inclusion", public: true, h: s.handleInclusionProof},
		{method: "GET", path: "/v1/log/proof/consistency", public: true, h: s.handleConsistencyProof},
		{method: "GET", path: "/v1/log/events", public: true, h: s.handleLogEvents},
		{method: "GET", path: "/v1/admin/apikeys", auth: authKey, scope: ScopeAdmin, class: limitList, h: s.handleListAPIKeys},
		{method: "POST", path: "/v1/admin/apikeys", auth: authKey, scope: ScopeAdmin, h: s.handleCreateAPIKey},
		{method: "DELETE", path: "/v1/admin/apikeys/{id}", auth: authKey, scope: ScopeAdmin, h: s.handleRevokeAPIKey},
		{method: "GET", path: "/v1/admin/audit", auth: authKey, scope: ScopeAdmin, class: limitList, h: s.handleAudit},
		{method: "GET", path: "/healthz", public: true, h: s.handleHealthz},
		{method: "GET", path: "/readyz", public: true, h: s.handleReadyz},
		{method: "GET", path: "/metrics", public: true, h: s.handleMetrics},
		{method: "GET", path: "/openapi.json", public: true, h: s.handleOpenAPI},
		// EST (RFC 7030), without and with the CA label (the trust domain).
		{method: "GET", path: "/.well-known/est/cacerts", public: true, est: true, h: s.handleESTCACerts},
		{method: "GET", path: "/.well-known/est/csrattrs", public: true, est: true, h: s.handleESTCSRAttrs},
		{method: "POST", path: "/.well-known/est/simpleenroll", auth: authKey, scope: ScopeAgentsWrite, class: limitRegister, bodyLimit: estBodyLimit, est: true, h: s.handleESTSimpleEnroll},
		{method: "POST", path: "/.well-known/est/simplereenroll", auth: authKeyOrAgentTLS, scope: ScopeAgentsWrite, bodyLimit: estBodyLimit, est: true, h: s.handleESTSimpleReenroll},
		{method: "GET", path: "/.well-known/est/{label}/cacerts", public: true, est: true, h: s.handleESTCACerts},
		{method: "GET", path: "/.well-known/est/{label}/csrattrs", public: true, est: true, h: s.handleESTCSRAttrs},
		{method: "POST", path: "/.well-known/est/{label}/simpleenroll", auth: authKey, scope: ScopeAgentsWrite, class: limitRegister, bodyLimit: estBodyLimit, est: true, h: s.handleESTSimpleEnroll},
		{method: "POST", path: "/.well-known/est/{label}/simplereenroll", auth: authKeyOrAgentTLS, scope: ScopeAgentsWrite, bodyLimit: estBodyLimit, est: true, h: s.handleESTSimpleReenroll},
	}
}

func (s *Server) routes() *mux.Router { return s.newRouter(s.routeTable()) }

// newRouter serves table; any other path is a 404, another method a 405.
func (s *Server) newRouter(table []route) *mux.Router {
	m := mux.NewRouter()
	// No path cleaning: a non-canonical path is a 404, never a redirect (and base64 in
	// OCSP GET paths may contain "//").
	m.SkipClean(true)
	for _, rt := range table {
		methods := []string{rt.method}
		if rt.method == http.MethodGet {
			methods = append(methods, http.MethodHead) // RFC 9110 §9.3.2; net/http drops the body
		}
		m.Handle(rt.path, s.wrap(rt)).Methods(methods...)
	}
	m.NotFoundHandler = s.wrap(route{h: func(http.ResponseWriter, *http.Request) error {
		return &apiError{Status: http.StatusNotFound, Code: CodeNotFound, Message: "not found"}
	}})
	m.MethodNotAllowedHandler = s.wrap(route{h: func(http.ResponseWriter, *http.Request) error {
		return &apiError{Status: http.StatusMethodNotAllowed, Code: CodeMethodNotAllowed, Message: "method not allowed"}
	}})
	return m
}

// wrap applies a route's policy, in order: route template for logs and metrics, body
// cap, per-IP limit, authentication (with lockout), scope, per-principal limit, the
// route's own limit, then the handler. Any error goes to writeError.
func (s *Server) wrap(rt route) http.Handler {
	writeError := s.writeError
	if rt.est {
		writeError = s.writeESTError
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ri := infoFrom(r.Context())
		if cr := mux.CurrentRoute(r); cr != nil {
			if tpl, err := cr.GetPathTemplate(); err == nil {
				ri.route = routeLabel(tpl)
			}
		}
		if rt.bodyLimit > 0 {
			r.Body = http.MaxBytesReader(w, r.Body, rt.bodyLimit)
			if r.ContentLength > rt.bodyLimit {
				w.Header().Set("Connection", "close")
				writeError(w, r, &http.MaxBytesError{Limit: rt.bodyLimit})
				return
			}
		}
		if err := s.policy(w, r, rt); err != nil {
			writeError(w, r, err)
			return
		}
		if err := rt.h(w, r); err != nil {
			writeError(w, r, err)
		}
	})
}

func (s *Server) policy(w http.ResponseWriter, r *http.Request, rt route) error {
	ctx := r.Context()
	ri := infoFrom(ctx)
	ip := limitKey(ri.ip)
	rl := s.cfg.RateLimits
	if rt.public {
		if err := s.allow(w, r, s.limits.client, ClassPublic, "pub:"+ip, rl.Public, true); err != nil {
			return err
		}
	} else if err := s.allow(w, r, s.limits.client, ClassPerIP, "ip:"+ip, rl.PerIP, false); err != nil {
		return err
	}
	if rt.auth == authNone {
		return nil
	}
	actor, err := s.authenticate(w, r, rt)
	if err != nil {
		return err
	}
	actor.IP, actor.RequestID = ip, ri.id
	ri.actor = actor
	principal := "key:" + actor.KeyID
	if actor.AgentName != "" {
		principal = "agent:" + actor.AgentName
	} else if !hasScope(actor, rt.scope) {
		return &apiError{Status: http.StatusForbidden, Code: CodeForbidden, Message: "the API key lacks the required scope"}
	}
	pt := s.limits.principal
	if err := s.allow(w, r, pt, ClassPerKey, "principal:"+principal, rl.PerKey, false); err != nil {
		return err
	}
	switch rt.class {
	case limitList:
		return s.allow(w, r, pt, ClassList, "list:"+principal, rl.List, false)
	case limitRegister:
		return s.allow(w, r, pt, ClassRegister, "register:"+principal, rl.Register, false)
	case limitRotate, limitRevoke, limitCard:
		// The name comes from the URL, so the caller chooses it: it is validated before
		// any state is created for it, and these buckets live in their own table, which
		// evicts when full, so inventing names can neither grow memory nor refuse
		// anyone else's requests.
		name, err := pathName(r)
		if err != nil {
			return err
		}
		return s.allowAction(w, r, rt.class, actor, name)
	}
	return nil
}

// allowAction spends the rotate, revoke or card limit (class) of the agent name for
// actor. Per agent and per action; the bucket is also keyed by who asks (the
// owner, or the agent itself), so a caller refused by authorization cannot drain
// the budget of the agent's real owner. EST's simplereenroll, whose name comes
// from the CSR, spends the same buckets.
func (s *Server) allowAction(w http.ResponseWriter, r *http.Request, class limitClass, actor *registry.Actor, name string) error {
	rl := s.cfg.RateLimits
	action, lim := ClassRotate, rl.Rotate
	switch class {
	case limitRevoke:
		action, lim = ClassRevoke, rl.Revoke
	case limitCard:
		action, lim = ClassCard, rl.Card
	}
	who := "owner:" + actor.Owner
	if actor.AgentName != "" {
		who = "self"
	}
	return s.allow(w, r, s.limits.action, action, action+":"+limitName(name)+":"+who, lim, false)
}

// limitName normalizes an agent name the way the registry does (NFC, lowercase) so that
// "Bot" and "bot" share one bucket.
func limitName(name string) string { return strings.ToLower(norm.NFC.String(name)) }

// hasScope mirrors the registry's rule: admin implies every scope, agents:write implies
// agents:read. The registry checks again; this refuses early, before any rate budget of
// the route is spent.
func hasScope(a *registry.Actor, scope string) bool {
	switch {
	case slices.Contains(a.Scopes, ScopeAdmin):
		return true
	case scope == ScopeAdmin:
		return false
	case slices.Contains(a.Scopes, scope):
		return true
	}
	return scope == ScopeAgentsRead && slices.Contains(a.Scopes, ScopeAgentsWrite)
}

// allow spends one unit of limit for key in table t; class is the label of a refusal.
// With public set, a failing shared backend is replaced by the in-process fallback;
// otherwise it fails closed with 503. A table too full to take a new key is counted in
// atr_ratelimit_table_full_total, and its refusal (a 503, the caller is not over any
// limit) is not a rejection of class.
func (s *Server) allow(w http.ResponseWriter, r *http.Request, t limitTable, class, key string, limit ratelimit.Limit, public bool) error {
	res, err := t.lim.Allow(r.Context(), key, limit)
	if err != nil && public && s.limits.fallback != nil {
		infoFrom(r.Context()).logger(s.log).WithError(err).Warn("shared rate limiter unavailable; using local limits")
		res, err = s.limits.fallback.Allow(r.Context(), key, limit)
	}
	if err != nil {
		return &apiError{Status: http.StatusServiceUnavailable, Code: CodeUnavailable,
			Message: "service temporarily unavailable", cause: fmt.Errorf("rate limiter: %w", err)}
	}
	if res.TableFull {
		s.metrics.tableFull.WithLabelValues(t.name).Inc()
		if !res.Allowed {
			w.Header().Set("Retry-After", "1")
			return &apiError{Status: http.StatusServiceUnavailable, Code: CodeUnavailable,
				Message: "service temporarily unavailable", cause: fmt.Errorf("rate limiter: %s table full", t.name)}
		}
	}
	if !res.Allowed {
		return &rateLimitedError{class: class, res: res}
	}
	setRateLimitHeaders(w.Header(), res)
	return nil
}

// errAuth is the 401 for missing credentials. The 401 for wrong credentials has the
// same code and message: neither says which part failed.
var errAuth = &apiError{Status: http.StatusUnauthorized, Code: CodeUnauthenticated, Message: "authentication required"}

// maxKeyLen bounds the presented API key before anything else looks at it.
const maxKeyLen = 256

// authenticate finds the caller. A client IP that failed too often is refused before
// its credential is examined (lockout); every failure is logged with IP and request ID
// and counted.
func (s *Server) authenticate(w http.ResponseWriter, r *http.Request, rt route) (*registry.Actor, error) {
	ctx := r.Context()
	authz := r.Header.Get("Authorization")
	var chain []*x509.Certificate
	if authz == "" && rt.auth == authKeyOrAgentTLS && r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		if len(r.TLS.VerifiedChains) > 0 {
			chain = r.TLS.VerifiedChains[0]
		} else {
			chain = r.TLS.PeerCertificates
		}
	}
	method := "apikey"
	if chain != nil {
		method = "mtls"
	}
	if authz == "" && chain == nil {
		s.authFailed(r, method, "missing", false)
		return nil, errAuth
	}
	if err := s.checkLockout(w, r); err != nil {
		s.authFailed(r, method, "locked_out", false)
		return nil, err
	}
	var (
		actor *registry.Actor
		err   error
	)
	if chain != nil {
		actor, err = s.deps.Auth.AuthenticateAgent(ctx, chain)
		if err == nil && (actor == nil || actor.AgentName == "" || (!rt.est && actor.AgentName != limitName(mux.Vars(r)["name"]))) {
			// A valid certificate of another agent: not this agent's to rotate. (EST
			// names no agent in the path: the handler checks the CSR's name.)
			s.authFailed(r, method, "wrong_agent", false)
			return nil, &apiError{Status: http.StatusForbidden, Code: CodeForbidden, Message: "not allowed"}
		}
	} else {
		token, ok := bearer(authz)
		if !ok && rt.est {
			token, ok = basicAPIKey(r) // RFC 7030 §3.2.3
		}
		if !ok {
			err = fmt.Errorf("api: malformed Authorization header: %w", registry.ErrUnauthenticated)
		} else {
			actor, err = s.deps.Auth.Authenticate(ctx, token)
		}
	}
	switch {
	case err == nil && actor != nil:
		return actor, nil
	case err == nil || errors.Is(err, registry.ErrUnauthenticated):
		s.authFailed(r, method, "invalid", true)
		return nil, &apiError{Status: http.StatusUnauthorized, Code: CodeUnauthenticated, Message: "authentication required", cause: err}
	default:
		return nil, fmt.Errorf("api: authenticating: %w", err)
	}
}

// bearer extracts a plausible API key from "Bearer atr_...".
func bearer(h string) (string, bool) {
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	tok = strings.TrimSpace(tok)
	if !strings.HasPrefix(tok, "atr_") || len(tok) > maxKeyLen {
		return "", false
	}
	for i := 0; i < len(tok); i++ {
		if c := tok[i]; c <= ' ' || c > '~' {
			return "", false
		}
	}
	return tok, true
}

// checkLockout refuses a client IP that has spent its failed-authentication budget
// (class auth-failure) or is locked out (class lockout), without spending anything.
func (s *Server) checkLockout(_ http.ResponseWriter, r *http.Request) error {
	ip := limitKey(infoFrom(r.Context()).ip)
	rl := s.cfg.RateLimits
	for _, c := range []struct {
		t          limitTable
		class, key string
		lim        ratelimit.Limit
	}{
		{s.limits.authFailure, ClassAuthFailure, "authfail:" + ip, rl.AuthFailure},
		{s.limits.lockout, ClassLockout, "lockout:" + ip, rl.lockoutLimit()},
	} {
		res, err := c.t.lim.Check(r.Context(), c.key, c.lim)
		if err != nil {
			return &apiError{Status: http.StatusServiceUnavailable, Code: CodeUnavailable,
				Message: "service temporarily unavailable", cause: fmt.Errorf("rate limiter: %w", err)}
		}
		if !res.Allowed {
			return &rateLimitedError{class: c.class, res: res}
		}
	}
	return nil
}

// authFailed logs and counts a failed authentication; count spends one unit of the
// failure and lockout budgets of the client IP.
func (s *Server) authFailed(r *http.Request, method, reason string, count bool) {
	ri := infoFrom(r.Context())
	s.metrics.authFailures.WithLabelValues(method, reason).Inc()
	entry := ri.logger(s.log).WithFields(map[string]any{"auth_method": method, "reason": reason, "method": methodLabel(r.Method)})
	entry.Warn("authentication failed")
	if !count {
		return
	}
	if err := s.countAuthFailure(r, limitKey(ri.ip)); err != nil {
		entry.WithError(err).Error("recording failed authentication")
	}
}

// countAuthFailure spends one failure of ip. The failure goes to the short window
// (AuthFailure) first; lockout state, which lives for up to LockoutThreshold ×
// LockoutDuration, is created only when that budget is spent — charged as
// min(AuthFailure.Burst, LockoutThreshold) failures, the ones the window held — and
// while it exists every failure is charged one. One failure from each of many
// addresses thus leaves only short-lived entries behind.
func (s *Server) countAuthFailure(r *http.Request, ip string) error {
	ctx := r.Context()
	rl := s.cfg.RateLimits
	af, lk := s.limits.authFailure, s.limits.lockout
	res, err := af.lim.Allow(ctx, "authfail:"+ip, rl.AuthFailure)
	if err != nil {
		return fmt.Errorf("api: auth-failure window: %w", err)
	}
	if res.TableFull {
		s.metrics.tableFull.WithLabelValues(af.name).Inc()
	}
	lockKey, lockLim := "lockout:"+ip, rl.lockoutLimit()
	held, err := lk.lim.Check(ctx, lockKey, lockLim)
	if err != nil {
		return fmt.Errorf("api: lockout: %w", err)
	}
	cost := 0
	switch {
	case held.ResetAfter > 0:
		cost = 1
	case !res.Allowed || res.Remaining == 0:
		cost = min(rl.AuthFailure.Burst, rl.LockoutThreshold)
	default:
		return nil
	}
	res, err = lk.lim.AllowN(ctx, lockKey, lockLim, cost)
	if err != nil {
		return fmt.Errorf("api: lockout: %w", err)
	}
	if res.TableFull {
		// The address is not locked out; its short window still limits it.
		s.metrics.tableFull.WithLabelValues(lk.name).Inc()
	}
	return nil
}

func (s *Server) handleMetrics(w http.ResponseWriter, r *http.Request) error {
	s.metrics.handler.ServeHTTP(w, r)
	return nil
}
