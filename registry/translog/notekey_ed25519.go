package translog

import (
	"crypto"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"fmt"

	"golang.org/x/mod/sumdb/note"
)

// SigTypeEd25519 is the C2SP signed-note signature type byte for Ed25519,
// the only type golang.org/x/mod/sumdb/note (and so every torchwood and
// sumdb witness) verifies.
const SigTypeEd25519 = 0x01

// Type 0x01 as c2sp.org/signed-note defines it: the key ID is the first four
// bytes, big-endian, of SHA-256(key name || "\n" || 0x01 || 32-byte public
// key); the signature is plain Ed25519 over the note text; the verifier key
// string is "<name>+<08x key ID>+<base64(0x01 || public key)>", exactly
// note.NewEd25519VerifierKey's output.

type ed25519NoteSigner struct {
	name string
	hash uint32
	pub  ed25519.PublicKey
	s    crypto.Signer
}

func (s *ed25519NoteSigner) Name() string    { return s.name }
func (s *ed25519NoteSigner) KeyHash() uint32 { return s.hash }

// Sign signs msg through the crypto.Signer (pure Ed25519, crypto.Hash(0))
// and checks the result with the public key, unless the signer checks its
// own (checksItself).
func (s *ed25519NoteSigner) Sign(msg []byte) ([]byte, error) {
	sig, err := s.s.Sign(nil, msg, crypto.Hash(0))
	if err != nil {
		return nil, fmt.Errorf("translog: signing note: %w", err)
	}
	if !checksItself(s.s) && !ed25519.Verify(s.pub, msg, sig) {
		return nil, fmt.Errorf("translog: signing note: the signer returned an Ed25519 signature that does not verify")
	}
	return sig, nil
}

func ed25519NoteKey(name string, pub crypto.PublicKey) (ed25519.PublicKey, uint32, error) {
	if !validName(name) {
		return nil, 0, fmt.Errorf("%w: note key name %q", ErrInvalid, name)
	}
	k, ok := pub.(ed25519.PublicKey)
	if !ok || len(k) != ed25519.PublicKeySize {
		return nil, 0, fmt.Errorf("%w: note key is %T, want an Ed25519 public key", ErrInvalid, pub)
	}
	h := sha256.New()
	h.Write([]byte(name))
	h.Write([]byte{'\n', SigTypeEd25519})
	h.Write(k)
	return k, binary.BigEndian.Uint32(h.Sum(nil)[:4]), nil
}

// NewEd25519NoteSigner returns a note.Signer producing C2SP signed-note
// Ed25519 (type 0x01) signatures through s, whose public key must be an
// ed25519.PublicKey and whose Sign must sign the whole message when given
// crypto.Hash(0) (for ATR, hsm.Ed25519Signer). name is the key name, which
// for a checkpoint signer must be the log origin.
func NewEd25519NoteSigner(name string, s crypto.Signer) (note.Signer, error) {
	pub, hash, err := ed25519NoteKey(name, s.Public())
	if err != nil {
		return nil, err
	}
	return &ed25519NoteSigner{name: name, hash: hash, pub: pub, s: s}, nil
}

// Ed25519VerifierKey returns the verifier key string for name and pub,
// "<name>+<08x key ID>+<base64(0x01 || key)>", the form witnesses
// (litewitness, sumdb/note.NewVerifier) read.
func Ed25519VerifierKey(name string, pub crypto.PublicKey) (string, error) {
	k, _, err := ed25519NoteKey(name, pub)
	if err != nil {
		return "", err
	}
	vkey, err := note.NewEd25519VerifierKey(name, k)
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	return vkey, nil
}

// NewEd25519NoteVerifier returns the note.Verifier for
// NewEd25519NoteSigner(name, s) where s.Public() is pub.
func NewEd25519NoteVerifier(name string, pub crypto.PublicKey) (note.Verifier, error) {
	vkey, err := Ed25519VerifierKey(name, pub)
	if err != nil {
		return nil, err
	}
	v, err := note.NewVerifier(vkey)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	return v, nil
}
