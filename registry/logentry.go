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

// vrfCache remembers nameProofs per name: a VRF output never changes for a
// key, and each costs one RSA signature on the token per suffix.
type vrfCache struct {
	mu    sync.Mutex
	names map[string]nameProofs
}

// nameProofs computes (or recalls) the VRF proofs of name. It calls the
// token, so callers compute them before opening a transaction.
func (r *Registry) nameProofs(name string) (nameProofs, error) {
	if r.cfg.VRFSigner == nil {
		return nameProofs{}, fmt.Errorf("registry: no VRF key configured: %w", ErrUnavailable)
	}
	r.vrf.mu.Lock()
	np, ok := r.vrf.names[name]
	r.vrf.mu.Unlock()
	if ok {
		return np, nil
	}
	for _, n := range translog.NameSuffixes(name) {
		ix, proof, err := translog.VRFProve(r.cfg.VRFSigner, r.cfg.TrustDomain, n)
		if err != nil {
			return nameProofs{}, fmt.Errorf("registry: VRF of %s: %v: %w", n, err, ErrUnavailable)
		}
		np.indexes = append(np.indexes, hex.EncodeToString(ix[:]))
		np.proofs = append(np.proofs, proof)
	}
	r.vrf.mu.Lock()
	if r.vrf.names == nil || len(r.vrf.names) >= maxCachedNames {
		r.vrf.names = make(map[string]nameProofs)
	}
	r.vrf.names[name] = np
	r.vrf.mu.Unlock()
	return np, nil
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
