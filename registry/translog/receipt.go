package translog

import (
	"bytes"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"

	"golang.org/x/mod/sumdb/tlog"
)

// OpenedVersion is the encoding version of an opened entry.
const OpenedVersion = 1

// ReceiptFormat names the receipt encoding this package writes and reads.
const ReceiptFormat = "atr-receipt/v1"

// MaxReceiptSize bounds a receipt ParseReceipt accepts: a leaf, a
// certificate, up to MaxNameIndexes VRF proofs, a proof of at most 64
// hashes and a checkpoint with cosignatures fit well within it.
const MaxReceiptSize = 256 << 10

// ErrOpening is wrapped by every refusal of Opened.Check: the opening does
// not match the leaf.
var ErrOpening = errors.New("translog: the opened entry does not match the leaf")

// Opened is the opening of a version 2 leaf of an agent event: the agent name
// and the certificate behind the leaf's fingerprint and name indexes, with the
// VRF proof of each index (docs/transparency.md, "Opened entries"). Only the
// agent and its owner receive it.
type Opened struct {
	LeafIndex   int64
	Name        string
	Certificate []byte   // DER
	VRFProofs   [][]byte // one per NameSuffixes(Name), in that order
}

type wireOpened struct {
	V           int      `json:"v"`
	LeafIndex   int64    `json:"leaf_index"`
	Name        string   `json:"name"`
	Certificate []byte   `json:"certificate"`
	VRFProofs   [][]byte `json:"vrf_proofs"`
}

// Marshal encodes o as canonical JSON.
func (o Opened) Marshal() ([]byte, error) {
	if o.LeafIndex < 0 || o.Name == "" || len(o.Certificate) == 0 || len(o.VRFProofs) == 0 || len(o.VRFProofs) > MaxNameIndexes {
		return nil, fmt.Errorf("%w: opened entry: leaf index, name, certificate and 1 to %d proofs are required", ErrInvalid, MaxNameIndexes)
	}
	return json.Marshal(wireOpened{V: OpenedVersion, LeafIndex: o.LeafIndex, Name: o.Name, Certificate: o.Certificate, VRFProofs: o.VRFProofs})
}

// ParseOpened decodes what Marshal writes, strictly: unknown fields, another
// version or a non-canonical encoding are ErrInvalid.
func ParseOpened(data []byte) (Opened, error) {
	var w wireOpened
	if err := strictDecode(data, &w); err != nil {
		return Opened{}, fmt.Errorf("%w: opened entry: %v", ErrInvalid, err)
	}
	if w.V != OpenedVersion {
		return Opened{}, fmt.Errorf("%w: opened entry: version %d, want %d", ErrInvalid, w.V, OpenedVersion)
	}
	o := Opened{LeafIndex: w.LeafIndex, Name: w.Name, Certificate: w.Certificate, VRFProofs: w.VRFProofs}
	canon, err := o.Marshal()
	if err != nil {
		return Opened{}, err
	}
	if !bytes.Equal(canon, data) {
		return Opened{}, fmt.Errorf("%w: opened entry is not in canonical encoding", ErrInvalid)
	}
	return o, nil
}

// Check reports whether o opens e, a version 2 agent entry of the log of trust
// domain td whose names are indexed with the VRF key vrfKey: the certificate's
// SHA-256 is e's fingerprint, its only URI SAN is spiffe://td/agent/<o.Name>, e
// has one index per suffix of the name, and there is one proof per index, each
// verifying for its suffix and giving that index. Every index is checked: a leaf
// whose namespace index were wrong would be invisible to the namespace owner's
// monitor. It returns the parsed certificate. Errors wrap ErrOpening.
func (o Opened) Check(e Entry, vrfKey crypto.PublicKey, td string) (*x509.Certificate, error) {
	if e.Version != EntryVersion || e.Type == EventCeremony {
		return nil, fmt.Errorf("%w: not a version 2 agent entry", ErrOpening)
	}
	fp := sha256.Sum256(o.Certificate)
	if hex.EncodeToString(fp[:]) != e.Fingerprint {
		return nil, fmt.Errorf("%w: the certificate's fingerprint differs", ErrOpening)
	}
	cert, err := x509.ParseCertificate(o.Certificate)
	if err != nil {
		return nil, fmt.Errorf("%w: certificate: %v", ErrOpening, err)
	}
	want := "spiffe://" + td + "/agent/" + o.Name
	if len(cert.URIs) != 1 || cert.URIs[0].String() != want {
		return nil, fmt.Errorf("%w: the certificate's SPIFFE ID is not %s", ErrOpening, want)
	}
	suffixes := NameSuffixes(o.Name)
	if len(suffixes) != len(e.NameIndexes) || len(o.VRFProofs) != len(suffixes) {
		return nil, fmt.Errorf("%w: %d names, %d indexes, %d proofs", ErrOpening, len(suffixes), len(e.NameIndexes), len(o.VRFProofs))
	}
	for i, name := range suffixes {
		ix, err := VRFVerify(vrfKey, td, name, o.VRFProofs[i])
		if err != nil {
			return nil, fmt.Errorf("%w: VRF proof of %s: %v", ErrOpening, name, err)
		}
		if hex.EncodeToString(ix[:]) != e.NameIndexes[i] {
			return nil, fmt.Errorf("%w: the index of %s differs", ErrOpening, name)
		}
	}
	return cert, nil
}

// Receipt is what lets a relying party verify, offline, that a certificate is
// in the log (docs/transparency.md, "Receipts"). Witnessed is informational:
// verifiers count cosignatures on Checkpoint themselves.
type Receipt struct {
	LeafIndex      int64
	Leaf           []byte
	Opened         Opened
	InclusionProof []tlog.Hash
	Checkpoint     []byte // signed note text, with cosignature lines
	Witnessed      bool
}

type wireReceipt struct {
	Format         string          `json:"format"`
	LeafIndex      int64           `json:"leaf_index"`
	Leaf           []byte          `json:"leaf"`
	Opened         json.RawMessage `json:"opened"`
	InclusionProof [][]byte        `json:"inclusion_proof"`
	Checkpoint     string          `json:"checkpoint"`
	Witnessed      bool            `json:"witnessed"`
}

// Marshal encodes r as canonical JSON.
func (r Receipt) Marshal() ([]byte, error) {
	e, err := r.Encode()
	return e.Data, err
}

// EncodedReceipt is a receipt as Marshal writes it, which can be made
// against another checkpoint without its leaf's part — the leaf and the
// opened entry, most of its bytes — being encoded again (WithProof).
type EncodedReceipt struct {
	Data     []byte // the receipt; not to be modified (WithProof reads its leaf's part)
	leafPart int    // Data[:leafPart] is the same in every receipt of the leaf
}

// Encode is Marshal, keeping where the leaf's part ends.
func (r Receipt) Encode() (EncodedReceipt, error) {
	opened, err := r.Opened.Marshal()
	if err != nil {
		return EncodedReceipt{}, err
	}
	if r.LeafIndex != r.Opened.LeafIndex || len(r.Leaf) == 0 {
		return EncodedReceipt{}, fmt.Errorf("%w: receipt: a leaf and matching leaf indexes are required", ErrInvalid)
	}
	// The bytes json.Marshal writes for wireReceipt, without compacting the
	// opened entry (compact JSON of Opened.Marshal) once more: the members
	// before it and after it are encoded as two objects and joined around
	// it (TestReceiptMarshalIsWireReceipt).
	head, err := json.Marshal(wireReceiptHead{Format: ReceiptFormat, LeafIndex: r.LeafIndex, Leaf: r.Leaf})
	if err != nil {
		return EncodedReceipt{}, err
	}
	part := make([]byte, 0, len(head)+len(opened)+len(`,"opened":,`))
	part = append(part, head[:len(head)-1]...)
	part = append(append(part, `,"opened":`...), opened...)
	part = append(part, ',')
	data, err := appendProof(part, r.InclusionProof, r.Checkpoint, r.Witnessed)
	return EncodedReceipt{Data: data, leafPart: len(part)}, err
}

// WithProof returns the receipt of the same leaf with another inclusion
// proof and checkpoint: the bytes Marshal writes for it. e is not changed.
func (e EncodedReceipt) WithProof(proof []tlog.Hash, checkpoint []byte, witnessed bool) (EncodedReceipt, error) {
	if e.leafPart == 0 || e.leafPart > len(e.Data) {
		return EncodedReceipt{}, fmt.Errorf("%w: receipt: not made by Encode", ErrInvalid)
	}
	data, err := appendProof(e.Data[:e.leafPart:e.leafPart], proof, checkpoint, witnessed)
	return EncodedReceipt{Data: data, leafPart: e.leafPart}, err
}

// appendProof appends the members after the opened entry to a receipt's
// leaf part (a full slice is copied, not written over).
func appendProof(part []byte, proof []tlog.Hash, checkpoint []byte, witnessed bool) ([]byte, error) {
	if len(checkpoint) == 0 {
		return nil, fmt.Errorf("%w: receipt: a checkpoint is required", ErrInvalid)
	}
	hashes := make([][]byte, len(proof))
	for i := range proof {
		hashes[i] = proof[i][:]
	}
	tail, err := json.Marshal(wireReceiptTail{InclusionProof: hashes, Checkpoint: string(checkpoint), Witnessed: witnessed})
	if err != nil {
		return nil, err
	}
	return append(part, tail[1:]...), nil
}

// wireReceiptHead and wireReceiptTail are wireReceipt's members before and
// after "opened", in its order.
type wireReceiptHead struct {
	Format    string `json:"format"`
	LeafIndex int64  `json:"leaf_index"`
	Leaf      []byte `json:"leaf"`
}

type wireReceiptTail struct {
	InclusionProof [][]byte `json:"inclusion_proof"`
	Checkpoint     string   `json:"checkpoint"`
	Witnessed      bool     `json:"witnessed"`
}

// ParseReceipt decodes what Marshal writes, strictly (white space around the
// object, such as a file's final newline, is ignored). It checks the form, not
// the content: see rp.ReceiptVerifier.
func ParseReceipt(data []byte) (Receipt, error) {
	data = bytes.TrimSpace(data)
	if len(data) > MaxReceiptSize {
		return Receipt{}, fmt.Errorf("%w: receipt of %d bytes, max %d", ErrInvalid, len(data), MaxReceiptSize)
	}
	var w wireReceipt
	if err := strictDecode(data, &w); err != nil {
		return Receipt{}, fmt.Errorf("%w: receipt: %v", ErrInvalid, err)
	}
	if w.Format != ReceiptFormat {
		return Receipt{}, fmt.Errorf("%w: receipt format %q, want %q", ErrInvalid, w.Format, ReceiptFormat)
	}
	opened, err := ParseOpened(w.Opened)
	if err != nil {
		return Receipt{}, err
	}
	r := Receipt{LeafIndex: w.LeafIndex, Leaf: w.Leaf, Opened: opened, Checkpoint: []byte(w.Checkpoint), Witnessed: w.Witnessed}
	if len(w.InclusionProof) > 64 {
		return Receipt{}, fmt.Errorf("%w: receipt: inclusion proof of %d hashes", ErrInvalid, len(w.InclusionProof))
	}
	for _, h := range w.InclusionProof {
		if len(h) != len(tlog.Hash{}) {
			return Receipt{}, fmt.Errorf("%w: receipt: a proof hash of %d bytes", ErrInvalid, len(h))
		}
		r.InclusionProof = append(r.InclusionProof, tlog.Hash(h))
	}
	canon, err := r.Marshal()
	if err != nil {
		return Receipt{}, err
	}
	if !bytes.Equal(canon, data) {
		return Receipt{}, fmt.Errorf("%w: receipt is not in canonical encoding", ErrInvalid)
	}
	return r, nil
}

// strictDecode decodes exactly one JSON value into v with no unknown fields.
func strictDecode(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("data after the object")
	}
	return nil
}
