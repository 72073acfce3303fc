package api

import (
	"bytes"
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"github.com/agent-trust-registry/atr/api/client"
	"github.com/agent-trust-registry/atr/hsm/hsmtest"
	"github.com/agent-trust-registry/atr/registry"
	"github.com/agent-trust-registry/atr/registry/registrytest"
)

func TestMain(m *testing.M) { os.Exit(hsmtest.Main(m)) }

// Compile-time checks that the real registry satisfies the interfaces declared here.
var (
	_ Lifecycle     = (*registry.Registry)(nil)
	_ Authenticator = (*registry.Registry)(nil)
	_ Admin         = (*registry.Registry)(nil)
)

// realServer serves the api over HTTPS (client certificates requested, not required)
// in front of a real registry on SoftHSM2 and the given database.
type realServer struct {
	f    *registrytest.Fixture
	srv  *httptest.Server
	pool *x509.CertPool
	logs *syncBuffer
}

func newRealServer(t *testing.T, db string) *realServer {
	t.Helper()
	f := registrytest.NewFixture(t, registrytest.WithDatabase(db))
	logs := &syncBuffer{}
	s, err := New(Config{TrustDomain: registrytest.TrustDomain, TLS: true},
		Deps{Lifecycle: f.Registry, Auth: f.Registry, Admin: f.Registry, Now: f.Clock.Now}, testLogger(logs))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(s.Handler())
	srv.TLS = &tls.Config{ClientAuth: tls.RequestClientCert, MinVersion: tls.VersionTLS12}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	return &realServer{f: f, srv: srv, pool: pool, logs: logs}
}

func (rs *realServer) client(t *testing.T, opts ...client.Option) *client.Client {
	t.Helper()
	c, err := client.New(rs.srv.URL, append([]client.Option{client.WithRootCAs(rs.pool)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// agentCert is the TLS identity of an agent from its issued certificate and key.
func agentCert(t *testing.T, c *client.Certificate, key crypto.Signer) tls.Certificate {
	t.Helper()
	var chain [][]byte
	for _, p := range []string{c.Certificate, c.Chain} {
		rest := []byte(p)
		for {
			var b *pem.Block
			if b, rest = pem.Decode(rest); b == nil {
				break
			}
			chain = append(chain, b.Bytes)
		}
	}
	return tls.Certificate{Certificate: chain, PrivateKey: key}
}

func wantCode(t *testing.T, what string, err error, status int, code string) {
	t.Helper()
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Status != status || ce.Code != code || ce.RequestID == "" {
		t.Errorf("%s: got %v, want %d %s with a request id", what, err, status, code)
	}
}

// TestLifecycleOverHTTPS runs the whole agent lifecycle through real HTTPS against the
// real registry, on SQLite and PostgreSQL, and replays the seed findings in scope.
func TestLifecycleOverHTTPS(t *testing.T) {
	for _, db := range registrytest.Databases() {
		t.Run(db, func(t *testing.T) {
			ctx := context.Background()
			rs := newRealServer(t, db)
			alice := rs.client(t, client.WithAPIKey(rs.f.NewAPIKey("alice", "alice", registry.ScopeAgentsRead, registry.ScopeAgentsWrite)))
			bob := rs.client(t, client.WithAPIKey(rs.f.NewAPIKey("bob", "bob", registry.ScopeAgentsRead, registry.ScopeAgentsWrite)))
			admin := rs.client(t, client.WithAPIKey(rs.f.NewAPIKey("ops", "", registry.ScopeAdmin)))
			anon := rs.client(t)

			csr, key := rs.f.NewCSR()
			// SEC-001: no key, no registration.
			_, err := anon.Register(ctx, client.RegisterRequest{Name: "bot.alice", CSR: string(csr)})
			wantCode(t, "anonymous register", err, 401, CodeUnauthenticated)

			cert, err := alice.Register(ctx, client.RegisterRequest{Name: "Bot.Alice", CSR: string(csr), Capabilities: []string{"pay"}})
			if err != nil {
				t.Fatalf("register: %v", err)
			}
			if cert.Name != "bot.alice" || cert.Owner != "alice" || cert.Status != "active" || cert.FingerprintSHA256 == "" {
				t.Errorf("register: got %+v", cert)
			}
			leaf := rs.f.ParseCertificate(cert.Certificate)
			if len(leaf.URIs) != 1 || leaf.URIs[0].String() != "spiffe://"+registrytest.TrustDomain+"/agent/bot.alice" {
				t.Errorf("leaf URIs %v", leaf.URIs)
			}
			// Duplicate, other namespace (SEC-002 / namespaces), bad CSR.
			_, err = alice.Register(ctx, client.RegisterRequest{Name: "bot.alice", CSR: string(csr)})
			wantCode(t, "duplicate", err, 409, CodeConflict)
			_, err = bob.Register(ctx, client.RegisterRequest{Name: "evil.alice", CSR: string(csr)})
			wantCode(t, "outside namespace", err, 403, CodeForbidden)
			_, err = alice.Register(ctx, client.RegisterRequest{Name: "x.alice", CSR: "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"})
			wantCode(t, "garbage csr", err, 400, CodeInvalidRequest)
			_, err = alice.Register(ctx, client.RegisterRequest{Name: "../../etc/passwd", CSR: string(csr)})
			wantCode(t, "path-like name", err, 400, CodeInvalidRequest)

			// Verify: genuine.
			vr, err := anon.Verify(ctx, []byte(cert.Certificate), []byte(cert.Chain))
			if err != nil || !vr.Verified || vr.Agent != "bot.alice" || vr.FingerprintSHA256 != cert.FingerprintSHA256 {
				t.Errorf("verify: %+v, %v", vr, err)
			}
			// SEC-003: a self-made certificate with the same names does not verify.
			fake := selfSigned(t, "bot.alice")
			fakePEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: fake.Certificate[0]})
			if vr, err := anon.Verify(ctx, fakePEM, []byte(cert.Chain)); err != nil || vr.Verified || vr.Reason != registry.ReasonUntrustedChain {
				t.Errorf("forged certificate: %+v, %v; want untrusted_chain", vr, err)
			}
			_, err = anon.Verify(ctx, []byte("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n"), nil)
			wantCode(t, "malformed PEM", err, 400, CodeInvalidRequest)

			// SEC-002 / SEC-010 / SEC-021: bob sees nothing of alice's.
			_, err = bob.Get(ctx, "bot.alice")
			wantCode(t, "bob get", err, 404, CodeNotFound)
			_, err = bob.CurrentCertificate(ctx, "bot.alice")
			wantCode(t, "bob certificate", err, 404, CodeNotFound)
			_, err = anon.CurrentCertificate(ctx, "bot.alice")
			wantCode(t, "anonymous certificate", err, 401, CodeUnauthenticated)
			csr2, key2 := rs.f.NewCSR()
			_, err = bob.Rotate(ctx, "bot.alice", csr2)
			wantCode(t, "bob rotate", err, 404, CodeNotFound)
			_, err = bob.Revoke(ctx, "bot.alice", "keyCompromise")
			wantCode(t, "bob revoke", err, 404, CodeNotFound)
			if l, err := bob.List(ctx, "", 0); err != nil || len(l.Agents) != 0 {
				t.Errorf("bob list: %+v, %v; want empty", l, err)
			}
			if l, err := alice.List(ctx, "", 0); err != nil || len(l.Agents) != 1 {
				t.Errorf("alice list: %+v, %v; want bot.alice", l, err)
			}
			if l, err := admin.List(ctx, "", 0); err != nil || len(l.Agents) != 1 {
				t.Errorf("admin list: %+v, %v", l, err)
			}
			if p, err := alice.CurrentCertificate(ctx, "bot.alice"); err != nil || !bytes.Contains(p, []byte("BEGIN CERTIFICATE")) {
				t.Errorf("alice certificate: %v", err)
			}

			// mTLS renewal by the agent itself, no API key.
			self := rs.client(t, client.WithClientCertificate(agentCert(t, cert, key)))
			rotated, err := self.Rotate(ctx, "bot.alice", csr2)
			if err != nil {
				t.Fatalf("mTLS rotate: %v", err)
			}
			if rotated.Serial == cert.Serial {
				t.Error("rotation kept the serial")
			}
			// The superseded certificate cannot renew again.
			csr3, _ := rs.f.NewCSR()
			_, err = self.Rotate(ctx, "bot.alice", csr3)
			wantCode(t, "superseded certificate renews", err, 401, CodeUnauthenticated)
			// The new certificate cannot rotate another agent.
			csrB, _ := rs.f.NewCSR()
			if _, err := bob.Register(ctx, client.RegisterRequest{Name: "b.bob", CSR: string(csrB)}); err != nil {
				t.Fatal(err)
			}
			self2 := rs.client(t, client.WithClientCertificate(agentCert(t, rotated, key2)))
			_, err = self2.Rotate(ctx, "b.bob", csr3)
			wantCode(t, "agent rotates another agent", err, 403, CodeForbidden)

			d, err := alice.Get(ctx, "bot.alice")
			if err != nil || len(d.Certificates) != 2 {
				t.Fatalf("history: %+v, %v", d, err)
			}

			// Revoke, then verify refuses and renewal is refused.
			if a, err := alice.Revoke(ctx, "bot.alice", "keyCompromise"); err != nil || a.Status != "revoked" {
				t.Fatalf("revoke: %+v, %v", a, err)
			}
			if _, err := alice.Revoke(ctx, "bot.alice", "keyCompromise"); err != nil {
				t.Errorf("revoke again (idempotent): %v", err)
			}
			if vr, err := anon.Verify(ctx, []byte(rotated.Certificate), []byte(rotated.Chain)); err != nil || vr.Verified || vr.Reason != registry.ReasonRevoked {
				t.Errorf("verify revoked: %+v, %v", vr, err)
			}
			_, err = self2.Rotate(ctx, "bot.alice", csr3)
			wantCode(t, "revoked agent renews", err, 401, CodeUnauthenticated)

			// Admin: keys and audit (SEC-008: actor and request id recorded).
			k, err := admin.CreateAPIKey(ctx, client.CreateAPIKeyRequest{Owner: "carol", Namespace: "carol", Scopes: []string{"agents:write"}, ExpiresIn: "24h"})
			if err != nil || !strings.HasPrefix(k.Key, "atr_") {
				t.Fatalf("create key: %+v, %v", k, err)
			}
			carol := rs.client(t, client.WithAPIKey(k.Key))
			if _, err := carol.List(ctx, "", 0); err != nil {
				t.Errorf("new key: %v", err)
			}
			if err := admin.RevokeAPIKey(ctx, k.ID); err != nil {
				t.Fatalf("revoke key: %v", err)
			}
			_, err = carol.List(ctx, "", 0)
			wantCode(t, "revoked key", err, 401, CodeUnauthenticated)
			_, err = alice.Audit(ctx, "", 0)
			wantCode(t, "owner reads audit", err, 403, CodeForbidden)
			page, err := admin.Audit(ctx, "", 100)
			if err != nil || len(page.Events) == 0 {
				t.Fatalf("audit: %+v, %v", page, err)
			}
			found := false
			for _, e := range page.Events {
				if e.Action != "" && e.RequestID != "" && e.IP != "" && e.Actor != "" {
					found = true
				}
			}
			if !found {
				t.Errorf("no audit event carries actor, request id and IP: %+v", page.Events)
			}

			// Public trust material.
			b, err := anon.Bundle(ctx)
			if err != nil || !bytes.Contains(b, []byte("BEGIN CERTIFICATE")) {
				t.Errorf("bundle: %v", err)
			}
			sb, err := anon.SPIFFEBundle(ctx)
			var jwks spiffeBundle
			if err != nil || json.Unmarshal(sb, &jwks) != nil || len(jwks.Keys) == 0 || jwks.Keys[0].Use != "x509-svid" {
				t.Errorf("spiffe bundle: %s, %v", sb, err)
			}
			if err := anon.Ready(ctx); err != nil {
				t.Errorf("ready: %v", err)
			}
			// SEC-012/SEC-025: no key material or API key in the server log.
			if logs := rs.logs.String(); strings.Contains(logs, "PRIVATE KEY") || strings.Contains(logs, k.Key) {
				t.Error("server log contains key material or an API key")
			}
		})
	}
}

// SEC-006 against the real registry: oversized and hostile verify bodies.
func TestVerifyHostileInputRealRegistry(t *testing.T) {
	rs := newRealServer(t, "sqlite")
	for _, c := range []struct {
		name string
		body string
		want int
	}{
		{"binary", "\x00\xff\xfe", 400},
		{"sql", `{"certificate":"-----BEGIN CERTIFICATE-----\n' OR 1=1; --\n-----END CERTIFICATE-----"}`, 400},
		{"two certs garbage", `{"certificate":"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n-----BEGIN CERTIFICATE-----\nBBBB\n-----END CERTIFICATE-----"}`, 400},
		{"huge", `{"certificate":"-----BEGIN CERTIFICATE-----\n` + strings.Repeat("A", 1<<20) + `"}`, 413},
	} {
		t.Run(c.name, func(t *testing.T) {
			req, _ := http.NewRequest("POST", rs.srv.URL+"/v1/verify", strings.NewReader(c.body))
			req.Header.Set("Content-Type", "application/json")
			resp, err := rs.srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != c.want {
				t.Errorf("got %d %s, want %d", resp.StatusCode, body, c.want)
			}
			if bytes.Contains(body, []byte("OR 1=1")) || bytes.Contains(body, []byte("AAAA")) {
				t.Errorf("response echoes input: %s", body)
			}
		})
	}
}
