package registry

import (
	"context"
	"time"
)

// SQLite's WAL is copied back into the database file off the writer.
//
// By default the connection that commits a transaction which takes the WAL
// past 1,000 pages checkpoints it there and then: it reads those pages back
// from the WAL, writes each into the database file and syncs it, inside its
// commit. In ATR that connection is always the group commit's one writer,
// so every few batches every issuance waiting on it waited for a
// checkpoint too: about a page read and a page write per WAL page, the
// writer's largest share of system calls after the WAL itself
// (docs/performance-history.md, thirteenth pass). Here, after the writer's commits,
// the checkpointer runs a PASSIVE checkpoint on a connection of its own, at
// most every walCheckpointEvery: it takes no lock a reader or the writer
// waits for and copies what no reader still needs.
//
// SQLite starts the WAL file over only when a write transaction begins
// with all of it copied, which a checkpoint running beside a busy writer
// never leaves it: the writer keeps its own checkpoint as a backstop, at
// walAutoCheckpointPages instead of 1,000 (PRAGMA wal_autocheckpoint,
// sqliteconn.go). When the WAL reaches that size the writer's checkpoint
// finds all but its last batches copied already, and its next transaction
// starts the WAL over; the file stays near 16 MiB however long the load
// lasts (TestSQLiteWALBoundedUnderSustainedCommits). Durability does not
// change: a transaction is durable when its commit synced the WAL,
// checkpointed or not, and SQLite checkpoints when the last connection
// closes.

// walCheckpointEvery spaces the checkpoints: at 1,000 issuances a second an
// issuance writes about 30 WAL pages, so a checkpoint copies about as much
// as SQLite's own would (1,000 pages).
const walCheckpointEvery = 50 * time.Millisecond

// walCheckpointRetryMax bounds the pause before another try when a
// checkpoint could not copy everything (a reader on an older snapshot,
// another process's checkpoint) and no commit came to wake the
// checkpointer; a commit wakes it after walCheckpointEvery as always.
const walCheckpointRetryMax = 2 * time.Second

// walAutoCheckpointPages is the writer's own checkpoint's threshold, the
// backstop that lets the WAL start over (16 MiB of 4 KiB pages).
const walAutoCheckpointPages = 4000

// walCheckpointStatement is the checkpointer's one statement.
const walCheckpointStatement = `PRAGMA wal_checkpoint(PASSIVE)`

// walCheckpointer runs the passive checkpoints of one SQLite Store.
type walCheckpointer struct {
	s      *Store
	wake   chan struct{}
	ctx    context.Context // ends with stop: a checkpoint waiting for a connection gives up
	cancel context.CancelFunc
	exited chan struct{}
}

func newWALCheckpointer(s *Store) *walCheckpointer {
	ctx, cancel := context.WithCancel(context.Background())
	c := &walCheckpointer{s: s, wake: make(chan struct{}, 1), ctx: ctx, cancel: cancel, exited: make(chan struct{})}
	go c.run()
	return c
}

// committed tells the checkpointer that the WAL grew. It never blocks.
func (c *walCheckpointer) committed() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// stop ends the checkpointer, and a checkpoint it is running, and waits
// for it.
func (c *walCheckpointer) stop() {
	c.cancel()
	<-c.exited
}

func (c *walCheckpointer) run() {
	defer close(c.exited)
	pause, retry := time.NewTimer(0), time.NewTimer(0)
	defer pause.Stop()
	defer retry.Stop()
	<-pause.C
	<-retry.C
	var backoff time.Duration // > 0: the last checkpoint left pages behind
	for {
		// A commit wakes the checkpointer; so does the retry timer while
		// the last checkpoint left pages behind and no commit came.
		var retried <-chan time.Time
		if backoff > 0 {
			retried = retry.C
		}
		select {
		case <-c.ctx.Done():
			return
		case <-c.wake:
		case <-retried:
		}
		if c.checkpoint() {
			backoff = 0
		} else {
			backoff = min(max(2*backoff, walCheckpointEvery), walCheckpointRetryMax)
			retry.Reset(backoff)
		}
		pause.Reset(walCheckpointEvery)
		select {
		case <-c.ctx.Done():
			return
		case <-pause.C:
		}
	}
}

// checkpoint runs one passive checkpoint and reports whether it copied the
// whole WAL. A failure is retried.
func (c *walCheckpointer) checkpoint() bool {
	var busy, walPages, copied int
	err := c.s.db.QueryRowxContext(c.ctx, walCheckpointStatement).Scan(&busy, &walPages, &copied)
	if err != nil {
		if c.ctx.Err() == nil {
			c.s.log.WithError(err).Warn("SQLite WAL checkpoint failed; trying again")
		}
		return false
	}
	c.s.log.WithFields(map[string]any{"wal_pages": walPages, "checkpointed": copied, "busy": busy}).Trace("SQLite WAL checkpoint")
	return busy == 0 && copied >= walPages
}
