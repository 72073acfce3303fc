package registry_test

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"io"
	"sync/atomic"
	"testing"

	"github.com/agent-trust-registry/atr/registry"
	"github.com/agent-trust-registry/atr/registry/registrytest"
	"github.com/agent-trust-registry/atr/registry/translog"
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

// TestVRFProofsOfKnownNamesSurviveRestart: the per-replica cache holds
// 10,000 names, so in a fleet larger than that (or after a restart, or on
// another replica) every rotation paid an RSA signature on the token for a
// name whose proofs were already in its log openings. A known agent's
// proofs now come from its newest opening, checked against the current VRF
// key; under another key they are computed again.
func TestVRFProofsOfKnownNamesSurviveRestart(t *testing.T) {
	f := registrytest.NewFixture(t)
	ctx := context.Background()
	owner := f.Owner("acme", "acme")
	for _, name := range []string{"a.team.acme", "b.team.acme"} {
		csr, _ := f.NewCSR()
		if _, err := f.Registry.Register(ctx, owner, registry.RegisterRequest{Name: name, CSR: csr}); err != nil {
			t.Fatal(err)
		}
	}
	// A fresh registry on the same database: an empty cache, as after a
	// restart or on another replica.
	fresh := func(vrf crypto.Signer) (*registry.Registry, *countingSigner) {
		cs := &countingSigner{Signer: vrf}
		cfg := f.Config
		cfg.Store, cfg.VRFSigner = f.Store, cs
		r, err := registry.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		return r, cs
	}
	r, cs := fresh(f.VRFKey)
	csr, _ := f.NewCSR()
	iss, err := r.Rotate(ctx, owner, "a.team.acme", csr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Revoke(ctx, owner, "b.team.acme", "keyCompromise"); err != nil {
		t.Fatal(err)
	}
	if got := cs.n.Load(); got != 0 {
		t.Errorf("rotate and revoke of known names after a restart: %d VRF signatures, want 0", got)
	}
	checkOpenedProofs(t, f, owner, "a.team.acme", iss.LogIndex, f.VRFKey.Public())

	// Under a new VRF key the stored proofs do not verify: computed again
	// (name and both suffixes), never copied into a leaf.
	other, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	r, cs = fresh(other)
	csr, _ = f.NewCSR()
	iss, err = r.Rotate(ctx, owner, "a.team.acme", csr)
	if err != nil {
		t.Fatal(err)
	}
	if got := cs.n.Load(); got != 3 {
		t.Errorf("rotate under a new VRF key: %d VRF signatures, want 3", got)
	}
	checkOpenedProofs(t, f, owner, "a.team.acme", iss.LogIndex, other.Public())
}

// checkOpenedProofs checks that the opening of leaf idx carries proofs of
// name and its suffixes that verify under pub.
func checkOpenedProofs(t *testing.T, f *registrytest.Fixture, owner registry.Actor, name string, idx int64, pub crypto.PublicKey) {
	t.Helper()
	entries, err := f.Registry.OpenedEntries(context.Background(), owner, name)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.LeafIndex != idx {
			continue
		}
		o, err := translog.ParseOpened(e.Opened)
		if err != nil {
			t.Fatal(err)
		}
		suffixes := translog.NameSuffixes(name)
		if len(o.VRFProofs) != len(suffixes) {
			t.Fatalf("leaf %d: %d proofs, want %d", idx, len(o.VRFProofs), len(suffixes))
		}
		for i, s := range suffixes {
			if _, err := translog.VRFVerify(pub, registrytest.TrustDomain, s, o.VRFProofs[i]); err != nil {
				t.Errorf("leaf %d: proof of %s: %v", idx, s, err)
			}
		}
		return
	}
	t.Fatalf("no opening of leaf %d for %s", idx, name)
}
