package api

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"

	"github.com/agent-trust-registry/atr/api/client"
	"github.com/agent-trust-registry/atr/ca"
	"github.com/agent-trust-registry/atr/registry"
	"github.com/agent-trust-registry/atr/registry/registrytest"
)

var _ JWTSVIDs = (*registry.Registry)(nil)

// jwtServer serves the api over HTTPS, with its PublicURL set to its own
// address, in front of reg (a registry of fixture f).
type jwtServer struct {
	realServer
	url string
}

func newJWTServer(t *testing.T, f *registrytest.Fixture, reg *registry.Registry) *jwtServer {
	t.Helper()
	srv := httptest.NewUnstartedServer(nil)
	u := "https://" + srv.Listener.Addr().String()
	logs := &syncBuffer{}
	s, err := New(Config{TrustDomain: registrytest.TrustDomain, TLS: true, PublicURL: u},
		Deps{Lifecycle: reg, Auth: reg, Admin: reg, Now: f.Clock.Now}, testLogger(logs))
	if err != nil {
		t.Fatal(err)
	}
	srv.Config.Handler = s.Handler()
	srv.TLS = &tls.Config{ClientAuth: tls.RequestClientCert, MinVersion: tls.VersionTLS12}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	return &jwtServer{realServer: realServer{f: f, srv: srv, pool: pool, logs: logs}, url: u}
}

// get fetches a public document as any HTTP client would, checking status 200.
func (js *jwtServer) get(t *testing.T, u string) ([]byte, http.Header) {
	t.Helper()
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: js.pool}}}
	resp, err := hc.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %s %v", u, resp.StatusCode, b, err)
	}
	return b, resp.Header
}

// goJoseVerify verifies token the way a generic JWT verifier does: the
// discovery document names the JWKS, the kid picks the key, go-jose checks
// the signature and the claims.
func (js *jwtServer) goJoseVerify(t *testing.T, token, audience string, at time.Time) (*jwt.Claims, error) {
	t.Helper()
	var disc struct {
		Issuer  string   `json:"issuer"`
		JWKSURI string   `json:"jwks_uri"`
		Algs    []string `json:"id_token_signing_alg_values_supported"`
	}
	b, _ := js.get(t, js.url+"/.well-known/openid-configuration")
	if err := json.Unmarshal(b, &disc); err != nil {
		t.Fatal(err)
	}
	if disc.Issuer != js.url || disc.JWKSURI != js.url+"/.well-known/jwks.json" || len(disc.Algs) != 1 || disc.Algs[0] != "ES256" {
		t.Fatalf("discovery document %s", b)
	}
	b, _ = js.get(t, disc.JWKSURI)
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(b, &set); err != nil {
		t.Fatalf("go-jose refuses the JWKS %s: %v", b, err)
	}
	tok, err := jwt.ParseSigned(token, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		return nil, err
	}
	keys := set.Key(tok.Headers[0].KeyID)
	if len(keys) != 1 {
		t.Fatalf("JWKS has %d keys for kid %q", len(keys), tok.Headers[0].KeyID)
	}
	var c jwt.Claims
	if err := tok.Claims(keys[0], &c); err != nil {
		return nil, err
	}
	if err := c.ValidateWithLeeway(jwt.Expected{Issuer: disc.Issuer, AnyAudience: jwt.Audience{audience}, Time: at}, 0); err != nil {
		return nil, err
	}
	return &c, nil
}

// TestJWTSVIDOverHTTPS: an agent gets a JWT-SVID over mTLS that go-spiffe
// (with the SPIFFE bundle from GET /v1/ca/spiffe-bundle) and go-jose (with
// the JWKS found through the discovery document) accept, for its audience
// only and until it expires; a superseded certificate, a revoked agent and
// an API key get none.
func TestJWTSVIDOverHTTPS(t *testing.T) {
	ctx := context.Background()
	f := registrytest.NewFixture(t)
	js := newJWTServer(t, f, f.Registry)
	alice := js.client(t, client.WithAPIKey(f.NewAPIKey("alice", "alice", registry.ScopeAgentsRead, registry.ScopeAgentsWrite)))
	csr, key := f.NewCSR()
	cert, err := alice.Register(ctx, client.RegisterRequest{Name: "bot.alice", CSR: string(csr)})
	if err != nil {
		t.Fatal(err)
	}
	bot := js.client(t, client.WithClientCertificate(agentCert(t, cert, key)))

	svid, err := bot.JWTSVID(ctx, "bot.alice", []string{"payments", "ledger"}, 0)
	if err != nil {
		t.Fatalf("JWTSVID: %v", err)
	}
	leaf := f.ParseCertificate(cert.Certificate)
	if svid.SPIFFEID != leaf.URIs[0].String() || len(svid.Audience) != 2 || svid.ExpiresAt.Sub(svid.IssuedAt) != 5*time.Minute {
		t.Errorf("JWTSVID = %+v", svid)
	}

	// go-spiffe, with the bundle as served.
	bundleJSON, err := js.client(t).SPIFFEBundle(ctx)
	if err != nil {
		t.Fatal(err)
	}
	td := spiffeid.RequireTrustDomainFromString(registrytest.TrustDomain)
	bundle, err := spiffebundle.Parse(td, bundleJSON)
	if err != nil {
		t.Fatalf("go-spiffe refuses the bundle %s: %v", bundleJSON, err)
	}
	cardKid, _ := ca.JWKThumbprint(f.CardKey.Public())
	if n := len(bundle.JWTAuthorities()); n != 1 {
		t.Errorf("the SPIFFE bundle has %d JWT authorities, want 1 (the card key is not one): %s", n, bundleJSON)
	}
	if _, ok := bundle.FindJWTAuthority(cardKid); ok {
		t.Error("the agent-card key is a JWT authority of the SPIFFE bundle")
	}
	if len(bundle.X509Authorities()) == 0 {
		t.Error("the SPIFFE bundle lost its X.509 authorities")
	}
	got, err := jwtsvid.ParseAndValidate(svid.Token, bundle, []string{"ledger"})
	if err != nil {
		t.Fatalf("go-spiffe refuses the JWT-SVID: %v", err)
	}
	if got.ID.String() != svid.SPIFFEID {
		t.Errorf("go-spiffe reads sub %s", got.ID)
	}
	if _, err := jwtsvid.ParseAndValidate(svid.Token, bundle, []string{"elsewhere"}); err == nil {
		t.Error("go-spiffe accepts the JWT-SVID for another audience")
	}

	// go-jose, with the JWKS found through discovery.
	c, err := js.goJoseVerify(t, svid.Token, "payments", time.Now())
	if err != nil {
		t.Fatalf("go-jose refuses the JWT-SVID: %v", err)
	}
	if c.Subject != svid.SPIFFEID || c.ID == "" || c.Issuer != js.url {
		t.Errorf("go-jose reads %+v", c)
	}
	if _, err := js.goJoseVerify(t, svid.Token, "elsewhere", time.Now()); err == nil {
		t.Error("go-jose accepts another audience")
	}
	if _, err := js.goJoseVerify(t, svid.Token, "payments", svid.ExpiresAt.Add(time.Second)); err == nil {
		t.Error("go-jose accepts the token after it expired")
	}
	jwksJSON, h := js.get(t, js.url+"/.well-known/jwks.json")
	if cc := h.Get("Cache-Control"); cc != "public, max-age=60" {
		t.Errorf("JWKS Cache-Control %q", cc)
	}
	if !strings.Contains(string(jwksJSON), cardKid) || strings.Contains(string(jwksJSON), "jwt-svid") {
		t.Errorf("JWKS %s: want the card key, every key with use sig", jwksJSON)
	}

	// A shorter lifetime; requests outside the policy.
	short, err := bot.JWTSVID(ctx, "bot.alice", []string{"a"}, 2*time.Minute)
	if err != nil || short.ExpiresAt.Sub(short.IssuedAt) != 2*time.Minute {
		t.Errorf("TTL 2m: %+v, %v", short, err)
	}
	for _, tc := range []struct {
		name string
		aud  []string
		ttl  time.Duration
	}{
		{"no audience", nil, 0},
		{"empty audience", []string{""}, 0},
		{"too many", strings.Split("a b c d e f g h i", " "), 0},
		{"TTL over 5 minutes", []string{"a"}, 301 * time.Second},
		{"TTL too short", []string{"a"}, 5 * time.Second},
	} {
		_, err := bot.JWTSVID(ctx, "bot.alice", tc.aud, tc.ttl)
		wantCode(t, tc.name, err, 400, CodeInvalidRequest)
	}

	// Only the agent itself: not its owner's key, not for another agent.
	_, err = alice.JWTSVID(ctx, "bot.alice", []string{"a"}, 0)
	wantCode(t, "owner key", err, 403, CodeForbidden)
	_, err = bot.JWTSVID(ctx, "other.alice", []string{"a"}, 0)
	wantCode(t, "another agent's name", err, 403, CodeForbidden)
	_, err = js.client(t).JWTSVID(ctx, "bot.alice", []string{"a"}, 0)
	wantCode(t, "anonymous", err, 401, CodeUnauthenticated)

	// Superseded (in its grace period): no token; the new certificate gets one.
	csr2, key2 := f.NewCSR()
	cert2, err := bot.Rotate(ctx, "bot.alice", csr2)
	if err != nil {
		t.Fatal(err)
	}
	_, err = bot.JWTSVID(ctx, "bot.alice", []string{"a"}, 0)
	wantCode(t, "superseded certificate", err, 401, CodeUnauthenticated)
	bot2 := js.client(t, client.WithClientCertificate(agentCert(t, cert2, key2)))
	if _, err := bot2.JWTSVID(ctx, "bot.alice", []string{"a"}, 0); err != nil {
		t.Fatalf("new certificate: %v", err)
	}
	// Revoked: none.
	if _, err := alice.Revoke(ctx, "bot.alice", "keyCompromise"); err != nil {
		t.Fatal(err)
	}
	_, err = bot2.JWTSVID(ctx, "bot.alice", []string{"a"}, 0)
	wantCode(t, "revoked agent", err, 401, CodeUnauthenticated)
	if strings.Contains(js.logs.String(), svid.Token) {
		t.Error("the server log holds a token")
	}
}

// TestJWTSVIDDisabled: without a JWT-SVID key, 503 with a clear message; the
// JWKS still has the card key and the bundle no JWT authority.
func TestJWTSVIDDisabled(t *testing.T) {
	ctx := context.Background()
	f := registrytest.NewFixture(t)
	cfg := f.Config
	cfg.JWTSigner = nil
	reg, err := registry.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	js := newJWTServer(t, f, reg)
	alice := js.client(t, client.WithAPIKey(f.NewAPIKey("alice", "alice", registry.ScopeAgentsWrite)))
	csr, key := f.NewCSR()
	cert, err := alice.Register(ctx, client.RegisterRequest{Name: "bot.alice", CSR: string(csr)})
	if err != nil {
		t.Fatal(err)
	}
	bot := js.client(t, client.WithClientCertificate(agentCert(t, cert, key)))
	_, err = bot.JWTSVID(ctx, "bot.alice", []string{"a"}, 0)
	wantCode(t, "no JWT key", err, 503, CodeUnavailable)
	if ce, ok := err.(*client.Error); !ok || !strings.Contains(ce.Message, "JWT-SVIDs are not enabled") {
		t.Errorf("no JWT key: %v, want a message saying so", err)
	}
	b, _ := js.get(t, js.url+"/.well-known/jwks.json")
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(b, &set); err != nil || len(set.Keys) != 1 {
		t.Errorf("JWKS without a JWT key: %s, %v; want the card key", b, err)
	}
	b, _ = js.get(t, js.url+"/v1/ca/spiffe-bundle")
	if strings.Contains(string(b), "jwt-svid") {
		t.Errorf("bundle without a JWT key has JWT authorities: %s", b)
	}
	var _ crypto.PublicKey = set.Keys[0].Key
}
