package api

import (
	"fmt"
	"strings"
	"testing"

	"github.com/agent-trust-registry/atr/api/ratelimit"
)

// TestInventedAgentNamesCannotFillPrincipalTable replays the security review of the
// EXT-01 fix: rotate and revoke buckets are keyed by the agent name in the URL, which the
// caller invents, and they were charged in the principal table (which refuses new keys
// when full) before the handler looked at the name. One tenant sending rotate or revoke
// for invented names could fill it, and every other principal then got 503. Now a name
// is validated before any state is created, and these buckets live in their own table,
// which evicts when full.
func TestInventedAgentNamesCannotFillPrincipalTable(t *testing.T) {
	h := newHarness(t, nil)
	principal := h.s.limits.principal.lim.(*ratelimit.Local)
	tiny := ratelimit.NewLocal(4, ratelimit.EvictNearest, nil)
	h.s.limits.action = limitTable{tableAction, tiny}
	body := map[string]string{"csr": testCSR}
	for i := range 40 {
		path := fmt.Sprintf("/v1/agents/invented-%d.alice/rotate", i)
		if i%2 == 1 {
			path = fmt.Sprintf("/v1/agents/invented-%d.alice/revoke", i)
			body = map[string]string{"reason": "keyCompromise"}
		}
		rec := serve(h.s.Handler(), "POST", path, "192.0.2.1:1234", keyAlice, body)
		if rec.Code == 503 {
			t.Fatalf("request %d: 503 %s", i, rec.Body)
		}
	}
	if got := principal.Len(); got > 1 {
		t.Errorf("principal table holds %d keys after one key's rotates and revokes, want ≤ 1 (its own bucket)", got)
	}
	if got := tiny.Len(); got > 4 {
		t.Errorf("action table holds %d keys, want ≤ 4", got)
	}
	// Another tenant is not refused for memory.
	rec := serve(h.s.Handler(), "POST", "/v1/agents/x.bob/rotate", "192.0.2.9:1234", keyBob, map[string]string{"csr": testCSR})
	if rec.Code == 503 || rec.Code == 429 {
		t.Errorf("bob's rotate after alice's flood: %d %s", rec.Code, rec.Body)
	}
	// An invalid name creates no state at all.
	before := tiny.Len()
	for _, name := range []string{strings.Repeat("a", 300), "a%20b", "..%5c"} {
		rec := serve(h.s.Handler(), "POST", "/v1/agents/"+name+"/rotate", "192.0.2.9:1234", keyBob, map[string]string{"csr": testCSR})
		if rec.Code != 400 {
			t.Errorf("rotate %q: %d, want 400", name, rec.Code)
		}
	}
	if tiny.Len() > before {
		t.Errorf("invalid names created action-table state")
	}
}

// TestCardSigningLimitedPerAgent: every signed card is a permanent public log
// leaf, so POST /v1/agents/{name}/card spends a per-agent card budget (10/h by
// default), not only the per-key limit (120/min) — which let one owner append
// thousands of leaves an hour per agent (security review of issue 16). The
// budget is the card class's, separate from rotate.
func TestCardSigningLimitedPerAgent(t *testing.T) {
	h := newHarness(t, nil)
	card := map[string]any{"name": "bot.alice"}
	var got []int
	for range 12 {
		rec := serve(h.s.Handler(), "POST", "/v1/agents/bot.alice/card", "192.0.2.1:1234", keyAlice, card)
		got = append(got, rec.Code)
	}
	if got[9] == 429 || got[10] != 429 || got[11] != 429 {
		t.Fatalf("card answers %v; want the 11th and later refused with 429", got)
	}
	// Another agent of the same owner has its own budget, and rotate its own.
	if rec := serve(h.s.Handler(), "POST", "/v1/agents/other.alice/card", "192.0.2.1:1234", keyAlice, card); rec.Code == 429 {
		t.Errorf("another agent's card: 429 %s", rec.Body)
	}
	if rec := serve(h.s.Handler(), "POST", "/v1/agents/bot.alice/rotate", "192.0.2.1:1234", keyAlice, map[string]string{"csr": testCSR}); rec.Code == 429 {
		t.Errorf("rotate after the card budget is spent: 429 %s", rec.Body)
	}
}
