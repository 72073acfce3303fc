package registry

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/agent-trust-registry/atr/registry/translog"
)

// OpenedEntry is one of an agent's log leaves, opened for its owner: the
// opening, and a receipt.
type OpenedEntry struct {
	LeafIndex int64
	Opened    []byte // translog.Opened, JSON
	Receipt   []byte // translog.Receipt, JSON
}

// opening reads the stored opening of leaf idx; ErrNotFound for a leaf
// without one (a ceremony entry, or a version 1 leaf).
func (r *Registry) opening(ctx context.Context, idx int64) (translog.Opened, error) {
	var opened string
	if err := r.store.db.GetContext(ctx, &opened, r.store.db.Rebind(`SELECT opened FROM log_openings WHERE idx = ?`), idx); err != nil {
		return translog.Opened{}, dbErr("log: reading an opening", err)
	}
	o, err := translog.ParseOpened([]byte(opened))
	if err != nil {
		return translog.Opened{}, fmt.Errorf("registry: log: stored opening of leaf %d: %v", idx, err)
	}
	if o.LeafIndex != idx {
		// A damaged or moved row: the receipt would prove another leaf.
		return translog.Opened{}, fmt.Errorf("registry: log: stored opening of leaf %d names leaf %d", idx, o.LeafIndex)
	}
	return o, nil
}

// receipt builds the receipt of leaf idx (docs/transparency.md): the leaf, its
// opening (every VRF proof), a checkpoint covering it — the newest one a
// witness has cosigned, with the cosignatures, else one of the log's own
// (signed now if none covers the leaf yet) — and the inclusion proof for
// that checkpoint's size.
func (r *Registry) receipt(ctx context.Context, idx int64) ([]byte, error) {
	o, err := r.opening(ctx, idx)
	if err != nil {
		return nil, err
	}
	cp, err := r.checkpointFor(ctx, idx+1)
	if err != nil {
		return nil, err
	}
	return r.receiptAt(ctx, o, nil, cp)
}

// receiptCheckpoint is a checkpoint a receipt is made against.
type receiptCheckpoint struct {
	note      []byte // with cosignature lines
	size      int64
	hash      tlog.Hash // the root the note states
	witnessed bool
	own       *knownCheckpoint // the log's own known checkpoint, when it is that
	// fresh: the receipt is of a leaf this process just appended, proved
	// from the hashes kept with the checkpoint (knownCheckpoint.hashes: those
	// of the batch that sealed it, this leaf's or a later one's) where they
	// hold them; every other receipt reads them from the database.
	fresh bool
}

// ownReceiptCheckpoint is the log's own checkpoint k as a receipt's.
func ownReceiptCheckpoint(k *knownCheckpoint) receiptCheckpoint {
	return receiptCheckpoint{note: []byte(k.Note), size: k.Size, hash: k.hash, own: k}
}

// checkpointFor returns a checkpoint of size ≥ minSize: the newest one with a
// witness cosignature, else the log's own checkpoint that covering finds
// (usually without reading the database). ErrNotFound: the log is smaller.
func (r *Registry) checkpointFor(ctx context.Context, minSize int64) (receiptCheckpoint, error) {
	own, err := r.tlog.covering(ctx, minSize)
	if err != nil {
		return receiptCheckpoint{}, err
	}
	var cosigned storedCheckpoint
	err = r.store.db.GetContext(ctx, &cosigned, r.store.db.Rebind(`SELECT size, note FROM log_checkpoints c
		WHERE size >= ? AND EXISTS (SELECT 1 FROM witness_cosignatures w WHERE w.size = c.size)
		ORDER BY size DESC LIMIT 1`), minSize)
	if err != nil {
		if e := dbErr("", err); !errors.Is(e, ErrNotFound) {
			return receiptCheckpoint{}, dbErr("cosigned checkpoint: reading", err)
		}
		return ownReceiptCheckpoint(own), nil
	}
	cp, err := r.withCosignatures(ctx, []byte(cosigned.Note))
	if err != nil {
		return receiptCheckpoint{}, err
	}
	n, err := note.Open(cp, note.VerifierList(r.cfg.LogVerifier))
	if err != nil {
		return receiptCheckpoint{}, fmt.Errorf("registry: receipt: own checkpoint does not open: %v", err)
	}
	c, err := translog.ParseCheckpoint([]byte(n.Text))
	if err != nil {
		return receiptCheckpoint{}, fmt.Errorf("registry: receipt: own checkpoint: %v", err)
	}
	// Cosignatures are the signatures of other names: the log's own second
	// signature (its Ed25519 key, under the origin) is not a witness.
	witnessed := false
	for _, sig := range n.UnverifiedSigs {
		if sig.Name != c.Origin {
			witnessed = true
		}
	}
	return receiptCheckpoint{note: cp, size: c.Size, hash: c.Hash, witnessed: witnessed}, nil
}

// receiptAt builds the receipt of the opened leaf o against checkpoint cp
// (o.LeafIndex < cp.size). leaf is the leaf's bytes when the caller holds
// them (a fresh issuance), else nil and they are read.
func (r *Registry) receiptAt(ctx context.Context, o translog.Opened, leaf []byte, cp receiptCheckpoint) ([]byte, error) {
	idx := o.LeafIndex
	if leaf == nil {
		leaves, err := r.tlog.entries(ctx, idx, idx+1)
		if err != nil {
			return nil, err
		}
		leaf = leaves[0]
	}
	// A stored checkpoint's tree is in the log, so the head is not read
	// again; should the log have lost it (a database restored from a
	// backup), the check below finds out.
	var hs translog.HashStore = hashStore{r.store.db}
	if cp.fresh {
		hs = cp.own.proofHashes(r.store.db)
	}
	proof, err := translog.InclusionProof(ctx, hs, idx, cp.size)
	if err == nil {
		// The proof is checked against the checkpoint's root before anyone
		// is given it: stored hashes that do not match the checkpoint (a
		// restored or damaged database) make no receipt.
		err = translog.CheckInclusion(proof, cp.size, cp.hash, idx, translog.LeafHash(leaf))
	}
	if err != nil {
		if cp.own != nil && ctx.Err() == nil { // not a request given up
			r.tlog.forget(cp.own)
		}
		return nil, fmt.Errorf("registry: receipt of leaf %d against the checkpoint of size %d: %w", idx, cp.size, logErr("log: inclusion proof", err))
	}
	return translog.Receipt{LeafIndex: idx, Leaf: leaf, Opened: o, InclusionProof: proof,
		Checkpoint: cp.note, Witnessed: cp.witnessed}.Marshal()
}

// receiptOrNil is receipt for answers where a receipt is a bonus (issuance,
// verify): a failure is logged, never returned.
func (r *Registry) receiptOrNil(ctx context.Context, idx *int64) []byte {
	if idx == nil {
		return nil
	}
	b, err := r.receipt(ctx, *idx)
	if err != nil {
		r.noReceipt(err, *idx)
		return nil
	}
	return b
}

// noReceipt logs why an answer goes without its receipt (a leaf without an
// opening, ErrNotFound, is no news).
func (r *Registry) noReceipt(err error, idx int64) {
	if !errors.Is(err, ErrNotFound) {
		r.log.WithError(err).WithField("log_index", idx).Warn("no receipt for this answer")
	}
}

// OpenedEntries returns every log leaf of the agent name, oldest first, opened,
// each with a fresh receipt. The caller is the agent's owner (agents:read) or an
// admin; other owners' agents are ErrNotFound, like missing ones.
func (r *Registry) OpenedEntries(ctx context.Context, a Actor, name string) ([]OpenedEntry, error) {
	agent, err := r.authorizeAgent(ctx, a, ActionGetAgent, name, false)
	if err != nil {
		return nil, err
	}
	var idxs []int64
	if err := r.store.db.SelectContext(ctx, &idxs, r.store.db.Rebind(`SELECT idx FROM log_openings WHERE agent_name = ? ORDER BY idx`), agent.Name); err != nil {
		return nil, dbErr("log: listing openings", err)
	}
	out := make([]OpenedEntry, 0, len(idxs))
	if len(idxs) == 0 {
		return out, nil
	}
	cp, err := r.checkpointFor(ctx, idxs[len(idxs)-1]+1) // one checkpoint for the whole answer
	if err != nil {
		return nil, err
	}
	for _, idx := range idxs {
		o, err := r.opening(ctx, idx)
		if err != nil {
			return nil, err
		}
		if o.Name != agent.Name {
			return nil, fmt.Errorf("registry: log: stored opening of leaf %d is %s's, listed under %s", idx, o.Name, agent.Name)
		}
		opened, err := o.Marshal()
		if err != nil {
			return nil, err
		}
		rc, err := r.receiptAt(ctx, o, nil, cp)
		if err != nil {
			return nil, err
		}
		out = append(out, OpenedEntry{LeafIndex: idx, Opened: opened, Receipt: rc})
	}
	return out, nil
}

// VerifyWithReceipt is Verify, and when the certificate is one the registry
// issued and logged as a version 2 leaf, the result carries that leaf's
// receipt. The caller holds the certificate, and from it alone can find its
// public leaf (by fingerprint) and so the same name indexes: the receipt's
// proofs add the name, which the certificate already holds.
func (r *Registry) VerifyWithReceipt(ctx context.Context, leafPEM, chainPEM []byte) (*VerifyResult, error) {
	res, err := r.Verify(ctx, leafPEM, chainPEM)
	if err != nil || res.Agent == "" {
		return res, err
	}
	res.Receipt = r.cachedReceipt(ctx, res.LogIndex)
	return res, nil
}

// Verify's receipts are cached per leaf while the log has not grown (the
// notifier is live and reports the same size) and for at most
// verifyReceiptMaxAge, so that a witness cosignature arriving without log
// growth reaches the next answers soon; a repeated verify then reads
// nothing from the database. A receipt is evidence, not a status: an older
// one stays valid.
const (
	verifyReceiptMaxAge    = time.Second
	verifyReceiptCacheSize = 4096
)

type receiptEntry struct {
	receipt []byte
	size    int64
	at      time.Time
}

type receiptCache struct {
	mu sync.Mutex
	m  map[int64]receiptEntry
}

// cachedReceipt is receiptOrNil through the verify receipt cache.
func (r *Registry) cachedReceipt(ctx context.Context, idx *int64) []byte {
	if idx == nil {
		return nil
	}
	c := &r.verifyReceipts
	now := time.Now()
	size := r.notify.logSize()
	if _, live := r.notify.revocationSeq(); live {
		c.mu.Lock()
		e, ok := c.m[*idx]
		c.mu.Unlock()
		if ok && e.size == size && now.Sub(e.at) < verifyReceiptMaxAge {
			return e.receipt
		}
	}
	b := r.receiptOrNil(ctx, idx)
	if b == nil {
		return nil
	}
	c.mu.Lock()
	if c.m == nil || len(c.m) >= verifyReceiptCacheSize {
		c.m = map[int64]receiptEntry{}
	}
	c.m[*idx] = receiptEntry{receipt: b, size: size, at: now}
	c.mu.Unlock()
	return b
}

// withReceipt adds the opening and receipt of a fresh issuance, made from
// the leaf it appended: the leaf and its opening are not read back. Its
// checkpoint is the log's own: the one its batch sealed when the log still
// keeps it (sealedCovering), else the latest (covering). Witnesses cosign a
// checkpoint after it is stored, so none has cosigned one covering a leaf
// committed a moment ago, and looking for one costs a query per issuance.
// The receipt verify and the receipt routes return later carry the
// cosigned one.
func (r *Registry) withReceipt(ctx context.Context, iss *Issued, leaf loggedLeaf) *Issued {
	iss.Opened = leaf.openedJSON
	var err error
	own := r.tlog.sealedCovering(leaf.opened.LeafIndex + 1)
	if own == nil {
		own, err = r.tlog.covering(ctx, leaf.opened.LeafIndex+1)
	}
	if err == nil {
		cp := ownReceiptCheckpoint(own)
		cp.fresh = true
		iss.Receipt, err = r.receiptAt(ctx, leaf.opened, leaf.data, cp)
	}
	if err != nil {
		// The leaf was just committed with its opening: no receipt is a
		// fault, whatever the error (even "not found").
		r.log.WithError(err).WithField("log_index", leaf.opened.LeafIndex).Error("no receipt for a fresh issuance")
	}
	return iss
}
