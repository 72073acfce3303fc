package registry_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"slices"
	"testing"

	"github.com/agent-trust-registry/atr/registry"
	"github.com/agent-trust-registry/atr/registry/registrytest"
	"github.com/agent-trust-registry/atr/registry/translog"
)

// TestVRFIndex: an owner key obtains the VRF index and proof of any name
// inside its namespace (registered or not, the namespace itself included),
// never of a name outside it; an admin of any name; the proof verifies with
// the published VRF key and the index is the one for the normalized name.
func TestVRFIndex(t *testing.T) {
	eachDB(t, func(t *testing.T, f *registrytest.Fixture) {
		ctx := context.Background()
		owner := f.Owner("alice", "acme")
		reader := f.Actor("alice", "b.acme", registry.ScopeAgentsRead)
		admin := f.Admin()
		register(t, f, owner, "svc.acme")
		pub, err := translog.ParseVRFPublicKeyPEM(f.Registry.VRFPublicKeyPEM())
		if err != nil {
			t.Fatalf("VRFPublicKeyPEM does not parse: %v", err)
		}
		if !pub.Equal(f.VRFKey.Public()) {
			t.Fatal("VRFPublicKeyPEM is not the fixture's VRF key")
		}
		for _, tc := range []struct {
			desc     string
			actor    registry.Actor
			name     string
			wantName string // normalized name the index is of
			wantErr  error
		}{
			{"owner, registered name", owner, "svc.acme", "svc.acme", nil},
			{"owner, unregistered name", owner, "a.b.acme", "a.b.acme", nil},
			{"owner, its namespace", owner, "acme", "acme", nil},
			{"owner, name normalized", owner, "B.ACME", "b.acme", nil},
			{"read-only key, its namespace", reader, "b.acme", "b.acme", nil},
			{"read-only key, inside", reader, "x.b.acme", "x.b.acme", nil},
			{"read-only key, parent namespace", reader, "acme", "", registry.ErrForbidden},
			{"read-only key, sibling", reader, "c.acme", "", registry.ErrForbidden},
			{"owner, other namespace", owner, "svc.bob", "", registry.ErrForbidden},
			{"owner, suffix without a dot", owner, "xacme", "", registry.ErrForbidden},
			{"owner, namespace as a prefix", owner, "acme.evil", "", registry.ErrForbidden},
			{"owner, invalid name", owner, "a b.acme", "", registry.ErrInvalid},
			{"admin, any name", admin, "svc.bob", "svc.bob", nil},
			{"admin, top label", admin, "acme", "acme", nil},
			{"agent over mTLS", registry.Actor{AgentName: "svc.acme"}, "svc.acme", "", registry.ErrForbidden},
			{"anonymous", registry.Actor{}, "svc.acme", "", registry.ErrForbidden},
			{"key without scopes", registry.Actor{KeyID: "0123456789abcdef", Owner: "alice", Namespace: "acme"}, "svc.acme", "", registry.ErrForbidden},
		} {
			t.Run(tc.desc, func(t *testing.T) {
				idx, proof, err := f.Registry.VRFIndex(ctx, tc.actor, tc.name)
				if tc.wantErr != nil {
					if !errors.Is(err, tc.wantErr) {
						t.Fatalf("VRFIndex(%q): got %v, want %v", tc.name, err, tc.wantErr)
					}
					if proof != nil || idx != ([32]byte{}) {
						t.Errorf("VRFIndex(%q) refused but returned a proof", tc.name)
					}
					return
				}
				if err != nil {
					t.Fatalf("VRFIndex(%q): %v", tc.name, err)
				}
				got, err := translog.VRFVerify(pub, registrytest.TrustDomain, tc.wantName, proof)
				if err != nil {
					t.Fatalf("proof of %q does not verify for %q: %v", tc.name, tc.wantName, err)
				}
				if got != idx || idx != sha256.Sum256(proof) {
					t.Errorf("index %x, want %x = SHA-256(proof)", idx, got)
				}
				want, _, err := translog.VRFProve(f.VRFKey, registrytest.TrustDomain, tc.wantName)
				if err != nil {
					t.Fatal(err)
				}
				if idx != want {
					t.Errorf("index %x, want %x (VRFProve of %q)", idx, want, tc.wantName)
				}
			})
		}

		// Refusals are audited with the actor and the name asked for.
		events, _, err := f.Registry.ListAudit(ctx, admin, "", 100)
		if err != nil {
			t.Fatal(err)
		}
		denied := map[string]bool{}
		for _, e := range events {
			if e.Action == registry.ActionVRFIndex && e.Result == registry.ResultDenied {
				denied[e.Target] = true
			}
		}
		for _, name := range []string{"acme", "c.acme", "svc.bob", "xacme", "acme.evil"} {
			if !denied[name] {
				t.Errorf("refused VRFIndex of %q not in the audit trail (denied: %v)", name, denied)
			}
		}
	})
}

// TestVRFConfig: New refuses a log without a VRF key and a VRF key that
// translog.CheckVRFKey refuses; without a log and VRF key, VRFIndex is
// ErrUnavailable and there is no public key to publish.
func TestVRFConfig(t *testing.T) {
	f := registrytest.NewFixture(t)
	short, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		desc   string
		change func(c *registry.Config)
	}{
		{"log without VRF key", func(c *registry.Config) { c.VRFSigner = nil }},
		{"RSA-1024 VRF key", func(c *registry.Config) { c.VRFSigner = short }},
		{"ECDSA VRF key", func(c *registry.Config) { c.VRFSigner = ec }},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			cfg := f.Config
			tc.change(&cfg)
			if r, err := registry.New(cfg); err == nil || r != nil {
				t.Errorf("registry.New: got %v, %v; want an error", r, err)
			}
		})
	}

	cfg := f.Config
	cfg.LogSigner, cfg.LogVerifier, cfg.LogPublicKey, cfg.VRFSigner = nil, nil, nil, nil
	r, err := registry.New(cfg)
	if err != nil {
		t.Fatalf("registry.New without a log: %v", err)
	}
	if p := r.VRFPublicKeyPEM(); p != nil {
		t.Errorf("VRFPublicKeyPEM without a VRF key = %q, want nil", p)
	}
	if _, _, err := r.VRFIndex(context.Background(), f.Admin(), "acme"); !errors.Is(err, registry.ErrUnavailable) {
		t.Errorf("VRFIndex without a VRF key: got %v, want ErrUnavailable", err)
	}
}

// TestVRFIndexMatchesLogLeaves: the index an owner obtains for a name or a
// parent namespace is exactly what the public leaf of a registration
// carries, so a monitor finds the entry by it.
func TestVRFIndexMatchesLogLeaves(t *testing.T) {
	eachDB(t, func(t *testing.T, f *registrytest.Fixture) {
		ctx := context.Background()
		owner := f.Owner("alice", "acme")
		iss := register(t, f, owner, "a.b.acme")
		leaves, err := f.Registry.LogEntries(ctx, iss.LogIndex, iss.LogIndex+1)
		if err != nil || len(leaves) != 1 {
			t.Fatalf("LogEntries(%d): %d leaves, %v", iss.LogIndex, len(leaves), err)
		}
		e, err := translog.ParseEntry(leaves[0])
		if err != nil {
			t.Fatalf("ParseEntry: %v", err)
		}
		var want []string
		for _, n := range translog.NameSuffixes("a.b.acme") {
			idx, _, err := f.Registry.VRFIndex(ctx, owner, n)
			if err != nil {
				t.Fatalf("VRFIndex(%q): %v", n, err)
			}
			want = append(want, hex.EncodeToString(idx[:]))
		}
		if !slices.Equal(e.NameIndexes, want) {
			t.Errorf("leaf name_indexes %q, want the owner's VRF indexes %q", e.NameIndexes, want)
		}
	})
}
