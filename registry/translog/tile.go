package translog

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/tlog"
)

// TileHeight is the C2SP tlog-tiles tile height: a full tile holds
// 2^8 = 256 hashes (8,192 bytes) or, for entry bundles, 256 entries.
const TileHeight = 8

// TileWidth is the number of hashes (or entries) in a full tile.
const TileWidth = 1 << TileHeight

// Tile identifies a C2SP tlog-tiles resource (c2sp.org/tlog-tiles).
//
// Level 0..63 is a Merkle tree tile: hash i (0 ≤ i < Width) is
// MTH(D[(N*256+i)*256^Level : (N*256+i+1)*256^Level]). Level -1 is the
// entry bundle for the leaves of level-0 tile N. Width is 256 for a full
// tile and 1..255 for a partial one.
//
// In golang.org/x/mod/sumdb/tlog terms, a hash tile is tlog.Tile{H: 8, L:
// Level, N: N, W: Width}; only the path syntax differs (tlog's sumdb paths
// are tile/H/L/NNN, C2SP's are tile/L/NNN).
type Tile struct {
	Level int
	N     int64
	Width int
}

// EntriesLevel is Tile.Level for entry bundles.
const EntriesLevel = -1

// Path returns the C2SP path of t, without a leading slash:
//
//	tile/<L>/<N>[.p/<W>]       Merkle tree tile, L in 0..63
//	tile/entries/<N>[.p/<W>]   entry bundle
//
// <N> is written in zero-padded 3-digit elements, all but the last prefixed
// with "x" (1234067 → x001/x234/067); ".p/<W>" is present only for partial
// tiles (W < 256).
func (t Tile) Path() string {
	var b strings.Builder
	b.WriteString("tile/")
	if t.Level == EntriesLevel {
		b.WriteString("entries")
	} else {
		b.WriteString(strconv.Itoa(t.Level))
	}
	b.WriteByte('/')
	n := strconv.FormatInt(t.N, 10)
	for len(n)%3 != 0 {
		n = "0" + n
	}
	for i := 0; i < len(n); i += 3 {
		if i+3 < len(n) {
			b.WriteByte('x')
		}
		b.WriteString(n[i : i+3])
		if i+3 < len(n) {
			b.WriteByte('/')
		}
	}
	if t.Width < TileWidth {
		b.WriteString(".p/")
		b.WriteString(strconv.Itoa(t.Width))
	}
	return b.String()
}

// ParseTilePath parses a C2SP tile path as written by Tile.Path (with or
// without a leading "/"), strictly: the level is 0..63 or "entries" without
// leading zeroes, N is in canonical 3-digit elements (no superfluous leading
// "x000/" element), W is 1..255 without leading zeroes. Anything else is
// ErrInvalid.
func ParseTilePath(path string) (Tile, error) {
	bad := func(why string) (Tile, error) {
		return Tile{}, fmt.Errorf("%w: tile path %q: %s", ErrInvalid, path, why)
	}
	if len(path) > 128 {
		return bad("too long")
	}
	parts := strings.Split(strings.TrimPrefix(path, "/"), "/")
	if len(parts) < 3 || parts[0] != "tile" {
		return bad("want tile/<L>/<N>[.p/<W>]")
	}
	var t Tile
	if parts[1] == "entries" {
		t.Level = EntriesLevel
	} else {
		l, err := parseCanonicalUint(parts[1])
		if err != nil || l > 63 {
			return bad("level must be 0..63 or entries")
		}
		t.Level = int(l)
	}
	nparts := parts[2:]
	t.Width = TileWidth
	if last := len(nparts) - 1; last >= 1 && strings.HasSuffix(nparts[last-1], ".p") {
		w, err := parseCanonicalUint(nparts[last])
		if err != nil || w < 1 || w >= TileWidth {
			return bad("partial width must be 1..255")
		}
		t.Width = int(w)
		nparts = append(nparts[:last-1:last-1], strings.TrimSuffix(nparts[last-1], ".p"))
	}
	if len(nparts) > 7 {
		return bad("index too large")
	}
	var digits strings.Builder
	for i, p := range nparts {
		if i < len(nparts)-1 {
			if !strings.HasPrefix(p, "x") {
				return bad("index elements but the last must start with x")
			}
			p = p[1:]
		}
		if len(p) != 3 || strings.Trim(p, "0123456789") != "" {
			return bad("index elements must be 3 digits")
		}
		digits.WriteString(p)
	}
	n, err := strconv.ParseInt(digits.String(), 10, 64)
	if err != nil {
		return bad("index out of range")
	}
	t.N = n
	if t.Path() != strings.TrimPrefix(path, "/") {
		return bad("not canonical")
	}
	return t, nil
}

// available reports whether t exists in a tree of the given size: the tile
// at level L sees size/256^L hashes and must lie within them.
func (t Tile) available(size int64) bool {
	level := t.Level
	if level == EntriesLevel {
		level = 0
	}
	shift := uint(TileHeight * level)
	if shift >= 63 {
		return false
	}
	count := size >> shift
	if count < int64(t.Width) {
		return false
	}
	// N*256 + W ≤ count, written so that it cannot overflow.
	return t.N <= (count-int64(t.Width))/TileWidth
}

// ReadTile returns the C2SP tlog-tiles resource at path (see Tile.Path) for
// a tree of the given size, which must not exceed the size the stores hold:
//
//   - tile/<L>/<N>[.p/<W>]: W (256 if full) concatenated 32-byte hashes, hash
//     i being MTH of leaves [(N*256+i)*256^L, (N*256+i+1)*256^L), read from
//     stored hashes with tlog.ReadTileData (H=8);
//   - tile/entries/<N>[.p/<W>]: the leaves N*256 … N*256+W-1, each as a
//     big-endian uint16 length followed by the leaf bytes.
//
// Only tiles lying wholly inside the tree are served: a full tile once its
// 256 hashes exist, a partial tile of any width up to what the tree holds
// (every such width is the tile of some earlier tree size, so its bytes never
// change). Anything beyond is ErrNotFound; a malformed path is ErrInvalid.
// es may be nil if entry bundles are not served (they are then ErrNotFound).
func ReadTile(ctx context.Context, hs HashStore, es EntryReader, size int64, path string) ([]byte, error) {
	t, err := ParseTilePath(path)
	if err != nil {
		return nil, err
	}
	if size < 0 || !t.available(size) {
		return nil, fmt.Errorf("%w: tile %s in a tree of size %d", ErrNotFound, t.Path(), size)
	}
	if t.Level == EntriesLevel {
		if es == nil {
			return nil, fmt.Errorf("%w: entry bundles are not served", ErrNotFound)
		}
		start := t.N * TileWidth
		entries, err := es.ReadEntries(ctx, start, start+int64(t.Width))
		if err != nil {
			return nil, fmt.Errorf("translog: reading entries for %s: %w", t.Path(), err)
		}
		if len(entries) != t.Width {
			return nil, fmt.Errorf("translog: entry reader returned %d entries for %s", len(entries), t.Path())
		}
		return EncodeEntryBundle(entries)
	}
	data, err := tlog.ReadTileData(tlog.Tile{H: TileHeight, L: t.Level, N: t.N, W: t.Width}, reader(ctx, hs))
	if err != nil {
		return nil, fmt.Errorf("translog: reading %s: %w", t.Path(), err)
	}
	return data, nil
}

// EncodeEntryBundle encodes entries as a C2SP entry bundle: each entry as a
// big-endian uint16 length followed by its bytes.
func EncodeEntryBundle(entries [][]byte) ([]byte, error) {
	var b bytes.Buffer
	for i, e := range entries {
		if len(e) > MaxEntrySize {
			return nil, fmt.Errorf("%w: bundle entry %d has %d bytes", ErrInvalid, i, len(e))
		}
		var l [2]byte
		binary.BigEndian.PutUint16(l[:], uint16(len(e)))
		b.Write(l[:])
		b.Write(e)
	}
	return b.Bytes(), nil
}

// ParseEntryBundle splits a C2SP entry bundle into its entries; trailing or
// truncated bytes are ErrInvalid.
func ParseEntryBundle(data []byte) ([][]byte, error) {
	var out [][]byte
	for len(data) > 0 {
		if len(data) < 2 {
			return nil, fmt.Errorf("%w: truncated entry bundle", ErrInvalid)
		}
		n := int(binary.BigEndian.Uint16(data))
		data = data[2:]
		if len(data) < n {
			return nil, fmt.Errorf("%w: truncated entry bundle", ErrInvalid)
		}
		out = append(out, data[:n])
		data = data[n:]
	}
	return out, nil
}
