package registry_test

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/agent-trust-registry/atr/registry"
	"github.com/agent-trust-registry/atr/registry/registrytest"
	"github.com/agent-trust-registry/atr/registry/translog"
)

// withVRFSigner is a registry on f's database with s as its VRF signer and
// empty caches (as after a restart, or on another replica).
func withVRFSigner(t testing.TB, f *registrytest.Fixture, s crypto.Signer) *registry.Registry {
	t.Helper()
	cfg := f.Config
	cfg.Store, cfg.VRFSigner = f.Store, s
	r, err := registry.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

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
	r := withVRFSigner(t, f, cs)
	owner := f.Owner("acme", "acme")
	steps := []struct {
		do   func() error
		want int32 // signatures so far: the first registration also derives the openings' MAC key
	}{
		{func() error {
			csr, _ := f.NewCSR()
			_, err := r.Register(ctx, owner, registry.RegisterRequest{Name: "x1.team.acme", CSR: csr})
			return err
		}, 4},
		{func() error {
			csr, _ := f.NewCSR()
			_, err := r.Register(ctx, owner, registry.RegisterRequest{Name: "x2.team.acme", CSR: csr})
			return err
		}, 5},
		{func() error { _, _, err := r.VRFIndex(ctx, owner, "team.acme"); return err }, 5},
		{func() error { _, _, err := r.VRFIndex(ctx, owner, "acme"); return err }, 5},
		{func() error { _, err := r.Revoke(ctx, owner, "x1.team.acme", "keyCompromise"); return err }, 5},
		{func() error { _, _, err := r.VRFIndex(ctx, owner, "new.acme"); return err }, 6},
		{func() error { _, _, err := r.VRFIndex(ctx, owner, "new.acme"); return err }, 6},
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
		return withVRFSigner(t, f, cs), cs
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
	if got := cs.n.Load(); got != 1 {
		t.Errorf("rotate and revoke of known names after a restart: %d VRF signatures, want 1 (the openings' MAC key, no proof)", got)
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
	if got := cs.n.Load(); got != 4 {
		t.Errorf("rotate under a new VRF key: %d VRF signatures, want 4 (the MAC key, the name and both suffixes)", got)
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

// failFirstSigner refuses its first signature.
type failFirstSigner struct {
	crypto.Signer
	n atomic.Int32
}

func (f *failFirstSigner) Sign(r io.Reader, d []byte, o crypto.SignerOpts) ([]byte, error) {
	if f.n.Add(1) == 1 {
		return nil, errors.New("token busy")
	}
	return f.Signer.Sign(r, d, o)
}

// TestRecalledProofsTrustTheirMAC: a rotation recalls its name's VRF proofs
// from the agent's newest opening (TestVRFProofsOfKnownNamesSurviveRestart),
// and used to verify each one, an RSA-3072 verification (~0.16 ms) for every
// rotation of a fleet larger than the 10,000-name cache. An opening stored
// with a MAC under the VRF key's secret is now taken as it is; an opening
// changed behind ATR's back, or stored without a MAC (before migration 013,
// or while the token refused the secret), is verified as before, and a proof
// that fails is computed again on the token — never copied into a leaf.
func TestRecalledProofsTrustTheirMAC(t *testing.T) {
	for _, db := range []string{"sqlite", "postgres"} {
		t.Run(db, func(t *testing.T) {
			f := registrytest.NewFixture(t, registrytest.WithDatabase(db))
			ctx := context.Background()
			owner := f.Owner("acme", "acme")
			register := func(r *registry.Registry, name string) {
				t.Helper()
				csr, _ := f.NewCSR()
				if _, err := r.Register(ctx, owner, registry.RegisterRequest{Name: name, CSR: csr}); err != nil {
					t.Fatal(err)
				}
			}
			for _, name := range []string{"a.team.acme", "b.team.acme", "c.team.acme", "e.team.acme", "f.team.acme"} {
				register(f.Registry, name)
			}
			// A registry whose token refuses the MAC key: its openings have none.
			r0 := withVRFSigner(t, f, &failFirstSigner{Signer: f.VRFKey})
			register(r0, "d.team.acme")
			register(r0, "g.team.acme") // within the retry interval: no MAC either

			opened := func(name string) registry.OpenedEntry {
				t.Helper()
				es, err := f.Registry.OpenedEntries(ctx, owner, name)
				if err != nil || len(es) == 0 {
					t.Fatalf("openings of %s: %v (%d)", name, err, len(es))
				}
				return es[len(es)-1]
			}
			hasMAC := func(name string, idx int64) bool {
				t.Helper()
				m, err := f.Store.OpeningMACs(ctx, name)
				if err != nil {
					t.Fatal(err)
				}
				return m[idx]
			}
			for name, want := range map[string]bool{"a.team.acme": true, "d.team.acme": false, "g.team.acme": false} {
				if got := hasMAC(name, opened(name).LeafIndex); got != want {
					t.Errorf("opening of %s stored with a MAC: %v, want %v", name, got, want)
				}
			}
			// Once the retry interval is over the refused key is asked for
			// again, also by a rotation whose proofs are cached.
			r0.ExpireOpeningMACRetry()
			csr, _ := f.NewCSR()
			iss, err := r0.Rotate(ctx, owner, "g.team.acme", csr)
			if err != nil {
				t.Fatal(err)
			}
			if !hasMAC("g.team.acme", iss.LogIndex) {
				t.Errorf("after the retry interval: the rotation's opening has no MAC")
			}

			// b's opening changed behind ATR's back: its own proof replaced by
			// a's, the JSON otherwise valid and its MAC kept.
			ob, err := translog.ParseOpened(opened("b.team.acme").Opened)
			if err != nil {
				t.Fatal(err)
			}
			oa, err := translog.ParseOpened(opened("a.team.acme").Opened)
			if err != nil {
				t.Fatal(err)
			}
			ob.VRFProofs[0] = oa.VRFProofs[0]
			forged, err := ob.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			if err := f.Store.Exec(ctx, fmt.Sprintf(`UPDATE log_openings SET opened = '%s' WHERE idx = %d`,
				strings.ReplaceAll(string(forged), "'", "''"), ob.LeafIndex)); err != nil {
				t.Fatal(err)
			}
			// c's MAC gone, as on an opening stored before migration 013.
			if err := f.Store.Exec(ctx, `UPDATE log_openings SET opened_mac = NULL WHERE agent_name = 'c.team.acme'`); err != nil {
				t.Fatal(err)
			}
			// e's newest opening replaced by a's, MAC and all.
			if err := f.Store.Exec(ctx, fmt.Sprintf(`UPDATE log_openings SET
				opened = (SELECT opened FROM log_openings WHERE idx = %[1]d),
				opened_mac = (SELECT opened_mac FROM log_openings WHERE idx = %[1]d) WHERE idx = %[2]d`,
				oa.LeafIndex, opened("e.team.acme").LeafIndex)); err != nil {
				t.Fatal(err)
			}
			// f's MAC cut to 31 bytes.
			if err := f.Store.Exec(ctx, `UPDATE log_openings SET opened_mac = substr(opened_mac, 1, 31) WHERE agent_name = 'f.team.acme'`); err != nil {
				t.Fatal(err)
			}

			for _, tc := range []struct {
				name                   string
				verifications, signing int32 // RSA verifications; token signatures besides the MAC key's
			}{
				{"a.team.acme", 0, 0}, // MAC checks: no RSA operation at all
				{"b.team.acme", 1, 3}, // MAC fails, the forged proof fails: name and suffixes made again
				{"c.team.acme", 3, 0}, // no MAC: the three proofs verified
				{"d.team.acme", 3, 0}, // stored without a MAC
				{"e.team.acme", 0, 3}, // another agent's opening, MAC and all: not recalled, made again
				{"f.team.acme", 3, 0}, // a MAC of 31 bytes: verified
			} {
				t.Run(tc.name, func(t *testing.T) {
					// A fresh registry (empty caches, as after a restart).
					cs := &countingSigner{Signer: f.VRFKey}
					r := withVRFSigner(t, f, cs)
					verified := r.CountProofVerifications()
					csr, _ := f.NewCSR()
					iss, err := r.Rotate(ctx, owner, tc.name, csr)
					if err != nil {
						t.Fatal(err)
					}
					if got := verified.Load(); got != tc.verifications {
						t.Errorf("%d RSA verifications of recalled proofs, want %d", got, tc.verifications)
					}
					if got := cs.n.Load() - 1; got != tc.signing {
						t.Errorf("%d VRF signatures besides the MAC key's, want %d", got, tc.signing)
					}
					// The new leaf's opening as stored (e's history holds the
					// damaged row, which OpenedEntries refuses to serve).
					o, err := translog.ParseOpened(iss.Opened)
					if err != nil || o.LeafIndex != iss.LogIndex {
						t.Fatalf("the rotation's opening: %v (leaf %d, want %d)", err, o.LeafIndex, iss.LogIndex)
					}
					for i, n := range translog.NameSuffixes(tc.name) {
						if _, err := translog.VRFVerify(f.VRFKey.Public(), registrytest.TrustDomain, n, o.VRFProofs[i]); err != nil {
							t.Errorf("the new leaf's proof of %s: %v", n, err)
						}
					}
					if !hasMAC(tc.name, iss.LogIndex) {
						t.Errorf("the rotation's opening has no MAC")
					}
				})
			}
		})
	}
}

// BenchmarkRecallStoredProofs is one recall of a name's proofs (two: the
// name and its namespace) from its newest opening: "mac" as stored now, with
// a MAC that checks; "verified" without one (an opening stored before
// migration 013), each proof verified with RSA-3072 as every recall did
// before.
func BenchmarkRecallStoredProofs(b *testing.B) {
	for _, db := range []string{"sqlite", "postgres"} {
		for _, kind := range []string{"mac", "verified"} {
			b.Run(db+"/"+kind, func(b *testing.B) {
				f := registrytest.NewFixture(b, registrytest.WithDatabase(db))
				ctx := context.Background()
				csr, _ := f.NewCSR()
				if _, err := f.Registry.Register(ctx, f.Owner("acme", "acme"), registry.RegisterRequest{Name: "bot.acme", CSR: csr}); err != nil {
					b.Fatal(err)
				}
				if kind == "verified" {
					if err := f.Store.Exec(ctx, `UPDATE log_openings SET opened_mac = NULL`); err != nil {
						b.Fatal(err)
					}
				}
				b.ResetTimer()
				for b.Loop() {
					if !f.Registry.RecallStoredProofs(ctx, "bot.acme") {
						b.Fatal("not recalled")
					}
				}
			})
		}
	}
}

// TestOpeningsStayInPlace: on PostgreSQL the MAC took an opening (~2 KB)
// past the default TOAST threshold, so every opening was compressed in vain
// and written to, and read from, the TOAST table — in the peer bench 0.85×
// the rate of rotations at 1.22× the CPU. Openings of names with up to five
// suffixes now stay in log_openings itself.
func TestOpeningsStayInPlace(t *testing.T) {
	f := registrytest.NewFixture(t, registrytest.WithDatabase("postgres"))
	ctx := context.Background()
	owner := f.Owner("acme", "acme")
	for _, name := range []string{"bot.acme", "a.b.acme", "a.b.c.d.acme"} {
		csr, _ := f.NewCSR()
		if _, err := f.Registry.Register(ctx, owner, registry.RegisterRequest{Name: name, CSR: csr}); err != nil {
			t.Fatal(err)
		}
	}
	n, err := f.Store.QueryInt64(ctx, `SELECT count(*) FROM pg_class o JOIN pg_class t ON t.oid = o.reltoastrelid
		JOIN pg_namespace ns ON ns.oid = o.relnamespace
		WHERE o.relname = 'log_openings' AND ns.nspname = current_schema()`)
	if err != nil || n != 1 {
		t.Fatalf("log_openings' TOAST table: %d found, %v", n, err)
	}
	toasted, err := f.Store.QueryInt64(ctx, `SELECT pg_relation_size(t.oid) FROM pg_class o JOIN pg_class t ON t.oid = o.reltoastrelid
		JOIN pg_namespace ns ON ns.oid = o.relnamespace
		WHERE o.relname = 'log_openings' AND ns.nspname = current_schema()`)
	if err != nil {
		t.Fatal(err)
	}
	if toasted != 0 {
		t.Errorf("log_openings' TOAST table holds %d bytes: openings were stored out of line", toasted)
	}
}
