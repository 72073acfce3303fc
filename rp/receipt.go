package rp

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/agent-trust-registry/atr/ca"
	"github.com/agent-trust-registry/atr/registry/translog"
)

// ErrReceipt is wrapped by every refusal of ReceiptVerifier.Verify (a
// *ReceiptError); callers branch with errors.Is or read the reason with
// errors.As.
var ErrReceipt = errors.New("rp: receipt refused")

// ReceiptReason is the stable cause of a refused receipt.
type ReceiptReason string

// Receipt refusal reasons, in the order Verify checks them.
const (
	// ReasonMalformed: the receipt does not parse (translog.ParseReceipt),
	// or the certificate does not.
	ReasonMalformed ReceiptReason = "malformed"
	// ReasonOtherCertificate: the receipt opens a certificate other than
	// the one presented.
	ReasonOtherCertificate ReceiptReason = "other_certificate"
	// ReasonChain: the certificate does not chain to the roots at the
	// given time, or is not an agent certificate of the trust domain (the
	// detail names the ca.Reason).
	ReasonChain ReceiptReason = "chain"
	// ReasonLeaf: the receipt's leaf is not a canonical version 2 issuance
	// (register or rotate) entry, or does not name the certificate's
	// issuing CA.
	ReasonLeaf ReceiptReason = "leaf"
	// ReasonOpening: the opened entry does not open the leaf (fingerprint,
	// SPIFFE name, VRF proof or index; translog.Opened.Check).
	ReasonOpening ReceiptReason = "opening"
	// ReasonLogSignature: the checkpoint is not validly signed by the log
	// key (ErrLogSignature).
	ReasonLogSignature ReceiptReason = "log_signature"
	// ReasonWitnessPolicy: the checkpoint is not cosigned as the witness
	// policy requires (ErrWitnessPolicy).
	ReasonWitnessPolicy ReceiptReason = "witness_policy"
	// ReasonInclusion: the inclusion proof does not prove the leaf at
	// leaf_index in the checkpoint's tree.
	ReasonInclusion ReceiptReason = "inclusion"
)

// ReceiptError is a refused receipt: Reason is stable and safe to show, Err
// carries the detail. It wraps ErrReceipt and Err.
type ReceiptError struct {
	Reason ReceiptReason
	Err    error
}

func (e *ReceiptError) Error() string {
	if e.Err == nil {
		return "rp: receipt refused: " + string(e.Reason)
	}
	return "rp: receipt refused: " + string(e.Reason) + ": " + e.Err.Error()
}

// Unwrap returns ErrReceipt and the detail.
func (e *ReceiptError) Unwrap() []error { return []error{ErrReceipt, e.Err} }

func refuse(reason ReceiptReason, format string, args ...any) error {
	return &ReceiptError{Reason: reason, Err: fmt.Errorf(format, args...)}
}

// ReceiptVerifier verifies certificates with their log receipts
// (docs/transparency.md, "Receipts") offline: it makes no network call and
// trusts nothing but its fields. The zero value is unusable: Roots,
// TrustDomain, LogVerifiers and VRFKey are required.
type ReceiptVerifier struct {
	// Roots are the trusted root certificates; Intermediates the issuing
	// CAs chains may be built through (the CA bundle's non-root part).
	Roots, Intermediates []*x509.Certificate
	// TrustDomain is the SPIFFE trust domain of the agents.
	TrustDomain string
	// LogVerifiers are the log's checkpoint keys (ParseLogVerifiers).
	LogVerifiers note.Verifiers
	// VRFKey is the log's public name-index VRF key
	// (translog.ParseVRFPublicKeyPEM).
	VRFKey crypto.PublicKey
	// Witnesses is the witness policy the checkpoint must meet. Its zero
	// value (Threshold 0) requires no cosignature: the log's signature
	// alone is accepted, and the receipt proves inclusion only in the view
	// the log chose to show this verifier. Set a Threshold to be protected
	// from a split view.
	Witnesses WitnessPolicy
	// Origin is the log's checkpoint origin; "" means "<TrustDomain>/log",
	// the registry's default. A checkpoint of another origin is refused, even
	// if a listed key signed it.
	Origin string
}

// VerifiedReceipt is what a receipt proved.
type VerifiedReceipt struct {
	// Name is the agent name (the certificate's SPIFFE ID and the opened
	// entry agree on it, and the VRF proof binds it to the leaf).
	Name        string
	Certificate *x509.Certificate
	// LeafIndex and Entry are the log leaf of the certificate's issuance.
	LeafIndex int64
	Entry     translog.Entry
	// Checkpoint is the verified checkpoint the leaf is included in.
	Checkpoint translog.Checkpoint
}

// Verify checks that receipt proves the issuance of the certificate certDER
// in the log, at time now:
//
//  1. the receipt parses strictly (translog.ParseReceipt) and its opened
//     entry's certificate is exactly certDER;
//  2. the certificate chains to Roots (through Intermediates) at now with
//     x509.Verify, as ca.Verifier does: key usage digitalSignature, EKU
//     clientAuth, not a CA, exactly one SPIFFE URI SAN in TrustDomain;
//  3. the leaf is a canonical version 2 register or rotate entry whose
//     issuer_key_id is the certificate's authority key identifier;
//  4. the opened entry opens the leaf under VRFKey and TrustDomain
//     (translog.Opened.Check: fingerprint, SPIFFE name, VRF proof and index);
//  5. the checkpoint is signed by LogVerifiers and meets Witnesses
//     (VerifyCheckpoint);
//  6. the inclusion proof proves translog.LeafHash(leaf) at leaf_index in
//     the checkpoint's tree.
//
// A receipt proves that the certificate was logged, not that it is still
// good: revocation is for the CRL, OCSP or the registry. Every refusal is a
// *ReceiptError wrapping ErrReceipt; a verifier missing a required field is
// a plain error.
func (v ReceiptVerifier) Verify(certDER []byte, receipt []byte, now time.Time) (*VerifiedReceipt, error) {
	if len(v.Roots) == 0 || v.TrustDomain == "" || v.LogVerifiers == nil || v.VRFKey == nil {
		return nil, errors.New("rp: receipt verifier: roots, trust domain, log verifiers and VRF key are required")
	}
	if err := v.Witnesses.Validate(); err != nil {
		return nil, err
	}
	chain, err := ca.NewVerifier(v.Roots, v.Intermediates, v.TrustDomain)
	if err != nil {
		return nil, fmt.Errorf("rp: receipt verifier: %w", err)
	}

	// Step 1: the receipt is well formed and about this certificate.
	r, err := translog.ParseReceipt(receipt)
	if err != nil {
		return nil, refuse(ReasonMalformed, "%v", err)
	}
	if !bytes.Equal(r.Opened.Certificate, certDER) {
		return nil, refuse(ReasonOtherCertificate, "the receipt opens another certificate")
	}
	cert, err := x509.ParseCertificate(certDER)
	if err != nil {
		return nil, refuse(ReasonMalformed, "certificate: %v", err)
	}

	// Step 2: the certificate is a genuine agent certificate.
	if err := chain.Verify(cert, nil, now); err != nil {
		return nil, &ReceiptError{Reason: ReasonChain, Err: err}
	}
	name, err := ca.AgentName(cert, v.TrustDomain)
	if err != nil {
		return nil, &ReceiptError{Reason: ReasonChain, Err: err}
	}

	// Step 3: the leaf records this issuance.
	e, err := translog.ParseEntry(r.Leaf)
	if err != nil {
		return nil, refuse(ReasonLeaf, "%v", err)
	}
	if e.Version != translog.EntryVersion || (e.Type != translog.EventRegister && e.Type != translog.EventRotate) {
		return nil, refuse(ReasonLeaf, "a version %d %s entry, want a version %d register or rotate entry", e.Version, e.Type, translog.EntryVersion)
	}
	if e.IssuerKeyID != hex.EncodeToString(cert.AuthorityKeyId) {
		return nil, refuse(ReasonLeaf, "issuer_key_id %s is not the certificate's authority key identifier", e.IssuerKeyID)
	}

	// Step 4: the opening binds the leaf to this certificate and name.
	if _, err := r.Opened.Check(e, v.VRFKey, v.TrustDomain); err != nil {
		return nil, &ReceiptError{Reason: ReasonOpening, Err: err}
	}
	if r.Opened.Name != name {
		return nil, refuse(ReasonOpening, "opened name %q, certificate name %q", r.Opened.Name, name)
	}

	// Step 5: the checkpoint is the log's and witnessed as required.
	cp, err := VerifyCheckpoint(r.Checkpoint, v.LogVerifiers, v.Witnesses)
	switch {
	case errors.Is(err, ErrWitnessPolicy):
		return nil, &ReceiptError{Reason: ReasonWitnessPolicy, Err: err}
	case err != nil:
		return nil, &ReceiptError{Reason: ReasonLogSignature, Err: err}
	}
	origin := v.Origin
	if origin == "" {
		origin = v.TrustDomain + "/log"
	}
	if cp.Origin != origin {
		return nil, refuse(ReasonLogSignature, "checkpoint of log %q, want %q", cp.Origin, origin)
	}

	// Step 6: the leaf is in the checkpoint's tree.
	if r.LeafIndex < 0 || r.LeafIndex >= cp.Size {
		return nil, refuse(ReasonInclusion, "leaf index %d outside the tree of size %d", r.LeafIndex, cp.Size)
	}
	if err := translog.CheckInclusion(tlog.RecordProof(r.InclusionProof), cp.Size, cp.Hash, r.LeafIndex, translog.LeafHash(r.Leaf)); err != nil {
		return nil, &ReceiptError{Reason: ReasonInclusion, Err: err}
	}
	return &VerifiedReceipt{Name: name, Certificate: cert, LeafIndex: r.LeafIndex, Entry: e, Checkpoint: cp}, nil
}
