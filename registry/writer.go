package registry

// Group commit (issue 14). Transactions that are ready while another one
// commits are committed together: one BEGIN, one lock of what they share
// (SQLite's write lock; PostgreSQL's log_head row), one COMMIT and one fsync
// for the batch. Each transaction runs inside its own SAVEPOINT, so one
// item's failure (a race on a name, a constraint) rolls back that item only
// and is returned to its caller alone; the others commit. (A batch of
// issuance commits, which may run twice, first runs without savepoints, and
// again with them only when an item failed: execBatch. On PostgreSQL that
// first run stores the batch's items with one statement per kind and per
// 8 items: batchplan.go.) A batch is
// whatever queued while the previous one ran — never an artificial delay —
// so a lone request pays nothing extra (a batch of one runs without
// savepoints).
//
//   - SQLite: every Store.inTx and Store.inStatement — every write of the
//     registry: none writes on a pooled connection
//     (TestSQLiteWritesRunOnTheWriter checks the ones beside issuances) —
//     goes through one writer goroutine per process (one writer queue
//     instead of many goroutines sleeping in SQLite's busy handler). SQLite
//     has a single write lock, so batching cannot deadlock.
//   - PostgreSQL: only the issuance commits (Store.inTxLogged: log entry,
//     certificate rows, audit) share a batch; batches of several replicas
//     serialize on log_head (the log stays gap-free). A batch locks the
//     head with its first append, then each item only its own issuance's
//     rows (its pending row; a rotation its agent row, which the
//     one-issuance-in-flight-per-name rule keeps out of any other batch);
//     a revocation or a card signing, which lock an agent's row too, lock
//     the head first as well (transparencyLog.lockHead), so no two of them
//     wait for each other in a cycle. Should PostgreSQL still detect a
//     deadlock, the item it struck fails like any failed commit (abandoned,
//     never acknowledged) and the others run again (execBatch). Everything
//     else keeps its own transaction and its own concurrency.
//
// The ordering guarantees are unchanged: an item's changes are durable when
// its call returns nil (the batch committed), never before.
//
// A batch with issuance commits (Store.inTxLogged) is sealed before it
// commits: the log signs the checkpoint of the tree the batch makes and
// stores it in the same transaction (transparencyLog.sealBatch), so one
// commit holds the leaves and the checkpoint their receipts are made
// against. The note is kept in memory only once the commit succeeded.

import (
	"context"
	"database/sql/driver"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/mattn/go-sqlite3"
)

const (
	// maxBatch bounds the items of one batch (and so the time one commit
	// holds the lock).
	maxBatch = 64
	// writerQueue is the queue length; callers beyond it wait to enqueue.
	writerQueue = 1024
	// batchTimeout bounds one batch's transaction.
	batchTimeout = 2 * time.Minute
)

// batchSeal is a batch's seal begun (Store.sealLog): it waits for the
// checkpoint's signatures and, with store set, stores the note in the
// batch's transaction and returns what to run once that committed (nil:
// nothing was sealed); without store it keeps nothing (the batch is rolled
// back).
type batchSeal func(store bool) func()

// txItem is one transaction waiting for its batch.
type txItem struct {
	ctx  context.Context
	op   string
	fn   func(tx *sqlx.Tx) error
	done chan error
	// logged: fn appends to the transparency log, and its caller wants a
	// receipt (the batch is sealed when it holds one).
	logged bool
	// rerun: fn may run again in a fresh transaction after a run of it
	// was rolled back — it changes nothing outside tx but variables it
	// sets anew on every run. A batch of such items runs without
	// savepoints (execBatch).
	rerun bool
}

// writer runs batches of transactions on one goroutine.
type writer struct {
	s *Store
	q *batchQueue[*txItem]

	// conn is the connection every batch runs on, on SQLite (nil until the
	// first batch; only run's goroutine uses it). SQLite drops a
	// connection's page cache whenever another connection wrote, so a
	// writer that took any pooled connection read back, at every batch, the
	// pages the previous batch had just written (TestWriterKeepsItsConnection).
	conn *sqlx.Conn

	mu sync.Mutex
	// batches and items count what ran, busy the time run spent on
	// batches, reruns the batches run again around a failed item (tests
	// and metrics).
	batches, items, reruns int64
	busy                   time.Duration
	// phases splits busy by what the writer was doing.
	phases [numPhases]time.Duration

	// clock times the phases of the batch being run (only run's goroutine
	// uses it); runBatch adds them to phases with busy.
	clock phaseClock
}

// A batch's phases, as the writer times them (GroupCommitStats.Phases):
// what its transactions spent their time on, the round trips and the wait
// for a processor after each included.
const (
	phaseBegin      = iota // BEGIN (SQLite: BEGIN IMMEDIATE, the write lock)
	phaseItems             // the items' functions: their reads and statements, their savepoints (PostgreSQL: the log head's lock; a batch's statements are collected)
	phaseStatements        // PostgreSQL: the batch's collected statements (batchplan.go)
	phaseSeal              // the checkpoint's checks, its signatures and its insert (PostgreSQL's batch statement: the signatures' part not overlapped by the statements, which phaseStatements counts)
	phaseCommit            // COMMIT and the hooks after it, or the ROLLBACK of a run that failed
	numPhases
)

// phaseClock times the phases of a batch's transactions.
type phaseClock struct {
	last time.Time
	d    [numPhases]time.Duration
}

// start starts a transaction's first phase now.
func (c *phaseClock) start() { c.last = time.Now() }

// done ends phase p now and starts the next.
func (c *phaseClock) done(p int) {
	now := time.Now()
	c.d[p] += now.Sub(c.last)
	c.last = now
}

func newWriter(s *Store) *writer {
	w := &writer{s: s, q: newBatchQueue[*txItem](writerQueue)}
	go w.run()
	return w
}

// do runs fn in a batch and returns its outcome: fn's error, or the
// batch's BEGIN or COMMIT error.
func (w *writer) do(ctx context.Context, op string, fn func(tx *sqlx.Tx) error) error {
	return w.doItem(&txItem{ctx: ctx, op: op, fn: fn, done: make(chan error, 1)})
}

// doItem is do for an item built by the caller.
func (w *writer) doItem(it *txItem) error {
	if err := w.q.enqueue(it.ctx, it.op, it); err != nil {
		return err
	}
	// Once queued the item runs or fails; its caller waits for the outcome
	// (a caller that left could not learn whether it committed).
	return <-it.done
}

// stop ends the writer (batchQueue.stop) and closes its connection.
func (w *writer) stop() { w.q.stop() }

func (w *writer) run() {
	w.q.run(maxBatch, w.runBatch, func(it *txItem) {
		it.done <- errStoreClosed(it.op)
	}, func() {
		if w.conn != nil {
			_ = w.conn.Close()
		}
	})
}

// runBatch runs the items of one batch in one transaction, counts the
// batch, then hands each item its outcome (counted first, so that a caller
// that returned sees its batch in stats).
func (w *writer) runBatch(batch []*txItem) {
	live := batch[:0]
	for _, it := range batch {
		if err := it.ctx.Err(); err != nil {
			it.done <- dbErr(it.op, err) // never started: nothing to roll back
			continue
		}
		live = append(live, it)
	}
	if len(live) == 0 {
		return
	}
	start := time.Now()
	w.clock = phaseClock{}
	errs := w.execBatch(live)
	w.mu.Lock()
	w.batches++
	w.items += int64(len(live))
	w.busy += time.Since(start)
	for p, d := range w.clock.d {
		w.phases[p] += d
	}
	w.mu.Unlock()
	for k, it := range live {
		it.done <- errs[k]
	}
}

// execBatch runs live in one transaction and returns each item's outcome:
// its own error, or the batch's BEGIN or COMMIT error. After a commit it
// runs the seal's and the store's commit hooks.
//
// A batch whose items may all run again (txItem.rerun: the issuance
// commits) first runs without savepoints: on PostgreSQL each savepoint is a
// round trip under the log head's lock, and items rarely fail. When one
// fails, the transaction is rolled back, that item keeps its error, and the
// others run again in a fresh transaction, each in its own savepoint: the
// failed one ran on the state the items before it left, as with
// savepoints, and those run again on the database as it is then. An error
// of the whole transaction (a lost connection, a deadlock victim) fails
// the item it struck, and the others run again
// (TestWriterRerunsAroundAFailedItem).
func (w *writer) execBatch(live []*txItem) []error {
	ctx, cancel := context.WithTimeout(context.Background(), batchTimeout)
	defer cancel()
	if len(live) < 2 || slices.ContainsFunc(live, func(it *txItem) bool { return !it.rerun }) {
		errs, _ := w.execTx(ctx, live, true)
		return errs
	}
	errs, failed := w.execTx(ctx, live, false)
	if failed == -1 {
		return errs
	}
	w.mu.Lock()
	w.reruns++
	w.mu.Unlock()
	if failed == failedUnknown {
		errs, _ = w.execTx(ctx, live, true)
		return errs
	}
	rest := slices.Delete(slices.Clone(live), failed, failed+1)
	restErrs, _ := w.execTx(ctx, rest, true)
	out := append(restErrs[:failed:failed], errs[failed])
	return append(out, restErrs[failed:]...)
}

// execTx runs items in one transaction, each in its own savepoint when
// savepoints is set and there are several. Without savepoints it stops at
// the first item that fails and rolls back; failed is that item's index
// when there are several (the others, not committed, have no error), else
// -1.
func (w *writer) execTx(ctx context.Context, live []*txItem, savepoints bool) (errs []error, failed int) {
	errs = make([]error, len(live))
	var (
		begun  bool   // the seal was begun (and so sealed is what it left)
		sealed func() // what the seal runs once the batch committed
	)
	clock := &w.clock
	clock.start()
	tx, err := w.begin(ctx)
	clock.done(phaseBegin)
	if err != nil {
		for k, it := range live {
			errs[k] = dbErr(it.op+": begin", err)
		}
		return errs, -1
	}
	if len(live) == 1 || !savepoints {
		// On PostgreSQL a batch of several issuance commits stores itself
		// with one statement (batchplan.go): the items' plans are
		// collected, then run together. A batch of one gains nothing from
		// it (its plan is one statement already) and could not run again.
		var bp *batchPlan
		if w.s.dialect == Postgres && len(live) > 1 && !slices.ContainsFunc(live, func(it *txItem) bool { return !it.rerun }) {
			var undefer func()
			bp, undefer = deferPlans(tx)
			defer undefer()
		}
		for k, it := range live {
			if bp != nil {
				bp.item = k
			}
			if errs[k] = it.fn(tx); errs[k] != nil {
				clock.done(phaseItems)
				_ = tx.Rollback()
				clock.done(phaseCommit)
				if len(live) == 1 {
					return errs, -1
				}
				return errs, k
			}
		}
		clock.done(phaseItems)
		if bp != nil {
			deferredPlans.Delete(tx) // the seal's statements run as they come
			// The seal begins before the statements are sent: the token
			// signs the batch's checkpoint while PostgreSQL runs them.
			seal := w.beginSeal(ctx, tx, true, live, errs)
			begun = true
			clock.done(phaseSeal)
			failed, ok := w.runPlans(ctx, tx, bp, live, errs)
			clock.done(phaseStatements)
			if !ok {
				_ = tx.Rollback() // first: the head's lock is released at once
				if seal != nil {
					seal(false)
				}
				clock.done(phaseCommit)
				return errs, failed
			}
			if seal != nil {
				sealed = seal(true)
				clock.done(phaseSeal)
			}
		}
	} else {
		if err := w.runItems(ctx, tx, live, errs); err != nil {
			// A savepoint could not be rolled back: the transaction is unusable.
			clock.done(phaseItems)
			_ = tx.Rollback()
			clock.done(phaseCommit)
			for k := range live {
				if errs[k] == nil {
					errs[k] = err
				}
			}
			return errs, -1
		}
		clock.done(phaseItems)
	}
	if !slices.Contains(errs, nil) {
		_ = tx.Rollback()
		clock.done(phaseCommit)
		return errs, -1
	}
	if !begun {
		if seal := w.beginSeal(ctx, tx, false, live, errs); seal != nil {
			sealed = seal(true)
		}
		clock.done(phaseSeal)
	}
	if err := tx.Commit(); err != nil {
		clock.done(phaseCommit)
		for k, it := range live {
			if errs[k] == nil {
				errs[k] = dbErr(it.op+": commit", err)
			}
		}
		return errs, -1
	}
	if sealed != nil {
		sealed()
	}
	if w.s.ckpt != nil {
		w.s.ckpt.committed()
	}
	if f := w.s.onCommit.Load(); f != nil {
		(*f)()
	}
	clock.done(phaseCommit)
	return errs, -1
}

// beginSeal begins the seal of a batch whose items ran (Store.sealLog)
// when one of them that succeeded (errs[k] nil) appends to the log for a
// receipt (txItem.logged); nil: nothing to seal. early: the
// items' statements are collected and not sent yet (PostgreSQL's batch
// statement, batchplan.go).
func (w *writer) beginSeal(ctx context.Context, tx *sqlx.Tx, early bool, live []*txItem, errs []error) batchSeal {
	seal := w.s.sealLog.Load()
	if seal == nil {
		return nil
	}
	for k, it := range live {
		if it.logged && errs[k] == nil {
			return (*seal)(ctx, tx, early)
		}
	}
	return nil
}

// failedUnknown is execTx's failed when the batch's one statement failed
// as a whole (batchPlan.run): no item can be blamed, so every item runs
// again, each in its own savepoint.
const failedUnknown = -2

// runPlans runs a batch's collected plans (batchPlan.run) and reports
// whether every plan ran and every guard matched. If not, it sets the
// items' errors and returns the failed item: the item one of whose guards
// missed, or failedUnknown when a statement failed as a whole or could not
// be written (every item's error is then that failure, until they run
// again).
func (w *writer) runPlans(ctx context.Context, tx *sqlx.Tx, bp *batchPlan, live []*txItem, errs []error) (failed int, ok bool) {
	missed, err := bp.run(ctx, tx, len(live))
	if err != nil {
		for k, it := range live {
			errs[k] = dbErr(it.op, err)
		}
		return failedUnknown, false
	}
	for k, e := range missed {
		if e != nil {
			errs[k] = e
			return k, false
		}
	}
	return -1, true
}

// begin starts a batch's transaction: on PostgreSQL on any pooled
// connection, on SQLite on the writer's own (see conn). When the writer's
// connection cannot begin — it is closed, or still inside a transaction
// whose rollback failed — it is discarded, never given back to the pool (a
// connection holding SQLite's write lock would stall every writer after
// it), and the batch begins once more on a fresh one. A busy database is
// not the connection's fault: that error is returned as it is.
func (w *writer) begin(ctx context.Context) (*sqlx.Tx, error) {
	if w.s.dialect != SQLite {
		return w.s.db.BeginTxx(ctx, nil)
	}
	var err error
	for range 2 {
		if w.conn == nil {
			if w.conn, err = w.s.db.Connx(ctx); err != nil {
				w.conn = nil
				return nil, err
			}
		}
		var tx *sqlx.Tx
		if tx, err = w.conn.BeginTxx(ctx, nil); err == nil {
			return tx, nil
		}
		var se sqlite3.Error
		if ctx.Err() != nil || (errors.As(err, &se) && (se.Code == sqlite3.ErrBusy || se.Code == sqlite3.ErrLocked)) {
			return nil, err
		}
		w.discardConn()
	}
	return nil, err
}

// discardConn closes the writer's connection for good: database/sql drops
// a connection whose Raw call reports driver.ErrBadConn instead of pooling
// it.
func (w *writer) discardConn() {
	_ = w.conn.Raw(func(any) error { return driver.ErrBadConn })
	_ = w.conn.Close() // ErrConnDone: Raw closed it already
	w.conn = nil
}

// runItems runs each item inside its own savepoint. It returns an error only
// when the transaction itself can no longer be used. An item's savepoint is
// released by the statement that opens the next one (one round trip on
// PostgreSQL, not two); the last one by COMMIT.
func (w *writer) runItems(ctx context.Context, tx *sqlx.Tx, items []*txItem, errs []error) error {
	open := `SAVEPOINT atr_item`
	for k, it := range items {
		if _, err := tx.ExecContext(ctx, open); err != nil {
			errs[k] = dbErr(it.op+": savepoint", err)
			return errs[k]
		}
		open = `RELEASE SAVEPOINT atr_item; SAVEPOINT atr_item`
		if errs[k] = it.fn(tx); errs[k] != nil {
			w.s.rollbacks.Add(1)
			if _, err := tx.ExecContext(ctx, `ROLLBACK TO SAVEPOINT atr_item`); err != nil {
				return dbErr(it.op+": rollback to savepoint", errors.Join(errs[k], err))
			}
		}
	}
	return nil
}

// stats returns how many batches and items the writer ran, how many
// batches it ran again around a failed item, and how long it was busy, in
// all and by phase.
func (w *writer) stats() GroupCommitStats {
	w.mu.Lock()
	defer w.mu.Unlock()
	p := w.phases
	return GroupCommitStats{Batches: w.batches, Items: w.items, Reruns: w.reruns, Busy: w.busy, Phases: GroupCommitPhases{
		Begin: p[phaseBegin], Items: p[phaseItems], Statements: p[phaseStatements], Seal: p[phaseSeal], Commit: p[phaseCommit]}}
}
