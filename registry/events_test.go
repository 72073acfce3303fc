package registry_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/agent-trust-registry/atr/registry"
	"github.com/agent-trust-registry/atr/registry/registrytest"
	"github.com/agent-trust-registry/atr/registry/translog"
	"github.com/agent-trust-registry/atr/rp"
)

// collectEvents reads events from r from index from until the log's size n,
// checking each: contiguous indexes, its type, a checkpoint signed by the
// log key whose tree includes the leaf (inclusion proof).
func collectEvents(t *testing.T, ctx context.Context, f *registrytest.Fixture, r *registry.Registry, from, n int64) []registry.LogEvent {
	t.Helper()
	var out []registry.LogEvent
	for next := from; next < n; {
		evs, err := r.LogEvents(ctx, next, registry.MaxLogEventsPerRead)
		if err != nil {
			t.Fatalf("LogEvents(%d): %v", next, err)
		}
		if len(evs) == 0 {
			t.Fatalf("LogEvents(%d) returned nothing", next)
		}
		for _, ev := range evs {
			if ev.Index != next {
				t.Fatalf("event index %d, want %d", ev.Index, next)
			}
			e, err := translog.ParseEntry(ev.Leaf)
			if err != nil || string(e.Type) != ev.Type {
				t.Fatalf("event %d: leaf type %q (%v), event type %q", ev.Index, e.Type, err, ev.Type)
			}
			cp, err := translog.OpenCheckpoint(ev.Checkpoint, f.NoteVerifier)
			if err != nil {
				t.Fatalf("event %d: checkpoint: %v", ev.Index, err)
			}
			if cp.Size <= ev.Index {
				t.Fatalf("event %d: checkpoint of size %d does not cover it", ev.Index, cp.Size)
			}
			if err := translog.CheckInclusion(ev.InclusionProof, cp.Size, cp.Hash, ev.Index, translog.LeafHash(ev.Leaf)); err != nil {
				t.Fatalf("event %d: %v", ev.Index, err)
			}
			next++
		}
		out = append(out, evs...)
	}
	return out
}

// TestLogEvents: every leaf comes out once, in order, with a checkpoint
// covering it and its inclusion proof; a reader at the end of the log
// waits, on another replica too, until a revocation's leaves are appended
// and covered by a checkpoint; indexes past the log and an unstarted
// registry are refused.
func TestLogEvents(t *testing.T) {
	eachDB(t, func(t *testing.T, f *registrytest.Fixture) {
		ctx, cancel := context.WithTimeout(t.Context(), hangGuard)
		defer cancel()
		if _, err := f.Registry.LogEvents(ctx, 0, 10); !errors.Is(err, registry.ErrUnavailable) {
			t.Errorf("LogEvents before Start: %v, want ErrUnavailable", err)
		}
		start(t, f.Registry)
		other := replica(t, f)
		start(t, other)

		owner := f.Owner("acme", "acme")
		register(t, f, owner, "a.acme")
		register(t, f, owner, "b.acme")
		csr, _ := f.NewCSR()
		if _, err := f.Registry.Rotate(ctx, owner, "b.acme", csr); err != nil {
			t.Fatal(err)
		}
		size, err := other.LogSize(ctx)
		if err != nil || size != 3 {
			t.Fatalf("LogSize = %d, %v; want 3", size, err)
		}
		evs := collectEvents(t, ctx, f, other, 0, size)
		if got := []string{evs[0].Type, evs[1].Type, evs[2].Type}; got[0] != "register" || got[1] != "register" || got[2] != "rotate" {
			t.Errorf("event types %v, want register register rotate", got)
		}
		// Resuming in the middle gives the same leaves.
		if again := collectEvents(t, ctx, f, f.Registry, 1, size); string(again[1].Leaf) != string(evs[2].Leaf) {
			t.Error("resuming from 1 served another leaf 2")
		}

		// At the end of the log: wait on the other replica for a revocation
		// made through this one.
		type result struct {
			evs []registry.LogEvent
			err error
			at  time.Time
		}
		got := make(chan result, 1)
		go func() {
			evs, err := other.LogEvents(ctx, size, 10)
			got <- result{evs, err, time.Now()}
		}()
		time.Sleep(50 * time.Millisecond) // let it start waiting (not required for correctness)
		revokedAt := time.Now()
		if _, err := f.Registry.Revoke(ctx, owner, "a.acme", "keyCompromise"); err != nil {
			t.Fatal(err)
		}
		res := <-got
		if res.err != nil {
			t.Fatalf("waiting LogEvents: %v", res.err)
		}
		if len(res.evs) == 0 || res.evs[0].Index != size || res.evs[0].Type != "revoke" {
			t.Fatalf("after the revocation: %+v, want a revoke event at %d", res.evs, size)
		}
		t.Logf("%s: revocation announced by the other replica %v after Revoke began", f.Database, res.at.Sub(revokedAt))
		collectEvents(t, ctx, f, other, size, size+int64(len(res.evs)))

		n, _ := other.LogSize(ctx)
		if _, err := other.LogEvents(ctx, n+1, 10); !errors.Is(err, registry.ErrNotFound) {
			t.Errorf("LogEvents past the log: %v, want ErrNotFound", err)
		}
		if _, err := other.LogEvents(ctx, -1, 10); !errors.Is(err, registry.ErrInvalid) {
			t.Errorf("LogEvents(-1): %v, want ErrInvalid", err)
		}
		// A waiting reader is released when its context ends.
		short, cancelShort := context.WithTimeout(ctx, 100*time.Millisecond)
		defer cancelShort()
		if _, err := other.LogEvents(short, n, 10); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("LogEvents at the end with an expiring context: %v, want DeadlineExceeded", err)
		}
	})
}

// TestLogEventsPreferCosigned: a leaf is served with the newest checkpoint
// that covers it and carries a witness cosignature, when there is one
// (a follower with a witness policy then gets what it needs), else with
// the newest checkpoint.
func TestLogEventsPreferCosigned(t *testing.T) {
	eachDB(t, func(t *testing.T, f *registrytest.Fixture) {
		ctx, cancel := context.WithTimeout(t.Context(), hangGuard)
		defer cancel()
		start(t, f.Registry)
		owner := f.Owner("acme", "acme")
		register(t, f, owner, "a.acme")
		register(t, f, owner, "b.acme")
		cp2, err := f.Registry.SignedCheckpoint(ctx)
		if err != nil {
			t.Fatal(err)
		}
		w := newTestWitness(t, "witness.example")
		c, err := translog.OpenCheckpoint(cp2, f.NoteVerifier)
		if err != nil || c.Size != 2 {
			t.Fatalf("checkpoint %+v, %v; want size 2", c, err)
		}
		if _, err := f.Registry.AddCosignatures(ctx, c.Size, w.verifier, w.cosignLines(t, cp2)); err != nil {
			t.Fatal(err)
		}
		register(t, f, owner, "c.acme")
		if _, err := f.Registry.SignedCheckpoint(ctx); err != nil { // size 3, not cosigned
			t.Fatal(err)
		}
		lv, err := rp.ParseLogVerifiers(f.Registry.LogVerifierKey())
		if err != nil {
			t.Fatal(err)
		}
		policy := rp.WitnessPolicy{Keys: []string{w.vkey}, Threshold: 1}
		evs := collectEvents(t, ctx, f, f.Registry, 0, 3)
		for _, ev := range evs {
			got, err := rp.VerifyCheckpoint(ev.Checkpoint, lv, policy)
			switch ev.Index {
			case 0, 1:
				if err != nil || got.Size != 2 {
					t.Errorf("event %d: checkpoint of size %d, %v; want the cosigned one of size 2", ev.Index, got.Size, err)
				}
			case 2:
				if !errors.Is(err, rp.ErrWitnessPolicy) {
					t.Errorf("event 2: %v; want the newest checkpoint, not cosigned yet", err)
				}
			}
		}
	})
}
