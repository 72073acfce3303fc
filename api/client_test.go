package api

import (
	"context"
	"crypto/x509"
	"errors"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/agent-trust-registry/atr/api/client"
)

// TestClientRoundTrip drives the Go client against the real server over HTTPS (with the
// fake registry behind it): wire types and typed errors agree on both sides.
func TestClientRoundTrip(t *testing.T) {
	fake := newFake(t)
	s, err := New(Config{TrustDomain: "example.org", TLS: true}, Deps{Lifecycle: fake, Auth: fake, Admin: fake, Log: fakeLog{}, Revocation: fakeLog{}}, testLogger(&syncBuffer{}))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewTLSServer(s.Handler())
	t.Cleanup(srv.Close)
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	ctx := context.Background()

	c, err := client.New(srv.URL, client.WithRootCAs(pool), client.WithAPIKey(keyAlice))
	if err != nil {
		t.Fatal(err)
	}
	cert, err := c.Register(ctx, client.RegisterRequest{Name: "bot.alice", CSR: testCSR, Capabilities: []string{"pay"}, Metadata: map[string]string{"team": "a"}})
	if err != nil {
		t.Fatalf("Register: %v", err)
	}
	if cert.Name != "bot.alice" || cert.Owner != "alice" || cert.Serial != "01" {
		t.Errorf("Register: got %+v", cert)
	}
	if _, err := c.Rotate(ctx, "bot.alice", []byte(testCSR)); err != nil {
		t.Errorf("Rotate: %v", err)
	}
	d, err := c.Get(ctx, "bot.alice")
	if err != nil || d.Name != "bot.alice" || d.Capabilities[0] != "pay" || d.Metadata["team"] != "a" {
		t.Errorf("Get: %+v, %v", d, err)
	}
	list, err := c.List(ctx, "", 10)
	if err != nil || len(list.Agents) != 1 {
		t.Errorf("List: %+v, %v", list, err)
	}
	if p, err := c.CurrentCertificate(ctx, "bot.alice"); err != nil || !strings.Contains(string(p), "BEGIN CERTIFICATE") {
		t.Errorf("CurrentCertificate: %q, %v", p, err)
	}
	vr, err := c.Verify(ctx, fake.bundle, nil)
	if err != nil || vr.Verified || vr.Reason != "unknown_certificate" {
		t.Errorf("Verify: %+v, %v", vr, err)
	}
	if b, err := c.Bundle(ctx); err != nil || string(b) != string(fake.bundle) {
		t.Errorf("Bundle: %v", err)
	}
	if b, err := c.SPIFFEBundle(ctx); err != nil || !strings.Contains(string(b), "x509-svid") {
		t.Errorf("SPIFFEBundle: %s, %v", b, err)
	}
	if _, err := c.CRL(ctx); err != nil {
		t.Errorf("CRL: %v", err)
	}
	if _, err := c.Checkpoint(ctx); err != nil {
		t.Errorf("Checkpoint: %v", err)
	}
	if e, err := c.LogEntries(ctx, 0, 2); err != nil || len(e.Entries) != 2 || string(e.Entries[1]) != "b" {
		t.Errorf("LogEntries: %+v, %v", e, err)
	}
	if p, err := c.InclusionProof(ctx, 0, 2); err != nil || len(p.Proof) != 1 || len(p.Proof[0]) != 32 {
		t.Errorf("InclusionProof: %+v, %v", p, err)
	}
	if _, err := c.ConsistencyProof(ctx, 1, 2); err != nil {
		t.Errorf("ConsistencyProof: %v", err)
	}
	if a, err := c.Revoke(ctx, "bot.alice", "keyCompromise"); err != nil || a.Status != "revoked" {
		t.Errorf("Revoke: %+v, %v", a, err)
	}
	if err := c.Health(ctx); err != nil {
		t.Errorf("Health: %v", err)
	}
	if err := c.Ready(ctx); err != nil {
		t.Errorf("Ready: %v", err)
	}

	admin, _ := client.New(srv.URL, client.WithRootCAs(pool), client.WithAPIKey(keyAdmin))
	k, err := admin.CreateAPIKey(ctx, client.CreateAPIKeyRequest{Owner: "team", Namespace: "team", Scopes: []string{"agents:write"}})
	if err != nil || k.Key == "" {
		t.Errorf("CreateAPIKey: %+v, %v", k, err)
	}
	if err := admin.RevokeAPIKey(ctx, "k1"); err != nil {
		t.Errorf("RevokeAPIKey: %v", err)
	}
	if p, err := admin.Audit(ctx, "", 0); err != nil || len(p.Events) != 1 {
		t.Errorf("Audit: %+v, %v", p, err)
	}

	// Typed errors.
	anon, _ := client.New(srv.URL, client.WithRootCAs(pool))
	_, err = anon.Register(ctx, client.RegisterRequest{Name: "x.alice", CSR: testCSR})
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Status != 401 || ce.Code != CodeUnauthenticated || !hexID.MatchString(ce.RequestID) {
		t.Errorf("anonymous Register: got %#v, want *client.Error 401 unauthenticated with request id", err)
	}
	bob, _ := client.New(srv.URL, client.WithRootCAs(pool), client.WithAPIKey(keyBob))
	if _, err := bob.Get(ctx, "bot.alice"); !client.IsCode(err, CodeNotFound) {
		t.Errorf("bob Get: %v, want not_found", err)
	}
	if _, err := c.Get(ctx, "a/b"); !client.IsCode(err, CodeNotFound) && !client.IsCode(err, CodeInvalidRequest) {
		t.Errorf("Get with slash: %v, want not_found or invalid_request", err)
	}

	// Untrusted server certificate.
	untrusting, _ := client.New(srv.URL)
	if err := untrusting.Health(ctx); err == nil {
		t.Error("client trusted an unknown server certificate")
	}
}

func TestClientNew(t *testing.T) {
	for _, c := range []struct {
		url  string
		opts []client.Option
		ok   bool
	}{
		{"https://atr.example.org:8443", nil, true},
		{"http://127.0.0.1:8080", nil, true},
		{"http://localhost:8080", nil, true},
		{"http://atr.example.org", nil, false},
		{"http://atr.example.org", []client.Option{client.WithAllowHTTP()}, true},
		{"ftp://x", nil, false},
		{"atr.example.org", nil, false},
		{"https://x", []client.Option{client.WithAPIKey("a b")}, false},
		{"https://x", []client.Option{client.WithHTTPClient(nil)}, false},
	} {
		if _, err := client.New(c.url, c.opts...); (err == nil) != c.ok {
			t.Errorf("New(%q): %v, want ok=%v", c.url, err, c.ok)
		}
	}
}
