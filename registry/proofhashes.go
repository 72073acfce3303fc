package registry

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/agent-trust-registry/atr/registry/translog"
)

// Receipts' inclusion proofs read stored hashes of the log. Stored hashes
// are immutable (translog.HashStore: an index is written once), so the
// ones a proof read can answer later proofs from memory: a leaf's proof
// against a newer checkpoint shares all but its top few hashes with its
// proof against an older one, and the top ones with every other leaf's
// proof against that checkpoint. A proof that does not check against its
// checkpoint's root (a database restored from a backup holds another tree)
// empties the cache.

// proofHashCacheSize bounds the hashes kept (~5 MB with the map's
// overhead); a full cache is emptied, as the registry's other caches are.
const proofHashCacheSize = 1 << 16

// proofHashCache is the stored hashes receipts' proofs read from the
// database.
type proofHashCache struct {
	mu  sync.Mutex
	m   map[int64]tlog.Hash
	gen uint64 // bumped by clear: a read that began before it is not kept
}

func (c *proofHashCache) lookup(idx int64) (tlog.Hash, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	h, ok := c.m[idx]
	return h, ok
}

// clear forgets every hash: the database no longer holds the tree they are
// of.
func (c *proofHashCache) clear() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.m = nil
	c.gen++
}

// over returns a read-only HashStore that answers from the cache and reads
// the rest from next, keeping what it read.
func (c *proofHashCache) over(next translog.HashStore) translog.HashStore {
	return cachedHashes{c: c, next: next}
}

type cachedHashes struct {
	c    *proofHashCache
	next translog.HashStore
}

func (s cachedHashes) ReadHashes(ctx context.Context, indexes []int64) ([]tlog.Hash, error) {
	s.c.mu.Lock()
	gen := s.c.gen
	s.c.mu.Unlock()
	out, missing, got, err := readLayered(ctx, indexes, s.c.lookup, s.next)
	if err != nil || len(missing) == 0 {
		return out, err
	}
	s.c.mu.Lock()
	defer s.c.mu.Unlock()
	if s.c.gen != gen {
		return out, nil
	}
	if s.c.m == nil || len(s.c.m)+len(missing) > proofHashCacheSize {
		s.c.m = make(map[int64]tlog.Hash, len(missing))
	}
	for i, idx := range missing {
		s.c.m[idx] = got[i]
	}
	return out, nil
}

func (cachedHashes) WriteHashes(context.Context, int64, []tlog.Hash) error {
	return errors.New("registry: log: the proof hash cache is read-only")
}

// hashLayer reads stored hashes from m, which it never changes (a sealed
// checkpoint's: knownCheckpoint.hashes), and the rest from next.
type hashLayer struct {
	m    map[int64]tlog.Hash
	next translog.HashStore
}

func (s hashLayer) ReadHashes(ctx context.Context, indexes []int64) ([]tlog.Hash, error) {
	out, _, _, err := readLayered(ctx, indexes, func(idx int64) (tlog.Hash, bool) {
		h, ok := s.m[idx]
		return h, ok
	}, s.next)
	return out, err
}

func (hashLayer) WriteHashes(context.Context, int64, []tlog.Hash) error {
	return errors.New("registry: log: a sealed checkpoint's hashes are read-only")
}

// readLayered returns the hashes of indexes, in order: those lookup finds,
// and the others (missing, repeats kept) read from next in one call, which
// returned got.
func readLayered(ctx context.Context, indexes []int64, lookup func(int64) (tlog.Hash, bool), next translog.HashStore) (out []tlog.Hash, missing []int64, got []tlog.Hash, err error) {
	out = make([]tlog.Hash, len(indexes))
	var at []int // positions in out of missing
	for i, idx := range indexes {
		if h, ok := lookup(idx); ok {
			out[i] = h
			continue
		}
		at = append(at, i)
		missing = append(missing, idx)
	}
	if len(missing) == 0 {
		return out, nil, nil, nil
	}
	got, err = next.ReadHashes(ctx, missing)
	if err != nil {
		return nil, nil, nil, err
	}
	if len(got) != len(missing) {
		return nil, nil, nil, fmt.Errorf("registry: log: %d hashes read for %d indexes", len(got), len(missing))
	}
	for j, i := range at {
		out[i] = got[j]
	}
	return out, missing, got, nil
}
