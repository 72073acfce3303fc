package registry

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"sync"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/agent-trust-registry/atr/registry/translog"
)

// This file writes the public, blinded log leaves of agent events (entry
// version 2, docs/transparency.md) and their private openings.

// maxCachedNames bounds the VRF proof cache; past it the cache starts over.
const maxCachedNames = 10_000

// nameProofs are the VRF indexes (hex) and proofs of an agent name and each
// of its parent suffixes, longest first.
type nameProofs struct {
	indexes []string
	proofs  [][]byte
}

// vrfOutput is the VRF of one name.
type vrfOutput struct {
	index [32]byte
	proof []byte
}

// vrfCache remembers the VRF of each name and suffix it has computed: the
// output never changes for a key, each costs an RSA signature on the token,
// and sibling names (x1.team.acme, x2.team.acme) share their suffixes.
type vrfCache struct {
	mu    sync.Mutex
	names map[string]vrfOutput
}

// vrfOf computes (or recalls) the VRF of one normalized name. It calls the
// token, so callers compute it before opening a transaction.
func (r *Registry) vrfOf(name string) (vrfOutput, error) {
	if r.cfg.VRFSigner == nil {
		return vrfOutput{}, fmt.Errorf("registry: no VRF key configured: %w", ErrUnavailable)
	}
	r.vrf.mu.Lock()
	out, ok := r.vrf.names[name]
	r.vrf.mu.Unlock()
	if ok {
		return out, nil
	}
	ix, proof, err := translog.VRFProve(r.cfg.VRFSigner, r.cfg.TrustDomain, name)
	if err != nil {
		return vrfOutput{}, fmt.Errorf("registry: VRF of %s: %v: %w", name, err, ErrUnavailable)
	}
	out = vrfOutput{index: ix, proof: proof}
	r.vrf.mu.Lock()
	if r.vrf.names == nil || len(r.vrf.names) >= maxCachedNames {
		r.vrf.names = make(map[string]vrfOutput)
	}
	r.vrf.names[name] = out
	r.vrf.mu.Unlock()
	return out, nil
}

// nameProofs computes (or recalls) the VRF proofs of name and its suffixes.
func (r *Registry) nameProofs(name string) (nameProofs, error) {
	var np nameProofs
	for _, n := range translog.NameSuffixes(name) {
		out, err := r.vrfOf(n)
		if err != nil {
			return nameProofs{}, err
		}
		np.indexes = append(np.indexes, hex.EncodeToString(out.index[:]))
		np.proofs = append(np.proofs, out.proof)
	}
	return np, nil
}

// nameProofsAsync starts nameProofs(name) on its own goroutine and returns
// the function that waits for it and stores the proofs in out. Call the
// function before reading out; if it is never called the result is dropped.
func (r *Registry) nameProofsAsync(name string, out *nameProofs) func() error {
	type result struct {
		np  nameProofs
		err error
	}
	done := make(chan result, 1)
	go func() {
		np, err := r.nameProofs(name)
		done <- result{np, err}
	}()
	return func() error {
		res := <-done
		*out = res.np
		return res.err
	}
}

// agentEvent is one agent event for the log.
type agentEvent struct {
	typ      translog.EventType
	time     time.Time
	name     string
	cert     *x509.Certificate
	proofs   nameProofs
	previous string // rotate: the replaced certificate's fingerprint
	reason   string // revoke
	card     string // agent_card: SHA-256 of the card's canonical form, hex
}

// appendAgentEvent appends the blinded leaf of ev in tx and stores its
// opening beside it, and returns the leaf index.
func (r *Registry) appendAgentEvent(ctx context.Context, tx *sqlx.Tx, ev agentEvent) (int64, error) {
	fp := sha256.Sum256(ev.cert.Raw)
	idx, err := r.tlog.appendTx(ctx, tx, translog.Entry{
		Version:     translog.EntryVersion,
		Type:        ev.typ,
		Time:        ev.time,
		Fingerprint: hex.EncodeToString(fp[:]),
		IssuerKeyID: hex.EncodeToString(ev.cert.AuthorityKeyId),
		NameIndexes: ev.proofs.indexes,
		Previous:    ev.previous,
		Reason:      ev.reason,
		CardDigest:  ev.card,
	})
	if err != nil {
		return 0, err
	}
	opened, err := translog.Opened{LeafIndex: idx, Name: ev.name, Certificate: ev.cert.Raw, VRFProofs: ev.proofs.proofs}.Marshal()
	if err != nil {
		return 0, fmt.Errorf("registry: log: opening of leaf %d: %w", idx, err)
	}
	if _, err := tx.ExecContext(ctx, tx.Rebind(`INSERT INTO log_openings (idx, agent_name, opened) VALUES (?, ?, ?)`),
		idx, ev.name, string(opened)); err != nil {
		return 0, dbErr("log: storing the opening", err)
	}
	return idx, nil
}
