package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"

	"github.com/agent-trust-registry/atr/agent"
	"github.com/agent-trust-registry/atr/api/client"
)

// TestAgentTokenE2E runs the real binary: the jwt-key ceremony, `atr serve`,
// an agent registered with `atr agent register`, then `atr agent token`
// prints a JWT-SVID that go-spiffe accepts with the SPIFFE bundle the server
// publishes — for its audience only; --json and --ttl; a superseded
// certificate and a revoked agent get none.
func TestAgentTokenE2E(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test of the real binary; skipped with -short")
	}
	e := setupE2E(t)
	e.serve(t)
	ctx := context.Background()
	dir := t.TempDir()
	key, cert := filepath.Join(dir, "agent.key"), filepath.Join(dir, "agent.pem")
	e.must(t, "agent", "keygen", "--key", key)
	e.must(t, "agent", "register", "--name", "payer.acme", "--api-key-file", e.apiKey(), "--key", key, "--cert", cert)

	token := strings.TrimSpace(e.must(t, "agent", "token", "--key", key, "--cert", cert, "--audience", "https://payments.example.org"))
	raw, err := e.apiClient(t).SPIFFEBundle(ctx)
	if err != nil {
		t.Fatal(err)
	}
	td := spiffeid.RequireTrustDomainFromString(defaultTrustDomain)
	bundle, err := spiffebundle.Parse(td, raw)
	if err != nil {
		t.Fatalf("go-spiffe refuses the served bundle: %v\n%s", err, raw)
	}
	svid, err := jwtsvid.ParseAndValidate(token, bundle, []string{"https://payments.example.org"})
	if err != nil {
		t.Fatalf("go-spiffe refuses the token of `atr agent token`: %v", err)
	}
	if want := "spiffe://" + td.Name() + "/agent/payer.acme"; svid.ID.String() != want {
		t.Errorf("sub %s, want %s", svid.ID, want)
	}
	// The e2e server issues one-minute leaves: the token ends with the
	// certificate, never later, and never more than 5 minutes from now.
	leaf, _, err := agent.LoadCertificate(cert, "")
	if err != nil {
		t.Fatal(err)
	}
	if svid.Expiry.After(leaf.NotAfter) || time.Until(svid.Expiry) > 5*time.Minute || !svid.Expiry.After(time.Now()) {
		t.Errorf("expires at %v; certificate's NotAfter %v", svid.Expiry, leaf.NotAfter)
	}
	if _, err := jwtsvid.ParseAndValidate(token, bundle, []string{"https://elsewhere.example.org"}); err == nil {
		t.Error("go-spiffe accepts the token for another audience")
	}

	var out client.JWTSVID
	js := e.must(t, "agent", "token", "--key", key, "--cert", cert, "--audience", "a,b", "--ttl", "2m", "--json")
	if err := json.Unmarshal([]byte(js), &out); err != nil {
		t.Fatalf("--json: %v\n%s", err, js)
	}
	if d := out.ExpiresAt.Sub(out.IssuedAt); d > 2*time.Minute || out.ExpiresAt.After(leaf.NotAfter) || len(out.Audience) != 2 || out.SPIFFEID != svid.ID.String() {
		t.Errorf("--json --ttl 2m: %+v", out)
	}
	e.expectFail(t, 2, "agent", "token", "--key", key, "--cert", cert)                                    // no audience
	e.expectFail(t, 2, "agent", "token", "--key", key, "--cert", cert, "--audience", "a", "--ttl", "10m") // over 5 minutes

	// Superseded, then revoked: no token.
	old := filepath.Join(dir, "old.pem")
	oldKey := filepath.Join(dir, "old.key")
	copyTestFile(t, cert, old)
	copyTestFile(t, key, oldKey)
	copyTestFile(t, filepath.Join(dir, "agent.chain.pem"), filepath.Join(dir, "old.chain.pem"))
	e.must(t, "agent", "renew", "--key", key, "--cert", cert)
	msg := e.expectFail(t, 1, "agent", "token", "--key", oldKey, "--cert", old, "--audience", "a")
	if !strings.Contains(msg, "unauthenticated") {
		t.Errorf("superseded certificate: %s", msg)
	}
	e.must(t, "agent", "token", "--key", key, "--cert", cert, "--audience", "a")
	e.must(t, "agent", "revoke", "--cert", cert, "--reason", "keyCompromise", "--api-key-file", e.apiKey())
	msg = e.expectFail(t, 1, "agent", "token", "--key", key, "--cert", cert, "--audience", "a")
	if !strings.Contains(msg, "revoked, superseded or expired") {
		t.Errorf("revoked agent: %s", msg)
	}
}

// copyTestFile copies src to dst (mode 0600).
func copyTestFile(t *testing.T, src, dst string) {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, data, 0o600); err != nil {
		t.Fatal(err)
	}
}
