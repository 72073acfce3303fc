// Package translog is ATR's transparency log: an append-only RFC 6962 Merkle
// tree of lifecycle events, with signed checkpoints, proofs and C2SP tiles.
//
// The package imports nothing of ATR. Hashing, stored-hash bookkeeping and
// proofs come from golang.org/x/mod/sumdb/tlog; signed notes from
// golang.org/x/mod/sumdb/note. Storage is the caller's: it implements
// [HashStore] (usually inside a database transaction) and, for entry
// bundles, [EntryReader].
//
// # Appending
//
// A log of n entries keeps tlog's "stored hashes": the leaf hash of every
// entry and the hash of every complete subtree, indexed by
// tlog.StoredHashIndex. [Append] writes entry n: it reads the t earlier
// hashes it needs to complete subtrees and writes t+1 new ones, where t is
// the number of trailing one bits of n — on average fewer than one, at most
// log₂(n+1). [RootHash] reads at most 1+log₂(n) stored hashes. Nothing ever
// rebuilds or rereads the whole tree (seed finding SEC-019): an append is
// amortized O(1) and a root O(log n). BenchmarkAppend compares appends at
// 1,000 and 1,000,000 existing entries.
//
// Appends to one log must be serialized by the caller (registry holds a row
// lock on the tree head for the whole transaction): Append(n) presumes that
// entries 0..n-1 and only those are stored.
//
// # Proofs
//
// [InclusionProof] and [ConsistencyProof] return RFC 6962 audit paths and
// consistency proofs (RFC 9162 §2.1.3 and §2.1.4 describe the same values);
// [CheckInclusion] and [CheckConsistency] verify them. Proof hashes are plain
// SHA-256 values, interoperable with any RFC 6962 verifier.
//
// # Entries, checkpoints, keys, tiles
//
// See [Entry] for the canonical versioned leaf encoding, [Checkpoint] for the
// C2SP tlog-checkpoint note text, [NewNoteSigner] for the C2SP signed-note
// ECDSA signature type 0x02, and [ReadTile] for the exact C2SP tlog-tiles
// resources served.
package translog

import (
	"context"
	"errors"
	"fmt"

	"golang.org/x/mod/sumdb/tlog"
)

// MaxEntrySize is the largest leaf Append accepts: C2SP entry bundles carry
// each entry behind a big-endian uint16 length.
const MaxEntrySize = 1<<16 - 1

// Errors callers may branch on. They are never reassigned.
var (
	// ErrNotFound: the tile, entry or proof asked for does not exist in the
	// tree of the given size (for example a tile beyond the tree).
	ErrNotFound = errors.New("translog: not found")
	// ErrInvalid: malformed input (a bad tile path, impossible sizes, a
	// non-canonical encoding).
	ErrInvalid = errors.New("translog: invalid input")
)

// HashStore holds a log's stored hashes (see tlog.StoredHashIndex).
//
// Contract: ReadHashes returns exactly one hash per requested index, in the
// order requested (indexes may repeat), or an error; a missing index is an
// error. WriteHashes stores hashes[i] at index start+i; once the surrounding
// transaction commits, the writes must be durable. Stored hashes are
// immutable: an index is written once.
type HashStore interface {
	ReadHashes(ctx context.Context, indexes []int64) ([]tlog.Hash, error)
	WriteHashes(ctx context.Context, start int64, hashes []tlog.Hash) error
}

// EntryReader returns the raw leaves [start, end) of a log. It must return
// exactly end-start entries or an error. Used for C2SP entry bundles.
type EntryReader interface {
	ReadEntries(ctx context.Context, start, end int64) ([][]byte, error)
}

// reader adapts a HashStore to tlog.HashReader for calls with ctx.
func reader(ctx context.Context, s HashStore) tlog.HashReader {
	return tlog.HashReaderFunc(func(indexes []int64) ([]tlog.Hash, error) {
		if len(indexes) == 0 {
			return nil, nil
		}
		got, err := s.ReadHashes(ctx, indexes)
		if err != nil {
			return nil, fmt.Errorf("translog: reading hashes: %w", err)
		}
		if len(got) != len(indexes) {
			return nil, fmt.Errorf("translog: hash store returned %d hashes for %d indexes", len(got), len(indexes))
		}
		return got, nil
	})
}

// LeafHash is the RFC 6962 leaf hash SHA-256(0x00 || leaf).
func LeafHash(leaf []byte) tlog.Hash { return tlog.RecordHash(leaf) }

// Append stores the hashes for leaf as entry n (0-based) of a log that
// holds exactly the entries 0..n-1. It does not compute the new root: call
// RootHash when one is needed (registry does so once per append to keep its
// tree head, and before signing a checkpoint).
//
// Preconditions, checked: n ≥ 0 and len(leaf) ≤ MaxEntrySize. The caller
// stores the leaf itself and serializes appends.
//
// Cost: one ReadHashes of t hashes and one WriteHashes of t+1 hashes, where
// t is the number of trailing one bits of n (the subtrees entry n
// completes). t ≤ log₂(n+1), and over any run of appends t averages below
// one, so an append is amortized O(1) whatever the size of the log.
func Append(ctx context.Context, s HashStore, n int64, leaf []byte) error {
	if n < 0 {
		return fmt.Errorf("%w: append at index %d", ErrInvalid, n)
	}
	if len(leaf) > MaxEntrySize {
		return fmt.Errorf("%w: entry of %d bytes, max %d", ErrInvalid, len(leaf), MaxEntrySize)
	}
	hashes, err := tlog.StoredHashes(n, leaf, reader(ctx, s))
	if err != nil {
		return fmt.Errorf("translog: computing hashes for entry %d: %w", n, err)
	}
	if err := s.WriteHashes(ctx, tlog.StoredHashIndex(0, n), hashes); err != nil {
		return fmt.Errorf("translog: writing hashes for entry %d: %w", n, err)
	}
	return nil
}

// RootHash returns the root hash of the tree of the given size (size ≥ 0;
// the empty tree's root is SHA-256 of the empty string), reading at most
// 1+log₂(size) stored hashes.
func RootHash(ctx context.Context, s HashStore, size int64) (tlog.Hash, error) {
	if size < 0 {
		return tlog.Hash{}, fmt.Errorf("%w: tree size %d", ErrInvalid, size)
	}
	h, err := tlog.TreeHash(size, reader(ctx, s))
	if err != nil {
		return tlog.Hash{}, fmt.Errorf("translog: computing root of size %d: %w", size, err)
	}
	return h, nil
}

// InclusionProof returns the RFC 6962 audit path proving that entry index
// is in the tree of the given size. Precondition, checked: 0 ≤ index < size.
func InclusionProof(ctx context.Context, s HashStore, index, size int64) (tlog.RecordProof, error) {
	if index < 0 || size <= 0 || index >= size {
		return nil, fmt.Errorf("%w: inclusion of index %d in size %d", ErrInvalid, index, size)
	}
	p, err := tlog.ProveRecord(size, index, reader(ctx, s))
	if err != nil {
		return nil, fmt.Errorf("translog: proving inclusion of %d in %d: %w", index, size, err)
	}
	return p, nil
}

// ConsistencyProof returns the RFC 6962 proof that the tree of size newSize
// extends the tree of size oldSize. Precondition, checked:
// 1 ≤ oldSize ≤ newSize (every tree trivially extends the empty tree; there
// is nothing to prove and no proof is returned for oldSize 0).
func ConsistencyProof(ctx context.Context, s HashStore, oldSize, newSize int64) (tlog.TreeProof, error) {
	if oldSize < 1 || oldSize > newSize {
		return nil, fmt.Errorf("%w: consistency of size %d with size %d", ErrInvalid, oldSize, newSize)
	}
	p, err := tlog.ProveTree(newSize, oldSize, reader(ctx, s))
	if err != nil {
		return nil, fmt.Errorf("translog: proving consistency of %d with %d: %w", oldSize, newSize, err)
	}
	return p, nil
}

// CheckInclusion verifies that leafHash is entry index of the tree of the
// given size with the given root, using proof. It returns nil only if the
// proof verifies.
func CheckInclusion(proof tlog.RecordProof, size int64, root tlog.Hash, index int64, leafHash tlog.Hash) error {
	if err := tlog.CheckRecord(proof, size, root, index, leafHash); err != nil {
		return fmt.Errorf("translog: inclusion of %d in %d: %w", index, size, err)
	}
	return nil
}

// CheckConsistency verifies that the tree (newSize, newRoot) extends the tree
// (oldSize, oldRoot), using proof. It returns nil only if the proof verifies.
func CheckConsistency(proof tlog.TreeProof, newSize int64, newRoot tlog.Hash, oldSize int64, oldRoot tlog.Hash) error {
	if err := tlog.CheckTree(proof, newSize, newRoot, oldSize, oldRoot); err != nil {
		return fmt.Errorf("translog: consistency of %d with %d: %w", oldSize, newSize, err)
	}
	return nil
}
