package rp

// audit.go: the auditor's check of the transparency log (atr log verify):
// the latest checkpoint is signed by the pinned log key, it extends the last
// checkpoint seen (no rollback, no fork), every entry is canonical and the
// entries hash to the signed root, and a given certificate's issuance is
// included.

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/agent-trust-registry/atr/ca"
	"github.com/agent-trust-registry/atr/registry/translog"
)

// ErrAudit is wrapped by every *AuditError: the log served something that
// does not verify.
var ErrAudit = errors.New("rp: log audit failed")

// AuditReason is the kind of an AuditError.
type AuditReason string

// The reasons of an AuditError.
const (
	AuditBadSignature   AuditReason = "bad_signature" // the checkpoint does not verify with the pinned key
	AuditWrongOrigin    AuditReason = "wrong_origin"  // the key names another origin than the one asked
	AuditBadPrevious    AuditReason = "bad_previous"  // the earlier checkpoint is not signed by the pinned key
	AuditRollback       AuditReason = "rollback"      // the tree shrank
	AuditFork           AuditReason = "fork"          // two roots for one size
	AuditInconsistent   AuditReason = "inconsistent"  // the consistency proof does not verify
	AuditBadEntry       AuditReason = "bad_entry"     // an entry is not a canonical log entry
	AuditEntryOrder     AuditReason = "entry_order"   // a version 1 entry after the first version 2 entry
	AuditRootMismatch   AuditReason = "root_mismatch" // the entries do not hash to the signed root
	AuditBadAnswer      AuditReason = "bad_answer"    // the log answered something else than asked
	AuditNotFound       AuditReason = "not_found"     // no issuance entry for the certificate
	AuditEntryChanged   AuditReason = "entry_changed" // the entry differs between two reads, or holds another certificate
	AuditNotIncluded    AuditReason = "not_included"  // the inclusion proof does not verify
	AuditBadProofFormat AuditReason = "bad_proof"     // a proof hash of the wrong size
)

// AuditError is a refusal by the Auditor, with the evidence: what a third
// party needs to see the log misbehave.
type AuditError struct {
	Reason AuditReason
	// Index is the entry concerned, -1 if none.
	Index int64
	// Entry is that entry's bytes as served, if any.
	Entry []byte
	// Checkpoint is the signed checkpoint note being checked; Previous the
	// earlier one it was compared with.
	Checkpoint, Previous []byte
	// Want and Got are the expected and computed hashes (a root, or a leaf
	// hash), when the refusal is a hash mismatch.
	Want, Got tlog.Hash
	// Proof is the consistency or inclusion proof that failed.
	Proof []tlog.Hash
	// Err is the underlying error, if any.
	Err error
	msg string
}

// Detail is the message without the package prefix.
func (e *AuditError) Detail() string { return e.msg }

func (e *AuditError) Error() string { return "rp: log audit: " + e.msg }

// Unwrap makes errors.Is(err, ErrAudit) true.
func (e *AuditError) Unwrap() []error {
	if e.Err != nil {
		return []error{ErrAudit, e.Err}
	}
	return []error{ErrAudit}
}

func auditErr(reason AuditReason, index int64, format string, args ...any) *AuditError {
	return &AuditError{Reason: reason, Index: index, msg: fmt.Sprintf(format, args...)}
}

// AuditLog is what the Auditor reads of a log: LogSource and inclusion
// proofs (GET /v1/log/proof/inclusion). Nothing it returns is trusted.
type AuditLog interface {
	LogSource
	// InclusionProof returns the proof that leaf index is in the tree of
	// size size.
	InclusionProof(ctx context.Context, index, size int64) (tlog.RecordProof, error)
}

// Auditor audits a log against a pinned key.
type Auditor struct {
	Log AuditLog
	Key LogKey
	// Origin is the log's origin for a PEM key; "": the key's own (verifier
	// key strings), else the previous checkpoint's, else the served
	// checkpoint's first line (the key, not the name, is what is pinned).
	Origin string
}

// CheckedCheckpoint is what Auditor.Checkpoint established.
type CheckedCheckpoint struct {
	Checkpoint translog.Checkpoint
	// Note is the signed checkpoint as served: what to keep for the next
	// run's previous.
	Note []byte
	// Previous is the earlier checkpoint it was proven to extend, if one
	// was given.
	Previous *translog.Checkpoint
}

// Checkpoint fetches the latest checkpoint and checks that it is signed by
// the pinned key and, when previous (the signed note kept from an earlier
// run) is not nil, that it extends previous: not smaller (rollback), not
// another root for the same size (fork), and a consistency proof that
// verifies for a larger tree. Refusals are *AuditError.
func (a Auditor) Checkpoint(ctx context.Context, previous []byte) (*CheckedCheckpoint, error) {
	msg, err := a.Log.Checkpoint(ctx)
	if err != nil {
		return nil, fmt.Errorf("rp: log audit: fetching the checkpoint: %w", err)
	}
	origin := a.Origin
	if origin == "" {
		origin = a.Key.Origin()
	}
	if origin == "" && previous != nil {
		origin = NoteOrigin(previous)
	}
	if origin == "" {
		origin = NoteOrigin(msg)
	}
	v, err := a.Key.Verifier(origin)
	if err != nil {
		return nil, err
	}

	// Step 1: the checkpoint is signed by the pinned key.
	cp, err := translog.OpenCheckpoint(msg, v)
	if err != nil {
		e := auditErr(AuditBadSignature, -1, "the checkpoint does not verify with the pinned log key (origin %q): %v", origin, err)
		e.Checkpoint, e.Err = msg, err
		return nil, e
	}
	res := &CheckedCheckpoint{Checkpoint: cp, Note: msg}
	if previous == nil {
		return res, nil
	}

	// Step 2: it extends the last checkpoint seen.
	old, err := translog.OpenCheckpoint(previous, v)
	if err != nil {
		e := auditErr(AuditBadPrevious, -1, "the earlier checkpoint is not signed by the pinned key: %v", err)
		e.Previous, e.Err = previous, err
		return nil, e
	}
	res.Previous = &old
	fail := func(e *AuditError) (*CheckedCheckpoint, error) {
		e.Checkpoint, e.Previous = msg, previous
		return nil, e
	}
	switch {
	case cp.Size < old.Size:
		return fail(auditErr(AuditRollback, -1, "rollback: the log shrank from %d to %d entries", old.Size, cp.Size))
	case cp.Size == old.Size:
		if cp.Hash != old.Hash {
			e := auditErr(AuditFork, -1, "fork: two different trees of size %d (root %s, earlier %s)", cp.Size, cp.Hash, old.Hash)
			e.Want, e.Got = old.Hash, cp.Hash
			return fail(e)
		}
	case old.Size > 0:
		p, err := a.Log.ConsistencyProof(ctx, old.Size, cp.Size)
		if err != nil {
			return nil, fmt.Errorf("rp: log audit: fetching the consistency proof: %w", err)
		}
		if err := translog.CheckConsistency(p, cp.Size, cp.Hash, old.Size, old.Hash); err != nil {
			e := auditErr(AuditInconsistent, -1, "the tree of size %d does not extend the one of size %d seen earlier: %v", cp.Size, old.Size, err)
			e.Proof, e.Err = p, err
			return fail(e)
		}
	}
	return res, nil
}

// Found is what Auditor.Entries established.
type Found struct {
	// Full: every entry was read, is canonical, the version cut-over holds
	// and they hash to the root.
	Full bool
	// Index is the issuance entry of the certificate looked for (register,
	// rotate or server_cert with its fingerprint), -1 if none was.
	Index int64
	Entry translog.Entry
	// RevokedAt are the revoke entries of the certificate (Full only).
	RevokedAt []int64
}

// issuance reports whether e records the issuance of the certificate of
// fingerprint fp: an agent's (register, rotate) or the registry's TLS
// server certificate (server_cert).
// Revoke and agent_card entries (a signed A2A card's digest) name the
// certificate too, but record no issuance.
func issuance(e translog.Entry, fp string) bool {
	if e.Fingerprint != fp {
		return false
	}
	switch e.Type {
	case translog.EventRegister, translog.EventRotate, translog.EventServerCert:
		return true
	}
	return false
}

// Entries checks the entries of the tree of cc:
//
//   - with full: it reads every entry, checks each is a canonical log entry
//     (translog.ParseEntry), that no version 1 entry follows the first
//     version 2 entry (docs/transparency.md, "The log before version 2"),
//     and that together they hash to the signed root;
//   - with cert: it finds the issuance entry of cert (register, rotate or
//     server_cert with its SHA-256 fingerprint; version 2 agent entries
//     carry no name or certificate: the fingerprint is how an entry is
//     found), reads it again, checks that the certificate it carries, if
//     any, is cert, and checks its inclusion proof against the signed root.
//
// A certificate with no issuance entry is an *AuditError AuditNotFound.
func (a Auditor) Entries(ctx context.Context, cc *CheckedCheckpoint, full bool, cert *x509.Certificate) (*Found, error) {
	cp := cc.Checkpoint
	res := &Found{Full: full, Index: -1}
	fp := ""
	if cert != nil {
		fp = ca.Fingerprint(cert)
	}
	fail := func(e *AuditError) (*Found, error) {
		e.Checkpoint = cc.Note
		return nil, e
	}
	failOr := func(err error) (*Found, error) {
		var ae *AuditError
		if errors.As(err, &ae) {
			return fail(ae)
		}
		return nil, err
	}
	if full {
		var stored []tlog.Hash
		reader := tlog.HashReaderFunc(func(idx []int64) ([]tlog.Hash, error) {
			out := make([]tlog.Hash, len(idx))
			for j, x := range idx {
				out[j] = stored[x]
			}
			return out, nil
		})
		var order entryOrder
		err := a.scan(ctx, cp.Size, func(i int64, data []byte) error {
			e, err := translog.ParseEntry(data)
			if err != nil {
				ae := auditErr(AuditBadEntry, i, "entry %d is not a canonical log entry: %v", i, err)
				ae.Entry, ae.Err = data, err
				return ae
			}
			if err := order.check(i, e, data); err != nil {
				return err
			}
			hs, err := tlog.StoredHashes(i, data, reader)
			if err != nil {
				return fmt.Errorf("rp: log audit: hashing entry %d: %w", i, err)
			}
			stored = append(stored, hs...)
			if fp != "" && e.Fingerprint == fp {
				switch {
				case issuance(e, fp):
					if res.Index < 0 {
						res.Index, res.Entry = i, e
					}
				case e.Type == translog.EventRevoke:
					res.RevokedAt = append(res.RevokedAt, i)
				}
			}
			return nil
		})
		if err != nil {
			return failOr(err)
		}
		root, err := tlog.TreeHash(cp.Size, reader)
		if err != nil {
			return nil, fmt.Errorf("rp: log audit: computing the root: %w", err)
		}
		if root != cp.Hash {
			e := auditErr(AuditRootMismatch, -1, "the %d entries served hash to root %s, but the signed checkpoint says %s", cp.Size, root, cp.Hash)
			e.Want, e.Got = cp.Hash, root
			return fail(e)
		}
	}
	if fp == "" {
		return res, nil
	}

	// The certificate's issuance entry, found without --full.
	if res.Index < 0 && !full {
		errFound := errors.New("found")
		var order entryOrder
		err := a.scan(ctx, cp.Size, func(i int64, data []byte) error {
			e, err := translog.ParseEntry(data)
			if err != nil {
				return nil // only --full insists on canonical entries
			}
			if err := order.check(i, e, data); err != nil {
				return err
			}
			if issuance(e, fp) {
				res.Index, res.Entry = i, e
				return errFound
			}
			return nil
		})
		if err != nil && !errors.Is(err, errFound) {
			return failOr(err)
		}
	}
	if res.Index < 0 {
		return fail(auditErr(AuditNotFound, -1, "no issuance entry for the certificate (SHA-256 %s) in the log of size %d", fp, cp.Size))
	}
	i := res.Index
	entries, err := a.Log.Entries(ctx, i, i+1)
	if err != nil {
		return nil, fmt.Errorf("rp: log audit: fetching the certificate's log entry: %w", err)
	}
	if len(entries) != 1 {
		return fail(auditErr(AuditBadAnswer, i, "the log answered %d entries for index %d", len(entries), i))
	}
	leaf := entries[0]
	e, err := translog.ParseEntry(leaf)
	if err != nil || !issuance(e, fp) {
		ae := auditErr(AuditEntryChanged, i, "entry %d changed between reads", i)
		ae.Entry = leaf
		return fail(ae)
	}
	if len(e.Certificate) > 0 && !bytes.Equal(e.Certificate, cert.Raw) {
		ae := auditErr(AuditEntryChanged, i, "entry %d carries a different certificate with the same fingerprint", i)
		ae.Entry = leaf
		return fail(ae)
	}
	res.Entry = e
	proof, err := a.Log.InclusionProof(ctx, i, cp.Size)
	if err != nil {
		return nil, fmt.Errorf("rp: log audit: fetching the inclusion proof: %w", err)
	}
	if err := translog.CheckInclusion(proof, cp.Size, cp.Hash, i, translog.LeafHash(leaf)); err != nil {
		ae := auditErr(AuditNotIncluded, i, "entry %d is not included in the signed tree of size %d: %v", i, cp.Size, err)
		ae.Entry, ae.Proof, ae.Got, ae.Want, ae.Err = leaf, proof, translog.LeafHash(leaf), cp.Hash, err
		return fail(ae)
	}
	return res, nil
}

// entryOrder enforces the cut-over from entry version 1 to version 2:
// version 1 leaves are accepted only before the first version 2 leaf.
type entryOrder struct {
	firstV2 int64 // index of the first version 2 leaf, when seen
	seen    bool
}

func (o *entryOrder) check(i int64, e translog.Entry, data []byte) error {
	switch {
	case e.Version == translog.EntryVersion && !o.seen:
		o.firstV2, o.seen = i, true
	case e.Version == translog.EntryVersion1 && o.seen:
		ae := auditErr(AuditEntryOrder, i, "entry %d is a version 1 entry after the first version 2 entry (%d): the log went back to publishing names", i, o.firstV2)
		ae.Entry = data
		return ae
	}
	return nil
}

// scan calls f for every entry [0, size) in order, refusing answers that
// are empty or longer than asked.
func (a Auditor) scan(ctx context.Context, size int64, f func(i int64, data []byte) error) error {
	for next := int64(0); next < size; {
		entries, err := a.Log.Entries(ctx, next, size)
		if err != nil {
			return fmt.Errorf("rp: log audit: fetching log entries from %d: %w", next, err)
		}
		if len(entries) == 0 || int64(len(entries)) > size-next {
			return auditErr(AuditBadAnswer, next, "asked for entries %d to %d, got %d", next, size, len(entries))
		}
		for _, data := range entries {
			if err := f(next, data); err != nil {
				return err
			}
			next++
		}
	}
	return nil
}

// NoteOrigin is the first line of a note: a checkpoint's origin.
func NoteOrigin(msg []byte) string {
	line, _, _ := bytes.Cut(msg, []byte("\n"))
	return string(line)
}

// ProofHashes converts a proof as the API serves it (raw 32-byte hashes)
// to tlog hashes; a hash of another size is an *AuditError.
func ProofHashes(raw [][]byte) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(raw))
	for i, h := range raw {
		if len(h) != len(tlog.Hash{}) {
			return nil, auditErr(AuditBadProofFormat, -1, "proof hash %d has %d bytes, want %d", i, len(h), len(tlog.Hash{}))
		}
		copy(out[i][:], h)
	}
	return out, nil
}
