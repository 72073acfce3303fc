package registry

import (
	"context"
	"sync"
	"time"

	"github.com/jmoiron/sqlx"
)

// The prune of log_checkpoints. Each batch of issuances signs and stores
// the checkpoint of the tree it makes (sealBatch), so at low load the table
// gained a row (~300 bytes) per issuance, for good: 17,798 rows for 64,131
// leaves on a benchmark's server. Only three kinds of row are ever read
// again: the newest (every seal checks the new tree against it, receipts
// and GET /v1/log/checkpoint serve it), those a witness cosigned (receipts
// and the log's events prefer the newest of them), and the one a witness is
// cosigning right now (AddCosignatures reads it by size). A receipt carries
// its checkpoint's note, so it does not need the row; a monitor or witness
// proves consistency from the tree's hashes, not from old notes.
//
// So a checkpoint that no witness cosigned is deleted once a newer one is
// stored and it is CheckpointKeep old: long past any witness's answer.
// Sizes grow with time, so each call reads the key upward from where the
// last one stopped (checkpointPruner.from) and stops at the first row that
// is too young; cosigned rows are not read again at every call. A replica
// whose paced checkpoint lost the race to a larger tree's may still store
// its smaller one (storeCheckpoint), below where this process's prune has
// reached, so the prune reads the key from its start again once a day.

// CheckpointKeep is how long a checkpoint no witness cosigned stays stored
// after it was signed, once a newer one is stored (PruneCheckpoints).
const CheckpointKeep = time.Hour

// checkpointPruneBatch and checkpointPruneBatches bound one
// PruneCheckpoints: rows per transaction (on SQLite the one writer's lock
// is held that long), transactions per call (the maintenance loop calls it
// every 30 s).
var (
	checkpointPruneBatch   = 1000
	checkpointPruneBatches = 50
)

// checkpointPruner is where the next prune starts: every row at or below
// from is cosigned or already deleted (as far as this process knows), since
// restarted.
type checkpointPruner struct {
	mu        sync.Mutex
	from      int64
	restarted time.Time
}

// checkpointAge is what PruneCheckpoints reads of a stored checkpoint.
type checkpointAge struct {
	Size      int64     `db:"size"`
	CreatedAt time.Time `db:"created_at"`
}

// PruneCheckpoints deletes the stored checkpoints of the log that no
// witness cosigned, signed more than CheckpointKeep ago by the registry's
// clock, except the newest: at most checkpointPruneBatches transactions of
// checkpointPruneBatch rows. The maintenance loop calls it. It writes
// nothing (on SQLite: takes no write lock) while no row is that old, and
// returns the number of rows deleted.
func (r *Registry) PruneCheckpoints(ctx context.Context) (int64, error) {
	p := &r.checkpointPrune
	p.mu.Lock()
	defer p.mu.Unlock()
	now := r.now()
	cutoff := now.Add(-CheckpointKeep)
	if now.Sub(p.restarted) >= pendingPruneRestart || now.Before(p.restarted) {
		p.from, p.restarted = 0, now
	}
	db := r.store.db
	var total int64
	for range checkpointPruneBatches {
		var rows []checkpointAge
		if err := db.SelectContext(ctx, &rows, db.Rebind(`SELECT size, created_at FROM log_checkpoints
			WHERE size > ? AND size < (SELECT MAX(size) FROM log_checkpoints) ORDER BY size LIMIT ?`),
			p.from, checkpointPruneBatch); err != nil {
			return total, dbErr("pruning checkpoints", err)
		}
		old := 0
		for old < len(rows) && rows[old].CreatedAt.Before(cutoff) {
			old++
		}
		if old == 0 {
			break
		}
		first, last := rows[0].Size, rows[old-1].Size
		var n int64
		if err := r.store.inTx(ctx, "pruning checkpoints", func(tx *sqlx.Tx) error {
			// The newest is kept even if another replica's seal deleted
			// nothing but stored a newer one since the read; a cosignature
			// stored since the read keeps its row.
			res, err := tx.ExecContext(ctx, tx.Rebind(`DELETE FROM log_checkpoints
				WHERE size >= ? AND size <= ? AND size < (SELECT MAX(size) FROM log_checkpoints)
				AND NOT EXISTS (SELECT 1 FROM witness_cosignatures w WHERE w.size = log_checkpoints.size)`), first, last)
			if err != nil {
				return dbErr("pruning checkpoints", err)
			}
			n, err = res.RowsAffected()
			return dbErr("pruning checkpoints", err)
		}); err != nil {
			return total, err
		}
		total += n
		p.from = last
		if old < len(rows) {
			break // the next row is too young
		}
	}
	return total, nil
}
