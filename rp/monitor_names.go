package rp

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/agent-trust-registry/atr/ca"
)

// VRFIndexer asks the registry for a name's VRF index and proof (POST
// /v1/log/vrf, with an owner's API key). Its answer is not trusted:
// Monitor.Scan checks the proof (Monitor.CheckWatched).
type VRFIndexer interface {
	VRFIndex(ctx context.Context, name string) (Watched, error)
}

// Errors of ResolveWatched that are the caller's, not the log's.
var (
	// ErrWatchName: a watched name is not a valid agent name or namespace.
	ErrWatchName = errors.New("rp: invalid watched name")
	// ErrWatchIndex: a watched name is not in the state and there is no
	// VRFIndexer to learn its index.
	ErrWatchIndex = errors.New("rp: watched name not in the state and no way to learn its index")
)

// ResolveWatched returns the watched names (normalized, duplicates
// dropped) with their VRF indexes and proofs: from state when it holds the
// name, else from idx (which may be nil when state holds them all). An
// answer of idx for another name is refused (wrapping ErrMonitor).
func ResolveWatched(ctx context.Context, idx VRFIndexer, names []string, state MonitorState) ([]Watched, error) {
	var out []Watched
	for _, raw := range names {
		name, err := ca.NormalizeAgentName(raw)
		if err != nil {
			return nil, fmt.Errorf("%w %q: %w", ErrWatchName, raw, err)
		}
		if slices.ContainsFunc(out, func(w Watched) bool { return w.Name == name }) {
			continue
		}
		if i := slices.IndexFunc(state.Watched, func(w Watched) bool { return w.Name == name }); i >= 0 {
			out = append(out, state.Watched[i])
			continue
		}
		if idx == nil {
			return nil, fmt.Errorf("%w: %s", ErrWatchIndex, name)
		}
		w, err := idx.VRFIndex(ctx, name)
		if err != nil {
			return nil, fmt.Errorf("rp: getting the VRF index of %s: %w", name, err)
		}
		if w.Name != name {
			return nil, monitorErr("asked for the index of %s, the server answered for %s", name, w.Name)
		}
		out = append(out, w)
	}
	return out, nil
}
