package registry_test

import (
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/agent-trust-registry/atr/registry"
	"github.com/agent-trust-registry/atr/registry/registrytest"
)

// TestRotationStatements (issue 14): what a lone rotation asks of the
// database, counted on SQLite (the statements are the same on PostgreSQL,
// where each is a round trip, most of them under the log_head lock). The
// agent's row is read once, to authorize, and locked by the UPDATE that
// moves it to the new serial (before: also SELECT … FOR UPDATE in the
// transaction); the tree's stored hashes are read once, by the append —
// the batch's seal and the receipt's inclusion proof use what it read
// (before: again by the seal and by the receipt). 21 statements became 18.
func TestRotationStatements(t *testing.T) {
	var (
		mu    sync.Mutex
		on    bool
		stmts []string
	)
	registry.SetSQLiteStatementHook(t, func(q string) {
		mu.Lock()
		defer mu.Unlock()
		if on {
			stmts = append(stmts, strings.Join(strings.Fields(q), " "))
		}
	})
	f := registrytest.NewFixture(t, registrytest.WithDatabase("sqlite"))
	ctx := context.Background()
	owner := f.Owner("acme", "acme")
	for i := range 8 { // a tree whose frontier is more than one hash
		csr, _ := f.NewCSR()
		if _, err := f.Registry.Register(ctx, owner, registry.RegisterRequest{Name: "a" + string(rune('0'+i)) + ".acme", CSR: csr}); err != nil {
			t.Fatal(err)
		}
	}
	limits := []struct {
		what  string
		reads string // SELECTs from this table; "" for every statement
		max   int
	}{
		{"statements in all", "", 18},
		{"reads of the agent", "agents", 1},
		{"reads of the tree's stored hashes", "log_hashes", 1},
	}
	for round := range 3 {
		csr, _ := f.NewCSR()
		mu.Lock()
		on, stmts = true, nil
		mu.Unlock()
		if _, err := f.Registry.Rotate(ctx, owner, "a3.acme", csr); err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		on = false
		got := stmts
		mu.Unlock()
		for _, l := range limits {
			n := 0
			for _, s := range got {
				if l.reads == "" || strings.HasPrefix(s, "SELECT ") && strings.Contains(s, " FROM "+l.reads+" ") {
					n++
				}
			}
			if n > l.max {
				t.Errorf("rotation %d: %d %s, want at most %d; the statements:\n%s", round, n, l.what, l.max, strings.Join(got, "\n"))
			}
		}
	}
}
