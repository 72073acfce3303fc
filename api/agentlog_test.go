package api

import (
	"context"
	"reflect"
	"testing"

	"github.com/agent-trust-registry/atr/api/client"
	"github.com/agent-trust-registry/atr/registry"
	"github.com/agent-trust-registry/atr/registry/registrytest"
	"github.com/agent-trust-registry/atr/registry/translog"
)

// TestAgentLogAndReceipts: register and rotate answers carry a receipt; the owner reads
// every leaf of its agent opened (all VRF proofs) with receipts; another owner gets 404;
// verify answers with the receipt.
func TestAgentLogAndReceipts(t *testing.T) {
	ctx := context.Background()
	rs := newRealServer(t, "sqlite")
	alice := rs.client(t, client.WithAPIKey(rs.f.NewAPIKey("alice", "alice", registry.ScopeAgentsRead, registry.ScopeAgentsWrite)))
	bob := rs.client(t, client.WithAPIKey(rs.f.NewAPIKey("bob", "bob", registry.ScopeAgentsRead, registry.ScopeAgentsWrite)))
	anon := rs.client(t)
	csr, _ := rs.f.NewCSR()
	reg, err := alice.Register(ctx, client.RegisterRequest{Name: "bot.team.alice", CSR: string(csr)})
	if err != nil {
		t.Fatal(err)
	}
	csr2, _ := rs.f.NewCSR()
	rot, err := alice.Rotate(ctx, "bot.team.alice", csr2)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []*client.Certificate{reg, rot} {
		r, err := translog.ParseReceipt(c.Receipt)
		if err != nil {
			t.Fatalf("receipt of leaf %d: %v", c.LogIndex, err)
		}
		if r.LeafIndex != c.LogIndex || len(r.Opened.VRFProofs) != 3 {
			t.Errorf("receipt: leaf %d with %d proofs; want leaf %d with every proof", r.LeafIndex, len(r.Opened.VRFProofs), c.LogIndex)
		}
		// No witness is configured: the log's own Ed25519 signature is not a
		// cosignature (a newcomer found "witnessed": true here).
		if r.Witnessed {
			t.Errorf("receipt of leaf %d says witnessed with no witness configured", r.LeafIndex)
		}
		o, err := translog.ParseOpened(c.Opened)
		if err != nil || len(o.VRFProofs) != 3 {
			t.Errorf("opened: %d proofs, %v; want 3 (bot.team.alice, team.alice, alice)", len(o.VRFProofs), err)
		}
	}
	lg, err := alice.AgentLog(ctx, "bot.team.alice")
	if err != nil {
		t.Fatal(err)
	}
	if len(lg.Entries) != 2 || lg.Entries[0].LeafIndex != reg.LogIndex || lg.Entries[1].LeafIndex != rot.LogIndex {
		t.Fatalf("agent log = %+v; want the register and rotate leaves", lg.Entries)
	}
	for _, e := range lg.Entries {
		leaves, err := rs.f.Registry.LogEntries(ctx, e.LeafIndex, e.LeafIndex+1)
		if err != nil {
			t.Fatal(err)
		}
		leaf, err := translog.ParseEntry(leaves[0])
		if err != nil {
			t.Fatal(err)
		}
		o, err := translog.ParseOpened(e.Opened)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := o.Check(leaf, rs.f.VRFKey.Public(), registrytest.TrustDomain); err != nil {
			t.Errorf("opening of leaf %d: %v", e.LeafIndex, err)
		}
	}
	_, err = bob.AgentLog(ctx, "bot.team.alice")
	wantCode(t, "another owner's agent log", err, 404, CodeNotFound)
	_, err = anon.AgentLog(ctx, "bot.team.alice")
	wantCode(t, "anonymous agent log", err, 401, CodeUnauthenticated)

	res, err := anon.Verify(ctx, []byte(rot.Certificate), []byte(rot.Chain))
	if err != nil || !res.Verified {
		t.Fatalf("verify: %+v, %v", res, err)
	}
	if r, err := translog.ParseReceipt(res.Receipt); err != nil || r.LeafIndex != rot.LogIndex || len(r.Opened.VRFProofs) != 3 {
		t.Errorf("verify receipt: %v (leaf %d); want the rotate leaf's receipt with every proof", err, r.LeafIndex)
	}
	// Without the receipt ("receipt": false): the same answer, no receipt.
	bare, err := anon.VerifyWithoutReceipt(ctx, []byte(rot.Certificate), []byte(rot.Chain))
	if err != nil {
		t.Fatalf("verify without receipt: %v", err)
	}
	if bare.Receipt != nil {
		t.Errorf("verify without receipt answered one (%d bytes)", len(bare.Receipt))
	}
	res.Receipt = nil
	if !reflect.DeepEqual(bare, res) {
		t.Errorf("verify without receipt = %+v, want %+v", bare, res)
	}
}
