package registry

// Witness cosignatures of checkpoints (c2sp.org/tlog-cosignature), stored
// in witness_cosignatures (migration 006) and served appended to their
// checkpoint. The tlog-witness client that obtains them is registry/witness;
// this file only checks and stores them.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jmoiron/sqlx"
	"golang.org/x/mod/sumdb/note"

	"github.com/agent-trust-registry/atr/registry/translog"
)

// maxCosignatureBytes caps the signature lines AddCosignatures reads.
const maxCosignatureBytes = 4 << 10

// SignedCheckpoint returns the latest checkpoint signed by the log key(s)
// only, without witness cosignatures: what is submitted to witnesses. When
// the log has grown since the latest stored checkpoint it signs a new one
// at once (callers pace themselves; the witness client runs every few
// seconds).
func (r *Registry) SignedCheckpoint(ctx context.Context) ([]byte, error) {
	return r.checkpointAtLeast(ctx, 0)
}

// checkpointAtLeast returns the latest stored checkpoint, first signing one
// for the current tree when the log has grown past it (singleflight with
// Checkpoint). ErrNotFound: the tree is smaller than minSize.
func (r *Registry) checkpointAtLeast(ctx context.Context, minSize int64) ([]byte, error) {
	head, err := r.tlog.head(ctx)
	if err != nil {
		return nil, err
	}
	if head.Size < minSize {
		return nil, fmt.Errorf("registry: checkpoint: tree size %d is below %d: %w", head.Size, minSize, ErrNotFound)
	}
	latest, err := r.tlog.latestCheckpoint(ctx)
	if err != nil {
		return nil, err
	}
	if latest != nil && latest.Size >= head.Size {
		return []byte(latest.Note), nil
	}
	c, err := r.tlog.signShared(ctx)
	if err != nil {
		return nil, err
	}
	return []byte(c.Note), nil
}

// AddCosignatures checks the signature lines a witness returned for the
// stored checkpoint of the given size and stores those by v. Every line
// must be a signed-note signature line; lines by v must verify over the
// checkpoint (for a cosignature/v1 verifier, with its timestamp), and at
// least one must. It returns how many lines were new (a witness's second
// cosignature of a size is ignored; the first is kept). ErrNotFound: no
// checkpoint of that size; ErrInvalid: malformed or unverifiable lines.
func (r *Registry) AddCosignatures(ctx context.Context, size int64, v note.Verifier, lines []byte) (int, error) {
	if v == nil {
		return 0, invalid("cosignatures: nil verifier", nil)
	}
	if len(lines) == 0 || len(lines) > maxCosignatureBytes || !bytes.HasSuffix(lines, []byte("\n")) {
		return 0, invalid(fmt.Sprintf("cosignatures: want 1 to %d bytes of signature lines", maxCosignatureBytes), nil)
	}
	var stored string
	if err := r.store.db.GetContext(ctx, &stored, r.store.db.Rebind(`SELECT note FROM log_checkpoints WHERE size = ?`), size); err != nil {
		return 0, dbErr("cosignatures: reading checkpoint", err)
	}
	text, _, ok := strings.Cut(stored, "\n\n")
	if !ok {
		return 0, fmt.Errorf("registry: cosignatures: stored checkpoint %d is not a signed note", size)
	}
	// Open the checkpoint text with only the witness's signatures: lines by
	// other keys are ignored, a bad line by v is refused.
	n, err := note.Open([]byte(text+"\n\n"+string(lines)), note.VerifierList(v))
	if err != nil {
		return 0, invalid("cosignatures: "+err.Error(), nil)
	}
	added := 0
	err = r.store.inTx(ctx, "cosignatures: storing", func(tx *sqlx.Tx) error {
		added = 0
		for _, s := range n.Sigs {
			line := "— " + s.Name + " " + s.Base64 + "\n"
			res, err := tx.ExecContext(ctx, tx.Rebind(
				`INSERT INTO witness_cosignatures (size, key_name, key_hash, line, created_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT (size, key_name, key_hash) DO NOTHING`),
				size, s.Name, int64(s.Hash), line, dbTime(r.now()))
			if err != nil {
				return dbErr("cosignatures: storing", err)
			}
			if k, err := res.RowsAffected(); err == nil && k > 0 {
				added++
			}
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	if added > 0 {
		r.log.WithField("tree_size", size).WithField("witness", v.Name()).Info("stored witness cosignature")
	}
	return added, nil
}

// withCosignatures appends the stored cosignature lines of the checkpoint's
// size to a signed checkpoint.
func (r *Registry) withCosignatures(ctx context.Context, signed []byte) ([]byte, error) {
	text, _, ok := bytes.Cut(signed, []byte("\n\n"))
	if !ok {
		return nil, fmt.Errorf("registry: checkpoint is not a signed note")
	}
	c, err := translog.ParseCheckpoint(append(text, '\n'))
	if err != nil {
		return nil, fmt.Errorf("registry: checkpoint: %w", err)
	}
	var lines []string
	if err := r.store.db.SelectContext(ctx, &lines, r.store.db.Rebind(
		`SELECT line FROM witness_cosignatures WHERE size = ? ORDER BY key_name, key_hash`), c.Size); err != nil {
		return nil, dbErr("cosignatures: reading", err)
	}
	out := bytes.Clone(signed)
	for _, l := range lines {
		out = append(out, l...)
	}
	return out, nil
}

// newestCosigned reads the newest stored checkpoint that has a witness
// cosignature, when its size is at least minSize (else the error of
// sql.ErrNoRows, for dbErr). It finds that size in the key of
// witness_cosignatures: a search of log_checkpoints newest first for one with
// a cosignature visits every checkpoint above the cosigned one — each batch
// of issuances stores one — so it cost a read of the whole table when no
// witness is configured or witnesses lag, on every receipt.
func (r *Registry) newestCosigned(ctx context.Context, minSize int64) (storedCheckpoint, error) {
	var c storedCheckpoint
	err := r.store.db.GetContext(ctx, &c, r.store.db.Rebind(`SELECT c.size, c.note FROM log_checkpoints c
		WHERE c.size = (SELECT MAX(w.size) FROM witness_cosignatures w) AND c.size >= ?`), minSize)
	return c, err
}

// CosignedCheckpoint returns a checkpoint of size at least minSize with the
// witness cosignatures stored for it appended: the newest such checkpoint
// that has any cosignature, else (witnesses have not caught up) the newest
// one, uncosigned. When the log has grown past the latest stored checkpoint
// it signs one at once (not waiting for the once-a-second pacing of
// Checkpoint).
// ErrNotFound: the log is smaller than minSize.
func (r *Registry) CosignedCheckpoint(ctx context.Context, minSize int64) ([]byte, error) {
	if minSize < 0 {
		return nil, invalid("cosigned checkpoint: negative size", nil)
	}
	if _, err := r.checkpointAtLeast(ctx, minSize); err != nil {
		return nil, err
	}
	c, err := r.newestCosigned(ctx, minSize)
	if err != nil {
		if e := dbErr("", err); !errors.Is(e, ErrNotFound) {
			return nil, dbErr("cosigned checkpoint: reading", err)
		}
		if err := r.store.db.GetContext(ctx, &c, r.store.db.Rebind(`SELECT size, note FROM log_checkpoints
			WHERE size >= ? ORDER BY size DESC LIMIT 1`), minSize); err != nil {
			return nil, dbErr("cosigned checkpoint: reading", err)
		}
	}
	return r.withCosignatures(ctx, []byte(c.Note))
}
