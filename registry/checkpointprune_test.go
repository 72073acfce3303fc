package registry_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/agent-trust-registry/atr/registry"
	"github.com/agent-trust-registry/atr/registry/registrytest"
)

// TestPruneCheckpoints: each batch of issuances stores its checkpoint, and
// the log kept every one for good (one row per issuance at low load). Once
// CheckpointKeep has passed (by the registry's clock), a checkpoint is
// deleted, with its cosignatures, unless it is the newest (every seal checks
// the new tree against it) or the newest cosigned (receipts and the log's
// events are made against it); the young stay. A call with nothing old
// enough writes nothing. The log goes on sealing, and serving the cosigned
// checkpoint, after the prune.
func TestPruneCheckpoints(t *testing.T) {
	eachDB(t, func(t *testing.T, f *registrytest.Fixture) {
		ctx := context.Background()
		owner := f.Owner("acme", "acme")
		w := newTestWitness(t, "witness.example")
		registry.SetCheckpointPruneBatches(t, 1, 2)
		query := func(q string, args ...any) int64 {
			t.Helper()
			n, err := f.Store.QueryInt64(ctx, fmt.Sprintf(q, args...))
			if err != nil {
				t.Fatalf("%s: %v", q, err)
			}
			return n
		}
		newest := func() int64 { return query(`SELECT MAX(size) FROM log_checkpoints`) }
		stored := func(size int64) bool { return query(`SELECT COUNT(*) FROM log_checkpoints WHERE size = %d`, size) == 1 }

		var sizes []int64 // the checkpoint each registration's batch stored
		var note []byte   // the second one's
		for i := range 4 {
			register(t, f, owner, fmt.Sprintf("old%d.acme", i))
			sizes = append(sizes, newest())
			cp, err := f.Registry.SignedCheckpoint(ctx)
			if err != nil || !strings.Contains(string(cp), fmt.Sprintf("\n%d\n", sizes[i])) {
				t.Fatalf("SignedCheckpoint = %q, %v; want the stored checkpoint of size %d", cp, err, sizes[i])
			}
			if i == 1 {
				note = cp
			}
		}
		if n := query(`SELECT COUNT(*) FROM log_checkpoints`); n != 4 {
			t.Fatalf("%d checkpoints stored; want one per registration", n)
		}
		// A witness cosigns the second registration's checkpoint.
		cosigned := sizes[1]
		if n, err := f.Registry.AddCosignatures(ctx, cosigned, w.verifier, w.cosignLines(t, note)); err != nil || n != 1 {
			t.Fatalf("AddCosignatures = %d, %v", n, err)
		}

		record := statementRecorder(t)
		prune := func(want int64) []string {
			t.Helper()
			return record(func() error {
				if n, err := f.Registry.PruneCheckpoints(ctx); err != nil || n != want {
					return fmt.Errorf("PruneCheckpoints = %d, %v; want %d", n, err, want)
				}
				return nil
			})
		}
		if stmts := prune(0); deleteCount(stmts) != 0 {
			t.Errorf("a prune with no checkpoint old enough wrote: %q", stmts)
		}
		f.Clock.Advance(registry.CheckpointKeep - time.Minute)
		register(t, f, owner, "young.acme")
		young := newest()
		f.Clock.Advance(2 * time.Minute)

		// One row a transaction, two a call: the first call deletes the
		// first checkpoint and passes the cosigned one (the newest cosigned);
		// the second deletes the third and the fourth; the third finds only
		// the young one.
		prune(1)
		prune(2)
		if stmts := prune(0); deleteCount(stmts) != 0 {
			t.Errorf("a prune with no checkpoint old enough wrote: %q", stmts)
		}
		for _, s := range []int64{sizes[0], sizes[2], sizes[3]} {
			if stored(s) {
				t.Errorf("the uncosigned checkpoint of size %d is still stored", s)
			}
		}
		if !stored(cosigned) || !stored(young) {
			t.Errorf("stored: cosigned %d %v, young %d %v; want both", cosigned, stored(cosigned), young, stored(young))
		}

		// The newest stays however old.
		f.Clock.Advance(2 * registry.CheckpointKeep)
		prune(0)
		if !stored(young) {
			t.Fatalf("the newest checkpoint (%d) was pruned", young)
		}

		// The log goes on: a new issuance seals against the newest, and the
		// cosigned checkpoint is still served with its cosignature.
		last := register(t, f, owner, "after.acme")
		if newest() <= young {
			t.Fatalf("no checkpoint stored after the prune")
		}
		if res := verifyPEM(t, f, last.CertificatePEM); !res.Verified {
			t.Fatalf("verify after the prune: %+v", res)
		}
		servedCosigned := func(size int64) {
			t.Helper()
			got, err := f.Registry.CosignedCheckpoint(ctx, 1)
			if err != nil || !strings.Contains(string(got), fmt.Sprintf("\n%d\n", size)) || !strings.Contains(string(got), "— witness.example ") {
				t.Fatalf("CosignedCheckpoint after the prune = %q, %v; want the cosigned checkpoint of size %d", got, err, size)
			}
		}
		servedCosigned(cosigned)

		// Once a newer checkpoint is cosigned, the older cosigned one goes
		// too, with its cosignature: the prune passed it while it was the
		// newest cosigned, and reads the key from its start again once a
		// day.
		after := newest()
		cp, err := f.Registry.SignedCheckpoint(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if n, err := f.Registry.AddCosignatures(ctx, after, w.verifier, w.cosignLines(t, cp)); err != nil || n != 1 {
			t.Fatalf("AddCosignatures(%d) = %d, %v", after, n, err)
		}
		f.Clock.Advance(2 * registry.CheckpointKeep)
		prune(1) // the young one; the first cosigned is below where the prune has reached
		if !stored(cosigned) || stored(young) {
			t.Errorf("stored: first cosigned %v, young %v; want the first cosigned only", stored(cosigned), stored(young))
		}
		f.Clock.Advance(24 * time.Hour)
		prune(1) // the first cosigned
		if stored(cosigned) || !stored(after) {
			t.Errorf("stored: first cosigned %v, newest %v; want only the newest", stored(cosigned), stored(after))
		}
		if n := query(`SELECT COUNT(*) FROM witness_cosignatures WHERE size = %d`, cosigned); n != 0 {
			t.Errorf("%d cosignatures of the pruned checkpoint %d stay", n, cosigned)
		}
		servedCosigned(after)
	})
}
