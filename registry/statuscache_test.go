package registry_test

import (
	"context"
	"testing"
	"time"

	"github.com/agent-trust-registry/atr/registry"
	"github.com/agent-trust-registry/atr/registry/registrytest"
)

// TestVerifyStatusCacheFreshness: Verify may answer from a status read a
// moment ago, but a revocation is reflected at once on the replica that
// made it and within StatusCacheTTL (≤ 1 s) on every other replica.
func TestVerifyStatusCacheFreshness(t *testing.T) {
	eachDB(t, func(t *testing.T, f *registrytest.Fixture) {
		ctx := context.Background()
		other, err := registry.New(registry.Config{
			Store: f.Store, Issuer: f.Issuer, Verifier: f.Verifier, TrustDomain: registrytest.TrustDomain,
			Now: f.Clock.Now, Log: f.Log,
		})
		if err != nil {
			t.Fatal(err)
		}
		csr, _ := f.NewCSR()
		iss, err := f.Registry.Register(ctx, f.Owner("acme", "acme"), registry.RegisterRequest{Name: "bot.acme", CSR: csr})
		if err != nil {
			t.Fatal(err)
		}
		verify := func(r *registry.Registry) *registry.VerifyResult {
			t.Helper()
			res, err := r.Verify(ctx, []byte(iss.CertificatePEM), []byte(iss.ChainPEM))
			if err != nil {
				t.Fatal(err)
			}
			return res
		}
		for _, r := range []*registry.Registry{f.Registry, other} {
			if res := verify(r); !res.Verified {
				t.Fatalf("fresh certificate: %+v", res)
			}
		}
		if _, err := f.Registry.Revoke(ctx, f.Owner("acme", "acme"), "bot.acme", "keyCompromise"); err != nil {
			t.Fatal(err)
		}
		if res := verify(f.Registry); res.Verified || res.Reason != registry.ReasonRevoked {
			t.Errorf("the revoking replica still verifies the certificate: %+v", res)
		}
		f.Clock.Advance(registry.DefaultStatusCacheTTL)
		if res := verify(other); res.Verified || res.Reason != registry.ReasonRevoked {
			t.Errorf("another replica verifies a revoked certificate %v after the revocation: %+v", registry.DefaultStatusCacheTTL, res)
		}
		if registry.DefaultStatusCacheTTL > registry.MaxStatusCacheTTL || registry.MaxStatusCacheTTL > time.Second {
			t.Errorf("status cache TTL %v / max %v break the one-second contract", registry.DefaultStatusCacheTTL, registry.MaxStatusCacheTTL)
		}
		if _, err := registry.New(registry.Config{Store: f.Store, TrustDomain: registrytest.TrustDomain, Log: f.Log, StatusCacheTTL: 2 * registry.MaxStatusCacheTTL}); err == nil {
			t.Error("a status cache TTL over one second was accepted")
		}
	})
}
