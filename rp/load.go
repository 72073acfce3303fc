package rp

// load.go: the files a relying party pins (the CA bundle, a CRL, the log's
// and the VRF's public keys, witness keys, the certificates an owner knows)
// and their parsers. Every file is read with a size cap.

import (
	"bytes"
	"crypto"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/mod/sumdb/note"

	"github.com/agent-trust-registry/atr/ca"
	"github.com/agent-trust-registry/atr/registry/translog"
)

// Size caps of the files the loaders read.
const (
	MaxBundleFile = 1 << 20  // a PEM CA bundle or certificate file
	MaxCRLSize    = 16 << 20 // a CRL, from a file or fetched
	MaxKeyFile    = 64 << 10 // a public key or a file of verifier keys
	MaxKnownFile  = 16 << 20 // a file of known fingerprints or certificates
	maxBundleCert = 100      // certificates in one PEM file
)

// readFileCapped reads at most max bytes of path, refusing larger files.
func readFileCapped(path string, max int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	if int64(len(data)) > max {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, max)
	}
	return data, nil
}

// SplitBundle separates the self-signed roots of a CA bundle (subject ==
// issuer and a signature that verifies under its own key) from the other
// certificates, which serve as intermediates.
func SplitBundle(bundle []*x509.Certificate) (roots, intermediates []*x509.Certificate) {
	for _, c := range bundle {
		if ca.IsSelfSigned(c) {
			roots = append(roots, c)
		} else {
			intermediates = append(intermediates, c)
		}
	}
	return roots, intermediates
}

// ParseCABundle parses a PEM CA bundle (GET /v1/ca/bundle) strictly
// (ca.ParseCertificatesPEM) and splits it with SplitBundle. At least one
// root is required.
func ParseCABundle(data []byte) (roots, intermediates []*x509.Certificate, err error) {
	certs, err := ca.ParseCertificatesPEM(data, maxBundleCert)
	if err != nil {
		return nil, nil, err
	}
	roots, intermediates = SplitBundle(certs)
	if len(roots) == 0 {
		return nil, nil, errors.New("holds no self-signed root")
	}
	return roots, intermediates, nil
}

// LoadCABundle reads and parses the CA bundle file at path (ParseCABundle).
func LoadCABundle(path string) (roots, intermediates []*x509.Certificate, err error) {
	data, err := readFileCapped(path, MaxBundleFile)
	if err != nil {
		return nil, nil, fmt.Errorf("reading the CA bundle: %w", err)
	}
	roots, intermediates, err = ParseCABundle(data)
	if err != nil {
		return nil, nil, fmt.Errorf("CA bundle %s: %w", path, err)
	}
	return roots, intermediates, nil
}

// ParseCRL parses a CRL, DER or one PEM "X509 CRL" block. It checks nothing
// but the syntax: Verifier checks the issuer, signature and freshness.
func ParseCRL(data []byte) (*x509.RevocationList, error) {
	if b, rest := pem.Decode(data); b != nil {
		if b.Type != "X509 CRL" || len(bytes.TrimSpace(rest)) != 0 {
			return nil, errors.New("want one PEM \"X509 CRL\" block or DER")
		}
		data = b.Bytes
	}
	return x509.ParseRevocationList(data)
}

// LoadCRL reads and parses the CRL file at path (ParseCRL).
func LoadCRL(path string) (*x509.RevocationList, error) {
	data, err := readFileCapped(path, MaxCRLSize)
	if err != nil {
		return nil, fmt.Errorf("reading the CRL: %w", err)
	}
	crl, err := ParseCRL(data)
	if err != nil {
		return nil, fmt.Errorf("CRL %s: %w", path, err)
	}
	return crl, nil
}

// LogKey is a pinned log key, as a relying party holds it: either a PEM
// public key (GET /v1/log/key or DATA_DIR/ca/log-key.pem; ECDSA P-256, or
// Ed25519 for Verifiers), which names no origin, or C2SP verifier key
// strings, one per line, as GET /v1/log/vkey serves them (the ECDSA key
// first, then the Ed25519 key witnesses see), which do. The key, not the
// origin, is what is pinned: a type 0x02 key ID does not cover the name.
type LogKey struct {
	pub   crypto.PublicKey // from PEM
	vkeys string           // verifier key strings
	first note.Verifier    // the first verifier key, when it is ECDSA
}

// ParseLogKey parses a pinned log key: one PEM "PUBLIC KEY" block, or
// verifier key strings (ParseLogVerifiers).
func ParseLogKey(data []byte) (LogKey, error) {
	if b, rest := pem.Decode(data); b != nil {
		if b.Type != "PUBLIC KEY" || len(bytes.TrimSpace(rest)) != 0 {
			return LogKey{}, errors.New("want one PEM \"PUBLIC KEY\" block or verifier key strings")
		}
		pub, err := x509.ParsePKIXPublicKey(b.Bytes)
		if err != nil {
			return LogKey{}, err
		}
		return LogKey{pub: pub}, nil
	}
	if _, err := ParseLogVerifiers(string(data)); err != nil {
		return LogKey{}, fmt.Errorf("neither PEM nor verifier keys: %w", err)
	}
	k := LogKey{vkeys: string(data)}
	first, _, _ := strings.Cut(strings.TrimSpace(string(data)), "\n")
	k.first, _ = translog.ParseVerifierKey(strings.TrimSpace(first))
	return k, nil
}

// LoadLogKey reads and parses the log key file at path (ParseLogKey).
func LoadLogKey(path string) (LogKey, error) {
	data, err := readFileCapped(path, MaxKeyFile)
	if err != nil {
		return LogKey{}, fmt.Errorf("reading the log key: %w", err)
	}
	k, err := ParseLogKey(data)
	if err != nil {
		return LogKey{}, fmt.Errorf("log key %s: %w", path, err)
	}
	return k, nil
}

// Origin is the origin the key names: that of the first verifier key
// string, "" for a PEM key.
func (k LogKey) Origin() string {
	if k.first != nil {
		return k.first.Name()
	}
	return ""
}

// Verifiers returns the note verifiers of the key for checkpoints of
// origin: every verifier key string (origin is ignored: each names its
// own), or the PEM key under the name origin (ECDSA, or Ed25519 as a
// C2SP type 0x01 key).
func (k LogKey) Verifiers(origin string) (note.Verifiers, error) {
	if k.pub == nil {
		if k.vkeys == "" {
			return nil, errors.New("rp: no log key")
		}
		return ParseLogVerifiers(k.vkeys)
	}
	var v note.Verifier
	var err error
	if _, ok := k.pub.(ed25519.PublicKey); ok {
		v, err = translog.NewEd25519NoteVerifier(origin, k.pub)
	} else {
		v, err = translog.NewNoteVerifier(origin, k.pub)
	}
	if err != nil {
		return nil, fmt.Errorf("rp: log key: %w", err)
	}
	return note.VerifierList(v), nil
}

// Verifier returns the one ECDSA verifier the auditor checks checkpoints
// with: the first verifier key string, which must name origin when origin
// is not "", or the PEM key (ECDSA P-256) under the name origin.
func (k LogKey) Verifier(origin string) (note.Verifier, error) {
	if k.pub == nil {
		if k.first == nil {
			return nil, errors.New("rp: log key: the first verifier key is not an ECDSA (0x02) key")
		}
		if origin != "" && origin != k.first.Name() {
			return nil, &AuditError{Reason: AuditWrongOrigin, Index: -1,
				msg: fmt.Sprintf("the log key names origin %q, not %q", k.first.Name(), origin)}
		}
		return k.first, nil
	}
	v, err := translog.NewNoteVerifier(origin, k.pub)
	if err != nil {
		return nil, fmt.Errorf("rp: log key: %w", err)
	}
	return v, nil
}

// LoadVRFKey reads the log's VRF public key, PEM
// (translog.ParseVRFPublicKeyPEM).
func LoadVRFKey(path string) (*rsa.PublicKey, error) {
	data, err := readFileCapped(path, MaxKeyFile)
	if err != nil {
		return nil, fmt.Errorf("reading the VRF key: %w", err)
	}
	k, err := translog.ParseVRFPublicKeyPEM(data)
	if err != nil {
		return nil, fmt.Errorf("VRF key %s: %w", path, err)
	}
	return k, nil
}

// LoadWitnessPolicy builds a WitnessPolicy from values, each a witness's
// cosignature verifier key or the path of a regular file of such keys (one
// per line; blank lines and # comments skipped), and threshold (< 0: all
// of the keys). The policy is validated (WitnessPolicy.Validate): an
// invalid one is a *PolicyConfigError; a file that cannot be read is a
// plain error.
func LoadWitnessPolicy(values []string, threshold int) (WitnessPolicy, error) {
	var p WitnessPolicy
	for _, v := range values {
		if st, err := os.Stat(v); err == nil && st.Mode().IsRegular() {
			data, err := readFileCapped(v, MaxKeyFile)
			if err != nil {
				return p, fmt.Errorf("reading witness keys: %w", err)
			}
			for _, line := range strings.Split(string(data), "\n") {
				if line = strings.TrimSpace(line); line != "" && !strings.HasPrefix(line, "#") {
					p.Keys = append(p.Keys, line)
				}
			}
			continue
		}
		p.Keys = append(p.Keys, strings.TrimSpace(v))
	}
	p.Threshold = threshold
	if threshold < 0 {
		p.Threshold = len(p.Keys)
	}
	if err := p.Validate(); err != nil {
		return p, &PolicyConfigError{Err: err}
	}
	return p, nil
}

// PolicyConfigError is a witness policy that is not valid: a key that does
// not parse, a key listed twice, a threshold out of range.
type PolicyConfigError struct{ Err error }

func (e *PolicyConfigError) Error() string { return e.Err.Error() }
func (e *PolicyConfigError) Unwrap() error { return e.Err }

// ParseKnown adds to known the SHA-256 fingerprints in data: PEM
// certificates (any "-----BEGIN" makes it PEM), or fingerprints one per line
// (hex, colons, an optional "sha256:" prefix and case ignored; blank lines
// and # comments skipped).
func ParseKnown(data []byte, known map[string]bool) error {
	if bytes.Contains(data, []byte("-----BEGIN")) {
		certs, err := ca.ParseCertificatesPEM(data, maxBundleCert)
		if err != nil {
			return err
		}
		for _, c := range certs {
			known[ca.Fingerprint(c)] = true
		}
		return nil
	}
	for n, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fp := strings.ToLower(strings.ReplaceAll(strings.TrimPrefix(line, "sha256:"), ":", ""))
		if b, err := hex.DecodeString(fp); err != nil || len(b) != sha256.Size {
			return fmt.Errorf("line %d: not a SHA-256 fingerprint", n+1)
		}
		known[fp] = true
	}
	return nil
}

// LoadKnown reads the fingerprints of the certificates an owner requested
// (Monitor.Known) from path: a file for ParseKnown, or a directory of PEM
// files (*.pem). An empty path is an empty set.
func LoadKnown(path string) (map[string]bool, error) {
	known := map[string]bool{}
	if path == "" {
		return known, nil
	}
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("known certificates: %w", err)
	}
	files := []string{path}
	if st.IsDir() {
		if files, err = filepath.Glob(filepath.Join(path, "*.pem")); err != nil {
			return nil, fmt.Errorf("known certificates: %w", err)
		}
	}
	for _, f := range files {
		data, err := readFileCapped(f, MaxKnownFile)
		if err != nil {
			return nil, fmt.Errorf("known certificates: %w", err)
		}
		if err := ParseKnown(data, known); err != nil {
			return nil, fmt.Errorf("known certificates %s: %w", f, err)
		}
	}
	return known, nil
}
