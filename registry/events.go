package registry

// The log as a stream of events (GET /v1/log/events): every leaf, in index
// order, each with a signed checkpoint whose tree includes it and its
// inclusion proof in that tree, so that a follower verifies each event
// alone. Waiting for new leaves uses the change notification (notify.go).

import (
	"context"
	"fmt"
	"time"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/agent-trust-registry/atr/registry/translog"
)

// MaxLogEventsPerRead bounds one LogEvents answer.
const MaxLogEventsPerRead = 100

// LogEvent is one leaf of the transparency log with what is needed to check
// it against a signed checkpoint alone.
type LogEvent struct {
	// Index is the leaf's index in the log.
	Index int64
	// Type is the entry type of the leaf (translog.EventType: "register",
	// "rotate", "revoke", "ceremony"; leaves before version 2 also
	// "apikey_create", "apikey_revoke").
	Type string
	// Leaf is the leaf exactly as logged (translog.Entry.Marshal).
	Leaf []byte
	// Checkpoint is the newest stored signed checkpoint when the event was
	// read (the log's signatures, then every witness cosignature stored for
	// it); its tree includes the leaf.
	Checkpoint []byte
	// InclusionProof proves Leaf at Index in the Checkpoint's tree.
	InclusionProof []tlog.Hash
}

// LogSize returns the current number of leaves of the log, read from the
// database.
func (r *Registry) LogSize(ctx context.Context) (int64, error) {
	h, err := r.tlog.head(ctx)
	if err != nil {
		return 0, err
	}
	return h.Size, nil
}

// LogEvents returns the leaves from index from on, at most limit (at most
// MaxLogEventsPerRead), each as a LogEvent whose checkpoint covers it. It
// waits while there is none: until the log holds leaf from (the change
// notification of Start tells of leaves appended by any replica) and a
// signed checkpoint covers it. Checkpoints are signed at most once per
// checkpointInterval per process: when the newest one is older than the
// leaf, LogEvents signs one at once if this process has not signed within
// the interval, else waits for the interval's end. So a leaf is announced
// within about a second, without flooding the token.
//
// A from beyond the log's size is ErrNotFound (the log never shrinks: the
// caller is following another log). Without Start (or after Close) it
// fails with ErrUnavailable; when ctx ends, with ctx's error.
func (r *Registry) LogEvents(ctx context.Context, from int64, limit int) ([]LogEvent, error) {
	if from < 0 || limit < 1 {
		return nil, invalid("log events: want from ≥ 0 and limit ≥ 1", nil)
	}
	limit = min(limit, MaxLogEventsPerRead)
	if !r.notify.isRunning() {
		return nil, fmt.Errorf("registry: log events: %w", errNotifierStopped)
	}
	size, err := r.LogSize(ctx)
	if err != nil {
		return nil, fmt.Errorf("registry: log events: %w", err)
	}
	if from > size {
		return nil, fmt.Errorf("registry: log events: index %d is beyond the tree size %d: %w", from, size, ErrNotFound)
	}
	if size == from {
		// The notifier's size may lag the read above by a notification, so
		// it is what is waited on, not what decides.
		if _, err := r.notify.waitLogSize(ctx, from); err != nil {
			return nil, fmt.Errorf("registry: log events: %w", err)
		}
	}
	cp, err := r.coveringCheckpoint(ctx, from)
	if err != nil {
		return nil, fmt.Errorf("registry: log events: %w", err)
	}
	end := min(from+int64(limit), cp.Size)
	leaves, err := r.tlog.entries(ctx, from, end)
	if err != nil {
		return nil, fmt.Errorf("registry: log events: %w", err)
	}
	note, err := r.withCosignatures(ctx, []byte(cp.Note))
	if err != nil {
		return nil, fmt.Errorf("registry: log events: %w", err)
	}
	out := make([]LogEvent, 0, len(leaves))
	for i, leaf := range leaves {
		idx := from + int64(i)
		proof, err := translog.InclusionProof(ctx, hashStore{r.store.db}, idx, cp.Size)
		if err != nil {
			return nil, logErr("log events: inclusion proof", err)
		}
		typ := "unknown"
		if e, err := translog.ParseEntry(leaf); err == nil {
			typ = string(e.Type)
		}
		out = append(out, LogEvent{Index: idx, Type: typ, Leaf: leaf, Checkpoint: note, InclusionProof: proof})
	}
	return out, nil
}

// coveringCheckpoint returns the newest stored checkpoint once one covers
// leaf index, which the log holds: signing one when this process may
// (checkpointInterval), else waiting for the end of the interval or for
// another replica's checkpoint, whichever comes first.
func (r *Registry) coveringCheckpoint(ctx context.Context, index int64) (*storedCheckpoint, error) {
	for {
		cp, err := r.tlog.latestCheckpoint(ctx)
		if err != nil {
			return nil, err
		}
		if cp != nil && cp.Size > index {
			return cp, nil
		}
		wait := r.tlog.untilNextSigning()
		if wait <= 0 {
			// checkpoint signs (the interval is over) or returns the one another
			// caller or replica just stored; either covers the leaf.
			if _, err := r.tlog.checkpoint(ctx); err != nil {
				return nil, err
			}
			if cp, err = r.tlog.latestCheckpoint(ctx); err != nil {
				return nil, err
			}
			if cp != nil && cp.Size > index {
				return cp, nil
			}
			// Signed concurrently for a smaller tree: the interval has just
			// restarted; wait for its end.
			wait = max(r.tlog.untilNextSigning(), 10*time.Millisecond)
		}
		t := time.NewTimer(min(wait, checkpointInterval))
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		}
	}
}

// untilNextSigning is how long checkpoint must wait before it signs again
// (≤ 0: it may sign now).
func (l *transparencyLog) untilNextSigning() time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.lastSigned.IsZero() {
		return 0
	}
	return l.lastSigned.Add(checkpointInterval).Sub(l.now())
}
