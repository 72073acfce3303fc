package api

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"

	"github.com/smallstep/pkcs7"

	"github.com/agent-trust-registry/atr/api/ratelimit"
	"github.com/agent-trust-registry/atr/ca"
	"github.com/agent-trust-registry/atr/registry"
	"github.com/agent-trust-registry/atr/registry/registrytest"
	"github.com/agent-trust-registry/atr/registry/translog"
)

// estServer is the api over HTTPS (client certificates requested, not
// required) in front of a real registry on SoftHSM2, for the EST tests.
type estServer struct {
	f    *registrytest.Fixture
	s    *Server
	srv  *httptest.Server
	pool *x509.CertPool
}

func newESTServer(t *testing.T, adjust func(*Config)) *estServer {
	t.Helper()
	f := registrytest.NewFixture(t)
	cfg := Config{TrustDomain: registrytest.TrustDomain, TLS: true}
	if adjust != nil {
		adjust(&cfg)
	}
	s, err := New(cfg, Deps{Lifecycle: f.Registry, Auth: f.Registry, Admin: f.Registry, Log: f.Registry, Now: f.Clock.Now}, testLogger(io.Discard))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(s.Handler())
	srv.TLS = &tls.Config{ClientAuth: tls.RequestClientCert, MinVersion: tls.VersionTLS12}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	return &estServer{f: f, s: s, srv: srv, pool: pool}
}

type estReply struct {
	status int
	header http.Header
	body   []byte
}

// estCred is how a request authenticates: an HTTP Basic password or a Bearer
// token (the API key), and/or a TLS client certificate.
type estCred struct {
	basicUser, basicPass string
	bearer               string
	cert                 *tls.Certificate
}

func (es *estServer) do(t *testing.T, method, path string, c estCred, contentType string, body []byte) estReply {
	t.Helper()
	tc := &tls.Config{RootCAs: es.pool, MinVersion: tls.VersionTLS12}
	if c.cert != nil {
		cert := *c.cert
		tc.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil }
	}
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: tc}}
	defer hc.CloseIdleConnections()
	req, err := http.NewRequest(method, es.srv.URL+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
		req.Header.Set("Content-Transfer-Encoding", "base64")
	}
	if c.basicPass != "" || c.basicUser != "" {
		req.SetBasicAuth(c.basicUser, c.basicPass)
	}
	if c.bearer != "" {
		req.Header.Set("Authorization", "Bearer "+c.bearer)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return estReply{status: resp.StatusCode, header: resp.Header, body: b}
}

// enroll posts csr (DER) base64-encoded to op with c.
func (es *estServer) enroll(t *testing.T, op string, c estCred, csr []byte) estReply {
	t.Helper()
	return es.do(t, "POST", "/.well-known/est/"+op, c, "application/pkcs10", []byte(b64Lines(csr, 76)))
}

// b64Lines is base64 in lines of n characters, as base64(1) writes it.
func b64Lines(der []byte, n int) string {
	s := base64.StdEncoding.EncodeToString(der)
	var b strings.Builder
	for len(s) > n {
		b.WriteString(s[:n] + "\n")
		s = s[n:]
	}
	return b.String() + s + "\n"
}

// estCSR is a DER CSR over key with the given subject CN (none if empty) and URI SANs.
func estCSR(t *testing.T, key crypto.Signer, cn string, uris ...string) []byte {
	t.Helper()
	tmpl := &x509.CertificateRequest{}
	if cn != "" {
		tmpl.Subject = pkix.Name{CommonName: cn}
	}
	for _, u := range uris {
		pu, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, pu)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func newKey(t *testing.T) crypto.Signer {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// certsOf reads a certs-only EST answer: the content type, base64, a PKCS#7
// SignedData with certificates and nothing else.
func certsOf(t *testing.T, r estReply) []*x509.Certificate {
	t.Helper()
	if r.status != http.StatusOK {
		t.Fatalf("got %d %q, want 200", r.status, r.body)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/pkcs7-mime; smime-type=certs-only" {
		t.Errorf("Content-Type %q", ct)
	}
	if cte := r.header.Get("Content-Transfer-Encoding"); cte != "base64" {
		t.Errorf("Content-Transfer-Encoding %q, want base64", cte)
	}
	for _, line := range strings.Split(strings.TrimSuffix(string(r.body), "\n"), "\n") {
		if len(line) > 64 {
			t.Fatalf("a base64 line of %d characters, want ≤ 64", len(line))
		}
	}
	der, err := base64.StdEncoding.DecodeString(strings.ReplaceAll(string(r.body), "\n", ""))
	if err != nil {
		t.Fatalf("body is not base64: %v", err)
	}
	p7, err := pkcs7.Parse(der)
	if err != nil {
		t.Fatalf("body is not PKCS#7: %v", err)
	}
	if len(p7.Signers) != 0 || len(p7.Content) != 0 {
		t.Errorf("not certs-only: %d signers, %d content bytes", len(p7.Signers), len(p7.Content))
	}
	return p7.Certificates
}

// wantESTError checks an EST refusal: status, a text/plain reason containing
// want, the request ID.
func wantESTError(t *testing.T, what string, r estReply, status int, want string) {
	t.Helper()
	if r.status != status {
		t.Errorf("%s: got %d %q, want %d", what, r.status, r.body, status)
		return
	}
	if ct := r.header.Get("Content-Type"); ct != "text/plain; charset=utf-8" {
		t.Errorf("%s: Content-Type %q, want text/plain", what, ct)
	}
	if !strings.Contains(string(r.body), want) {
		t.Errorf("%s: body %q, want it to contain %q", what, r.body, want)
	}
	if r.header.Get("X-Request-ID") == "" {
		t.Errorf("%s: no X-Request-ID", what)
	}
	if bytes.Contains(r.body, []byte(".go:")) || bytes.Contains(r.body, []byte("goroutine")) {
		t.Errorf("%s: internal details in %q", what, r.body)
	}
}

func bundleCerts(t *testing.T, f *registrytest.Fixture) []*x509.Certificate {
	t.Helper()
	var out []*x509.Certificate
	for _, der := range pemCertificates(f.Registry.Bundle()) {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
	return out
}

// verifyLeaf builds the chain of leaf to the bundle's roots at the fixture's time.
func verifyLeaf(t *testing.T, f *registrytest.Fixture, leaf *x509.Certificate) {
	t.Helper()
	roots, inters := x509.NewCertPool(), x509.NewCertPool()
	for _, c := range bundleCerts(t, f) {
		if bytes.Equal(c.RawIssuer, c.RawSubject) {
			roots.AddCert(c)
		} else {
			inters.AddCert(c)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inters, CurrentTime: f.Clock.Now(),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("issued certificate does not verify against the bundle: %v", err)
	}
}

func wantAgent(t *testing.T, leaf *x509.Certificate, name string) {
	t.Helper()
	want := "spiffe://" + registrytest.TrustDomain + "/agent/" + name
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != want {
		t.Errorf("certificate URIs %v, want [%s]", leaf.URIs, want)
	}
}

func TestESTCACerts(t *testing.T) {
	es := newESTServer(t, nil)
	want := bundleCerts(t, es.f)
	for _, path := range []string{"/.well-known/est/cacerts", "/.well-known/est/" + registrytest.TrustDomain + "/cacerts"} {
		t.Run(path, func(t *testing.T) {
			got := certsOf(t, es.do(t, "GET", path, estCred{}, "", nil))
			if len(got) != len(want) || len(got) < 2 {
				t.Fatalf("got %d certificates, want the %d of the bundle", len(got), len(want))
			}
			for i := range want {
				if !got[i].Equal(want[i]) {
					t.Errorf("certificate %d is %s, want %s", i, got[i].Subject, want[i].Subject)
				}
			}
		})
	}
	wantESTError(t, "unknown label", es.do(t, "GET", "/.well-known/est/other.example/cacerts", estCred{}, "", nil), 404, "label")
	if r := es.do(t, "HEAD", "/.well-known/est/cacerts", estCred{}, "", nil); r.status != 200 || len(r.body) != 0 {
		t.Errorf("HEAD cacerts: %d, %d bytes", r.status, len(r.body))
	}
	if r := es.do(t, "POST", "/.well-known/est/cacerts", estCred{}, "", nil); r.status != 405 {
		t.Errorf("POST cacerts: %d, want 405", r.status)
	}
	// Operations ATR does not offer are 404 (RFC 7030 §3.2.2 makes them optional).
	for _, op := range []string{"fullcmc", "serverkeygen"} {
		if r := es.do(t, "POST", "/.well-known/est/"+op, estCred{}, "application/pkcs10", []byte("MA==")); r.status != 404 {
			t.Errorf("POST %s: %d, want 404", op, r.status)
		}
	}
}

func TestESTCSRAttrs(t *testing.T) {
	es := newESTServer(t, nil)
	r := es.do(t, "GET", "/.well-known/est/csrattrs", estCred{}, "", nil)
	if r.status != 200 || r.header.Get("Content-Type") != "application/csrattrs" || r.header.Get("Content-Transfer-Encoding") != "base64" {
		t.Fatalf("got %d %q %q", r.status, r.header.Get("Content-Type"), r.body)
	}
	der, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(r.body)))
	if err != nil {
		t.Fatal(err)
	}
	// CsrAttrs ::= SEQUENCE OF AttrOrOID, decoded generically.
	var attrs []asn1.RawValue
	if rest, err := asn1.Unmarshal(der, &attrs); err != nil || len(rest) != 0 {
		t.Fatalf("not a SEQUENCE OF: %v (%d trailing bytes)", err, len(rest))
	}
	var got []string
	for _, a := range attrs {
		switch a.Tag {
		case asn1.TagOID:
			var oid asn1.ObjectIdentifier
			if _, err := asn1.Unmarshal(a.FullBytes, &oid); err != nil {
				t.Fatal(err)
			}
			got = append(got, oid.String())
		case asn1.TagSequence:
			var at estAttribute
			if _, err := asn1.Unmarshal(a.FullBytes, &at); err != nil {
				t.Fatal(err)
			}
			s := at.Type.String() + "{"
			for _, v := range at.Values {
				s += v.String()
			}
			got = append(got, s+"}")
		default:
			t.Errorf("unexpected element tag %d", a.Tag)
		}
	}
	want := []string{"2.5.4.3", "1.2.840.10045.2.1{1.2.840.10045.3.1.7}", "1.2.840.10045.4.3.2"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("csrattrs %v, want %v", got, want)
	}
	// What csrattrs asks for is accepted: a P-256 key, ECDSA-SHA256, the name as CN.
	key := es.f.NewAPIKey("alice", "alice", registry.ScopeAgentsWrite)
	certsOf(t, es.enroll(t, "simpleenroll", estCred{basicPass: key}, estCSR(t, newKey(t), "attrs.alice")))
}

// TestESTSimpleEnroll: the owner's API key (HTTP Basic password or Bearer)
// registers the agent the CSR names, through the same Register as
// POST /v1/agents: namespace, scope, 409 on an existing agent, strict CSR
// parsing, and the issuance in the transparency log.
func TestESTSimpleEnroll(t *testing.T) {
	es := newESTServer(t, func(c *Config) {
		c.RateLimits.AuthFailure = ratelimit.PerMinute(500)
		c.RateLimits.LockoutThreshold = 1000
		c.RateLimits.Register = ratelimit.PerHour(100)
	})
	ctx := context.Background()
	alice := es.f.NewAPIKey("alice", "alice", registry.ScopeAgentsRead, registry.ScopeAgentsWrite)
	bob := es.f.NewAPIKey("bob", "bob", registry.ScopeAgentsRead, registry.ScopeAgentsWrite)
	reader := es.f.NewAPIKey("alice", "alice", registry.ScopeAgentsRead)

	t.Run("issued through the pipeline", func(t *testing.T) {
		r := es.enroll(t, "simpleenroll", estCred{basicUser: "anything", basicPass: alice}, estCSR(t, newKey(t), "Bot.Alice"))
		certs := certsOf(t, r)
		if len(certs) != 1 {
			t.Fatalf("got %d certificates, want the issued one alone", len(certs))
		}
		leaf := certs[0]
		wantAgent(t, leaf, "bot.alice")
		verifyLeaf(t, es.f, leaf)
		// Recorded, current, and in the log under the index of ATR-Log-Index.
		d, err := es.f.Registry.GetAgent(ctx, es.f.Owner("alice", "alice"), "bot.alice")
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(leaf.Raw)
		fp := hex.EncodeToString(sum[:])
		if d.Owner != "alice" || len(d.Certificates) != 1 || d.Certificates[0].FingerprintSHA256 != fp || d.Certificates[0].Status != registry.CertIssued {
			t.Fatalf("registry: %+v; want one issued certificate %s", d, fp)
		}
		idx, err := strconv.ParseInt(r.header.Get("ATR-Log-Index"), 10, 64)
		if err != nil || idx != d.Certificates[0].LogIndex {
			t.Fatalf("ATR-Log-Index %q, registry log index %d", r.header.Get("ATR-Log-Index"), d.Certificates[0].LogIndex)
		}
		leaves, err := es.f.Registry.LogEntries(ctx, idx, idx+1)
		if err != nil || len(leaves) != 1 {
			t.Fatalf("log entry %d: %v", idx, err)
		}
		e, err := translog.ParseEntry(leaves[0])
		if err != nil || e.Type != translog.EventRegister || e.Fingerprint != fp {
			t.Errorf("log entry %d: %+v, %v; want a register entry of %s", idx, e, err, fp)
		}
	})

	t.Run("names", func(t *testing.T) {
		td := registrytest.TrustDomain
		tests := []struct {
			name     string
			cred     estCred
			csr      []byte
			path     string
			want     int
			wantText string
			agent    string
		}{
			{"bearer, CN", estCred{bearer: alice}, estCSR(t, newKey(t), "b1.alice"), "", 200, "", "b1.alice"},
			{"URI SAN only", estCred{basicPass: alice}, estCSR(t, newKey(t), "", "spiffe://"+td+"/agent/b2.alice"), "", 200, "", "b2.alice"},
			{"CN and URI SAN agree", estCred{basicPass: alice}, estCSR(t, newKey(t), "b3.alice", "spiffe://"+td+"/agent/b3.alice"), "", 200, "", "b3.alice"},
			{"with the CA label", estCred{basicPass: alice}, estCSR(t, newKey(t), "b4.alice"), "/.well-known/est/" + td + "/simpleenroll", 200, "", "b4.alice"},
			{"existing agent", estCred{basicPass: alice}, estCSR(t, newKey(t), "bot.alice"), "", 409, "already exists", ""},
			{"outside the namespace", estCred{basicPass: bob}, estCSR(t, newKey(t), "x.alice"), "", 403, "not allowed", ""},
			{"read-only key", estCred{basicPass: reader}, estCSR(t, newKey(t), "r.alice"), "", 403, "scope", ""},
			{"CN and URI SAN disagree", estCred{basicPass: alice}, estCSR(t, newKey(t), "c1.alice", "spiffe://"+td+"/agent/c2.alice"), "", 400, "different agents", ""},
			{"no name", estCred{basicPass: alice}, estCSR(t, newKey(t), ""), "", 400, "names no agent", ""},
			{"invalid CN", estCred{basicPass: alice}, estCSR(t, newKey(t), "bad name!"), "", 400, "not a valid agent name", ""},
			{"URI SAN of another trust domain", estCred{basicPass: alice}, estCSR(t, newKey(t), "", "spiffe://other.example/agent/b5.alice"), "", 400, "URI SAN", ""},
			{"two URI SANs", estCred{basicPass: alice}, estCSR(t, newKey(t), "", "spiffe://"+td+"/agent/b6.alice", "spiffe://"+td+"/agent/b7.alice"), "", 400, "more than one URI SAN", ""},
			{"unknown label", estCred{basicPass: alice}, estCSR(t, newKey(t), "b8.alice"), "/.well-known/est/other.example/simpleenroll", 404, "label", ""},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				path := tt.path
				if path == "" {
					path = "/.well-known/est/simpleenroll"
				}
				r := es.do(t, "POST", path, tt.cred, "application/pkcs10", []byte(b64Lines(tt.csr, 76)))
				if tt.want != 200 {
					wantESTError(t, tt.name, r, tt.want, tt.wantText)
					return
				}
				certs := certsOf(t, r)
				if len(certs) != 1 {
					t.Fatalf("%d certificates", len(certs))
				}
				wantAgent(t, certs[0], tt.agent)
			})
		}
	})

	t.Run("authentication", func(t *testing.T) {
		csr := estCSR(t, newKey(t), "auth.alice")
		for _, c := range []struct {
			name string
			cred estCred
		}{
			{"none", estCred{}},
			{"wrong key", estCred{basicPass: "atr_" + strings.Repeat("0", 40)}},
			{"not a key", estCred{basicUser: "alice", basicPass: "hunter2"}},
		} {
			r := es.enroll(t, "simpleenroll", c.cred, csr)
			wantESTError(t, c.name, r, 401, "authentication required")
			if got := r.header.Get("WWW-Authenticate"); got != `Basic realm="atr-est"` {
				t.Errorf("%s: WWW-Authenticate %q", c.name, got)
			}
		}
		if _, err := es.f.Registry.GetAgent(ctx, es.f.Owner("alice", "alice"), "auth.alice"); err == nil {
			t.Error("an agent was registered without authentication")
		}
	})

	t.Run("malformed requests", func(t *testing.T) {
		good := estCSR(t, newKey(t), "m.alice")
		broken := bytes.Clone(good)
		broken[len(broken)-3] ^= 0x55 // the signature no longer verifies
		post := func(ct string, body []byte) estReply {
			return es.do(t, "POST", "/.well-known/est/simpleenroll", estCred{basicPass: alice}, ct, body)
		}
		wantESTError(t, "not base64", post("application/pkcs10", []byte("!!not base64!!")), 400, "not base64")
		wantESTError(t, "base64 of garbage", post("application/pkcs10", []byte(base64.StdEncoding.EncodeToString([]byte("garbage")))), 400, "not a DER")
		wantESTError(t, "truncated DER", post("application/pkcs10", []byte(base64.StdEncoding.EncodeToString(good[:len(good)/2]))), 400, "malformed")
		wantESTError(t, "bad signature", post("application/pkcs10", []byte(base64.StdEncoding.EncodeToString(broken))), 400, "self-signature")
		wantESTError(t, "PEM instead of base64 DER", post("application/pkcs10", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: good})), 400, "")
		wantESTError(t, "empty", post("application/pkcs10", nil), 400, "")
		wantESTError(t, "JSON content type", post("application/json", []byte(base64.StdEncoding.EncodeToString(good))), 415, "application/pkcs10")
		wantESTError(t, "no content type", post("", []byte(base64.StdEncoding.EncodeToString(good))), 415, "application/pkcs10")
		wantESTError(t, "too large", post("application/pkcs10", bytes.Repeat([]byte("A"), estBodyLimit+1)), 413, "too large")
		// Line breaks (CRLF too) and missing padding are fine (RFC 8951).
		b64 := strings.TrimRight(strings.ReplaceAll(b64Lines(good, 64), "\n", "\r\n"), "=\r\n")
		certsOf(t, post("application/pkcs10; charset=us-ascii", []byte(b64)))
	})
}

// TestESTSimpleReenroll: the agent over mTLS with its current certificate (or
// its owner's key) renews through the same Rotate as
// POST /v1/agents/{name}/rotate; superseded and revoked certificates cannot.
func TestESTSimpleReenroll(t *testing.T) {
	es := newESTServer(t, func(c *Config) {
		c.RateLimits.AuthFailure = ratelimit.PerMinute(500)
		c.RateLimits.LockoutThreshold = 1000
	})
	ctx := context.Background()
	alice := es.f.NewAPIKey("alice", "alice", registry.ScopeAgentsRead, registry.ScopeAgentsWrite)
	bob := es.f.NewAPIKey("bob", "bob", registry.ScopeAgentsRead, registry.ScopeAgentsWrite)

	enrolled := func(name string) (*x509.Certificate, crypto.Signer) {
		t.Helper()
		key := newKey(t)
		certs := certsOf(t, es.enroll(t, "simpleenroll", estCred{basicPass: alice}, estCSR(t, key, name)))
		return certs[0], key
	}
	tlsCert := func(leaf *x509.Certificate, key crypto.Signer) *tls.Certificate {
		return &tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: key, Leaf: leaf}
	}
	cert1, key1 := enrolled("bot.alice")
	enrolled("other.alice")

	// mTLS, the CSR names the agent: a new certificate, the old one superseded.
	key2 := newKey(t)
	r := es.enroll(t, "simplereenroll", estCred{cert: tlsCert(cert1, key1)}, estCSR(t, key2, "bot.alice"))
	certs := certsOf(t, r)
	if len(certs) != 1 {
		t.Fatalf("%d certificates", len(certs))
	}
	cert2 := certs[0]
	wantAgent(t, cert2, "bot.alice")
	verifyLeaf(t, es.f, cert2)
	if cert2.SerialNumber.Cmp(cert1.SerialNumber) == 0 || !cert2.PublicKey.(*ecdsa.PublicKey).Equal(key2.Public()) {
		t.Fatal("the new certificate is not for the new key")
	}
	d, err := es.f.Registry.GetAgent(ctx, es.f.Owner("alice", "alice"), "bot.alice")
	if err != nil || len(d.Certificates) != 2 {
		t.Fatalf("history: %+v, %v", d, err)
	}
	idx, _ := strconv.ParseInt(r.header.Get("ATR-Log-Index"), 10, 64)
	leaves, err := es.f.Registry.LogEntries(ctx, idx, idx+1)
	if err != nil || len(leaves) != 1 {
		t.Fatalf("log entry %d: %v", idx, err)
	}
	sum1, sum2 := sha256.Sum256(cert1.Raw), sha256.Sum256(cert2.Raw)
	if e, err := translog.ParseEntry(leaves[0]); err != nil || e.Type != translog.EventRotate ||
		e.Fingerprint != hex.EncodeToString(sum2[:]) || e.Previous != hex.EncodeToString(sum1[:]) {
		t.Errorf("log entry %d: %+v, %v; want the rotation", idx, e, err)
	}

	// The superseded certificate cannot renew again.
	wantESTError(t, "superseded certificate", es.enroll(t, "simplereenroll", estCred{cert: tlsCert(cert1, key1)}, estCSR(t, newKey(t), "bot.alice")), 401, "authentication required")
	// The current one cannot renew another agent.
	wantESTError(t, "another agent", es.enroll(t, "simplereenroll", estCred{cert: tlsCert(cert2, key2)}, estCSR(t, newKey(t), "other.alice")), 403, "another agent")
	wantESTError(t, "another agent's SAN", es.enroll(t, "simplereenroll", estCred{cert: tlsCert(cert2, key2)},
		estCSR(t, newKey(t), "", "spiffe://"+registrytest.TrustDomain+"/agent/other.alice")), 403, "another agent")
	// A CSR that names no agent renews the client certificate's agent (the label path too).
	key3 := newKey(t)
	r = es.do(t, "POST", "/.well-known/est/"+registrytest.TrustDomain+"/simplereenroll", estCred{cert: tlsCert(cert2, key2)}, "application/pkcs10", []byte(b64Lines(estCSR(t, key3, ""), 76)))
	cert3 := certsOf(t, r)[0]
	wantAgent(t, cert3, "bot.alice")

	// The owner's key renews too, naming the agent in the CSR; another owner cannot.
	cert4 := certsOf(t, es.enroll(t, "simplereenroll", estCred{basicPass: alice}, estCSR(t, newKey(t), "other.alice")))[0]
	wantAgent(t, cert4, "other.alice")
	wantESTError(t, "owner key, no name", es.enroll(t, "simplereenroll", estCred{basicPass: alice}, estCSR(t, newKey(t), "")), 400, "names no agent")
	wantESTError(t, "another owner", es.enroll(t, "simplereenroll", estCred{basicPass: bob}, estCSR(t, newKey(t), "bot.alice")), 404, "not found")
	// No credentials.
	r = es.enroll(t, "simplereenroll", estCred{}, estCSR(t, newKey(t), "bot.alice"))
	wantESTError(t, "no credentials", r, 401, "authentication required")
	if got := r.header.Get("WWW-Authenticate"); got != `Basic realm="atr-est"` {
		t.Errorf("WWW-Authenticate %q", got)
	}
	// Malformed CSR over mTLS.
	wantESTError(t, "garbage", es.do(t, "POST", "/.well-known/est/simplereenroll", estCred{cert: tlsCert(cert3, key3)}, "application/pkcs10", []byte("@@@")), 400, "not base64")
	wantESTError(t, "content type", es.do(t, "POST", "/.well-known/est/simplereenroll", estCred{cert: tlsCert(cert3, key3)}, "text/plain", []byte("MA==")), 415, "application/pkcs10")

	// Revoked: the current certificate no longer authenticates, and the owner gets 409.
	if _, err := es.f.Registry.Revoke(ctx, es.f.Owner("alice", "alice"), "bot.alice", "keyCompromise"); err != nil {
		t.Fatal(err)
	}
	wantESTError(t, "revoked certificate", es.enroll(t, "simplereenroll", estCred{cert: tlsCert(cert3, key3)}, estCSR(t, newKey(t), "bot.alice")), 401, "authentication required")
	wantESTError(t, "revoked agent, owner key", es.enroll(t, "simplereenroll", estCred{basicPass: alice}, estCSR(t, newKey(t), "bot.alice")), 409, "conflict")
}

// TestESTRateLimits: simpleenroll spends the register budget of
// POST /v1/agents and simplereenroll the rotate budget of
// POST /v1/agents/{name}/rotate — the same buckets.
func TestESTRateLimits(t *testing.T) {
	es := newESTServer(t, func(c *Config) {
		c.RateLimits.Register = ratelimit.PerHour(1)
		c.RateLimits.Rotate = ratelimit.PerHour(1)
	})
	alice := es.f.NewAPIKey("alice", "alice", registry.ScopeAgentsRead, registry.ScopeAgentsWrite)
	key := newKey(t)
	cert := certsOf(t, es.enroll(t, "simpleenroll", estCred{basicPass: alice}, estCSR(t, key, "bot.alice")))[0]
	r := es.do(t, "POST", "/v1/agents", estCred{bearer: alice}, "application/json",
		[]byte(`{"name":"two.alice","csr":`+strconv.Quote(string(es.f.CSRFor(newKey(t))))+`}`))
	if r.status != http.StatusTooManyRequests {
		t.Errorf("POST /v1/agents after an EST enrollment: %d %s, want 429 (one register budget)", r.status, r.body)
	}
	r = es.enroll(t, "simpleenroll", estCred{basicPass: alice}, estCSR(t, newKey(t), "three.alice"))
	wantESTError(t, "second enrollment", r, 429, "too many requests")
	if r.header.Get("Retry-After") == "" {
		t.Error("429 without Retry-After")
	}

	self := estCred{cert: &tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}}
	key2 := newKey(t)
	cert2 := certsOf(t, es.enroll(t, "simplereenroll", self, estCSR(t, key2, "bot.alice")))[0]
	self2 := estCred{cert: &tls.Certificate{Certificate: [][]byte{cert2.Raw}, PrivateKey: key2, Leaf: cert2}}
	wantESTError(t, "second renewal", es.enroll(t, "simplereenroll", self2, estCSR(t, newKey(t), "bot.alice")), 429, "too many requests")
	r = es.do(t, "POST", "/v1/agents/bot.alice/rotate", self2, "application/json",
		[]byte(`{"csr":`+strconv.Quote(string(es.f.CSRFor(newKey(t))))+`}`))
	if r.status != http.StatusTooManyRequests {
		t.Errorf("POST /v1/agents/bot.alice/rotate after an EST renewal: %d %s, want 429 (one rotate budget)", r.status, r.body)
	}
}

// TestESTNotOnDistributionListener: the plain-http listener serves no EST
// (RFC 7030 §3.3: EST runs over TLS only).
func TestESTNotOnDistributionListener(t *testing.T) {
	es := newESTServer(t, nil)
	dist := httptest.NewServer(es.s.DistributionHandler())
	t.Cleanup(dist.Close)
	for _, c := range []struct{ method, path string }{
		{"GET", "/.well-known/est/cacerts"},
		{"GET", "/.well-known/est/csrattrs"},
		{"POST", "/.well-known/est/simpleenroll"},
		{"POST", "/.well-known/est/simplereenroll"},
		{"POST", "/.well-known/est/" + registrytest.TrustDomain + "/simpleenroll"},
	} {
		req, _ := http.NewRequest(c.method, dist.URL+c.path, strings.NewReader("MA=="))
		req.Header.Set("Content-Type", "application/pkcs10")
		resp, err := dist.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("%s %s over plain http: %d, want 404", c.method, c.path, resp.StatusCode)
		}
	}
}

// FuzzESTRequest feeds arbitrary enrollment bodies to the EST decoder and name
// rule: no panic; every refusal is a 400 *apiError whose message never echoes
// the input; an accepted request names a normalized agent or none.
func FuzzESTRequest(f *testing.F) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	for _, tmpl := range []*x509.CertificateRequest{
		{Subject: pkix.Name{CommonName: "bot.acme"}},
		{URIs: []*url.URL{{Scheme: "spiffe", Host: registrytest.TrustDomain, Path: "/agent/bot.acme"}}},
		{Subject: pkix.Name{CommonName: "Bot.Acme", Organization: []string{"x"}}, DNSNames: []string{"bot.example"}},
		{},
	} {
		der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
		if err != nil {
			f.Fatal(err)
		}
		f.Add([]byte(b64Lines(der, 76)))
	}
	f.Add([]byte("MA=="))
	f.Add([]byte("!!"))
	s := &Server{cfg: Config{TrustDomain: registrytest.TrustDomain}}
	f.Fuzz(func(t *testing.T, body []byte) {
		r := httptest.NewRequest("POST", "/.well-known/est/simpleenroll", bytes.NewReader(body))
		r.Header.Set("Content-Type", "application/pkcs10")
		_, csr, err := readESTCSR(r)
		name := ""
		if err == nil {
			name, err = s.estName(csr)
		}
		if err != nil {
			var ae *apiError
			if !errors.As(err, &ae) || ae.Status != http.StatusBadRequest {
				t.Fatalf("error %T %v, want a 400 *apiError", err, err)
			}
			if len(body) > 8 && strings.Contains(ae.Message, string(body)) {
				t.Fatalf("message %q echoes the input", ae.Message)
			}
			return
		}
		if name != "" {
			if n, err := ca.NormalizeAgentName(name); err != nil || n != name {
				t.Fatalf("accepted name %q is not normalized (%q, %v)", name, n, err)
			}
		}
	})
}
