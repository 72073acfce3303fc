package translog

// This file implements the name-index VRF of docs/transparency.md ("Name
// indexes"): a verifiable random function built from a deterministic RSA
// signature, which a PKCS#11 token computes with the standard CKM_RSA_PKCS
// mechanism (no VRF support needed on the token).
//
// For an agent name n in trust domain td:
//
//	m     = "atr-vrf-v1" || 0x00 || td || 0x00 || n
//	proof = RSASSA-PKCS1-v1_5-SIGN(vrf key, SHA-256, m)
//	index = SHA-256(proof)
//
// Why this is a VRF (the properties of RFC 9381 §3):
//
//   - Uniqueness: for a fixed public key (N, e) the PKCS#1 v1.5 encoding EM
//     of m is fixed, and since x ↦ x^e mod N is a permutation of Z_N there is
//     exactly one s < N with s^e ≡ EM (mod N). VRFVerify accepts only that s,
//     encoded in exactly k = len(N) bytes (crypto/rsa rejects any other
//     length and any value ≥ N), so for each (key, td, name) at most one
//     proof verifies and the index is a function of the name. This needs
//     x ↦ x^e to be a permutation, i.e. e coprime to λ(N): true of every
//     key a token generates (key generation picks primes p, q with
//     gcd(e, p−1) = gcd(e, q−1) = 1), not necessarily of a key a malicious
//     holder crafted — which is why the VRF key is made by a ceremony on the
//     token and never imported, and why e is fixed at 65537 and the modulus
//     is at least 2048 bits (3072 by default: pseudorandomness, the names'
//     privacy, lasts only as long as the modulus is not factored).
//   - Pseudorandomness: without the private key nobody can compute s for a
//     name not yet signed (RSA-FDH-style unforgeability of PKCS#1 v1.5 over
//     SHA-256), so nobody can compute the index of a guessed name; the index
//     SHA-256(s) of an unsigned name is unpredictable.
//   - Verifiability: anyone given the name and the proof checks it with the
//     public key alone.
//
// The zero bytes separate the version tag, the trust domain and the name;
// neither the trust domain nor the name may contain a zero byte, so the
// encoding of (td, n) is unambiguous.

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
)

// VRF parameters (docs/transparency.md, "Name indexes").
const (
	// VRFTag is the domain-separation prefix of every VRF input.
	VRFTag = "atr-vrf-v1"
	// VRFMinBits is the smallest RSA modulus a VRF key may have.
	VRFMinBits = 2048
	// VRFExponent is the only RSA public exponent a VRF key may have.
	VRFExponent = 65537
	// maxVRFKeyPEM caps the PEM document ParseVRFPublicKeyPEM reads.
	maxVRFKeyPEM = 16 << 10
)

// ErrVRF is wrapped by every error of VRFProve, VRFVerify, CheckVRFKey and
// ParseVRFPublicKeyPEM: an unacceptable key, an unacceptable input, or a
// proof that does not verify.
var ErrVRF = errors.New("translog: vrf")

func vrfErr(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrVRF}, args...)...)
}

// NameSuffixes returns name and each of its parent suffixes, longest first:
// "a.b.acme" → ["a.b.acme", "b.acme", "acme"]. These are the names whose
// VRF indexes a log entry carries. It splits on dots only and does not
// validate the name (callers pass normalized agent names); an empty name
// gives nil.
func NameSuffixes(name string) []string {
	if name == "" {
		return nil
	}
	out := []string{name}
	for i := 0; i < len(name); i++ {
		if name[i] == '.' && i+1 < len(name) {
			out = append(out, name[i+1:])
		}
	}
	return out
}

// CheckVRFKey returns pub as an RSA public key when it is acceptable as a
// VRF key: RSA, a modulus of at least VRFMinBits bits, exponent VRFExponent.
// Otherwise the error wraps ErrVRF.
func CheckVRFKey(pub crypto.PublicKey) (*rsa.PublicKey, error) {
	k, ok := pub.(*rsa.PublicKey)
	if !ok || k == nil || k.N == nil {
		return nil, vrfErr("key is %T, want an RSA public key", pub)
	}
	if n := k.N.BitLen(); n < VRFMinBits {
		return nil, vrfErr("RSA key of %d bits, want at least %d", n, VRFMinBits)
	}
	if k.E != VRFExponent {
		return nil, vrfErr("RSA public exponent %d, want %d", k.E, VRFExponent)
	}
	return k, nil
}

// vrfDigest returns SHA-256(m) for m = VRFTag || 0x00 || td || 0x00 || name.
func vrfDigest(trustDomain, name string) ([32]byte, error) {
	return taggedDigest(VRFTag, trustDomain, "name", name)
}

// taggedDigest returns SHA-256(tag || 0x00 || td || 0x00 || last); an empty
// trust domain or last, or one holding a zero byte, is refused (what names
// last in the error).
func taggedDigest(tag, trustDomain, what, last string) ([32]byte, error) {
	if trustDomain == "" || strings.IndexByte(trustDomain, 0) >= 0 {
		return [32]byte{}, vrfErr("trust domain %q is empty or holds a zero byte", trustDomain)
	}
	if last == "" || strings.IndexByte(last, 0) >= 0 {
		return [32]byte{}, vrfErr("%s %q is empty or holds a zero byte", what, last)
	}
	h := sha256.New()
	h.Write([]byte(tag))
	h.Write([]byte{0})
	h.Write([]byte(trustDomain))
	h.Write([]byte{0})
	h.Write([]byte(last))
	var d [32]byte
	h.Sum(d[:0])
	return d, nil
}

// signChecked signs d with s (RSASSA-PKCS1-v1_5 over SHA-256) and checks the
// signature under pub, unless s checks its own signatures (hsm.Signer: the
// same verification under the same public key, failing closed). what names
// the input in a signing error.
func signChecked(s crypto.Signer, pub *rsa.PublicKey, d [32]byte, what string) ([]byte, error) {
	sig, err := s.Sign(rand.Reader, d[:], crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("translog: vrf: signing %s: %w", what, err)
	}
	if !checksItself(s) {
		if err := rsa.VerifyPKCS1v15(pub, crypto.SHA256, d[:], sig); err != nil {
			return nil, vrfErr("the signer returned a signature that does not verify: %v", err)
		}
	}
	return sig, nil
}

// VRFProve computes the VRF proof and index of name in trustDomain with s,
// whose public key must pass CheckVRFKey. It signs SHA-256(m) with
// crypto.SHA256 options (RSASSA-PKCS1-v1_5) and checks the signature with
// the public key before returning (or lets a signer with a ChecksSignatures
// method, hsm.Signer, check it), so a misbehaving token cannot produce a
// proof that fails to verify; since a verifying proof is unique, the result
// is the same for every call with the same key and input.
func VRFProve(s crypto.Signer, trustDomain, name string) (index [32]byte, proof []byte, err error) {
	if s == nil {
		return index, nil, vrfErr("nil signer")
	}
	pub, err := CheckVRFKey(s.Public())
	if err != nil {
		return index, nil, err
	}
	d, err := vrfDigest(trustDomain, name)
	if err != nil {
		return index, nil, err
	}
	sig, err := signChecked(s, pub, d, "the name")
	if err != nil {
		return index, nil, err
	}
	return sha256.Sum256(sig), sig, nil
}

// VRFSecretTag is the domain-separation prefix of the one input VRFSecret
// signs. It differs from VRFTag, so no VRF input is this input and no proof
// ever published is the secret's signature.
const VRFSecretTag = "atr-vrf-secret-v1"

// VRFSecret returns a 32-byte secret of the VRF key in trustDomain for
// purpose: SHA-256 of the key's RSASSA-PKCS1-v1_5 signature over
//
//	m = VRFSecretTag || 0x00 || td || 0x00 || purpose
//
// The signature is deterministic, so every holder of the key (every replica
// on one token) derives the same secret, and unforgeable, so nobody without
// the key can; another key or trust domain gives another secret. The
// registry keys the MACs of the log openings it stores with it (its
// "opening" purpose), which lets a rotation take its name's proofs from its
// newest opening without an RSA verification. The signature is checked
// like VRFProve's and never leaves this function.
func VRFSecret(s crypto.Signer, trustDomain, purpose string) ([32]byte, error) {
	if s == nil {
		return [32]byte{}, vrfErr("nil signer")
	}
	pub, err := CheckVRFKey(s.Public())
	if err != nil {
		return [32]byte{}, err
	}
	d, err := taggedDigest(VRFSecretTag, trustDomain, "purpose", purpose)
	if err != nil {
		return [32]byte{}, err
	}
	sig, err := signChecked(s, pub, d, "the secret's input")
	if err != nil {
		return [32]byte{}, err
	}
	return sha256.Sum256(sig), nil
}

// VRFVerify checks proof for name in trustDomain under pub (which must pass
// CheckVRFKey) and returns the name's index, SHA-256(proof). Any failure
// wraps ErrVRF.
func VRFVerify(pub crypto.PublicKey, trustDomain, name string, proof []byte) (index [32]byte, err error) {
	k, err := CheckVRFKey(pub)
	if err != nil {
		return index, err
	}
	d, err := vrfDigest(trustDomain, name)
	if err != nil {
		return index, err
	}
	// VerifyPKCS1v15 requires len(proof) == k and proof < N, which makes the
	// accepted proof unique.
	if err := rsa.VerifyPKCS1v15(k, crypto.SHA256, d[:], proof); err != nil {
		return index, vrfErr("proof does not verify for %q", name)
	}
	return sha256.Sum256(proof), nil
}

// ParseVRFPublicKeyPEM parses exactly one PEM "PUBLIC KEY" block (PKIX
// SubjectPublicKeyInfo, as DATA_DIR/ca/vrf-key.pem and GET /v1/log/vrf-key
// hold) and checks it with CheckVRFKey. Anything else in the input, before
// or after the block, is refused.
func ParseVRFPublicKeyPEM(data []byte) (*rsa.PublicKey, error) {
	if len(data) > maxVRFKeyPEM {
		return nil, vrfErr("public key PEM of %d bytes exceeds %d", len(data), maxVRFKeyPEM)
	}
	block, rest := pem.Decode(data)
	if block == nil {
		return nil, vrfErr("no PEM block in the public key file")
	}
	if block.Type != "PUBLIC KEY" {
		return nil, vrfErr("PEM block %q, want PUBLIC KEY", block.Type)
	}
	if len(block.Headers) != 0 {
		return nil, vrfErr("PEM block with headers")
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, vrfErr("trailing data after the public key")
	}
	if !bytes.HasPrefix(bytes.TrimSpace(data), []byte("-----BEGIN PUBLIC KEY-----")) {
		return nil, vrfErr("data before the public key")
	}
	pub, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, vrfErr("parsing the public key: %v", err)
	}
	return CheckVRFKey(pub)
}
