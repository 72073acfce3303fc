package rp_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/agent-trust-registry/atr/ca"
	"github.com/agent-trust-registry/atr/registry/translog"
	"github.com/agent-trust-registry/atr/rp"
)

// TestAuditorAgentCardEntries: agent_card entries (a signed A2A card's
// digest, naming the agent's certificate) are valid log entries for the
// full audit, and never taken for the certificate's issuance.
func TestAuditorAgentCardEntries(t *testing.T) {
	ctx := context.Background()
	const origin = "test.local/log"
	key := mustKey(t)
	p := newTestPKI(t, "Test", "")
	agentCert := p.leaf(t, leafOpts{})
	fp := ca.Fingerprint(agentCert)
	card := func(i int) []byte {
		t.Helper()
		e := translog.Entry{Type: translog.EventAgentCard, Time: time.Date(2026, 1, 1, 0, 0, i, 0, time.UTC), Fingerprint: fp,
			IssuerKeyID: "abcd", NameIndexes: []string{fmt.Sprintf("%064x", 1000+i)}, CardDigest: fmt.Sprintf("%064x", 7000+i)}
		data, err := e.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	// A card entry naming the certificate before its register entry (as a
	// hostile log might order them), and one after.
	l := newAuditLog(t, origin, key)
	l.append(agentEntry(t, 0, translog.EventRegister, ""), card(1), agentEntry(t, 2, translog.EventRegister, fp), card(3))
	vkey, err := translog.VerifierKey(origin, key.Public())
	if err != nil {
		t.Fatal(err)
	}
	vk, err := rp.ParseLogKey([]byte(vkey + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	for _, full := range []bool{true, false} {
		a := rp.Auditor{Log: l, Key: vk, Origin: origin}
		found, err := audit(ctx, a, nil, full, agentCert)
		if err != nil {
			t.Fatalf("audit (full=%v) of a log with agent_card entries: %v", full, err)
		}
		if found.Index != 2 || found.Entry.Type != translog.EventRegister {
			t.Errorf("audit (full=%v) found entry %d (%s), want the register entry 2", full, found.Index, found.Entry.Type)
		}
	}
}
