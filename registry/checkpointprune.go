package registry

import (
	"context"
	"sync"
	"time"

	"github.com/jmoiron/sqlx"
)

// The prune of log_checkpoints. Each batch of issuances signs and stores
// the checkpoint of the tree it makes (sealBatch), so the table gained a
// row (~350 bytes) for every three or four issuances under load and one per
// issuance at low load, for good: 22,520 rows for 80,163 leaves on a
// benchmark's server. With witnesses, each submission's cosignatures added
// a row to witness_cosignatures, every two seconds while the log grew.
//
// Only three rows are ever read again: the newest (every seal checks the
// new tree against it; receipts and GET /v1/log/checkpoint serve it), the
// newest that a witness cosigned (receipts and the log's events prefer it:
// newestCosigned), and the one a witness is cosigning right now, which the
// submitter took as the newest moments before (AddCosignatures reads it by
// size). A receipt carries its checkpoint's note and cosignatures, so it
// does not need the row; monitors and witnesses prove consistency from the
// tree's hashes, not from old notes.
//
// So every other checkpoint is deleted, with its cosignatures, once it is
// CheckpointKeep old: long past any witness's answer. Sizes grow with time,
// so each call reads the key upward from where the last one stopped
// (checkpointPruner.from) and stops at the first row too young. The rows it
// keeps below that point — the newest cosigned, until a newer one is
// cosigned, and a smaller checkpoint a replica stored after losing the race
// to a larger tree's (storeCheckpoint) — are few, so once a day the prune
// reads the key from its start again and deletes those that have become
// deletable.

// CheckpointKeep is how long a stored checkpoint is kept after it was
// signed, unless it is the newest or the newest cosigned
// (PruneCheckpoints).
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
// from was deleted or kept by a prune of this process since restarted.
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

// PruneCheckpoints deletes the stored checkpoints of the log, with their
// witness cosignatures, signed more than CheckpointKeep ago by the
// registry's clock, except the newest and the newest cosigned: at most
// checkpointPruneBatches transactions of checkpointPruneBatch rows. The
// maintenance loop calls it. It writes nothing (on SQLite: takes no write
// lock) while no row is that old, and returns the number of checkpoints
// deleted.
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
			// The newest checkpoint and the newest cosigned one stay, as
			// the database has them now, not as the read above saw them;
			// so does a checkpoint cosigned since the first statement. On
			// PostgreSQL a cosignature stored at the same moment as its
			// hour-old checkpoint is deleted makes one of the two
			// transactions fail on the foreign key: this one (the next
			// call tries again) or the witness's (it submits the newest
			// checkpoint, never an hour-old one, so this does not happen
			// unless replicas' clocks are an hour apart).
			if _, err := tx.ExecContext(ctx, tx.Rebind(`DELETE FROM witness_cosignatures
				WHERE size >= ? AND size <= ? AND size < (SELECT MAX(size) FROM witness_cosignatures)
				AND size < (SELECT MAX(size) FROM log_checkpoints)`), first, last); err != nil {
				return dbErr("pruning checkpoints", err)
			}
			// The cosignatures' range is named as well: with the join
			// alone, PostgreSQL's generic plan hashed the whole table
			// (TestBatchFindsLargerCheckpointsByIndex).
			res, err := tx.ExecContext(ctx, tx.Rebind(`DELETE FROM log_checkpoints
				WHERE size >= ? AND size <= ? AND size < (SELECT MAX(size) FROM log_checkpoints)
				AND NOT EXISTS (SELECT 1 FROM witness_cosignatures w
					WHERE w.size = log_checkpoints.size AND w.size >= ? AND w.size <= ?)`), first, last, first, last)
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
