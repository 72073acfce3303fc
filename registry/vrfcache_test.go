package registry_test

import (
	"context"
	"crypto"
	"io"
	"sync/atomic"
	"testing"

	"github.com/agent-trust-registry/atr/registry"
	"github.com/agent-trust-registry/atr/registry/registrytest"
)

// countingSigner counts the VRF signatures the registry asks for.
type countingSigner struct {
	crypto.Signer
	n atomic.Int32
}

func (c *countingSigner) Sign(r io.Reader, d []byte, o crypto.SignerOpts) ([]byte, error) {
	c.n.Add(1)
	return c.Signer.Sign(r, d, o)
}

// TestVRFSignaturesPerSuffixCached replays the security review of issue 12: the VRF cache
// was keyed by full name, so every sibling name (and every POST /v1/log/vrf) signed its
// shared suffixes on the token again. Each name or suffix costs one signature, once.
func TestVRFSignaturesPerSuffixCached(t *testing.T) {
	f := registrytest.NewFixture(t)
	ctx := context.Background()
	cs := &countingSigner{Signer: f.VRFKey}
	cfg := f.Config
	cfg.Store, cfg.VRFSigner = f.Store, cs
	r, err := registry.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	owner := f.Owner("acme", "acme")
	steps := []struct {
		do   func() error
		want int32 // signatures so far
	}{
		{func() error {
			csr, _ := f.NewCSR()
			_, err := r.Register(ctx, owner, registry.RegisterRequest{Name: "x1.team.acme", CSR: csr})
			return err
		}, 3},
		{func() error {
			csr, _ := f.NewCSR()
			_, err := r.Register(ctx, owner, registry.RegisterRequest{Name: "x2.team.acme", CSR: csr})
			return err
		}, 4},
		{func() error { _, _, err := r.VRFIndex(ctx, owner, "team.acme"); return err }, 4},
		{func() error { _, _, err := r.VRFIndex(ctx, owner, "acme"); return err }, 4},
		{func() error { _, err := r.Revoke(ctx, owner, "x1.team.acme", "keyCompromise"); return err }, 4},
		{func() error { _, _, err := r.VRFIndex(ctx, owner, "new.acme"); return err }, 5},
		{func() error { _, _, err := r.VRFIndex(ctx, owner, "new.acme"); return err }, 5},
	}
	for i, st := range steps {
		if err := st.do(); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		if got := cs.n.Load(); got != st.want {
			t.Errorf("after step %d: %d VRF signatures, want %d", i, got, st.want)
		}
	}
}
