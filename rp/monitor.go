package rp

import (
	"bytes"
	"context"
	"crypto"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/agent-trust-registry/atr/registry/translog"
)

// ErrMonitor is wrapped by every failure of Monitor.Scan that shows the log
// misbehaving: a rollback, a fork, a consistency proof that does not verify,
// leaves that do not hash to the signed root, a leaf that does not parse.
// (A checkpoint that is not validly signed or witnessed wraps
// ErrLogSignature or ErrWitnessPolicy instead.)
var ErrMonitor = errors.New("rp: log monitor: the log is inconsistent")

func monitorErr(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrMonitor}, args...)...)
}

// LogSource is what the monitor reads of a log (GET /v1/log/checkpoint,
// /v1/log/proof/consistency, /v1/log/entries). Nothing it returns is
// trusted: Scan verifies all of it.
type LogSource interface {
	// Checkpoint returns the latest signed checkpoint note.
	Checkpoint(ctx context.Context) ([]byte, error)
	// ConsistencyProof returns the proof that the tree of size newSize
	// extends the tree of size oldSize.
	ConsistencyProof(ctx context.Context, oldSize, newSize int64) (tlog.TreeProof, error)
	// Entries returns leaves start, start+1, … (at least one, at most
	// end-start).
	Entries(ctx context.Context, start, end int64) ([][]byte, error)
}

// Watched is a name (an agent name or a namespace) with its VRF index and
// proof: the index log leaves carry in name_indexes for that name or any
// name under it.
type Watched struct {
	Name  string `json:"name"`
	Index string `json:"index"` // 64 lowercase hex digits
	Proof []byte `json:"proof"`
}

// MonitorState is what a monitor keeps between runs (JSON, MarshalState and
// ParseState): the last checkpoint it verified and scanned up to, the
// compact range of that tree (the hashes of its maximal complete subtrees,
// left to right, which is all that is needed to hash in the leaves that
// follow) and the names watched. The zero value is the state before the
// first run.
type MonitorState struct {
	Origin string
	Size   int64
	Hash   string   // root of the tree of Size, hex
	Range  []string // compact range of the tree of Size, hex
	// V2From is the index of the first version 2 leaf, -1 if none yet
	// (ignored when Size is 0).
	V2From  int64
	Watched []Watched
}

// stateVersion is the encoding version of MonitorState.
const stateVersion = 1

type wireState struct {
	V       int       `json:"v"`
	Origin  string    `json:"origin"`
	Size    int64     `json:"size"`
	Hash    string    `json:"hash"`
	Range   []string  `json:"range"`
	V2From  int64     `json:"v2_from"`
	Watched []Watched `json:"watched"`
}

// MarshalState encodes s as JSON.
func MarshalState(s MonitorState) ([]byte, error) {
	b, err := json.MarshalIndent(wireState{V: stateVersion, Origin: s.Origin, Size: s.Size, Hash: s.Hash, Range: s.Range, V2From: s.V2From, Watched: s.Watched}, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("rp: encoding monitor state: %w", err)
	}
	return append(b, '\n'), nil
}

// ParseState decodes what MarshalState writes; an empty input is the zero
// state (the first run).
func ParseState(data []byte) (MonitorState, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return MonitorState{V2From: -1}, nil
	}
	var w wireState
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&w); err != nil {
		return MonitorState{}, fmt.Errorf("rp: monitor state: %v", err)
	}
	if w.V != stateVersion {
		return MonitorState{}, fmt.Errorf("rp: monitor state: version %d, want %d", w.V, stateVersion)
	}
	s := MonitorState{Origin: w.Origin, Size: w.Size, Hash: w.Hash, Range: w.Range, V2From: w.V2From, Watched: w.Watched}
	if s.Size < 0 || s.V2From < -1 || s.V2From >= s.Size && s.Size > 0 {
		return MonitorState{}, fmt.Errorf("rp: monitor state: size %d, v2_from %d", s.Size, s.V2From)
	}
	if _, err := s.rangeHashes(); err != nil {
		return MonitorState{}, err
	}
	return s, nil
}

// rangeHashes decodes Range and checks it against Size and Hash.
func (s MonitorState) rangeHashes() (map[int64]tlog.Hash, error) {
	ids := compactRange(s.Size)
	if len(ids) != len(s.Range) {
		return nil, fmt.Errorf("rp: monitor state: %d range hashes for size %d, want %d", len(s.Range), s.Size, len(ids))
	}
	m := make(map[int64]tlog.Hash, len(ids))
	for i, id := range ids {
		h, err := parseHash(s.Range[i])
		if err != nil {
			return nil, fmt.Errorf("rp: monitor state: range: %v", err)
		}
		m[id] = h
	}
	if s.Size == 0 {
		return m, nil
	}
	root, err := tlog.TreeHash(s.Size, mapReader(m))
	if err != nil {
		return nil, fmt.Errorf("rp: monitor state: %v", err)
	}
	if want, err := parseHash(s.Hash); err != nil || want != root {
		return nil, fmt.Errorf("rp: monitor state: the range does not hash to the saved root")
	}
	return m, nil
}

func parseHash(s string) (tlog.Hash, error) {
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != len(tlog.Hash{}) || strings.ToLower(s) != s {
		return tlog.Hash{}, fmt.Errorf("hash %q is not 64 lowercase hex digits", s)
	}
	return tlog.Hash(b), nil
}

// compactRange returns the stored-hash indexes (tlog.StoredHashIndex) of
// the maximal complete subtrees of the tree of size n, left to right: what
// tlog.TreeHash(n) and tlog.StoredHashes(n, …) read.
func compactRange(n int64) []int64 {
	var ids []int64
	start := int64(0)
	for level := 62; level >= 0; level-- {
		if n&(1<<level) != 0 {
			ids = append(ids, tlog.StoredHashIndex(level, start>>level))
			start += 1 << level
		}
	}
	return ids
}

func mapReader(m map[int64]tlog.Hash) tlog.HashReader {
	return tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(idx))
		for i, x := range idx {
			h, ok := m[x]
			if !ok {
				return nil, fmt.Errorf("rp: monitor: hash %d not at hand", x)
			}
			out[i] = h
		}
		return out, nil
	})
}

// Finding is a leaf for a watched name whose certificate is not known.
type Finding struct {
	Index   int64
	Entry   translog.Entry
	Watched string // the watched name whose index the leaf carries
}

// MonitorResult is what one scan established.
type MonitorResult struct {
	Checkpoint   translog.Checkpoint
	PreviousSize int64 // the size the scan resumed from (0: from the start)
	Scanned      int64 // leaves downloaded, hashed and examined
	Matched      int   // leaves for a watched name, known or not
	Unknown      []Finding
}

// Monitor finds the certificates issued for watched names that their owner
// does not know about (docs/transparency.md, "Monitoring"). It trusts only
// LogVerifiers, Witnesses and VRFKey: every checkpoint, proof and leaf comes
// from Log and is verified.
type Monitor struct {
	Log          LogSource
	LogVerifiers note.Verifiers
	Witnesses    WitnessPolicy
	VRFKey       crypto.PublicKey
	TrustDomain  string
	// Known holds the SHA-256 fingerprints (64 lowercase hex) of the
	// certificates the owner requested.
	Known map[string]bool
}

// CheckWatched verifies w's VRF proof for w.Name under m.VRFKey and
// m.TrustDomain and that it gives w.Index.
func (m Monitor) CheckWatched(w Watched) error {
	ix, err := translog.VRFVerify(m.VRFKey, m.TrustDomain, w.Name, w.Proof)
	if err != nil {
		return fmt.Errorf("rp: watched name %s: %w", w.Name, err)
	}
	if hex.EncodeToString(ix[:]) != w.Index {
		return fmt.Errorf("rp: watched name %s: the proof gives index %x, not %s", w.Name, ix, w.Index)
	}
	return nil
}

// Scan fetches the latest checkpoint and checks it (log signature and
// witness policy, VerifyCheckpoint), checks it extends the checkpoint of
// state (no rollback, no fork: a consistency proof), downloads the leaves
// after state's position, checks that they and state's compact range hash
// to the checkpoint's root, and reports every leaf for a watched name whose
// fingerprint is not in Known: version 2 leaves whose name_indexes hold a
// watched index, and version 1 leaves (names in clear, before the upgrade)
// whose agent is the name or under it.
//
// watched are checked with CheckWatched. A name not in state's watch list
// was never scanned for, so its addition makes the scan start over from
// leaf 0 (still checked against state's checkpoint).
//
// It returns the new state only when everything verified; the caller saves
// it (atomically), so a scan interrupted at any point is redone in full by
// the next run and nothing is missed. Findings are reported by the scan that
// reaches them, once.
func (m Monitor) Scan(ctx context.Context, state MonitorState, watched []Watched) (*MonitorResult, MonitorState, error) {
	if m.Log == nil || m.LogVerifiers == nil || m.VRFKey == nil || m.TrustDomain == "" {
		return nil, state, errors.New("rp: monitor: log, log verifiers, VRF key and trust domain are required")
	}
	if len(watched) == 0 {
		return nil, state, errors.New("rp: monitor: no watched names")
	}
	byIndex := map[string]string{}
	for _, w := range watched {
		if err := m.CheckWatched(w); err != nil {
			return nil, state, err
		}
		byIndex[w.Index] = w.Name
	}
	saved, err := state.rangeHashes()
	if err != nil {
		return nil, state, err
	}

	// Step 1: the checkpoint is the log's, witnessed as required.
	msg, err := m.Log.Checkpoint(ctx)
	if err != nil {
		return nil, state, fmt.Errorf("rp: monitor: fetching the checkpoint: %w", err)
	}
	cp, err := VerifyCheckpoint(msg, m.LogVerifiers, m.Witnesses)
	if err != nil {
		return nil, state, err
	}
	if state.Origin != "" && cp.Origin != state.Origin {
		return nil, state, monitorErr("checkpoint origin %q, the state's is %q", cp.Origin, state.Origin)
	}

	// Step 2: it extends the checkpoint scanned last time.
	if state.Size > 0 {
		old, _ := parseHash(state.Hash)
		switch {
		case cp.Size < state.Size:
			return nil, state, monitorErr("rollback: the log shrank from %d to %d leaves", state.Size, cp.Size)
		case cp.Size == state.Size && cp.Hash != old:
			return nil, state, monitorErr("fork: two trees of size %d (root %s, earlier %s)", cp.Size, cp.Hash, old)
		case cp.Size > state.Size:
			p, err := m.Log.ConsistencyProof(ctx, state.Size, cp.Size)
			if err != nil {
				return nil, state, fmt.Errorf("rp: monitor: fetching the consistency proof: %w", err)
			}
			if err := translog.CheckConsistency(p, cp.Size, cp.Hash, state.Size, old); err != nil {
				return nil, state, monitorErr("the tree of size %d does not extend the one of size %d: %v", cp.Size, state.Size, err)
			}
		}
	}

	// Step 3: download, hash and examine the new leaves.
	start, hashes, v2From := state.Size, saved, state.V2From
	if state.Size == 0 {
		v2From = -1
	}
	for _, w := range watched {
		if !slices.ContainsFunc(state.Watched, func(s Watched) bool { return s.Name == w.Name && s.Index == w.Index }) {
			start, hashes, v2From = 0, map[int64]tlog.Hash{}, -1
			break
		}
	}
	res := &MonitorResult{Checkpoint: cp, PreviousSize: start}
	for next := start; next < cp.Size; {
		leaves, err := m.Log.Entries(ctx, next, cp.Size)
		if err != nil {
			return nil, state, fmt.Errorf("rp: monitor: fetching leaves from %d: %w", next, err)
		}
		if len(leaves) == 0 || int64(len(leaves)) > cp.Size-next {
			return nil, state, monitorErr("asked for leaves %d to %d, got %d", next, cp.Size, len(leaves))
		}
		for _, leaf := range leaves {
			hs, err := tlog.StoredHashes(next, leaf, mapReader(hashes))
			if err != nil {
				return nil, state, fmt.Errorf("rp: monitor: hashing leaf %d: %w", next, err)
			}
			for i, h := range hs {
				hashes[tlog.StoredHashIndex(0, next)+int64(i)] = h
			}
			e, err := translog.ParseEntry(leaf)
			if err != nil {
				return nil, state, monitorErr("leaf %d: %v", next, err)
			}
			switch {
			case e.Version == translog.EntryVersion && v2From < 0:
				v2From = next
			case e.Version == translog.EntryVersion1 && v2From >= 0:
				return nil, state, monitorErr("leaf %d is version 1 after the first version 2 leaf (%d)", next, v2From)
			}
			if name, ok := m.watches(e, byIndex, watched); ok {
				res.Matched++
				// Only issuances put a certificate in someone's hands; a revocation
				// names a certificate whose issuance leaf was (or will be) examined,
				// so the owner need not list every certificate it has since replaced.
				issuance := e.Type == translog.EventRegister || e.Type == translog.EventRotate
				if issuance && !m.Known[e.Fingerprint] {
					res.Unknown = append(res.Unknown, Finding{Index: next, Entry: e, Watched: name})
				}
			}
			next++
			res.Scanned++
			prune(hashes, next)
		}
	}
	root, err := tlog.TreeHash(cp.Size, mapReader(hashes))
	if err != nil {
		return nil, state, fmt.Errorf("rp: monitor: computing the root: %w", err)
	}
	if root != cp.Hash {
		return nil, state, monitorErr("the leaves served hash to root %s, the signed checkpoint of size %d says %s", root, cp.Size, cp.Hash)
	}

	// The new state: the compact range of the verified tree.
	ns := MonitorState{Origin: cp.Origin, Size: cp.Size, Hash: hex.EncodeToString(cp.Hash[:]), V2From: v2From,
		Watched: append([]Watched(nil), watched...)}
	ns.Range = []string{}
	for _, id := range compactRange(cp.Size) {
		h := hashes[id]
		ns.Range = append(ns.Range, hex.EncodeToString(h[:]))
	}
	return res, ns, nil
}

// watches reports whether e is a leaf for one of the watched names, and
// which.
func (m Monitor) watches(e translog.Entry, byIndex map[string]string, watched []Watched) (string, bool) {
	switch e.Version {
	case translog.EntryVersion:
		for _, ix := range e.NameIndexes {
			if name, ok := byIndex[ix]; ok {
				return name, true
			}
		}
	case translog.EntryVersion1:
		for _, w := range watched {
			if e.Agent != "" && (e.Agent == w.Name || strings.HasSuffix(e.Agent, "."+w.Name)) {
				return w.Name, true
			}
		}
	}
	return "", false
}

// prune drops the hashes no later leaf or root of a tree of size ≥ n needs:
// everything but the compact range of size n.
func prune(m map[int64]tlog.Hash, n int64) {
	keep := compactRange(n)
	for id := range m {
		if !slices.Contains(keep, id) {
			delete(m, id)
		}
	}
}
