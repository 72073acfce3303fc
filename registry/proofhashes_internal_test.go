package registry

import (
	"context"
	"errors"
	"slices"
	"testing"

	"golang.org/x/mod/sumdb/tlog"
)

// countingHashes is a HashStore of hash i = {byte(i)} that records what it
// was asked for.
type countingHashes struct {
	asked [][]int64
	fail  bool
}

func (s *countingHashes) ReadHashes(_ context.Context, indexes []int64) ([]tlog.Hash, error) {
	s.asked = append(s.asked, slices.Clone(indexes))
	if s.fail {
		return nil, errors.New("database away")
	}
	out := make([]tlog.Hash, len(indexes))
	for i, idx := range indexes {
		out[i] = tlog.Hash{byte(idx)}
	}
	return out, nil
}

func (s *countingHashes) WriteHashes(context.Context, int64, []tlog.Hash) error {
	return errors.New("read-only")
}

func wantHashes(t *testing.T, got []tlog.Hash, err error, indexes ...int64) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(indexes) {
		t.Fatalf("%d hashes for %d indexes", len(got), len(indexes))
	}
	for i, idx := range indexes {
		if got[i] != (tlog.Hash{byte(idx)}) {
			t.Fatalf("hash %d of index %d is %x", i, idx, got[i][:2])
		}
	}
}

// TestProofHashCache: hashes are read from the database once, in order and
// with repeats; clear forgets them, a read begun before clear keeps
// nothing, a full cache is emptied, and a failed read keeps nothing.
func TestProofHashCache(t *testing.T) {
	ctx := context.Background()
	var c proofHashCache
	db := &countingHashes{}
	hs := c.over(db)
	got, err := hs.ReadHashes(ctx, []int64{3, 1, 3})
	wantHashes(t, got, err, 3, 1, 3)
	got, err = hs.ReadHashes(ctx, []int64{1, 2, 3})
	wantHashes(t, got, err, 1, 2, 3)
	if want := [][]int64{{3, 1, 3}, {2}}; !slices.EqualFunc(db.asked, want, slices.Equal) {
		t.Fatalf("database asked %v, want %v", db.asked, want)
	}

	c.clear()
	db.asked = nil
	got, err = hs.ReadHashes(ctx, []int64{1})
	wantHashes(t, got, err, 1)
	if len(db.asked) != 1 {
		t.Fatalf("after clear, database asked %v", db.asked)
	}

	// A read that began before a clear (the database was found to hold
	// another tree meanwhile) keeps nothing.
	racing := &clearingHashes{countingHashes: db, c: &c}
	got, err = c.over(racing).ReadHashes(ctx, []int64{7})
	wantHashes(t, got, err, 7)
	if _, ok := c.lookup(7); ok {
		t.Fatal("a read begun before clear was kept")
	}

	db.fail = true
	if _, err := hs.ReadHashes(ctx, []int64{8}); err == nil {
		t.Fatal("a failed read returned hashes")
	}
	if _, ok := c.lookup(8); ok {
		t.Fatal("a failed read was kept")
	}
	db.fail = false

	// Full: emptied, then filled again.
	many := make([]int64, proofHashCacheSize)
	for i := range many {
		many[i] = int64(i)
	}
	if _, err := hs.ReadHashes(ctx, many); err != nil {
		t.Fatal(err)
	}
	if _, err := hs.ReadHashes(ctx, []int64{proofHashCacheSize}); err != nil {
		t.Fatal(err)
	}
	if n := len(c.m); n != 1 {
		t.Fatalf("a full cache holds %d hashes after one more, want 1", n)
	}
	if err := hs.WriteHashes(ctx, 0, []tlog.Hash{{}}); err == nil {
		t.Fatal("the cache accepted a write")
	}
}

// clearingHashes clears c while it reads.
type clearingHashes struct {
	*countingHashes
	c *proofHashCache
}

func (s *clearingHashes) ReadHashes(ctx context.Context, indexes []int64) ([]tlog.Hash, error) {
	s.c.clear()
	return s.countingHashes.ReadHashes(ctx, indexes)
}

// TestHashLayer: a sealed checkpoint's hashes answer first, never changed;
// the rest is read below, in one call.
func TestHashLayer(t *testing.T) {
	ctx := context.Background()
	db := &countingHashes{}
	m := map[int64]tlog.Hash{2: {2}, 5: {5}}
	hs := (&knownCheckpoint{hashes: m}).proofHashes(db)
	got, err := hs.ReadHashes(ctx, []int64{5, 4, 2, 4, 9})
	wantHashes(t, got, err, 5, 4, 2, 4, 9)
	if want := [][]int64{{4, 4, 9}}; !slices.EqualFunc(db.asked, want, slices.Equal) {
		t.Fatalf("below asked %v, want %v", db.asked, want)
	}
	if len(m) != 2 {
		t.Fatalf("the sealed checkpoint's hashes changed: %v", m)
	}
	if (*knownCheckpoint)(nil).proofHashes(db) != db {
		t.Fatal("no checkpoint: the store below is not used as it is")
	}
	if err := hs.WriteHashes(ctx, 0, nil); err == nil {
		t.Fatal("the layer accepted a write")
	}
}
