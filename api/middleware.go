package api

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"regexp"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/agent-trust-registry/atr/registry"
)

// requestIDPattern is what an inbound X-Request-ID must look like to be kept. Anything
// else (too long, spaces, control characters, log-injection attempts) is replaced by a
// fresh random ID.
var requestIDPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{7,63}$`)

// reqInfo is the per-request state shared by the middleware layers. It is created by
// the outermost layer and filled in as the request goes down.
type reqInfo struct {
	id string // always generated here: the audit trail's request IDs are ours
	// clientID is a well-formed X-Request-ID the client sent, logged beside
	// id for correlation with the client's own logs; never trusted as id.
	clientID string
	ip       netip.Addr
	route    string // mux path template; "unmatched" for 404/405
	actor    *registry.Actor
	start    time.Time
}

type ctxKey struct{}

func infoFrom(ctx context.Context) *reqInfo {
	if ri, ok := ctx.Value(ctxKey{}).(*reqInfo); ok {
		return ri
	}
	return &reqInfo{route: "unmatched"}
}

// logger returns base with the request's fixed fields.
func (ri *reqInfo) logger(base *logrus.Entry) *logrus.Entry {
	f := logrus.Fields{"request_id": ri.id, "client_ip": ri.ip.String(), "route": ri.route}
	if ri.clientID != "" {
		f["client_request_id"] = ri.clientID
	}
	if ri.actor != nil {
		if ri.actor.AgentName != "" {
			f["actor"] = "agent:" + ri.actor.AgentName
		} else {
			f["actor"] = ri.actor.KeyID
		}
	}
	return base.WithFields(f)
}

func newRequestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms
	return hex.EncodeToString(b[:])
}

// statusRecorder remembers the status code written by the handler.
type statusRecorder struct {
	http.ResponseWriter
	status int
	wrote  bool
}

func (s *statusRecorder) WriteHeader(code int) {
	if !s.wrote {
		s.status, s.wrote = code, true
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	if !s.wrote {
		s.status, s.wrote = http.StatusOK, true
	}
	return s.ResponseWriter.Write(b)
}

func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// outer is the middleware every request passes, matched route or not, in this order:
// request ID and client IP → access log and metrics → panic recovery → security headers
// → CORS → body cap → the router. hsts says whether the security headers include
// Strict-Transport-Security (never on the plain-http distribution listener).
func (s *Server) outer(next http.Handler, hsts bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ri := &reqInfo{start: s.now(), route: "unmatched", id: newRequestID()}
		if id := r.Header.Get("X-Request-ID"); requestIDPattern.MatchString(id) {
			ri.clientID = id
		}
		ri.ip = s.clientIP(r)
		w.Header().Set("X-Request-ID", ri.id)
		if len(r.TransferEncoding) > 0 {
			// RFC 9112 §6.1: a request with both Content-Length and Transfer-Encoding
			// may be a smuggling attempt; it is processed by Transfer-Encoding and the
			// connection MUST then be closed. Go's server drops Content-Length before a
			// handler runs, so every request with a Transfer-Encoding closes it.
			w.Header().Set("Connection", "close")
		}
		r = r.WithContext(context.WithValue(r.Context(), ctxKey{}, ri))
		ctx, cancel := context.WithTimeout(r.Context(), s.cfg.HandlerTimeout)
		defer cancel()
		r = r.WithContext(ctx)

		rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
		defer func() {
			d := s.now().Sub(ri.start)
			status := strconv.Itoa(rec.status)
			method := methodLabel(r.Method)
			s.metrics.requests.WithLabelValues(ri.route, method, status).Inc()
			s.metrics.latency.WithLabelValues(ri.route, method).Observe(d.Seconds())
			ri.logger(s.log).WithFields(logrus.Fields{
				"method":      method,
				"status":      rec.status,
				"duration_ms": float64(d.Microseconds()) / 1000,
				"bytes_in":    r.ContentLength,
			}).Info("request")
		}()
		s.recoverer(s.headers(s.cors(s.bodyCap(next)), hsts)).ServeHTTP(rec, r)
	})
}

// methodLabel maps the request method to a fixed set for metric labels and
// logs: Go's server accepts any token as a method, and a label per distinct
// client-chosen string would grow memory without bound.
func methodLabel(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions:
		return m
	}
	return "other"
}

// recoverer turns a panic into the standard 500 body. The panic value and stack go to
// the log only.
func (s *Server) recoverer(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				infoFrom(r.Context()).logger(s.log).WithField("stack", string(debug.Stack())).
					Errorf("panic: %v", v)
				s.writeError(w, r, fmt.Errorf("api: panic in handler: %v", v))
			}
		}()
		next.ServeHTTP(w, r)
	})
}

// headers sets the security headers of every response.
func (s *Server) headers(next http.Handler, withHSTS bool) http.Handler {
	hsts := fmt.Sprintf("max-age=%d; includeSubDomains", int(s.cfg.HSTSMaxAge/time.Second))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Cache-Control", "no-store")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'")
		if withHSTS {
			h.Set("Strict-Transport-Security", hsts)
		}
		next.ServeHTTP(w, r)
	})
}

// cors answers preflights and sets Access-Control-Allow-Origin only for configured
// origins. Credentials (cookies, TLS client certificates) are never allowed
// cross-origin: API keys travel in the Authorization header, which needs no credentials
// mode, so Access-Control-Allow-Credentials is never sent and the origin is never "*".
func (s *Server) cors(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		origin := r.Header.Get("Origin")
		h := w.Header()
		h.Add("Vary", "Origin")
		allowed := origin != "" && slices.Contains(s.cfg.CORSOrigins, origin)
		if allowed {
			h.Set("Access-Control-Allow-Origin", origin)
			h.Set("Access-Control-Expose-Headers", "X-Request-ID, Retry-After, RateLimit-Limit, RateLimit-Remaining, RateLimit-Reset")
		}
		if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
			if allowed {
				h.Set("Access-Control-Allow-Methods", "GET, POST, DELETE")
				h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type, X-Request-ID")
				h.Set("Access-Control-Max-Age", "600")
			}
			w.WriteHeader(http.StatusNoContent)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// bodyCap refuses declared bodies over the configured cap at once and caps streamed
// ones with http.MaxBytesReader. Routes with a smaller cap add their own reader.
func (s *Server) bodyCap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > s.cfg.BodyLimit {
			w.Header().Set("Connection", "close")
			s.writeError(w, r, &http.MaxBytesError{Limit: s.cfg.BodyLimit})
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, s.cfg.BodyLimit)
		next.ServeHTTP(w, r)
	})
}

// clientIP is the socket peer, unless the peer is a trusted proxy: then the right-most
// address of X-Forwarded-For that is not itself a trusted proxy (Forwarded is ignored).
func (s *Server) clientIP(r *http.Request) netip.Addr {
	peer := parseHostAddr(r.RemoteAddr)
	if !s.trusted(peer) {
		return peer
	}
	hops := forwardedFor(r.Header)
	for i := len(hops) - 1; i >= 0; i-- {
		a, err := netip.ParseAddr(hops[i])
		if err != nil {
			// A malformed hop: stop believing the chain here; the last trusted hop
			// (the peer or a proxy) is the best we know.
			return peer
		}
		a = a.Unmap()
		if !s.trusted(a) {
			return a
		}
		peer = a
	}
	return peer
}

func (s *Server) trusted(a netip.Addr) bool {
	if !a.IsValid() {
		return false
	}
	for _, p := range s.proxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func parseHostAddr(hostport string) netip.Addr {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		host = hostport
	}
	a, err := netip.ParseAddr(strings.Trim(host, "[]"))
	if err != nil {
		return netip.Addr{}
	}
	return a.Unmap()
}

// forwardedFor returns the hop addresses, left to right, from
// X-Forwarded-For; ports and brackets are removed. The RFC 7239 Forwarded
// header is ignored on purpose: common proxies (nginx, cloud load balancers)
// append to X-Forwarded-For and pass a client's own Forwarded header through
// untouched, so believing it would let any client choose its address.
func forwardedFor(h http.Header) []string {
	var hops []string
	for _, line := range h.Values("X-Forwarded-For") {
		for _, v := range strings.Split(line, ",") {
			if v = strings.TrimSpace(v); v != "" {
				hops = append(hops, stripPort(v))
			}
		}
	}
	return hops
}

func stripPort(v string) string {
	if strings.HasPrefix(v, "[") {
		if end := strings.Index(v, "]"); end > 0 {
			return v[1:end]
		}
		return v
	}
	if strings.Count(v, ":") == 1 {
		host, _, _ := strings.Cut(v, ":")
		return host
	}
	return v
}

// limitKey is the rate-limit identity of a client address: the address for
// IPv4, its /64 for IPv6 — one subscriber usually holds a whole /64, and
// keying on /128 would hand an attacker 2^64 fresh budgets and lockouts to
// step around. Logs and audit keep the full address.
func limitKey(a netip.Addr) string {
	if a.Is6() && !a.Is4In6() {
		if p, err := a.Prefix(64); err == nil {
			return p.String()
		}
	}
	return a.String()
}
