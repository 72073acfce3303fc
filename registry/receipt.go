package registry

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
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
	// own is the log's own known checkpoint, when it is that: its proofs
	// read the hashes kept with it first (knownCheckpoint.hashes: those of
	// the batch that sealed it, a fresh receipt's leaf's or a later one's).
	own *knownCheckpoint
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
	cp, found, err := r.cosignedReceiptCheckpoint(ctx, minSize)
	if err != nil || !found {
		return ownReceiptCheckpoint(own), err
	}
	return cp, nil
}

// cosignedReceiptCheckpoint returns the newest stored checkpoint of size ≥
// minSize that a witness has cosigned, with the cosignatures; found is false
// when there is none.
func (r *Registry) cosignedReceiptCheckpoint(ctx context.Context, minSize int64) (cp receiptCheckpoint, found bool, err error) {
	cosigned, err := r.newestCosigned(ctx, minSize)
	if err != nil {
		if e := dbErr("", err); !errors.Is(e, ErrNotFound) {
			return receiptCheckpoint{}, false, dbErr("cosigned checkpoint: reading", err)
		}
		return receiptCheckpoint{}, false, nil
	}
	signed, err := r.withCosignatures(ctx, []byte(cosigned.Note))
	if err != nil {
		return receiptCheckpoint{}, false, err
	}
	n, err := note.Open(signed, note.VerifierList(r.cfg.LogVerifier))
	if err != nil {
		return receiptCheckpoint{}, false, fmt.Errorf("registry: receipt: own checkpoint does not open: %v", err)
	}
	c, err := translog.ParseCheckpoint([]byte(n.Text))
	if err != nil {
		return receiptCheckpoint{}, false, fmt.Errorf("registry: receipt: own checkpoint: %v", err)
	}
	// Cosignatures are the signatures of other names: the log's own second
	// signature (its Ed25519 key, under the origin) is not a witness.
	witnessed := false
	for _, sig := range n.UnverifiedSigs {
		if sig.Name != c.Origin {
			witnessed = true
		}
	}
	return receiptCheckpoint{note: signed, size: c.Size, hash: c.Hash, witnessed: witnessed}, true, nil
}

// receiptAt builds the receipt of the opened leaf o against checkpoint cp
// (o.LeafIndex < cp.size). leaf is the leaf's bytes when the caller holds
// them (a fresh issuance), else nil and they are read.
func (r *Registry) receiptAt(ctx context.Context, o translog.Opened, leaf []byte, cp receiptCheckpoint) ([]byte, error) {
	e, err := r.receiptEntryAt(ctx, o, leaf, cp)
	return e.enc.Data, err
}

// receiptEntryAt is receiptAt, encoded so that it can be made again against
// a newer checkpoint (reprove).
func (r *Registry) receiptEntryAt(ctx context.Context, o translog.Opened, leaf []byte, cp receiptCheckpoint) (receiptEntry, error) {
	idx := o.LeafIndex
	if leaf == nil {
		leaves, err := r.tlog.entries(ctx, idx, idx+1)
		if err != nil {
			return receiptEntry{}, err
		}
		leaf = leaves[0]
	}
	e := receiptEntry{idx: idx, leafHash: translog.LeafHash(leaf)}
	proof, err := r.prove(ctx, idx, e.leafHash, cp)
	if err != nil {
		return receiptEntry{}, err
	}
	e.enc, err = translog.Receipt{LeafIndex: idx, Leaf: leaf, Opened: o, InclusionProof: proof,
		Checkpoint: cp.note, Witnessed: cp.witnessed}.Encode()
	if err != nil {
		return receiptEntry{}, err
	}
	e.cpSize, e.cpNote = cp.size, cp.note
	return e, nil
}

// reprove makes e's receipt against the checkpoint cp: its leaf's part is
// kept, the proof is made anew.
func (r *Registry) reprove(ctx context.Context, e receiptEntry, cp receiptCheckpoint) (receiptEntry, error) {
	proof, err := r.prove(ctx, e.idx, e.leafHash, cp)
	if err != nil {
		return receiptEntry{}, err
	}
	if e.enc, err = e.enc.WithProof(proof, cp.note, cp.witnessed); err != nil {
		return receiptEntry{}, err
	}
	e.cpSize, e.cpNote = cp.size, cp.note
	return e, nil
}

// prove returns the inclusion proof of leaf idx, whose leaf hash is
// leafHash, in cp's tree, checked against cp's root. It reads the hashes
// kept with cp (its own), then those earlier proofs read (proofHashCache),
// then the database. A stored checkpoint's tree is in the log, so the head
// is not read again; should the log have lost it (a database restored from
// a backup), the check finds out, and what this process kept of the lost
// tree is forgotten.
func (r *Registry) prove(ctx context.Context, idx int64, leafHash tlog.Hash, cp receiptCheckpoint) ([]tlog.Hash, error) {
	hs := cp.own.proofHashes(r.proofHashes.over(hashStore{r.store.db}))
	proof, err := translog.InclusionProof(ctx, hs, idx, cp.size)
	if err == nil {
		// The proof is checked against the checkpoint's root before anyone
		// is given it: stored hashes that do not match the checkpoint (a
		// restored or damaged database) make no receipt.
		if err = translog.CheckInclusion(proof, cp.size, cp.hash, idx, leafHash); err != nil {
			// What this process kept may be of a lost tree: the hashes, and
			// the receipts, whose leaf indexes may now be other leaves'.
			r.proofHashes.clear()
			r.verifyReceipts.clear()
			err = fmt.Errorf("%w: %v", errProofMismatch, err)
		}
	}
	if err != nil {
		if cp.own != nil && ctx.Err() == nil { // not a request given up
			r.tlog.forget(cp.own)
		}
		return nil, fmt.Errorf("registry: receipt of leaf %d against the checkpoint of size %d: %w", idx, cp.size, logErr("log: inclusion proof", err))
	}
	return proof, nil
}

// errProofMismatch: an inclusion proof made from stored hashes does not
// check against its checkpoint's root.
var errProofMismatch = errors.New("the proof does not match the checkpoint")

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
	res.Receipt = r.cachedReceipt(ctx, res.LogIndex, res.FingerprintSHA256)
	return res, nil
}

// Verify's receipts are kept per leaf (receiptCache). A receipt is
// evidence, not a status: one made against an older checkpoint stays
// valid. A kept receipt is answered for verifyReceiptMaxAge whatever the
// log did meanwhile; after that, against the checkpoint the next receipt
// would be made against — the newest cosigned one, read at most once per
// verifyReceiptMaxAge, else the log's own latest — which it is made
// against again when that is newer: its leaf's part is kept and only the
// proof is made (reprove, from hashes kept in memory where it can), so
// that a verify reads nothing from the database for a leaf it answered
// before while issuances grow the log. A witness cosignature arriving
// without log growth reaches the answers within verifyReceiptMaxAge.
const (
	verifyReceiptMaxAge    = time.Second
	verifyReceiptCacheSize = 4096
)

// receiptEntry is a receipt made for a verify, and what makes it again
// against another checkpoint.
type receiptEntry struct {
	enc      translog.EncodedReceipt
	idx      int64
	fp       string // the certificate's SHA-256 fingerprint (hex)
	leafHash tlog.Hash
	cpSize   int64  // the checkpoint it was made against
	cpNote   []byte // with its cosignatures
	at       time.Time
}

type receiptCache struct {
	mu     sync.Mutex
	m      map[int64]receiptEntry
	maxAge time.Duration // verifyReceiptMaxAge; a test may set 0
	// cosigned is the newest cosigned checkpoint as read at cosignedAt
	// (hasCosigned false: none); refreshing marks a read under way.
	cosigned    receiptCheckpoint
	hasCosigned bool
	cosignedAt  time.Time
	refreshing  bool
	// hits, proofs and reads count the receipts answered as kept, made
	// again against a newer checkpoint from the kept leaf, and made from the
	// stored opening and leaf (atr_verify_receipts_total).
	hits, proofs, reads atomic.Int64
}

// cachedReceipt is receiptOrNil through the verify receipt cache, for the
// leaf idx of the certificate with fingerprint fp. A kept receipt is of
// that certificate: an entry kept for another (the same index in a log
// restored from a backup and grown again) is not used.
func (r *Registry) cachedReceipt(ctx context.Context, idx *int64, fp string) []byte {
	if idx == nil {
		return nil
	}
	c := &r.verifyReceipts
	now := r.now()
	c.mu.Lock()
	e, kept := c.m[*idx]
	kept = kept && e.fp == fp
	maxAge := c.maxAge
	c.mu.Unlock()
	if kept && now.Sub(e.at) < maxAge && !now.Before(e.at) {
		c.hits.Add(1)
		return e.enc.Data
	}
	cp, err := r.verifyReceiptCheckpoint(ctx, *idx+1, now)
	if err != nil {
		r.noReceipt(err, *idx)
		if kept { // still evidence: better than none while the database is away
			c.hits.Add(1)
			return e.enc.Data
		}
		return nil
	}
	switch {
	case kept && e.cpSize == cp.size && bytes.Equal(e.cpNote, cp.note):
		c.hits.Add(1) // still against the checkpoint it would be made against
	case kept:
		made, err := r.reprove(ctx, e, cp)
		switch {
		case err == nil:
			c.proofs.Add(1)
			e = made
		case !errors.Is(err, errProofMismatch):
			r.noReceipt(err, *idx) // the database is away: the kept one is still evidence
			c.hits.Add(1)
			return e.enc.Data
		default:
			kept = false // made again from the database, whose tree cp is
		}
	}
	if !kept {
		o, err := r.opening(ctx, *idx)
		if err == nil {
			e, err = r.receiptEntryAt(ctx, o, nil, cp)
		}
		if err != nil {
			r.noReceipt(err, *idx)
			return nil
		}
		c.reads.Add(1)
		e.fp = fp
	}
	e.at = now
	c.mu.Lock()
	if c.m == nil || len(c.m) >= verifyReceiptCacheSize {
		c.m = map[int64]receiptEntry{}
	}
	c.m[*idx] = e
	c.mu.Unlock()
	return e.enc.Data
}

// clear forgets every kept receipt and the cosigned checkpoint.
func (c *receiptCache) clear() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.m = nil
	c.cosigned, c.hasCosigned, c.cosignedAt = receiptCheckpoint{}, false, time.Time{}
}

// verifyReceiptCheckpoint is checkpointFor for verify's receipts: the
// newest cosigned checkpoint is read at most once per verifyReceiptMaxAge
// (one caller reads it; the others meanwhile use the one read before).
func (r *Registry) verifyReceiptCheckpoint(ctx context.Context, minSize int64, now time.Time) (receiptCheckpoint, error) {
	c := &r.verifyReceipts
	c.mu.Lock()
	cp, found, at := c.cosigned, c.hasCosigned, c.cosignedAt
	stale := at.IsZero() || now.Sub(at) >= c.maxAge || now.Before(at)
	read := stale && (!c.refreshing || at.IsZero())
	if read {
		c.refreshing = true
	}
	c.mu.Unlock()
	if read {
		var err error
		cp, found, err = r.cosignedReceiptCheckpoint(ctx, 0)
		c.mu.Lock()
		c.refreshing = false
		if err == nil && !now.Before(c.cosignedAt) {
			c.cosigned, c.hasCosigned, c.cosignedAt = cp, found, now
		}
		c.mu.Unlock()
		if err != nil {
			return receiptCheckpoint{}, err
		}
	}
	if found && cp.size >= minSize {
		return cp, nil
	}
	own, err := r.tlog.covering(ctx, minSize)
	if err != nil {
		return receiptCheckpoint{}, err
	}
	return ownReceiptCheckpoint(own), nil
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
		iss.Receipt, err = r.receiptAt(ctx, leaf.opened, leaf.data, ownReceiptCheckpoint(own))
	}
	if err != nil {
		// The leaf was just committed with its opening: no receipt is a
		// fault, whatever the error (even "not found").
		r.log.WithError(err).WithField("log_index", leaf.opened.LeafIndex).Error("no receipt for a fresh issuance")
	}
	return iss
}
