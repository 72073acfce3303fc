package registry

// The log as a stream of events (GET /v1/log/events): every leaf, in index
// order, each with a signed checkpoint whose tree includes it and its
// inclusion proof in that tree, so that a follower verifies each event
// alone. Waiting for new leaves uses the change notification (notify.go).

import (
	"context"
	"errors"
	"fmt"
	"sync"
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
// The checkpoint is the newest stored one that covers the leaf and carries
// a witness cosignature, else the newest stored one (checkpoints are
// cosigned seconds after they are signed: a follower that requires
// cosignatures gets one when it asks again). The readers of this replica
// share one cache of it (re-read at most every eventCheckpointTTL) and of
// the events near the end of the log, so that many open streams cost the
// database about what one does.
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
	if from >= r.notify.logSize() {
		// The notifier may lag the database by a notification: the database
		// decides whether from is past the end; the notifier tells when the
		// leaf arrives.
		size, err := r.LogSize(ctx)
		if err != nil {
			return nil, fmt.Errorf("registry: log events: %w", err)
		}
		if from > size {
			return nil, fmt.Errorf("registry: log events: index %d is beyond the tree size %d: %w", from, size, ErrNotFound)
		}
		if from == size {
			if _, err := r.notify.waitLogSize(ctx, from); err != nil {
				return nil, fmt.Errorf("registry: log events: %w", err)
			}
		}
	}
	cp, note, err := r.eventCheckpoint(ctx, from)
	if err != nil {
		return nil, fmt.Errorf("registry: log events: %w", err)
	}
	end := min(from+int64(limit), cp.Size)
	out := r.events.cached(note, from, end)
	if next := from + int64(len(out)); next < end {
		more, err := r.readEvents(ctx, cp.Size, note, next, end)
		if err != nil {
			return nil, fmt.Errorf("registry: log events: %w", err)
		}
		r.events.store(cp.Size, note, more)
		out = append(out, more...)
	}
	return out, nil
}

// readEvents reads leaves [start, end) and their inclusion proofs in the
// tree of the given size, all under one checkpoint note.
func (r *Registry) readEvents(ctx context.Context, size int64, note []byte, start, end int64) ([]LogEvent, error) {
	leaves, err := r.tlog.entries(ctx, start, end)
	if err != nil {
		return nil, err
	}
	out := make([]LogEvent, 0, len(leaves))
	for i, leaf := range leaves {
		idx := start + int64(i)
		proof, err := translog.InclusionProof(ctx, hashStore{r.store.db}, idx, size)
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

// Shared state of LogEvents.
const (
	// eventCheckpointTTL is how long the readers of a replica share one
	// checkpoint (with its cosignatures) before it is read again.
	eventCheckpointTTL = time.Second
	// eventCacheSpan: events within this many leaves of the checkpoint's
	// size are cached (those the readers at the end of the log all want).
	eventCacheSpan = 1024
)

// eventCache is what the LogEvents calls of one replica share: the
// checkpoint they serve and the events near its end, built under it.
type eventCache struct {
	mu     sync.Mutex
	cp     *storedCheckpoint
	note   []byte // cp.Note with its cosignatures
	readAt time.Time
	events map[int64]LogEvent // under cp
}

// checkpoint returns the shared checkpoint if it covers index and is fresh.
func (c *eventCache) checkpoint(index int64, now time.Time) (*storedCheckpoint, []byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cp == nil || c.cp.Size <= index || now.Sub(c.readAt) >= eventCheckpointTTL {
		return nil, nil, false
	}
	return c.cp, c.note, true
}

// setCheckpoint shares a checkpoint just read; the events cached under
// another one are dropped.
func (c *eventCache) setCheckpoint(cp *storedCheckpoint, note []byte, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cp == nil || string(c.note) != string(note) {
		c.events = nil
	}
	c.cp, c.note, c.readAt = cp, note, now
}

// cached returns the cached events from start on (before end) under the
// checkpoint note, stopping at the first one missing.
func (c *eventCache) cached(note []byte, start, end int64) []LogEvent {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []LogEvent
	if c.cp == nil || string(c.note) != string(note) {
		return nil
	}
	for i := start; i < end; i++ {
		ev, ok := c.events[i]
		if !ok {
			break
		}
		out = append(out, ev)
	}
	return out
}

// store caches events built under the checkpoint note (of a tree of the
// given size), if it is still the shared one.
func (c *eventCache) store(size int64, note []byte, evs []LogEvent) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cp == nil || string(c.note) != string(note) {
		return
	}
	for _, ev := range evs {
		if ev.Index < size-eventCacheSpan {
			continue
		}
		if c.events == nil {
			c.events = map[int64]LogEvent{}
		}
		c.events[ev.Index] = ev
	}
}

// eventCheckpoint returns the checkpoint to serve leaf index with (see
// LogEvents), and its note with cosignatures.
func (r *Registry) eventCheckpoint(ctx context.Context, index int64) (*storedCheckpoint, []byte, error) {
	if cp, note, ok := r.events.checkpoint(index, time.Now()); ok {
		return cp, note, nil
	}
	cp, err := r.coveringCheckpoint(ctx, index)
	if err != nil {
		return nil, nil, err
	}
	// Prefer the newest cosigned checkpoint that covers the leaf.
	cosigned, err := r.newestCosigned(ctx, index+1)
	switch e := dbErr("log events: reading cosigned checkpoint", err); {
	case err == nil:
		cp = &cosigned
	case !errors.Is(e, ErrNotFound):
		return nil, nil, e
	}
	note, err := r.withCosignatures(ctx, []byte(cp.Note))
	if err != nil {
		return nil, nil, err
	}
	r.events.setCheckpoint(cp, note, time.Now())
	return cp, note, nil
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
