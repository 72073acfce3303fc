package registry

import (
	"context"
	"sync"
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
// (docs/performance.md, thirteenth pass). Here no connection checkpoints on
// commit (PRAGMA wal_autocheckpoint = 0, sqliteconn.go); after a commit the
// writer wakes the checkpointer, which runs a PASSIVE checkpoint on a
// connection of its own at most every walCheckpointEvery. A passive
// checkpoint takes no lock a writer or reader waits for: it copies what no
// reader still needs, and SQLite starts the WAL over once all of it was
// copied. Durability does not change: a transaction is durable when its
// commit synced the WAL, checkpointed or not, and SQLite still checkpoints
// when the last connection closes.

// walCheckpointEvery spaces the checkpoints: at 1,000 issuances a second an
// issuance writes about 30 WAL pages, so a checkpoint copies about as much
// as SQLite's own would (1,000 pages).
const walCheckpointEvery = 50 * time.Millisecond

// walCheckpointStatement is the checkpointer's one statement.
const walCheckpointStatement = `PRAGMA wal_checkpoint(PASSIVE)`

// walCheckpointer runs the passive checkpoints of one SQLite Store.
type walCheckpointer struct {
	s        *Store
	wake     chan struct{}
	quit     chan struct{}
	exited   chan struct{}
	stopOnce sync.Once
}

func newWALCheckpointer(s *Store) *walCheckpointer {
	c := &walCheckpointer{s: s, wake: make(chan struct{}, 1), quit: make(chan struct{}), exited: make(chan struct{})}
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

// stop ends the checkpointer and waits for it.
func (c *walCheckpointer) stop() {
	c.stopOnce.Do(func() { close(c.quit) })
	<-c.exited
}

func (c *walCheckpointer) run() {
	defer close(c.exited)
	pause := time.NewTimer(0)
	defer pause.Stop()
	for {
		select {
		case <-c.quit:
			return
		case <-c.wake:
		}
		c.checkpoint()
		pause.Reset(walCheckpointEvery)
		select {
		case <-c.quit:
			return
		case <-pause.C:
		}
	}
}

// checkpoint runs one passive checkpoint. A busy database (another
// process's checkpoint) or a failure is retried at the next commit.
func (c *walCheckpointer) checkpoint() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var busy, walPages, copied int
	err := c.s.db.QueryRowxContext(ctx, walCheckpointStatement).Scan(&busy, &walPages, &copied)
	if err != nil {
		c.s.log.WithError(err).Warn("SQLite WAL checkpoint failed; retrying after the next commit")
		return
	}
	c.s.log.WithFields(map[string]any{"wal_pages": walPages, "checkpointed": copied}).Trace("SQLite WAL checkpoint")
}
