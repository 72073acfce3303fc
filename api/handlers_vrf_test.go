package api

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/agent-trust-registry/atr/api/client"
	"github.com/agent-trust-registry/atr/registry"
	"github.com/agent-trust-registry/atr/registry/registrytest"
	"github.com/agent-trust-registry/atr/registry/translog"
)

var (
	_ TransparencyLog = (*registry.Registry)(nil)
	_ VRFIndexer      = (*registry.Registry)(nil)
)

// noVRFLog is a log without a VRF key.
type noVRFLog struct{ fakeLog }

func (noVRFLog) VRFPublicKeyPEM() []byte { return nil }

// TestVRFKeyEndpoint: GET /v1/log/vrf-key is public and cacheable like the
// log key, and answers 501 without a log or without a VRF key.
func TestVRFKeyEndpoint(t *testing.T) {
	for _, tc := range []struct {
		desc       string
		log        TransparencyLog
		wantStatus int
		wantBody   []byte
	}{
		{"with a VRF key", fakeLog{}, 200, fakeLog{}.VRFPublicKeyPEM()},
		{"log without a VRF key", noVRFLog{}, 501, nil},
		{"no log", nil, 501, nil},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			h := newHarness(t, func(_ *Config, d *Deps) { d.Log = tc.log })
			r := h.do("GET", "/v1/log/vrf-key", "", nil)
			if r.status != tc.wantStatus {
				t.Fatalf("status %d, want %d (%s)", r.status, tc.wantStatus, r.body)
			}
			if tc.wantStatus != 200 {
				if e := r.errBody(t); e.Code != CodeNotImplemented {
					t.Errorf("code %q, want %q", e.Code, CodeNotImplemented)
				}
				return
			}
			if !bytes.Equal(r.body, tc.wantBody) || r.header.Get("Content-Type") != "application/x-pem-file" {
				t.Errorf("body %q type %q, want %q application/x-pem-file", r.body, r.header.Get("Content-Type"), tc.wantBody)
			}
			if cc := r.header.Get("Cache-Control"); !strings.HasPrefix(cc, "public, max-age=") {
				t.Errorf("Cache-Control %q, want public", cc)
			}
		})
	}
}

// TestVRFIndexNotImplemented: a Lifecycle without VRFIndex answers 501 to an
// authenticated caller (and 401 to an anonymous one, before that).
func TestVRFIndexNotImplemented(t *testing.T) {
	h := newHarness(t, nil)
	for _, tc := range []struct {
		desc, key  string
		wantStatus int
		wantCode   string
	}{
		{"owner", keyAlice, 501, CodeNotImplemented},
		{"anonymous", "", 401, CodeUnauthenticated},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			r := h.do("POST", "/v1/log/vrf", tc.key, map[string]string{"name": "x.alice"})
			if r.status != tc.wantStatus || r.errBody(t).Code != tc.wantCode {
				t.Errorf("got %d %s, want %d %s", r.status, r.body, tc.wantStatus, tc.wantCode)
			}
		})
	}
}

// newVRFServer serves the api over HTTPS in front of a real registry (with
// its transparency log and VRF key) on SoftHSM2 and the given database.
func newVRFServer(t *testing.T, db string) *realServer {
	t.Helper()
	f := registrytest.NewFixture(t, registrytest.WithDatabase(db))
	logs := &syncBuffer{}
	s, err := New(Config{TrustDomain: registrytest.TrustDomain, TLS: true},
		Deps{Lifecycle: f.Registry, Auth: f.Registry, Admin: f.Registry, Log: f.Registry, Now: f.Clock.Now}, testLogger(logs))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(s.Handler())
	srv.TLS = &tls.Config{MinVersion: tls.VersionTLS12}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	return &realServer{f: f, srv: srv, pool: pool, logs: logs}
}

// TestVRFIndexOverHTTPS: through real HTTPS and the real registry, on SQLite
// and PostgreSQL, an owner obtains the index and proof of names inside its
// namespace (checked with the key from GET /v1/log/vrf-key), never outside
// it; an admin of any name; bad requests are refused.
func TestVRFIndexOverHTTPS(t *testing.T) {
	for _, db := range registrytest.Databases() {
		t.Run(db, func(t *testing.T) {
			ctx := context.Background()
			rs := newVRFServer(t, db)
			owner := rs.client(t, client.WithAPIKey(rs.f.NewAPIKey("alice", "acme", registry.ScopeAgentsRead)))
			writer := rs.client(t, client.WithAPIKey(rs.f.NewAPIKey("alice", "acme", registry.ScopeAgentsWrite)))
			admin := rs.client(t, client.WithAPIKey(rs.f.NewAPIKey("ops", "", registry.ScopeAdmin)))
			anon := rs.client(t)

			keyPEM, err := anon.VRFKey(ctx)
			if err != nil {
				t.Fatalf("GET /v1/log/vrf-key: %v", err)
			}
			pub, err := translog.ParseVRFPublicKeyPEM(keyPEM)
			if err != nil {
				t.Fatalf("served VRF key: %v", err)
			}
			if !pub.Equal(rs.f.VRFKey.Public()) {
				t.Fatal("served VRF key is not the registry's")
			}

			for _, tc := range []struct {
				desc     string
				c        *client.Client
				name     string
				wantName string
			}{
				{"reader, inside", owner, "svc.acme", "svc.acme"},
				{"reader, namespace itself", owner, "acme", "acme"},
				{"reader, normalized", owner, "A.B.Acme", "a.b.acme"},
				{"writer implies read", writer, "x.acme", "x.acme"},
				{"admin, any", admin, "svc.bob", "svc.bob"},
			} {
				t.Run(tc.desc, func(t *testing.T) {
					got, err := tc.c.VRFIndex(ctx, tc.name)
					if err != nil {
						t.Fatalf("VRFIndex(%q): %v", tc.name, err)
					}
					if got.Name != tc.wantName {
						t.Errorf("name %q, want %q", got.Name, tc.wantName)
					}
					idx, err := translog.VRFVerify(pub, registrytest.TrustDomain, tc.wantName, got.Proof)
					if err != nil {
						t.Fatalf("proof does not verify: %v", err)
					}
					if want := hex.EncodeToString(idx[:]); got.Index != want {
						t.Errorf("index %s, want %s", got.Index, want)
					}
				})
			}

			for _, tc := range []struct {
				desc       string
				c          *client.Client
				name       string
				wantStatus int
				wantCode   string
			}{
				{"outside the namespace", owner, "svc.bob", 403, CodeForbidden},
				{"parent of the namespace", rs.client(t, client.WithAPIKey(rs.f.NewAPIKey("alice", "b.acme", registry.ScopeAgentsRead))), "acme", 403, CodeForbidden},
				{"suffix without a dot", owner, "xacme", 403, CodeForbidden},
				{"invalid name", owner, "a_b.acme", 400, CodeInvalidRequest},
				{"empty name", owner, "", 400, CodeInvalidRequest},
				{"anonymous", anon, "svc.acme", 401, CodeUnauthenticated},
			} {
				t.Run(tc.desc, func(t *testing.T) {
					got, err := tc.c.VRFIndex(ctx, tc.name)
					wantCode(t, "VRFIndex("+tc.name+")", err, tc.wantStatus, tc.wantCode)
					if got != nil {
						t.Errorf("refused request returned %+v", got)
					}
				})
			}

			// Strict JSON: unknown fields are refused.
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, rs.srv.URL+"/v1/log/vrf", strings.NewReader(`{"name":"svc.acme","owner":"bob"}`))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Authorization", "Bearer "+rs.f.NewAPIKey("alice", "acme", registry.ScopeAgentsRead))
			hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: rs.pool, MinVersion: tls.VersionTLS12}}}
			resp, err := hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 400 {
				t.Errorf("unknown field: status %d, want 400", resp.StatusCode)
			}
		})
	}
}
