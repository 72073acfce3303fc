package translog

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"

	"golang.org/x/mod/sumdb/tlog"
)

func TestTilePaths(t *testing.T) {
	tests := []struct {
		path string
		tile Tile
	}{
		{"tile/0/000", Tile{0, 0, 256}},
		{"tile/0/001.p/5", Tile{0, 1, 5}},
		{"tile/3/x001/x234/067", Tile{3, 1234067, 256}},
		{"tile/3/x001/x234/067.p/1", Tile{3, 1234067, 1}},
		{"tile/63/999", Tile{63, 999, 256}},
		{"tile/entries/x001/000.p/255", Tile{EntriesLevel, 1000, 255}},
		{"tile/entries/000", Tile{EntriesLevel, 0, 256}},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			if got := tt.tile.Path(); got != tt.path {
				t.Errorf("%+v.Path() = %q, want %q", tt.tile, got, tt.path)
			}
			got, err := ParseTilePath(tt.path)
			if err != nil || got != tt.tile {
				t.Errorf("ParseTilePath(%q) = %+v, %v; want %+v", tt.path, got, err, tt.tile)
			}
			if got, err := ParseTilePath("/" + tt.path); err != nil || got != tt.tile {
				t.Errorf("ParseTilePath(/%q) = %+v, %v", tt.path, got, err)
			}
		})
	}
	bad := []string{
		"", "tile", "tile/0", "tile/00/000", "tile/64/000", "tile/-1/000", "tile/data/000",
		"tile/0/0", "tile/0/0000", "tile/0/x000/001", "tile/0/001/002", "tile/0/x001",
		"tile/0/000.p/0", "tile/0/000.p/256", "tile/0/000.p/05", "tile/0/000.p", "tile/0/000.p/",
		"tile/0/abc", "tile/8/2/000", "tiles/0/000", "tile/0/x1/000", "tile/0/000/",
		"tile/0/x009/x223/x372/x036/x854/x775/808", "tile/entries/000.p/1/2",
	}
	for _, p := range bad {
		if got, err := ParseTilePath(p); !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseTilePath(%q) = %+v, %v; want ErrInvalid", p, got, err)
		}
	}
}

// TestReadTile checks served tiles against the reference MTH definition from
// C2SP tlog-tiles: hash i of tile (L, N) is MTH(D[(N*256+i)*256^L : ...]).
func TestReadTile(t *testing.T) {
	ctx := context.Background()
	const size = 256*256 + 3*256 + 7 // full level-0 and level-1 tiles, partials at 0, 1, 2
	leaves := make([][]byte, size)
	m := &memStore{}
	for i := range leaves {
		leaves[i] = fmt.Appendf(nil, "leaf %d", i)
		m.append(t, leaves[i])
	}
	r := &ref{leaves: leaves, memo: map[[2]int]tlog.Hash{}}
	want := func(level, n, w int) []byte {
		var out []byte
		span := 1 << (8 * level)
		for i := range w {
			lo := (n*256 + i) * span
			h := r.mth(lo, lo+span)
			out = append(out, h[:]...)
		}
		return out
	}
	tests := []struct {
		tile Tile
		want []byte
	}{
		{Tile{0, 0, 256}, want(0, 0, 256)},
		{Tile{0, 255, 256}, want(0, 255, 256)},
		{Tile{0, 258, 256}, want(0, 258, 256)},
		{Tile{0, 259, 7}, want(0, 259, 7)},
		{Tile{0, 259, 3}, want(0, 259, 3)}, // an earlier partial stays available
		{Tile{1, 0, 256}, want(1, 0, 256)},
		{Tile{1, 1, 3}, want(1, 1, 3)},
		{Tile{2, 0, 1}, want(2, 0, 1)},
	}
	for _, tt := range tests {
		t.Run(tt.tile.Path(), func(t *testing.T) {
			got, err := ReadTile(ctx, m, m, size, tt.tile.Path())
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, tt.want) {
				t.Errorf("ReadTile(%s) differs from the reference (%d vs %d bytes)", tt.tile.Path(), len(got), len(tt.want))
			}
		})
	}
	// Level 0 tiles also agree with the leaf hashes, and an entry bundle's
	// entries hash to the corresponding level-0 tile.
	bundle, err := ReadTile(ctx, m, m, size, "tile/entries/259.p/7")
	if err != nil {
		t.Fatal(err)
	}
	entries, err := ParseEntryBundle(bundle)
	if err != nil || len(entries) != 7 {
		t.Fatalf("ParseEntryBundle = %d entries, %v", len(entries), err)
	}
	tile, _ := ReadTile(ctx, m, m, size, "tile/0/259.p/7")
	for i, e := range entries {
		if h := LeafHash(e); !bytes.Equal(h[:], tile[i*32:(i+1)*32]) {
			t.Errorf("bundle entry %d does not hash to tile hash %d", i, i)
		}
		if !bytes.Equal(e, leaves[259*256+i]) {
			t.Errorf("bundle entry %d = %q, want %q", i, e, leaves[259*256+i])
		}
	}
	if len(bundle) != 7*2+len(bytes.Join(entries, nil)) || bundle[0] != 0 || int(bundle[1]) != len(entries[0]) {
		t.Errorf("bundle framing wrong: % x", bundle[:4])
	}

	notFound := []string{
		"tile/0/259",      // not full yet
		"tile/0/259.p/8",  // wider than the tree
		"tile/0/260.p/1",  // beyond
		"tile/1/001",      // level 1 not full
		"tile/1/001.p/4",  // too wide
		"tile/2/000",      // level 2 not full
		"tile/3/000.p/1",  // level 3 empty
		"tile/63/000.p/1", // far beyond
		"tile/entries/260.p/1",
		"tile/0/x999/x999/x999/x999/x999/999",
	}
	for _, p := range notFound {
		if _, err := ReadTile(ctx, m, m, size, p); !errors.Is(err, ErrNotFound) {
			t.Errorf("ReadTile(%q) error = %v, want ErrNotFound", p, err)
		}
	}
	if _, err := ReadTile(ctx, m, nil, size, "tile/entries/000"); !errors.Is(err, ErrNotFound) {
		t.Errorf("ReadTile(entries) without an EntryReader: %v, want ErrNotFound", err)
	}
	if _, err := ReadTile(ctx, m, m, size, "tile/0/00"); !errors.Is(err, ErrInvalid) {
		t.Errorf("ReadTile(bad path): %v, want ErrInvalid", err)
	}
}

func TestEntryBundle(t *testing.T) {
	in := [][]byte{{}, []byte("a"), bytes.Repeat([]byte("b"), 300)}
	b, err := EncodeEntryBundle(in)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(b, []byte{0, 0, 0, 1, 'a', 0x01, 0x2c}) {
		t.Errorf("bundle = % x…", b[:8])
	}
	out, err := ParseEntryBundle(b)
	if err != nil || len(out) != 3 || !bytes.Equal(out[2], in[2]) {
		t.Errorf("ParseEntryBundle = %q, %v", out, err)
	}
	for _, bad := range [][]byte{{0}, {0, 2, 'a'}} {
		if _, err := ParseEntryBundle(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseEntryBundle(% x) error = %v, want ErrInvalid", bad, err)
		}
	}
	if _, err := EncodeEntryBundle([][]byte{make([]byte, MaxEntrySize+1)}); !errors.Is(err, ErrInvalid) {
		t.Errorf("EncodeEntryBundle(oversized) error = %v", err)
	}
}
