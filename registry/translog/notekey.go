package translog

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
)

// SigTypeECDSA is the C2SP signed-note signature type byte for ECDSA
// (c2sp.org/signed-note, "ECDSA signatures as implemented by
// github.com/transparency-dev/witness").
const SigTypeECDSA = 0x02

// This file implements signature type 0x02 exactly as c2sp.org/signed-note
// and transparency-dev (formats/note, used by witnesses and Rekor) define it:
//
//   - the public key is a NIST P-256 key, encoded as DER SubjectPublicKeyInfo;
//   - the key ID is the first four bytes, big-endian, of SHA-256(SPKI DER).
//     For this type the spec says so explicitly ("the key ID for these
//     signatures is the truncated SHA-256 hash of the DER encoded public key
//     in SPKI format"); unlike Ed25519 (type 0x01) the key name and the type
//     byte are NOT hashed in;
//   - the signature is the ASN.1 DER ECDSA signature over SHA-256(note text);
//   - the verifier key string is "<name>+<08x key ID>+<base64(0x02 || SPKI)>".

// noteKey holds what signer and verifier share.
type noteKey struct {
	name string
	hash uint32
	pub  *ecdsa.PublicKey
	spki []byte
}

func newNoteKey(name string, pub crypto.PublicKey) (*noteKey, error) {
	if !validName(name) {
		return nil, fmt.Errorf("%w: note key name %q", ErrInvalid, name)
	}
	ec, ok := pub.(*ecdsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("%w: note key is %T, want an ECDSA P-256 public key", ErrInvalid, pub)
	}
	if ec.Curve != elliptic.P256() {
		return nil, fmt.Errorf("%w: note key curve %s, want P-256", ErrInvalid, ec.Curve.Params().Name)
	}
	spki, err := x509.MarshalPKIXPublicKey(ec)
	if err != nil {
		return nil, fmt.Errorf("translog: encoding note public key: %w", err)
	}
	sum := sha256.Sum256(spki)
	return &noteKey{name: name, hash: binary.BigEndian.Uint32(sum[:4]), pub: ec, spki: spki}, nil
}

func (k *noteKey) verify(msg, sig []byte) bool {
	d := sha256.Sum256(msg)
	return ecdsa.VerifyASN1(k.pub, d[:], sig)
}

// checksItself reports whether s verifies every signature it returns under
// its public key and fails closed otherwise (the ChecksSignatures mark of
// hsm.Signer and hsm.Ed25519Signer, kept by hsm.Metrics' wrapper), so that
// its callers here need not verify again.
func checksItself(s crypto.Signer) bool {
	_, ok := s.(interface{ ChecksSignatures() })
	return ok
}

type noteSigner struct {
	*noteKey
	s crypto.Signer
}

func (s *noteSigner) Name() string    { return s.name }
func (s *noteSigner) KeyHash() uint32 { return s.hash }

// Sign signs msg through the crypto.Signer and checks the result with the
// public key (unless the signer checks its own: checksItself), so a
// misbehaving token cannot produce an unverifiable note.
func (s *noteSigner) Sign(msg []byte) ([]byte, error) {
	d := sha256.Sum256(msg)
	sig, err := s.s.Sign(rand.Reader, d[:], crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("translog: signing note: %w", err)
	}
	if !checksItself(s.s) && !s.verify(msg, sig) {
		return nil, fmt.Errorf("translog: signing note: the signer returned a signature that does not verify")
	}
	return sig, nil
}

type noteVerifier struct{ *noteKey }

func (v *noteVerifier) Name() string                { return v.name }
func (v *noteVerifier) KeyHash() uint32             { return v.hash }
func (v *noteVerifier) Verify(msg, sig []byte) bool { return v.verify(msg, sig) }

// NewNoteSigner returns a note.Signer producing C2SP signed-note ECDSA
// (type 0x02) signatures through s, whose public key must be ECDSA P-256
// (for ATR, a key on the PKCS#11 token). name is the key name, which for a
// checkpoint signer must be the log origin.
func NewNoteSigner(name string, s crypto.Signer) (note.Signer, error) {
	k, err := newNoteKey(name, s.Public())
	if err != nil {
		return nil, err
	}
	return &noteSigner{noteKey: k, s: s}, nil
}

// NewNoteVerifier returns the note.Verifier for NewNoteSigner(name, s) where
// s.Public() is pub.
func NewNoteVerifier(name string, pub crypto.PublicKey) (note.Verifier, error) {
	k, err := newNoteKey(name, pub)
	if err != nil {
		return nil, err
	}
	return &noteVerifier{k}, nil
}

// VerifierKey returns the verifier key string
// "<name>+<08x key ID>+<base64(0x02 || SPKI DER)>" for name and pub, the
// form transparency-dev tooling reads.
func VerifierKey(name string, pub crypto.PublicKey) (string, error) {
	k, err := newNoteKey(name, pub)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%s+%08x+%s", k.name, k.hash, base64.StdEncoding.EncodeToString(append([]byte{SigTypeECDSA}, k.spki...))), nil
}

// ParseVerifierKey parses a verifier key string made by VerifierKey and
// returns its verifier; the key ID in the string must match the key.
func ParseVerifierKey(vkey string) (note.Verifier, error) {
	name, rest, ok1 := strings.Cut(vkey, "+")
	hexHash, b64, ok2 := strings.Cut(rest, "+")
	if !ok1 || !ok2 || len(hexHash) != 8 {
		return nil, fmt.Errorf("%w: malformed verifier key", ErrInvalid)
	}
	h, err := strconv.ParseUint(hexHash, 16, 32)
	if err != nil || fmt.Sprintf("%08x", h) != hexHash {
		return nil, fmt.Errorf("%w: malformed verifier key hash", ErrInvalid)
	}
	raw, err := base64.StdEncoding.Strict().DecodeString(b64)
	if err != nil || len(raw) < 2 || raw[0] != SigTypeECDSA {
		return nil, fmt.Errorf("%w: verifier key is not ECDSA (type 0x02)", ErrInvalid)
	}
	pub, err := x509.ParsePKIXPublicKey(raw[1:])
	if err != nil {
		return nil, fmt.Errorf("%w: verifier key public key: %v", ErrInvalid, err)
	}
	k, err := newNoteKey(name, pub)
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(k.spki, raw[1:]) {
		return nil, fmt.Errorf("%w: verifier key is not in canonical SPKI encoding", ErrInvalid)
	}
	if uint32(h) != k.hash {
		return nil, fmt.Errorf("%w: verifier key hash %08x does not match key (%08x)", ErrInvalid, h, k.hash)
	}
	return &noteVerifier{k}, nil
}
