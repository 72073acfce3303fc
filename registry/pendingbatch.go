package registry

// The pending rows' group commit on PostgreSQL (issue 14). Every issuance
// records its serial and TBS durably before the token signs (DESIGN.md
// "Issuance", step 4). On SQLite that insert goes through the one writer,
// whose batches already hold several. On PostgreSQL it was one autocommit
// statement per issuance: a round trip, a commit and, most of the time, a
// WAL flush of its own (pg_stat_wal: 0.82 syncs per rotation;
// docs/performance-history.md, seventeenth pass), for a row no other issuance
// contends for.
//
// pendingBatcher inserts the pending rows that queued while its previous
// statement ran in one statement:
//
//	INSERT INTO pending_issuances (…) VALUES (…), (…), … ON CONFLICT DO NOTHING RETURNING serial, agent_name
//
// one round trip and one commit for the batch (certStore.InsertPendingRows;
// the rows in name order). A row that a unique index refused — a second
// issuance in flight for its name, in the database or earlier in the same
// batch — is not returned, and its caller gets ErrConflict, as the lone
// INSERT gives; the others are inserted. Any other error of the statement
// (a row PostgreSQL refuses, a lost connection) sends every row of the
// batch through the lone INSERT instead, so one item's failure fails that
// item only; a row found stored as it was recorded then (the statement
// committed before its error) is its caller's success. A batch is whatever queued while the previous one ran — never
// an artificial delay — and a batch of one is the lone INSERT, as before.
//
// The ordering is unchanged: an item's caller learns nil only after the
// statement that holds its row committed, so nothing is signed before its
// pending row is durable.

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// pendingItem is one pending row waiting for its batch.
type pendingItem struct {
	ctx  context.Context
	op   string
	row  pendingRow
	done chan error
}

// pendingBatcher runs batches of pending-row inserts on one goroutine.
type pendingBatcher struct {
	s *Store
	q *batchQueue[*pendingItem]

	mu sync.Mutex
	// batches and items count what ran; alone the items that went through
	// the lone INSERT after their batch's statement failed.
	batches, items, alone int64
}

func newPendingBatcher(s *Store) *pendingBatcher {
	b := &pendingBatcher{s: s, q: newBatchQueue[*pendingItem](writerQueue)}
	go b.q.run(maxBatch, b.runBatch, func(it *pendingItem) {
		it.done <- errStoreClosed(it.op)
	}, nil)
	return b
}

// insert records row durably and returns nil once its statement committed,
// or the error InsertPending gives: ErrConflict when a unique index
// refused the row. op names the caller's operation in the errors of a
// closed store or a cancelled ctx.
func (b *pendingBatcher) insert(ctx context.Context, op string, row pendingRow) error {
	it := &pendingItem{ctx: ctx, op: op, row: row, done: make(chan error, 1)}
	if err := b.q.enqueue(ctx, op, it); err != nil {
		return err
	}
	// Once queued the item runs or fails: its caller must learn whether
	// the row committed.
	return <-it.done
}

// stop ends the batcher (batchQueue.stop).
func (b *pendingBatcher) stop() { b.q.stop() }

// runBatch inserts the rows of batch whose callers still wait and hands
// each its outcome, after counting the batch.
func (b *pendingBatcher) runBatch(batch []*pendingItem) {
	live := batch[:0]
	for _, it := range batch {
		if err := it.ctx.Err(); err != nil {
			it.done <- dbErr(it.op, err) // never sent: nothing committed
			continue
		}
		live = append(live, it)
	}
	if len(live) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), batchTimeout)
	defer cancel()
	errs, alone := b.exec(ctx, live)
	b.mu.Lock()
	b.batches++
	b.items += int64(len(live))
	b.alone += int64(alone)
	b.mu.Unlock()
	for k, it := range live {
		it.done <- errs[k]
	}
}

// exec inserts live's rows and returns each one's outcome and how many
// went through the lone INSERT after the batch's statement failed.
func (b *pendingBatcher) exec(ctx context.Context, live []*pendingItem) (errs []error, alone int) {
	errs = make([]error, len(live))
	if len(live) > 1 {
		rows := make([]pendingRow, len(live))
		for k, it := range live {
			rows[k] = it.row
		}
		inserted, err := certs(b.s.db).InsertPendingRows(ctx, rows)
		if err == nil {
			b.committed()
			for k := range live {
				if !inserted[k] {
					errs[k] = fmt.Errorf("registry: %s: %w", opInsertPending, bare(ErrConflict))
				}
			}
			return errs, 0
		}
		// A row PostgreSQL refused (or a lost connection): each row alone,
		// so that only the one at fault fails.
		alone = len(live)
	}
	for k, it := range live {
		errs[k] = certs(b.s.db).InsertPending(ctx, it.row)
		if alone > 0 && errors.Is(errs[k], ErrConflict) {
			// The batch's statement may have committed before its
			// error (a connection cut after the commit): the row the
			// lone INSERT conflicts with may be this very one.
			if mine, err := certs(b.s.db).HasPending(ctx, it.row); err != nil {
				errs[k] = err
			} else if mine {
				errs[k] = nil
			}
		}
		if errs[k] == nil {
			b.committed()
		}
	}
	return errs, alone
}

// committed runs the store's commit hook, as inStatement does.
func (b *pendingBatcher) committed() {
	if f := b.s.onCommit.Load(); f != nil {
		(*f)()
	}
}

// pendingBatcherStats is what the batcher did (tests).
type pendingBatcherStats struct{ Batches, Items, Alone int64 }

func (b *pendingBatcher) stats() pendingBatcherStats {
	b.mu.Lock()
	defer b.mu.Unlock()
	return pendingBatcherStats{b.batches, b.items, b.alone}
}
