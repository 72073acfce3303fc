package registry

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

// TestPendingBatch: on PostgreSQL the pending rows that queue while a
// statement runs are inserted by the next one, together; each caller gets
// its own outcome — a second row in flight for a name, in the database or
// earlier in the same batch, is ErrConflict, as the lone INSERT gives — and
// a row PostgreSQL refuses fails alone: the batch's rows go through the
// lone INSERT, and the others are stored.
//
// The batcher is held by a row of another transaction: the first item's
// INSERT waits on the unique index (one row in flight per name) until that
// transaction rolls back, and the items behind it queue meanwhile.
func TestPendingBatch(t *testing.T) {
	ctx := context.Background()
	st := openBareStore(t, "postgres")
	if _, err := st.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	if st.pending == nil {
		t.Fatal("no pending batcher on PostgreSQL")
	}
	now := time.Now().UTC().Truncate(time.Microsecond)
	serial := 0
	row := func(agent, owner string) pendingRow {
		serial++
		return pendingRow{Serial: fmt.Sprintf("%032x", serial), Agent: agent, Owner: owner, Kind: "register",
			TBS: []byte{0x30, byte(serial)}, CreatedAt: now, UpdatedAt: now}
	}
	// A row already in flight, committed.
	if err := st.insertPending(ctx, opInsertPending, row("taken.acme", "acme")); err != nil {
		t.Fatal(err)
	}
	// A row whose batch's statement committed, though its caller learned
	// an error (a connection cut after the commit): sent again alone, it
	// is found stored as it was recorded, not refused as a conflict.
	committed := row("committed.acme", "acme")
	if err := st.insertPending(ctx, opInsertPending, committed); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		rows  []pendingRow
		want  []string // "" nil, "conflict" ErrConflict, "error" another error
		alone int64    // items sent through the lone INSERT
	}{
		{name: "conflicts", rows: []pendingRow{
			row("b1.acme", "acme"), row("b2.acme", "acme"), row("b1.acme", "acme"), row("taken.acme", "acme"), row("b3.acme", "acme"),
		}, want: []string{"", "", "conflict", "conflict", ""}},
		{name: "a refused row", rows: []pendingRow{
			row("c1.acme", "acme"), row("c2.acme", "ac\x00me"), row("c3.acme", "acme"), row("b1.acme", "acme"), committed,
		}, want: []string{"", "error", "", "conflict", ""}, alone: 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hold, err := st.db.BeginTxx(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer hold.Rollback()
			held := "held-" + tc.name
			if err := certs(hold).InsertPending(ctx, row(held, "acme")); err != nil {
				t.Fatal(err)
			}
			before := st.pending.stats()
			var wg sync.WaitGroup
			first := make(chan error, 1)
			wg.Go(func() { first <- st.insertPending(ctx, opInsertPending, row(held, "acme")) })
			// The first batch is the held item alone, its INSERT waiting.
			for !waiting(t, st) {
				time.Sleep(time.Millisecond)
			}
			errs := make([]error, len(tc.rows))
			for i, r := range tc.rows {
				wg.Go(func() { errs[i] = st.insertPending(ctx, opInsertPending, r) })
				for len(st.pending.q.ch) < i+1 {
					time.Sleep(time.Millisecond)
				}
			}
			if err := hold.Rollback(); err != nil {
				t.Fatal(err)
			}
			wg.Wait()
			if err := <-first; err != nil {
				t.Errorf("the held item: %v", err)
			}
			after := st.pending.stats()
			if b, n := after.Batches-before.Batches, after.Items-before.Items; b != 2 || n != int64(len(tc.rows))+1 {
				t.Errorf("%d items in %d batches, want %d in 2 (the held one, then the rest together)", n, b, len(tc.rows)+1)
			}
			if a := after.Alone - before.Alone; a != tc.alone {
				t.Errorf("%d items went alone, want %d", a, tc.alone)
			}
			for i, err := range errs {
				var ok bool
				switch tc.want[i] {
				case "":
					ok = err == nil
				case "conflict":
					ok = errors.Is(err, ErrConflict)
				default:
					ok = err != nil && !errors.Is(err, ErrConflict)
				}
				if !ok {
					t.Errorf("row %d (%s): %v, want %s", i, tc.rows[i].Agent, err, tc.want[i])
				}
				var stored int
				if err := st.db.GetContext(ctx, &stored, `SELECT count(*) FROM pending_issuances WHERE serial = $1`, tc.rows[i].Serial); err != nil {
					t.Fatal(err)
				}
				if (stored == 1) != (tc.want[i] == "") {
					t.Errorf("row %d (%s): %d stored, want it only when it succeeded", i, tc.rows[i].Agent, stored)
				}
			}
		})
	}
}

// waiting reports whether a backend of st's database waits for a lock
// (the held item's INSERT).
func waiting(t *testing.T, st *Store) bool {
	t.Helper()
	var n int
	if err := st.db.Get(&n, `SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'`); err != nil {
		t.Fatal(err)
	}
	return n > 0
}

// TestPendingBatchClosedStore: an item enqueued after the store closed, or
// whose context ended before its batch ran, gets an error and stores no row.
func TestPendingBatchClosedStore(t *testing.T) {
	ctx := context.Background()
	st := openBareStore(t, "postgres")
	if _, err := st.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if err := st.insertPending(cancelled, opInsertPending, pendingRow{Serial: "01", Agent: "a.acme", Owner: "acme", Kind: "register",
		TBS: []byte{1}, CreatedAt: now, UpdatedAt: now}); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v, want context.Canceled", err)
	}
	st.pending.stop()
	if err := st.insertPending(ctx, opInsertPending, pendingRow{Serial: "02", Agent: "b.acme", Owner: "acme", Kind: "register",
		TBS: []byte{1}, CreatedAt: now, UpdatedAt: now}); !errors.Is(err, ErrUnavailable) {
		t.Errorf("closed: %v, want ErrUnavailable", err)
	}
	var n int
	if err := st.db.GetContext(ctx, &n, `SELECT count(*) FROM pending_issuances`); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("%d rows stored, want none", n)
	}
}
