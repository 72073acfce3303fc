package agent

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"

	"github.com/agent-trust-registry/atr/ca"
)

// Key types GenerateKey makes, as KeyType names them.
const (
	KeyP256    = "p256"
	KeyP384    = "p384"
	KeyEd25519 = "ed25519"
	KeyRSA     = "rsa" // RSA-3072
)

// KeyTypes lists the key types GenerateKey offers, for help texts.
const KeyTypes = "p256, p384, ed25519, rsa"

// ErrUnknownKeyType is returned (wrapped) by GenerateKey for a type it does
// not know.
var ErrUnknownKeyType = errors.New("agent: unknown key type")

// GenerateKey generates an agent key of type typ: KeyP256 (also for ""),
// KeyP384, KeyEd25519 or KeyRSA (3072 bits). Every type is inside the
// registry's key policy (ca.CheckPublicKey).
func GenerateKey(typ string) (crypto.Signer, error) {
	switch typ {
	case KeyP256, "":
		return ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case KeyP384:
		return ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case KeyEd25519:
		_, k, err := ed25519.GenerateKey(rand.Reader)
		return k, err
	case KeyRSA:
		return rsa.GenerateKey(rand.Reader, 3072)
	}
	return nil, fmt.Errorf("%w %q: want one of %s", ErrUnknownKeyType, typ, KeyTypes)
}

// KeyType names k's type as GenerateKey takes it: "p256", "p384", "ed25519",
// "rsa" (any size), or "unknown".
func KeyType(k crypto.Signer) string {
	switch p := k.Public().(type) {
	case *ecdsa.PublicKey:
		switch p.Curve {
		case elliptic.P256():
			return KeyP256
		case elliptic.P384():
			return KeyP384
		}
	case ed25519.PublicKey:
		return KeyEd25519
	case *rsa.PublicKey:
		return KeyRSA
	}
	return "unknown"
}

// MarshalKey encodes k as a PKCS#8 "PRIVATE KEY" PEM block.
func MarshalKey(k crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, fmt.Errorf("encoding the private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// ParseKey parses exactly one PEM private key, PKCS#8 ("PRIVATE KEY"), SEC 1
// ("EC PRIVATE KEY") or PKCS#1 ("RSA PRIVATE KEY"), with nothing but white
// space after it, and applies the registry's key policy (ca.CheckPublicKey):
// a key the registry would refuse is refused here.
func ParseKey(data []byte) (crypto.Signer, error) {
	b, rest := pem.Decode(data)
	if b == nil {
		return nil, errors.New("no PEM private key found")
	}
	if len(strings.TrimSpace(string(rest))) != 0 {
		return nil, errors.New("trailing data after the private key")
	}
	var (
		k   any
		err error
	)
	switch b.Type {
	case "PRIVATE KEY":
		k, err = x509.ParsePKCS8PrivateKey(b.Bytes)
	case "EC PRIVATE KEY":
		k, err = x509.ParseECPrivateKey(b.Bytes)
	case "RSA PRIVATE KEY":
		k, err = x509.ParsePKCS1PrivateKey(b.Bytes)
	default:
		return nil, fmt.Errorf("PEM block %q is not a private key", b.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("parsing the private key: %w", err)
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("unsupported private key type %T", k)
	}
	if err := ca.CheckPublicKey(s.Public()); err != nil {
		return nil, err
	}
	return s, nil
}

// LoadKey reads the private key file at path (ReadSecretFile: a regular file
// of at most MaxKeyFile bytes that group and others cannot access) and parses
// it with ParseKey.
func LoadKey(path string) (crypto.Signer, error) {
	data, err := ReadSecretFile(path, MaxKeyFile)
	if err != nil {
		return nil, fmt.Errorf("reading the private key: %w", err)
	}
	k, err := ParseKey(data)
	if err != nil {
		return nil, fmt.Errorf("private key %s: %w", path, err)
	}
	return k, nil
}

// KeyMatches reports whether cert certifies k's public key.
func KeyMatches(k crypto.Signer, cert *x509.Certificate) bool {
	pub, ok := k.Public().(interface{ Equal(crypto.PublicKey) bool })
	return ok && pub.Equal(cert.PublicKey)
}

// NewCSR returns a PEM certificate request signed by k. It carries no
// subject and no SANs: the registry builds the certificate from its profile
// and the request's key only.
func NewCSR(k crypto.Signer) ([]byte, error) {
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, k)
	if err != nil {
		return nil, fmt.Errorf("building the CSR: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), nil
}
