package api

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"

	"github.com/agent-trust-registry/atr/api/client"
	"github.com/agent-trust-registry/atr/api/ratelimit"
)

// syncBuffer is a goroutine-safe log sink.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// fakeClock is a settable clock for the in-process limiter.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

type harness struct {
	t    *testing.T
	srv  *httptest.Server
	s    *Server
	fake *fakeRegistry
	logs *syncBuffer
}

func testLogger(buf io.Writer) *logrus.Entry {
	l := logrus.New()
	l.SetFormatter(&logrus.JSONFormatter{})
	l.SetOutput(buf)
	l.SetLevel(logrus.DebugLevel)
	return logrus.NewEntry(l)
}

// newHarness starts a real HTTP server over the fake registry. mutate may change the
// config and deps before New.
func newHarness(t *testing.T, mutate func(*Config, *Deps)) *harness {
	t.Helper()
	h := &harness{t: t, fake: newFake(t), logs: &syncBuffer{}}
	cfg := Config{TrustDomain: "example.org"}
	deps := Deps{Lifecycle: h.fake, Auth: h.fake, Admin: h.fake, Log: fakeLog{}, Revocation: fakeLog{}}
	if mutate != nil {
		mutate(&cfg, &deps)
	}
	s, err := New(cfg, deps, testLogger(h.logs))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	h.s = s
	h.srv = httptest.NewServer(s.Handler())
	t.Cleanup(h.srv.Close)
	return h
}

type reply struct {
	status int
	header http.Header
	body   []byte
}

func (r reply) errBody(t *testing.T) client.ErrorDetail {
	t.Helper()
	var eb client.ErrorBody
	if err := json.Unmarshal(r.body, &eb); err != nil {
		t.Fatalf("error body %q: %v", r.body, err)
	}
	return eb.Error
}

// do sends a request; body may be nil, a string/[]byte (sent as is) or a value (JSON).
func (h *harness) do(method, path, key string, body any, hdr ...string) reply {
	h.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		js, err := json.Marshal(b)
		if err != nil {
			h.t.Fatal(err)
		}
		rd = bytes.NewReader(js)
	}
	req, err := http.NewRequest(method, h.srv.URL+path, rd)
	if err != nil {
		h.t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := h.srv.Client().Do(req)
	if err != nil {
		h.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		h.t.Fatal(err)
	}
	return reply{status: resp.StatusCode, header: resp.Header, body: b}
}

const testCSR = "-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----\n"

func (h *harness) register(key, name string) {
	h.t.Helper()
	r := h.do("POST", "/v1/agents", key, map[string]any{"name": name, "csr": testCSR})
	if r.status != http.StatusCreated {
		h.t.Fatalf("register %s: got %d %s, want 201", name, r.status, r.body)
	}
}

var hexID = regexp.MustCompile(`^[0-9a-f]{32}$`)

// SEC-001: no authentication → 401 on every write (and every non-public read).
func TestSEC001NoAuthOnEveryProtectedRoute(t *testing.T) {
	h := newHarness(t, func(c *Config, _ *Deps) {
		// This test makes many failed attempts on purpose; keep the lockout out of the way.
		c.RateLimits.AuthFailure = ratelimit.PerMinute(500)
		c.RateLimits.LockoutThreshold = 1000
		c.RateLimits.PerIP = ratelimit.PerMinute(1000)
	})
	for _, rt := range h.s.routeTable() {
		if rt.auth == authNone {
			continue
		}
		path := strings.NewReplacer("{name}", "x.alice", "{id}", "k1").Replace(rt.path)
		for _, key := range []string{"", "atr_nope_0000", "not-a-key", "Basic Zm9vOmJhcg=="} {
			t.Run(rt.method+" "+rt.path+" key="+key, func(t *testing.T) {
				r := h.do(rt.method, path, key, map[string]any{"name": "x.alice", "csr": testCSR})
				if r.status != http.StatusUnauthorized {
					t.Fatalf("got %d %s, want 401", r.status, r.body)
				}
				if rt.est { // RFC 7030 §4.2.3: a text/plain reason (TestESTSimpleEnroll)
					if !strings.HasPrefix(r.header.Get("Content-Type"), "text/plain") || r.header.Get("X-Request-ID") == "" {
						t.Errorf("EST error: %q %q", r.header.Get("Content-Type"), r.body)
					}
				} else if e := r.errBody(t); e.Code != CodeUnauthenticated || e.RequestID == "" {
					t.Errorf("got %+v, want code %s and a request id", e, CodeUnauthenticated)
				}
				if r.header.Get("WWW-Authenticate") == "" {
					t.Error("no WWW-Authenticate header")
				}
			})
		}
	}
	if len(h.fake.agents) != 0 {
		t.Errorf("got %d agents registered without auth, want 0", len(h.fake.agents))
	}
}

// Scopes: agents:read cannot write, owners cannot use /v1/admin.
func TestScopes(t *testing.T) {
	h := newHarness(t, nil)
	tests := []struct {
		name, method, path, key string
		want                    int
	}{
		{"reader registers", "POST", "/v1/agents", keyRead, 403},
		{"reader lists", "GET", "/v1/agents", keyRead, 200},
		{"writer lists", "GET", "/v1/agents", keyAlice, 200},
		{"owner creates key", "POST", "/v1/admin/apikeys", keyAlice, 403},
		{"owner revokes key", "DELETE", "/v1/admin/apikeys/k1", keyAlice, 403},
		{"owner reads audit", "GET", "/v1/admin/audit", keyAlice, 403},
		{"admin reads audit", "GET", "/v1/admin/audit", keyAdmin, 200},
		{"admin revokes key", "DELETE", "/v1/admin/apikeys/k1", keyAdmin, 204},
		{"admin revokes unknown key", "DELETE", "/v1/admin/apikeys/k2", keyAdmin, 404},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var body any
			if tt.method == "POST" {
				body = map[string]any{"name": "a.alice", "csr": testCSR}
				if strings.Contains(tt.path, "apikeys") {
					body = map[string]any{"owner": "x", "scopes": []string{"agents:read"}}
				}
			}
			if r := h.do(tt.method, tt.path, tt.key, body); r.status != tt.want {
				t.Errorf("got %d %s, want %d", r.status, r.body, tt.want)
			}
		})
	}
	r := h.do("POST", "/v1/admin/apikeys", keyAdmin, map[string]any{"owner": "team", "namespace": "team", "scopes": []string{"agents:write"}, "expires_in": "720h"})
	var ck client.CreatedAPIKey
	if r.status != 201 || json.Unmarshal(r.body, &ck) != nil || ck.Key == "" || ck.ID != "k1" {
		t.Errorf("create key: got %d %s, want 201 with id and key", r.status, r.body)
	}
}

// SEC-002: another owner's rotate/revoke/get/certificate → 404 (existence not revealed).
func TestSEC002OtherOwner(t *testing.T) {
	h := newHarness(t, nil)
	h.register(keyAlice, "bot.alice")
	for _, c := range []struct{ method, path string }{
		{"POST", "/v1/agents/bot.alice/rotate"},
		{"POST", "/v1/agents/bot.alice/revoke"},
		{"GET", "/v1/agents/bot.alice"},
		{"GET", "/v1/agents/bot.alice/certificate"},
	} {
		t.Run(c.method+" "+c.path, func(t *testing.T) {
			var body any
			if c.method == "POST" {
				body = map[string]any{"csr": testCSR}
				if strings.HasSuffix(c.path, "revoke") {
					body = map[string]any{"reason": "keyCompromise"}
				}
			}
			r := h.do(c.method, c.path, keyBob, body)
			if r.status != http.StatusNotFound {
				t.Fatalf("got %d %s, want 404", r.status, r.body)
			}
		})
	}
	if got := h.fake.agents["bot.alice"].Status; got != "active" {
		t.Errorf("bot.alice status %q after bob's attempts, want active", got)
	}
	// Namespace: bob cannot register under alice's suffix.
	if r := h.do("POST", "/v1/agents", keyBob, map[string]any{"name": "evil.alice", "csr": testCSR}); r.status != 403 {
		t.Errorf("bob registers evil.alice: got %d, want 403", r.status)
	}
	if r := h.do("POST", "/v1/agents", keyAlice, map[string]any{"name": "bot.alice", "csr": testCSR}); r.status != 409 {
		t.Errorf("duplicate: got %d, want 409", r.status)
	}
}

// SEC-010: the certificate endpoint needs authentication.
func TestSEC010CertificateNeedsAuth(t *testing.T) {
	h := newHarness(t, nil)
	h.register(keyAlice, "bot.alice")
	if r := h.do("GET", "/v1/agents/bot.alice/certificate", "", nil); r.status != 401 {
		t.Errorf("anonymous: got %d, want 401", r.status)
	}
	r := h.do("GET", "/v1/agents/bot.alice/certificate", keyAlice, nil)
	if r.status != 200 || !strings.Contains(string(r.body), "BEGIN CERTIFICATE") {
		t.Errorf("owner: got %d %q, want 200 PEM", r.status, r.body)
	}
}

// Strict JSON: unknown fields, trailing data, non-objects, wrong content type.
func TestStrictJSON(t *testing.T) {
	h := newHarness(t, nil)
	tests := []struct {
		name, body, ctype string
		want              int
	}{
		{"unknown field", `{"name":"a.alice","csr":"` + strings.ReplaceAll(testCSR, "\n", `\n`) + `","owner":"bob"}`, "application/json", 400},
		{"two objects", `{"name":"a.alice"}{"name":"b.alice"}`, "application/json", 400},
		{"array", `[{"name":"a.alice"}]`, "application/json", 400},
		{"null", `null`, "application/json", 400},
		{"trailing garbage", `{"name":"a.alice"} x`, "application/json", 400},
		{"wrong type", `{"name":7}`, "application/json", 400},
		{"form", `name=a.alice`, "application/x-www-form-urlencoded", 415},
		{"no content type", `{}`, "", 415},
		{"invalid utf8", "{\"name\":\"a\xff.alice\"}", "application/json", 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := h.do("POST", "/v1/agents", keyAlice, tt.body, "Content-Type", tt.ctype)
			if r.status != tt.want {
				t.Fatalf("got %d %s, want %d", r.status, r.body, tt.want)
			}
			if strings.Contains(string(r.body), "bob") || strings.Contains(string(r.body), "a.alice") {
				t.Errorf("error body echoes the input: %s", r.body)
			}
		})
	}
	if len(h.fake.agents) != 0 {
		t.Errorf("got %d agents, want 0", len(h.fake.agents))
	}
}

// rawRequest writes a request by hand and reads the response: for bodies larger than a
// well-behaved client would send.
func rawRequest(t *testing.T, addr, head string, body io.Reader) *http.Response {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
	go func() {
		_, _ = io.WriteString(conn, head)
		if body != nil {
			_, _ = io.Copy(conn, body)
		}
	}()
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("reading response: %v", err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// SEC-006 / SEC-024: oversized, malformed, binary and injection-looking bodies → 400
// or 413, never 500, never echoed.
func TestSEC006SEC024VerifyHostileInput(t *testing.T) {
	h := newHarness(t, nil)
	addr := strings.TrimPrefix(h.srv.URL, "http://")

	t.Run("100MB declared", func(t *testing.T) {
		head := "POST /v1/verify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 104857600\r\n\r\n"
		resp := rawRequest(t, addr, head, io.LimitReader(zeros{}, 1<<20))
		if resp.StatusCode != 413 {
			t.Errorf("got %d, want 413", resp.StatusCode)
		}
		if resp.Header.Get("X-Request-ID") == "" {
			t.Error("no X-Request-ID")
		}
	})
	t.Run("100MB chunked", func(t *testing.T) {
		head := "POST /v1/verify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
		resp := rawRequest(t, addr, head, &chunker{left: 100 << 20})
		if resp.StatusCode != 413 {
			t.Errorf("got %d, want 413", resp.StatusCode)
		}
	})
	big := strings.Repeat("A", 70<<10)
	tests := []struct {
		name string
		body any
		want int
	}{
		{"65KB certificate", map[string]string{"certificate": "-----BEGIN CERTIFICATE-----\n" + big}, 413},
		{"not pem", map[string]string{"certificate": "hello world"}, 400},
		{"empty", map[string]string{"certificate": ""}, 400},
		{"truncated pem", map[string]string{"certificate": "-----BEGIN CERTIFICATE-----\nMIIB"}, 400},
		{"garbage base64", map[string]string{"certificate": "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n"}, 400},
		{"private key instead", map[string]string{"certificate": "-----BEGIN PRIVATE KEY-----\nMIIEvQ\n-----END PRIVATE KEY-----\n"}, 400},
		{"sql", map[string]string{"certificate": "-----BEGIN CERTIFICATE-----\n'; DROP TABLE agents; --\n-----END CERTIFICATE-----"}, 400},
		{"xss", map[string]string{"certificate": "<script>alert(1)</script>-----BEGIN X"}, 400},
		{"binary", "\x00\x01\x02\xff\xfe", 400},
		{"binary json string", map[string]string{"certificate": "-----BEGIN CERTIFICATE-----\n\x00\x01\u0080\n-----END CERTIFICATE-----"}, 400},
		{"valid pem, not a cert", map[string]string{"certificate": string(testCA(t))[:60] + "\n-----END CERTIFICATE-----\n"}, 400},
		{"chain garbage", map[string]string{"certificate": string(h.fake.bundle), "chain": "nope"}, 400},
		{"good shape", map[string]string{"certificate": string(h.fake.bundle)}, 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := h.do("POST", "/v1/verify", "", tt.body)
			if r.status != tt.want {
				t.Fatalf("got %d %.200s, want %d", r.status, r.body, tt.want)
			}
			for _, leak := range []string{"DROP TABLE", "<script>", "PRIVATE KEY", "AAAAAAAA", "x509:", "asn1"} {
				if strings.Contains(string(r.body), leak) {
					t.Errorf("response leaks %q: %.300s", leak, r.body)
				}
			}
		})
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 'A'
	}
	return len(p), nil
}

// chunker streams left bytes of 'A' in HTTP/1.1 chunked encoding.
type chunker struct {
	left int
	buf  []byte
}

func (c *chunker) Read(p []byte) (int, error) {
	if len(c.buf) == 0 {
		if c.left <= 0 {
			return 0, io.EOF
		}
		n := min(c.left, 32<<10)
		c.left -= n
		c.buf = append([]byte(fmt.Sprintf("%x\r\n", n)), bytes.Repeat([]byte("A"), n)...)
		c.buf = append(c.buf, "\r\n"...)
		if c.left == 0 {
			c.buf = append(c.buf, "0\r\n\r\n"...)
		}
	}
	n := copy(p, c.buf)
	c.buf = c.buf[n:]
	return n, nil
}

// SEC-009 / SEC-025: a forced internal error reaches the client as a generic message
// with the request ID; paths, stack and key material stay in the log.
func TestSEC009SEC025InternalErrorIsGeneric(t *testing.T) {
	secret := "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----"
	h := newHarness(t, nil)
	h.fake.fail = fmt.Errorf("open /var/lib/atr/tokens/root.db: %s: permission denied (pq: relation \"agents\")", secret)
	for _, c := range []struct{ method, path string }{
		{"POST", "/v1/agents"}, {"GET", "/v1/agents"}, {"GET", "/v1/agents/x.alice"}, {"POST", "/v1/verify"},
	} {
		t.Run(c.method+" "+c.path, func(t *testing.T) {
			var body any
			if c.method == "POST" {
				body = map[string]any{"name": "x.alice", "csr": testCSR}
				if c.path == "/v1/verify" {
					body = map[string]any{"certificate": string(h.fake.bundle)}
				}
			}
			r := h.do(c.method, c.path, keyAlice, body)
			if r.status != 500 {
				t.Fatalf("got %d %s, want 500", r.status, r.body)
			}
			e := r.errBody(t)
			if e.Code != CodeInternal || e.Message != "internal error" || !hexID.MatchString(e.RequestID) {
				t.Errorf("got %+v, want internal_error, generic message, request id", e)
			}
			if e.RequestID != r.header.Get("X-Request-ID") {
				t.Errorf("body request id %q != header %q", e.RequestID, r.header.Get("X-Request-ID"))
			}
			for _, leak := range []string{"/var/lib", "PRIVATE KEY", "MIIE", "pq:", "relation", "permission", "goroutine", ".go:"} {
				if strings.Contains(string(r.body), leak) {
					t.Errorf("response leaks %q: %s", leak, r.body)
				}
			}
			if !strings.Contains(h.logs.String(), e.RequestID) {
				t.Errorf("log has no line with request id %s", e.RequestID)
			}
		})
	}
	t.Run("panic", func(t *testing.T) {
		h.fake.fail = nil
		r := h.do("POST", "/v1/agents", keyAlice, map[string]any{"name": "panic.alice", "csr": testCSR})
		if r.status != 500 {
			t.Fatalf("got %d, want 500", r.status)
		}
		if strings.Contains(string(r.body), "boom") || strings.Contains(string(r.body), "/srv/atr") {
			t.Errorf("response leaks the panic: %s", r.body)
		}
		if e := r.errBody(t); e.Code != CodeInternal {
			t.Errorf("got code %q, want %q", e.Code, CodeInternal)
		}
		if !strings.Contains(h.logs.String(), "boom") || !strings.Contains(h.logs.String(), "stack") {
			t.Error("the panic and its stack are not in the log")
		}
	})
}

// SEC-029: X-Request-ID on every response, errors included; inbound IDs only when safe.
func TestSEC029RequestIDEverywhere(t *testing.T) {
	h := newHarness(t, func(c *Config, _ *Deps) { c.RateLimits.List = ratelimit.PerMinute(1) })
	h.fake.ready = errors.New("db down")
	cases := []struct {
		name, method, path, key string
		body                    any
		want                    int
	}{
		{"200", "GET", "/healthz", "", nil, 200},
		{"401", "POST", "/v1/agents", "", map[string]any{}, 401},
		{"404", "GET", "/nope", "", nil, 404},
		{"404 dotdot", "GET", "/v1/../etc/passwd", "", nil, 404},
		{"405", "PUT", "/v1/agents", "", nil, 405},
		{"400", "POST", "/v1/verify", "", "{", 400},
		{"503", "GET", "/readyz", "", nil, 503},
		{"list ok", "GET", "/v1/agents", keyAlice, nil, 200},
		{"429", "GET", "/v1/agents", keyAlice, nil, 429},
	}
	seen := map[string]bool{}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := h.do(c.method, c.path, c.key, c.body)
			if r.status != c.want {
				t.Fatalf("got %d %s, want %d", r.status, r.body, c.want)
			}
			id := r.header.Get("X-Request-ID")
			if !hexID.MatchString(id) || seen[id] {
				t.Errorf("X-Request-ID %q: want fresh 32 hex digits", id)
			}
			seen[id] = true
			if r.status >= 400 {
				if e := r.errBody(t); e.RequestID != id {
					t.Errorf("body request_id %q, header %q", e.RequestID, id)
				}
			}
			if !strings.Contains(h.logs.String(), `"request_id":"`+id+`"`) {
				t.Errorf("no log line with request_id %s", id)
			}
		})
	}
	// A client cannot choose the request ID that lands in the audit trail
	// (forensics); a well-formed one is logged beside ours for correlation.
	for _, c := range []struct {
		in     string
		logged bool
	}{
		{"abcdef0123456789", true},
		{"trace-1234.abcd_EF", true},
		{"short", false},
		{strings.Repeat("a", 65), false},
		{"has space 12345678", false},
		{`{"json":"injection"}`, false},
		{"-leading-dash-123", false},
	} {
		r := h.do("GET", "/healthz", "", nil, "X-Request-ID", c.in)
		got := r.header.Get("X-Request-ID")
		if got == c.in || !hexID.MatchString(got) {
			t.Errorf("inbound %q: got %q, want a fresh server-side id", c.in, got)
		}
		if logged := strings.Contains(h.logs.String(), `"client_request_id":"`+c.in+`"`); logged != c.logged {
			t.Errorf("inbound %q: logged as client_request_id = %v, want %v", c.in, logged, c.logged)
		}
	}
}

// Go's server accepts any token as an HTTP method; metric labels must stay a
// fixed set, or each new method string is a new series held forever.
func TestMethodLabelsBounded(t *testing.T) {
	h := newHarness(t, nil)
	for i := range 50 {
		h.do(fmt.Sprintf("X%dMETHOD", i), "/nope", "", nil)
	}
	mfs, err := h.s.Metrics().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "atr_http_requests_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "method" && strings.HasPrefix(l.GetValue(), "X") {
					t.Fatalf("client-chosen method %q became a metric label", l.GetValue())
				}
			}
		}
	}
}

func TestSecurityHeaders(t *testing.T) {
	for _, tlsOn := range []bool{false, true} {
		t.Run(fmt.Sprintf("tls=%v", tlsOn), func(t *testing.T) {
			h := newHarness(t, func(c *Config, _ *Deps) { c.TLS = tlsOn })
			for _, path := range []string{"/healthz", "/nope", "/v1/agents"} {
				r := h.do("GET", path, "", nil)
				if got := r.header.Get("X-Content-Type-Options"); got != "nosniff" {
					t.Errorf("%s: nosniff header %q", path, got)
				}
				if got := r.header.Get("Cache-Control"); got != "no-store" {
					t.Errorf("%s: Cache-Control %q, want no-store", path, got)
				}
				if got := r.header.Get("Server"); got != "" {
					t.Errorf("%s: Server banner %q", path, got)
				}
				if got := r.header.Get("Strict-Transport-Security"); (got != "") != tlsOn {
					t.Errorf("%s: HSTS %q with TLS=%v", path, got, tlsOn)
				}
			}
		})
	}
}

// SEC-013: CORS for configured origins only; evil origins get nothing; never "*",
// never credentials.
func TestSEC013CORS(t *testing.T) {
	h := newHarness(t, func(c *Config, _ *Deps) { c.CORSOrigins = []string{"https://console.example.org"} })
	for _, c := range []struct {
		origin string
		want   string
	}{
		{"https://evil.example", ""},
		{"https://console.example.org.evil.example", ""},
		{"null", ""},
		{"https://console.example.org", "https://console.example.org"},
	} {
		for _, method := range []string{"GET", "OPTIONS"} {
			r := h.do(method, "/v1/agents", keyAlice, nil, "Origin", c.origin, "Access-Control-Request-Method", "POST")
			if got := r.header.Get("Access-Control-Allow-Origin"); got != c.want {
				t.Errorf("%s origin %q: ACAO %q, want %q", method, c.origin, got, c.want)
			}
			if got := r.header.Get("Access-Control-Allow-Credentials"); got != "" {
				t.Errorf("%s origin %q: Allow-Credentials %q, want none", method, c.origin, got)
			}
		}
	}
	for _, bad := range [][]string{{"*"}, {"https://*.example.org"}, {"console.example.org"}, {"https://x.org/path"}} {
		if _, err := New(Config{TrustDomain: "example.org", CORSOrigins: bad}, Deps{Lifecycle: h.fake, Auth: h.fake, Admin: h.fake}, testLogger(io.Discard)); err == nil {
			t.Errorf("CORSOrigins %q accepted, want refused", bad)
		}
	}
	// Default: no origin at all.
	d := newHarness(t, nil)
	if got := d.do("GET", "/healthz", "", nil, "Origin", "https://console.example.org").header.Get("Access-Control-Allow-Origin"); got != "" {
		t.Errorf("default config: ACAO %q, want none", got)
	}
}

// SEC-021 / SEC-026 / SEC-027: list is authenticated, own agents only, capped, limited.
func TestSEC021ListOwnOnlyAndCapped(t *testing.T) {
	h := newHarness(t, nil)
	h.register(keyAlice, "a1.alice")
	h.register(keyAlice, "a2.alice")
	h.register(keyBob, "b1.bob")
	if r := h.do("GET", "/v1/agents", "", nil); r.status != 401 {
		t.Errorf("anonymous list: got %d, want 401", r.status)
	}
	var page client.AgentList
	r := h.do("GET", "/v1/agents?limit=1000", keyBob, nil)
	if r.status != 200 || json.Unmarshal(r.body, &page) != nil {
		t.Fatalf("bob list: %d %s", r.status, r.body)
	}
	if len(page.Agents) != 1 || page.Agents[0].Name != "b1.bob" {
		t.Errorf("bob sees %+v, want only b1.bob", page.Agents)
	}
	r = h.do("GET", "/v1/agents?limit=1", keyAlice, nil)
	if json.Unmarshal(r.body, &page) != nil || len(page.Agents) != 1 || page.NextCursor == "" {
		t.Errorf("alice limit=1: got %s, want one agent and a cursor", r.body)
	}
	for _, bad := range []string{"0", "-1", "abc", "1e9"} {
		if r := h.do("GET", "/v1/agents?limit="+bad, keyAlice, nil); r.status != 400 {
			t.Errorf("limit=%s: got %d, want 400", bad, r.status)
		}
	}
	if got := clampedLimit(t, "1000"); got != maxPageSize {
		t.Errorf("limit=1000 reaches the registry as %d, want %d", got, maxPageSize)
	}
	if got := clampedLimit(t, ""); got != defaultPageSize {
		t.Errorf("no limit reaches the registry as %d, want %d", got, defaultPageSize)
	}
	// SEC-027: 10 lists per minute per key (bob has used 1, alice 6).
	lim := newHarness(t, nil)
	for i := 0; i < 10; i++ {
		if r := lim.do("GET", "/v1/agents", keyAlice, nil); r.status != 200 {
			t.Fatalf("list %d: got %d, want 200", i+1, r.status)
		}
	}
	r = lim.do("GET", "/v1/agents", keyAlice, nil)
	if r.status != 429 || r.header.Get("Retry-After") == "" {
		t.Errorf("11th list: got %d Retry-After %q, want 429 with Retry-After", r.status, r.header.Get("Retry-After"))
	}
	if r := lim.do("GET", "/v1/agents", keyBob, nil); r.status != 200 {
		t.Errorf("other key: got %d, want 200", r.status)
	}
}

func clampedLimit(t *testing.T, v string) int {
	t.Helper()
	rec := &limitRecorder{fakeRegistry: newFake(t)}
	s, err := New(Config{TrustDomain: "example.org"}, Deps{Lifecycle: rec, Auth: rec, Admin: rec}, testLogger(io.Discard))
	if err != nil {
		t.Fatal(err)
	}
	req := httptest.NewRequest("GET", "/v1/agents?limit="+v, nil)
	req.Header.Set("Authorization", "Bearer "+keyAlice)
	w := httptest.NewRecorder()
	s.Handler().ServeHTTP(w, req)
	if w.Code != 200 {
		t.Fatalf("got %d, want 200", w.Code)
	}
	return rec.limit
}

// SEC-022: a rotate flood on one agent gets 429 after 10; another agent is unaffected.
func TestSEC022RotateFlood(t *testing.T) {
	h := newHarness(t, nil)
	h.register(keyAlice, "victim.alice")
	h.register(keyAlice, "other.alice")
	for i := 0; i < 10; i++ {
		if r := h.do("POST", "/v1/agents/victim.alice/rotate", keyAlice, map[string]string{"csr": testCSR}); r.status != 200 {
			t.Fatalf("rotate %d: got %d %s, want 200", i+1, r.status, r.body)
		}
	}
	r := h.do("POST", "/v1/agents/VICTIM.alice/rotate", keyAlice, map[string]string{"csr": testCSR})
	if r.status != 429 {
		t.Fatalf("11th rotate (case-folded name): got %d, want 429", r.status)
	}
	if e := r.errBody(t); e.Code != CodeRateLimited {
		t.Errorf("code %q, want %q", e.Code, CodeRateLimited)
	}
	for _, hd := range []string{"Retry-After", "RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"} {
		if r.header.Get(hd) == "" {
			t.Errorf("429 without %s", hd)
		}
	}
	if got := r.header.Get("RateLimit-Remaining"); got != "0" {
		t.Errorf("RateLimit-Remaining %q, want 0", got)
	}
	if r := h.do("POST", "/v1/agents/other.alice/rotate", keyAlice, map[string]string{"csr": testCSR}); r.status != 200 {
		t.Errorf("other agent: got %d, want 200", r.status)
	}
	// Revoke has its own budget.
	if r := h.do("POST", "/v1/agents/victim.alice/revoke", keyAlice, map[string]string{"reason": "keyCompromise"}); r.status != 200 {
		t.Errorf("revoke after rotate flood: got %d, want 200", r.status)
	}
	// Bob's refused attempts do not spend alice's budget.
	h2 := newHarness(t, nil)
	h2.register(keyAlice, "v.alice")
	for i := 0; i < 12; i++ {
		h2.do("POST", "/v1/agents/v.alice/revoke", keyBob, map[string]string{"reason": "keyCompromise"})
	}
	if r := h2.do("POST", "/v1/agents/v.alice/revoke", keyAlice, map[string]string{"reason": "superseded"}); r.status != 200 {
		t.Errorf("owner revoke after bob's flood: got %d, want 200", r.status)
	}
}

// SEC-023: key guessing gets locked out, even for a correct key from the same IP.
func TestSEC023Lockout(t *testing.T) {
	clk := &fakeClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	h := newHarness(t, func(_ *Config, d *Deps) { d.Now = clk.Now })
	guess := func(i int) int { return h.do("GET", "/v1/agents", fmt.Sprintf("atr_guess_%032d", i), nil).status }
	for i := 0; i < 5; i++ {
		if got := guess(i); got != 401 {
			t.Fatalf("guess %d: got %d, want 401", i, got)
		}
	}
	calls := h.fake.authN
	if got := h.do("GET", "/v1/agents", keyAlice, nil).status; got != 429 {
		t.Fatalf("valid key after 5 failures in a minute: got %d, want 429", got)
	}
	if h.fake.authN != calls {
		t.Error("a locked-out request reached Authenticate")
	}
	clk.Advance(61 * time.Second)
	for i := 5; i < 10; i++ {
		if got := guess(i); got != 401 {
			t.Fatalf("guess %d: got %d, want 401", i, got)
		}
	}
	clk.Advance(61 * time.Second)
	if got := h.do("GET", "/v1/agents", keyAlice, nil).status; got != 429 {
		t.Fatalf("valid key after 10 failures: got %d, want 429 (lockout)", got)
	}
	clk.Advance(20 * time.Minute)
	if got := h.do("GET", "/v1/agents", keyAlice, nil).status; got != 429 {
		t.Fatalf("valid key 22 minutes after lockout: got %d, want 429", got)
	}
	clk.Advance(10 * time.Minute)
	if got := h.do("GET", "/v1/agents", keyAlice, nil).status; got != 200 {
		t.Fatalf("valid key 32 minutes later: got %d, want 200", got)
	}
	logs := h.logs.String()
	if n := strings.Count(logs, `"msg":"authentication failed"`); n < 10 {
		t.Errorf("got %d failed-authentication log lines, want ≥ 10", n)
	}
	if !strings.Contains(logs, `"client_ip":"127.0.0.1"`) {
		t.Error("failed authentications are logged without the client IP")
	}
	m := h.do("GET", "/metrics", "", nil)
	if !strings.Contains(string(m.body), `atr_auth_failures_total{method="apikey",reason="invalid"} 10`) {
		t.Errorf("metrics lack 10 auth failures:\n%s", grep(string(m.body), "atr_auth_failures_total"))
	}
	if !strings.Contains(string(m.body), `atr_ratelimit_rejections_total{class="lockout"}`) {
		t.Error("metrics lack the lockout rejections")
	}
}

func grep(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func TestPerIPLimitAndTrustedProxies(t *testing.T) {
	h := newHarness(t, func(c *Config, _ *Deps) {
		c.TrustedProxies = []string{"127.0.0.0/8"}
		c.RateLimits.Public = ratelimit.Limit{Rate: 3, Period: time.Minute, Burst: 3}
	})
	for i := 0; i < 3; i++ {
		if r := h.do("GET", "/healthz", "", nil, "X-Forwarded-For", "203.0.113.7"); r.status != 200 {
			t.Fatalf("request %d: got %d", i, r.status)
		}
	}
	if r := h.do("GET", "/healthz", "", nil, "X-Forwarded-For", "203.0.113.7"); r.status != 429 {
		t.Errorf("4th from 203.0.113.7: got %d, want 429", r.status)
	}
	// Spoofing the left-most hop does not help: the right-most untrusted hop counts.
	if r := h.do("GET", "/healthz", "", nil, "X-Forwarded-For", "198.51.100.1, 203.0.113.7"); r.status != 429 {
		t.Errorf("spoofed left hop: got %d, want 429", r.status)
	}
	if r := h.do("GET", "/healthz", "", nil, "X-Forwarded-For", "203.0.113.8"); r.status != 200 {
		t.Errorf("another client: got %d, want 200", r.status)
	}
	if !strings.Contains(h.logs.String(), `"client_ip":"203.0.113.7"`) {
		t.Error("access log lacks the forwarded client IP")
	}
	// Without trusted proxies, X-Forwarded-For is ignored.
	u := newHarness(t, nil)
	u.do("GET", "/healthz", "", nil, "X-Forwarded-For", "203.0.113.9")
	if strings.Contains(u.logs.String(), "203.0.113.9") || !strings.Contains(u.logs.String(), `"client_ip":"127.0.0.1"`) {
		t.Error("X-Forwarded-For believed from an untrusted peer")
	}
}

func TestClientIP(t *testing.T) {
	s := &Server{}
	var err error
	if s.proxies, err = ParseTrustedProxies([]string{"10.0.0.0/8", "192.0.2.1"}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, remote, xff, fwd, want string
	}{
		{"direct", "198.51.100.2:1234", "", "", "198.51.100.2"},
		{"untrusted peer xff ignored", "198.51.100.2:1234", "1.2.3.4", "", "198.51.100.2"},
		{"trusted peer", "10.1.1.1:80", "1.2.3.4", "", "1.2.3.4"},
		{"right-most untrusted", "10.1.1.1:80", "6.6.6.6, 1.2.3.4, 10.2.2.2", "", "1.2.3.4"},
		{"all trusted", "10.1.1.1:80", "10.3.3.3, 192.0.2.1", "", "10.3.3.3"},
		{"garbage hop", "10.1.1.1:80", "1.2.3.4, garbage", "", "10.1.1.1"},
		// A client's own Forwarded header passes through common proxies untouched:
		// it must never choose the address (only X-Forwarded-For counts).
		{"forwarded ignored", "10.1.1.1:80", "9.9.9.9", `for=192.0.2.60;proto=http, for="[2001:db8::1]:4711"`, "9.9.9.9"},
		{"forwarded alone ignored", "10.1.1.1:80", "", `for=192.0.2.60`, "10.1.1.1"},
		{"ipv6 peer", "[2001:db8::2]:443", "1.2.3.4", "", "2001:db8::2"},
		{"mapped peer", "[::ffff:10.1.1.1]:80", "1.2.3.4", "", "1.2.3.4"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/", nil)
			r.RemoteAddr = tt.remote
			if tt.xff != "" {
				r.Header.Set("X-Forwarded-For", tt.xff)
			}
			if tt.fwd != "" {
				r.Header.Set("Forwarded", tt.fwd)
			}
			if got := s.clientIP(r); got != netip.MustParseAddr(tt.want) {
				t.Errorf("got %v, want %s", got, tt.want)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	d := DefaultRateLimits()
	tests := []struct {
		name string
		cfg  Config
		ok   bool
	}{
		{"defaults", Config{TrustDomain: "example.org"}, true},
		{"no trust domain", Config{}, false},
		{"single-label trust domain", Config{TrustDomain: "localhost"}, false},
		{"trust domain with underscore", Config{TrustDomain: "my_org.example"}, false},
		{"bare proxy address", Config{TrustDomain: "example.org", TrustedProxies: []string{"192.0.2.1", "2001:db8::1"}}, true},
		{"raised rotate", Config{TrustDomain: "example.org", RateLimits: RateLimits{Rotate: ratelimit.PerHour(100)}}, true},
		{"lowered rotate", Config{TrustDomain: "example.org", RateLimits: RateLimits{Rotate: ratelimit.PerHour(1)}}, true},
		{"disabled by absurd rate", Config{TrustDomain: "example.org", RateLimits: RateLimits{Rotate: ratelimit.PerHour(1_000_000)}}, false},
		{"negative rate", Config{TrustDomain: "example.org", RateLimits: RateLimits{PerIP: ratelimit.Limit{Rate: -1, Period: time.Second, Burst: 1}}}, false},
		{"zero burst", Config{TrustDomain: "example.org", RateLimits: RateLimits{PerIP: ratelimit.Limit{Rate: 1, Period: time.Second}}}, false},
		{"lockout too short", Config{TrustDomain: "example.org", RateLimits: RateLimits{LockoutDuration: time.Second}}, false},
		{"body limit too big", Config{TrustDomain: "example.org", BodyLimit: 1 << 30}, false},
		{"bad proxy", Config{TrustDomain: "example.org", TrustedProxies: []string{"10.0.0.0/33"}}, false},
		{"wildcard origin", Config{TrustDomain: "example.org", CORSOrigins: []string{"*"}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.cfg.Validate(); (err == nil) != tt.ok {
				t.Errorf("Validate() = %v, want ok=%v", err, tt.ok)
			}
		})
	}
	if d.Rotate != ratelimit.PerHour(10) || d.List != ratelimit.PerMinute(10) || d.AuthFailure != ratelimit.PerMinute(5) ||
		d.LockoutThreshold != 10 || d.LockoutDuration != 30*time.Minute {
		t.Errorf("defaults changed: %+v", d)
	}
}

func TestMetrics(t *testing.T) {
	extra := prometheus.NewGauge(prometheus.GaugeOpts{Name: "atr_token_healthy", Help: "test"})
	extra.Set(1)
	h := newHarness(t, func(_ *Config, d *Deps) { d.Collectors = []prometheus.Collector{extra} })
	h.register(keyAlice, "m.alice")
	h.do("POST", "/v1/agents/m.alice/revoke", keyAlice, map[string]string{"reason": "superseded"})
	h.do("POST", "/v1/verify", "", map[string]string{"certificate": string(h.fake.bundle)})
	h.do("GET", "/nope", "", nil)
	body := string(h.do("GET", "/metrics", "", nil).body)
	for _, want := range []string{
		`atr_http_requests_total{method="POST",route="/v1/agents",status="201"} 1`,
		`atr_http_requests_total{method="GET",route="unmatched",status="404"} 1`,
		`atr_http_request_duration_seconds_bucket{method="POST",route="/v1/agents/{name}/revoke"`,
		`atr_issuance_total{operation="register",outcome="ok"} 1`,
		`atr_revocations_total{outcome="ok"} 1`,
		`atr_verify_total{result="unknown_certificate"} 1`,
		`atr_token_healthy 1`,
		`go_goroutines`,
		// How long goroutines wait for a processor: part of each of the
		// group commit writer's round trips on a busy machine.
		`go_sched_latencies_seconds_bucket{le=`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	// Duplicate collectors are a construction error, not a panic.
	if _, err := New(Config{TrustDomain: "example.org"}, Deps{Lifecycle: h.fake, Auth: h.fake, Admin: h.fake,
		Collectors: []prometheus.Collector{extra, extra}}, testLogger(io.Discard)); err == nil {
		t.Error("duplicate collector accepted")
	}
}

func TestPublicEndpoints(t *testing.T) {
	h := newHarness(t, nil)
	r := h.do("GET", "/v1/ca/bundle", "", nil)
	if r.status != 200 || !bytes.Equal(r.body, h.fake.bundle) || !strings.HasPrefix(r.header.Get("Cache-Control"), "public") {
		t.Errorf("bundle: %d %q cache %q", r.status, r.body, r.header.Get("Cache-Control"))
	}
	r = h.do("GET", "/v1/ca/spiffe-bundle", "", nil)
	var b spiffeBundle
	if r.status != 200 || json.Unmarshal(r.body, &b) != nil {
		t.Fatalf("spiffe bundle: %d %s", r.status, r.body)
	}
	if len(b.Keys) != 1 || b.Keys[0].Use != "x509-svid" || b.Keys[0].Kty != "EC" || b.Keys[0].Crv != "P-256" ||
		len(b.Keys[0].X5c) != 1 || b.Keys[0].X == "" || b.Keys[0].Y == "" || b.RefreshHint != 300 {
		t.Errorf("spiffe bundle: %s", r.body)
	}
	for _, c := range []struct {
		path, ctype string
		want        int
	}{
		{"/v1/crl", "application/pkix-crl", 200},
		{"/v1/log/checkpoint", "text/plain; charset=utf-8", 200},
		{"/v1/log/key", "application/x-pem-file", 200},
		{"/v1/log/entries?start=0&end=2", "application/json; charset=utf-8", 200},
		{"/v1/log/entries?start=0&end=5", "application/json; charset=utf-8", 404},
		{"/v1/log/entries?start=2&end=1", "application/json; charset=utf-8", 400},
		{"/v1/log/proof/inclusion?index=0&size=2", "application/json; charset=utf-8", 200},
		{"/v1/log/proof/inclusion?index=2&size=2", "application/json; charset=utf-8", 400},
		{"/v1/log/proof/consistency?old=1&new=2", "application/json; charset=utf-8", 200},
		{"/v1/log/proof/consistency?old=x&new=2", "application/json; charset=utf-8", 400},
		{"/v1/ocsp/MAMKAQA=", "application/ocsp-response", 200},
		{"/v1/ocsp/a//b+c=", "application/ocsp-response", 200},
		{"/v1/ocsp/!!!", "application/ocsp-response", 200}, // malformedRequest answer
		{"/openapi.json", "application/json", 200},
		{"/readyz", "application/json; charset=utf-8", 200},
	} {
		r := h.do("GET", c.path, "", nil)
		if r.status != c.want || r.header.Get("Content-Type") != c.ctype {
			t.Errorf("%s: got %d %q, want %d %q", c.path, r.status, r.header.Get("Content-Type"), c.want, c.ctype)
		}
	}
	// The CRL may be cached for one second only (a revocation must reach
	// relying parties that fast) and revalidates cheaply by ETag.
	r = h.do("GET", "/v1/crl", "", nil)
	if cc, etag := r.header.Get("Cache-Control"), r.header.Get("ETag"); cc != "public, max-age=1" || etag == "" {
		t.Errorf("crl caching: Cache-Control %q, ETag %q; want max-age=1 and an ETag", cc, etag)
	} else if r2 := h.do("GET", "/v1/crl", "", nil, "If-None-Match", etag); r2.status != 304 || len(r2.body) != 0 {
		t.Errorf("crl revalidation: %d with %d bytes; want 304 and no body", r2.status, len(r2.body))
	}
	r = h.do("POST", "/v1/ocsp", "", []byte{0x30, 0x00}, "Content-Type", "application/ocsp-request")
	if r.status != 200 || r.header.Get("Content-Type") != "application/ocsp-response" {
		t.Errorf("ocsp post: %d %q", r.status, r.header.Get("Content-Type"))
	}
	// Without a log and revocation backend the routes exist but answer 501.
	n := newHarness(t, func(_ *Config, d *Deps) { d.Log, d.Revocation = nil, nil })
	for _, p := range []string{"/v1/crl", "/v1/log/checkpoint", "/v1/ocsp/MAMKAQA="} {
		if r := n.do("GET", p, "", nil); r.status != 501 {
			t.Errorf("%s without backend: got %d, want 501", p, r.status)
		}
	}
}

// TestMTLSRotate: an agent rotates with its own certificate and no API key; a
// certificate of another agent, an unknown certificate, or a certificate on any other
// route does not authenticate.
func TestMTLSRotate(t *testing.T) {
	fake := newFake(t)
	s, err := New(Config{TrustDomain: "example.org", TLS: true}, Deps{Lifecycle: fake, Auth: fake, Admin: fake}, testLogger(io.Discard))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(s.Handler())
	srv.TLS = &tls.Config{ClientAuth: tls.RequestClientCert}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	fake.agents["bot.alice"] = registryAgent("bot.alice", "alice")
	fake.agents["other.alice"] = registryAgent("other.alice", "alice")
	fake.agentOK["bot.alice"] = true

	do := func(cn, method, path string, body string) int {
		t.Helper()
		tr := srv.Client().Transport.(*http.Transport).Clone()
		if cn != "" {
			tr.TLSClientConfig.Certificates = []tls.Certificate{selfSigned(t, cn)}
		}
		req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		resp, err := (&http.Client{Transport: tr}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.Header.Get("Strict-Transport-Security") == "" {
			t.Error("no HSTS over TLS")
		}
		return resp.StatusCode
	}
	body := `{"csr":"` + strings.ReplaceAll(testCSR, "\n", `\n`) + `"}`
	for _, c := range []struct {
		name, cn, method, path string
		want                   int
	}{
		{"own rotate", "bot.alice", "POST", "/v1/agents/bot.alice/rotate", 200},
		{"other agent's rotate", "bot.alice", "POST", "/v1/agents/other.alice/rotate", 403},
		{"unknown certificate", "stranger.alice", "POST", "/v1/agents/stranger.alice/rotate", 401},
		{"no certificate", "", "POST", "/v1/agents/bot.alice/rotate", 401},
		{"certificate on revoke", "bot.alice", "POST", "/v1/agents/bot.alice/revoke", 401},
		{"certificate on get", "bot.alice", "GET", "/v1/agents/bot.alice", 401},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := do(c.cn, c.method, c.path, body); got != c.want {
				t.Errorf("got %d, want %d", got, c.want)
			}
		})
	}
}

// IPv6 clients are limited per /64: rotating through addresses of one /64
// (2^64 of them) must not buy fresh per-IP budgets or escape a lockout.
func TestIPv6LimitedPerSlash64(t *testing.T) {
	h := newHarness(t, func(c *Config, _ *Deps) {
		c.TrustedProxies = []string{"127.0.0.1/32"}
		c.RateLimits.AuthFailure = ratelimit.PerMinute(3)
	})
	locked := false
	for i := range 20 {
		src := fmt.Sprintf("2001:db8:1:2::%x", i+1) // one /64, a new address each time
		r := h.do("GET", "/v1/agents", "atr_0123456789abcdef_"+strings.Repeat("0", 64), nil, "X-Forwarded-For", src)
		if r.status == 429 {
			locked = true
			break
		}
	}
	if !locked {
		t.Fatal("20 failed authentications from one /64 were never rate-limited")
	}
	// Another /64 is another client.
	r := h.do("GET", "/v1/agents", keyAlice, nil, "X-Forwarded-For", "2001:db8:1:3::1")
	if r.status != 200 {
		t.Errorf("a client in another /64: HTTP %d %s; want 200", r.status, r.body)
	}
	for _, tc := range []struct{ in, want string }{
		{"2001:db8:1:2::1", "2001:db8:1:2::/64"},
		{"2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"},
		{"192.0.2.7", "192.0.2.7"},
		{"::ffff:192.0.2.7", "::ffff:192.0.2.7"},
	} {
		if got := limitKey(netip.MustParseAddr(tc.in)); got != tc.want {
			t.Errorf("limitKey(%s) = %s; want %s", tc.in, got, tc.want)
		}
	}
}
