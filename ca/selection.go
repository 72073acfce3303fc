package ca

import (
	"bytes"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Choosing the CA certificates and keys from what a token holds. The token
// is only reached through a KeyFinder, so the rules below are pure
// functions of the certificates, the clock and the keys the finder reports:
//
//   - A root is a CA certificate that is self-signed (IsSelfSigned); every
//     other CA certificate is an intermediate (SplitCAs).
//   - The issuing CA (SelectIssuing) is the newest intermediate that is
//     valid now, was issued by a root that is valid now (its issuer name is
//     the root's subject and its signature verifies under the root's key)
//     and whose private key is present with the certificate's public key.
//   - The previous issuing CAs (PreviousIssuing) are the other intermediates
//     meeting the same conditions whose key differs from the issuing one:
//     their leaves may still be valid, so they keep signing CRLs and OCSP.
//   - The ceremony root (SelectRoot) is the newest root valid now whose key
//     is present.

// ErrNoCA is wrapped by the errors of SelectRoot and SelectIssuing when no
// certificate qualifies.
var ErrNoCA = errors.New("ca: no usable CA certificate")

// KeyFinder returns the signer of c's private key where ATR keeps it (the
// token), or nil and no error when that key is not there. Any error ends
// the selection. The finder need not check that the signer's public key is
// c's: the selection does (a key under c's label or ID with another public
// key is skipped as absent).
type KeyFinder func(c *x509.Certificate) (crypto.Signer, error)

// CAKey is a CA certificate with the signer of its private key.
type CAKey struct {
	Cert   *x509.Certificate
	Signer crypto.Signer
}

// IsSelfSigned reports whether c's issuer name is its subject name and its
// signature verifies under its own public key.
func IsSelfSigned(c *x509.Certificate) bool {
	return c != nil && bytes.Equal(c.RawSubject, c.RawIssuer) && c.CheckSignatureFrom(c) == nil
}

// SamePublicKey reports whether a and b are the same public key. A key type
// without an Equal method is never the same.
func SamePublicKey(a, b crypto.PublicKey) bool {
	e, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && b != nil && e.Equal(b)
}

// ValidAt reports whether now is inside c's validity window (both ends
// included, as x509.Certificate.Verify counts them).
func ValidAt(c *x509.Certificate, now time.Time) bool {
	return !now.Before(c.NotBefore) && !now.After(c.NotAfter)
}

// SortNewestFirst sorts certs in place, newest first: latest NotBefore, then
// latest NotAfter; the order of equal ones is kept.
func SortNewestFirst(certs []*x509.Certificate) {
	slices.SortStableFunc(certs, func(a, b *x509.Certificate) int {
		if c := b.NotBefore.Compare(a.NotBefore); c != 0 {
			return c
		}
		return b.NotAfter.Compare(a.NotAfter)
	})
}

// SplitCAs returns the CA certificates among certs (BasicConstraints cA
// true; nil and end-entity certificates are left out) split into
// self-signed roots and intermediates, each newest first (SortNewestFirst).
// The certificates are not copied.
func SplitCAs(certs []*x509.Certificate) (roots, intermediates []*x509.Certificate) {
	for _, c := range certs {
		if c == nil || !c.IsCA {
			continue
		}
		if IsSelfSigned(c) {
			roots = append(roots, c)
		} else {
			intermediates = append(intermediates, c)
		}
	}
	SortNewestFirst(roots)
	SortNewestFirst(intermediates)
	return roots, intermediates
}

// IssuerOf returns the first of roots that issued c and is valid at now:
// c's issuer name is the root's subject and c's signature verifies under
// the root's key. It returns nil when there is none.
func IssuerOf(c *x509.Certificate, roots []*x509.Certificate, now time.Time) *x509.Certificate {
	for _, r := range roots {
		if r == nil || !ValidAt(r, now) || !bytes.Equal(c.RawIssuer, r.RawSubject) {
			continue
		}
		if c.CheckSignatureFrom(r) == nil {
			return r
		}
	}
	return nil
}

// SelectRoot returns the newest of roots (newest first, as SplitCAs returns
// them) that is self-signed, valid at now, and whose key find reports with
// the root's public key. The error wraps ErrNoCA when none qualifies, and
// says why each candidate was passed over.
func SelectRoot(roots []*x509.Certificate, now time.Time, find KeyFinder) (CAKey, error) {
	var skipped []string
	for _, r := range roots {
		if r == nil {
			continue
		}
		switch {
		case !IsSelfSigned(r):
			skipped = append(skipped, describe(r, "not self-signed"))
			continue
		case !ValidAt(r, now):
			skipped = append(skipped, describe(r, "not valid now"))
			continue
		}
		s, err := findKey(r, find)
		if err != nil {
			return CAKey{}, err
		}
		if s == nil {
			skipped = append(skipped, describe(r, "its key is not present"))
			continue
		}
		return CAKey{Cert: r, Signer: s}, nil
	}
	return CAKey{}, noCA("root", skipped)
}

// SelectIssuing returns the issuing CA among intermediates (newest first, as
// SplitCAs returns them): the first one valid at now, issued by one of roots
// valid at now (IssuerOf), whose key find reports with the certificate's
// public key; and the root that issued it. The error wraps ErrNoCA when
// none qualifies, and says why each candidate was passed over.
func SelectIssuing(roots, intermediates []*x509.Certificate, now time.Time, find KeyFinder) (issuing CAKey, root *x509.Certificate, err error) {
	var skipped []string
	for _, c := range intermediates {
		s, r, why, err := usableIntermediate(c, roots, now, find)
		if err != nil {
			return CAKey{}, nil, err
		}
		if why != "" {
			skipped = append(skipped, describe(c, why))
			continue
		}
		return CAKey{Cert: c, Signer: s}, r, nil
	}
	return CAKey{}, nil, noCA("intermediate", skipped)
}

// PreviousIssuing returns the intermediates other than current that still
// answer for their leaves: those SelectIssuing could choose (valid at now,
// issued by a root valid at now, key present), one per key — the first
// (newest) certificate of each key, and none of current's key, which the
// current CA answers for under the same key identifier. The order of
// intermediates is kept.
func PreviousIssuing(roots, intermediates []*x509.Certificate, current *x509.Certificate, now time.Time, find KeyFinder) ([]CAKey, error) {
	var out []CAKey
	known := func(pub crypto.PublicKey) bool {
		if current != nil && SamePublicKey(pub, current.PublicKey) {
			return true
		}
		return slices.ContainsFunc(out, func(k CAKey) bool { return SamePublicKey(pub, k.Cert.PublicKey) })
	}
	for _, c := range intermediates {
		if c == nil || known(c.PublicKey) {
			continue
		}
		s, _, why, err := usableIntermediate(c, roots, now, find)
		if err != nil {
			return nil, err
		}
		if why == "" {
			out = append(out, CAKey{Cert: c, Signer: s})
		}
	}
	return out, nil
}

// usableIntermediate checks one candidate issuing CA; why is "" when it
// qualifies.
func usableIntermediate(c *x509.Certificate, roots []*x509.Certificate, now time.Time, find KeyFinder) (s crypto.Signer, root *x509.Certificate, why string, err error) {
	switch {
	case c == nil:
		return nil, nil, "nil certificate", nil
	case !c.BasicConstraintsValid || !c.IsCA:
		return nil, nil, "not a CA certificate", nil
	case IsSelfSigned(c):
		return nil, nil, "self-signed (a root)", nil
	case !ValidAt(c, now):
		return nil, nil, "not valid now", nil
	}
	if root = IssuerOf(c, roots, now); root == nil {
		return nil, nil, "not issued by a trusted root valid now", nil
	}
	if s, err = findKey(c, find); err != nil {
		return nil, nil, "", err
	}
	if s == nil {
		return nil, nil, "its key is not present", nil
	}
	return s, root, "", nil
}

// findKey asks find for c's key and returns it only when its public key is
// c's.
func findKey(c *x509.Certificate, find KeyFinder) (crypto.Signer, error) {
	if find == nil {
		return nil, errors.New("ca: select CA: nil key finder")
	}
	s, err := find(c)
	if err != nil {
		return nil, fmt.Errorf("ca: select CA: finding the key of %s: %w", describe(c, ""), err)
	}
	if s == nil || !SamePublicKey(s.Public(), c.PublicKey) {
		return nil, nil
	}
	return s, nil
}

func describe(c *x509.Certificate, why string) string {
	s := fmt.Sprintf("%q (serial %s)", c.Subject.CommonName, FormatSerial(c.SerialNumber))
	if why != "" {
		s += ": " + why
	}
	return s
}

func noCA(what string, skipped []string) error {
	if len(skipped) == 0 {
		return fmt.Errorf("%w: no %s certificate", ErrNoCA, what)
	}
	return fmt.Errorf("%w: no valid %s certificate with its key (%s)", ErrNoCA, what, strings.Join(skipped, "; "))
}

// Fingerprint returns the SHA-256 fingerprint of c's DER encoding as
// lowercase hex: the fingerprint_sha256 of the REST API and the log.
func Fingerprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:])
}

// PublicKeyFingerprint returns the SHA-256 of pub's DER SubjectPublicKeyInfo
// as lowercase hex (what ceremony transcripts record of a key).
func PublicKeyFingerprint(pub crypto.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("ca: encoding the public key: %w", err)
	}
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:]), nil
}

// Bundle returns the CA bundle ATR publishes: the intermediates not expired
// at now, in the given order (newest first from SplitCAs), then every root.
// Encode it with EncodeCertificatesPEM.
func Bundle(roots, intermediates []*x509.Certificate, now time.Time) []*x509.Certificate {
	var out []*x509.Certificate
	for _, c := range intermediates {
		if now.Before(c.NotAfter) {
			out = append(out, c)
		}
	}
	return append(out, roots...)
}
