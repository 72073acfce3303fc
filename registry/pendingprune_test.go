package registry_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/agent-trust-registry/atr/registry"
	"github.com/agent-trust-registry/atr/registry/registrytest"
)

// TestPrunePendingIssuances: the record-before-sign rows of issuances whose
// certificate is stored are deleted once PendingIssuedKeep has passed (by
// the registry's clock), and only they: a row still pending (Reconcile's
// work), an abandoned row (the evidence of a signature that never left the
// CA) and the rows of recent issuances stay, and so does every
// certificate. A second call deletes nothing.
func TestPrunePendingIssuances(t *testing.T) {
	eachDB(t, func(t *testing.T, f *registrytest.Fixture) {
		ctx := context.Background()
		owner := f.Owner("acme", "acme")
		register := func(name string) error {
			csr, _ := f.NewCSR()
			_, err := f.Registry.Register(ctx, owner, registry.RegisterRequest{Name: name, CSR: csr})
			return err
		}
		for _, name := range []string{"old1.acme", "old2.acme"} {
			if err := register(name); err != nil {
				t.Fatal(err)
			}
		}
		csr, _ := f.NewCSR()
		if _, err := f.Registry.Rotate(ctx, owner, "old1.acme", csr); err != nil {
			t.Fatal(err)
		}
		f.FailSigning(true)
		if err := register("abandoned.acme"); !errors.Is(err, registry.ErrUnavailable) {
			t.Fatalf("Register with a failing token: %v", err)
		}
		f.FailSigning(false)
		// A row left pending: the process "dies" while the token signs.
		store := f.Store
		f.OnSign(func() error { store.Close(); return nil })
		if err := register("inflight.acme"); err == nil {
			t.Fatal("Register across a crash succeeded")
		}
		f.OnSign(nil)
		f.Reopen()

		record := statementRecorder(t)
		prune := func(want int64) []string {
			t.Helper()
			return record(func() error {
				if n, err := f.Registry.PrunePendingIssuances(ctx); err != nil || n != want {
					return fmt.Errorf("PrunePendingIssuances = %d, %v; want %d", n, err, want)
				}
				return nil
			})
		}
		if stmts := prune(0); deleteCount(stmts) != 0 {
			t.Errorf("a prune with no row old enough wrote: %q", stmts)
		}
		f.Clock.Advance(registry.PendingIssuedKeep - time.Minute)
		if err := register("recent.acme"); err != nil {
			t.Fatal(err)
		}
		f.Clock.Advance(2 * time.Minute)
		// One row a transaction, two transactions a call: the three old
		// issued rows (two registrations, one rotation) take two calls.
		registry.SetPendingPruneBatches(t, 1, 2)
		if stmts := prune(2); deleteCount(stmts) != 2 {
			t.Errorf("first prune: %d DELETEs; want 2: %q", deleteCount(stmts), stmts)
		}
		registry.SetPendingPruneBatches(t, 1, 3)
		if stmts := prune(1); deleteCount(stmts) != 1 {
			t.Errorf("second prune: %d DELETEs; want 1: %q", deleteCount(stmts), stmts)
		}
		rows, err := f.Store.PendingIssuances(ctx)
		if err != nil {
			t.Fatal(err)
		}
		left := map[string]string{}
		for _, r := range rows {
			left[r.Agent] = r.State
		}
		want := map[string]string{"abandoned.acme": "abandoned", "inflight.acme": "pending", "recent.acme": "issued"}
		if len(left) != len(want) || len(rows) != len(want) {
			t.Fatalf("rows left %v; want %v", left, want)
		}
		for a, s := range want {
			if left[a] != s {
				t.Errorf("%s: %q; want %q", a, left[a], s)
			}
		}
		if stmts := prune(0); deleteCount(stmts) != 0 {
			t.Errorf("a prune with nothing left to prune wrote: %q", stmts)
		}
		admin := f.Admin()
		for _, name := range []string{"old1.acme", "old2.acme", "recent.acme"} {
			d, err := f.Registry.GetAgent(ctx, admin, name)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if want := map[string]int{"old1.acme": 2}[name]; len(d.Certificates) != max(want, 1) {
				t.Errorf("%s: %d certificates", name, len(d.Certificates))
			}
		}
		// Reconcile still finds the pending row.
		f.Clock.Advance(registry.DefaultPendingTimeout)
		if n, err := f.Registry.Reconcile(ctx); err != nil || n != 1 {
			t.Errorf("Reconcile after the prune = %d, %v; want 1", n, err)
		}
	})
}
