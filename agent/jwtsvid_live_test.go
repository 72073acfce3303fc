package agent_test

import (
	"context"
	"testing"

	"github.com/spiffe/go-spiffe/v2/bundle/spiffebundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"

	"github.com/agent-trust-registry/atr/agent"
	"github.com/agent-trust-registry/atr/registry/registrytest"
)

// TestSourceJWTSVIDLive: a Source gets JWT-SVIDs from a real registry over
// mTLS; go-spiffe accepts them with the registry's SPIFFE bundle, for the
// audience asked for only; a second call is served from the cache; a revoked
// agent gets none.
func TestSourceJWTSVIDLive(t *testing.T) {
	lr := newLiveRegistry(t)
	ctx := context.Background()
	src, err := agent.NewSource(ctx, agent.Config{Server: lr.url, ServerRoots: lr.roots, Identity: lr.register(t, "bot.acme")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	svid, err := src.JWTSVID(ctx, "payments")
	if err != nil {
		t.Fatalf("JWTSVID: %v", err)
	}
	if leaf := src.Certificate(); svid.ExpiresAt.After(leaf.NotAfter) {
		t.Errorf("the token outlives the certificate: %v > %v", svid.ExpiresAt, leaf.NotAfter)
	}
	raw, err := lr.owner.SPIFFEBundle(ctx)
	if err != nil {
		t.Fatal(err)
	}
	bundle, err := spiffebundle.Parse(spiffeid.RequireTrustDomainFromString(registrytest.TrustDomain), raw)
	if err != nil {
		t.Fatal(err)
	}
	got, err := jwtsvid.ParseAndValidate(svid.Token, bundle, []string{"payments"})
	if err != nil {
		t.Fatalf("go-spiffe refuses the token: %v", err)
	}
	if got.ID.String() != "spiffe://"+registrytest.TrustDomain+"/agent/bot.acme" {
		t.Errorf("sub %s", got.ID)
	}
	if _, err := jwtsvid.ParseAndValidate(svid.Token, bundle, []string{"ledger"}); err == nil {
		t.Error("go-spiffe accepts another audience")
	}
	again, err := src.JWTSVID(ctx, "payments")
	if err != nil || again.Token != svid.Token {
		t.Errorf("second call: %v, same token %v; want the cached one", err, err == nil && again.Token == svid.Token)
	}
	if _, err := lr.owner.Revoke(ctx, "bot.acme", "keyCompromise"); err != nil {
		t.Fatal(err)
	}
	if _, err := src.JWTSVID(ctx, "ledger"); err == nil {
		t.Error("a revoked agent got a JWT-SVID")
	}
}
