package ca

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/ocsp"
)

// RFC 5280 section 5.3.1 reason codes, by their ASN.1 names.
func reasonNames() []string {
	return []string{
		0:  "unspecified",
		1:  "keyCompromise",
		2:  "cACompromise",
		3:  "affiliationChanged",
		4:  "superseded",
		5:  "cessationOfOperation",
		6:  "certificateHold",
		8:  "removeFromCRL",
		9:  "privilegeWithdrawn",
		10: "aACompromise",
	}
}

// ReasonCode maps an RFC 5280 revocation reason name ("keyCompromise",
// matched case-insensitively, so "keycompromise" works too) to its code.
// certificateHold and removeFromCRL are refused with a *PolicyError: in ATR
// revocation is terminal. Unknown names are a *PolicyError too.
func ReasonCode(name string) (int, error) {
	for code, n := range reasonNames() {
		if n == "" || !strings.EqualFold(n, name) {
			continue
		}
		if code == ocsp.CertificateHold || code == ocsp.RemoveFromCRL {
			return 0, policyErr("reason", "%s is not supported: revocation is terminal", n)
		}
		return code, nil
	}
	return 0, policyErr("reason", "unknown revocation reason (want an RFC 5280 reason name such as keyCompromise)")
}

// ReasonName returns the RFC 5280 name of a reason code, or "" for codes
// ATR never uses (certificateHold, removeFromCRL, unassigned values).
func ReasonName(code int) string {
	names := reasonNames()
	if code < 0 || code >= len(names) || code == ocsp.CertificateHold || code == ocsp.RemoveFromCRL {
		return ""
	}
	return names[code]
}

// Responder signs the revocation information (CRLs, OCSP responses) of one
// CA through that CA's key on the token. Every issuing CA is one (see
// Issuer.Responder); so is an older intermediate whose leaves are still
// valid after a rotation, and the root when a ceremony signs its CRL of
// revoked intermediates. It is safe for concurrent use.
type Responder struct {
	signer crypto.Signer
	cert   *x509.Certificate
	// crlEnc is set once crlTBS encoded a CRL of this responder as
	// x509.CreateRevocationList did (crltbs.go).
	crlEnc atomic.Pointer[crlSignature]
}

// NewResponder returns a Responder signing with signer for the CA of cert.
// It checks that signer's public key is cert's and that cert is a CA allowed
// to sign CRLs, with a subject key identifier (which names its CRL).
func NewResponder(signer crypto.Signer, cert *x509.Certificate) (*Responder, error) {
	if signer == nil || cert == nil {
		return nil, errors.New("ca: new responder: nil signer or certificate")
	}
	pub, ok := signer.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(cert.PublicKey) {
		return nil, errors.New("ca: new responder: signer's public key does not match the CA certificate")
	}
	if !cert.BasicConstraintsValid || !cert.IsCA || cert.KeyUsage&x509.KeyUsageCRLSign == 0 {
		return nil, errors.New("ca: new responder: certificate is not a CA allowed to sign CRLs")
	}
	if len(cert.SubjectKeyId) == 0 {
		return nil, errors.New("ca: new responder: CA certificate has no subject key identifier")
	}
	return &Responder{signer: signer, cert: cert}, nil
}

// Responder returns the responder of the issuing CA (same key, same
// certificate).
func (i *Issuer) Responder() *Responder { return &Responder{signer: i.signer, cert: i.cert} }

// Certificate returns the CA certificate the responder answers for.
func (r *Responder) Certificate() *x509.Certificate { return r.cert }

// KeyID returns the CA's subject key identifier as lowercase hex: what the
// authority key identifier of every certificate it issued holds, and the
// name of its CRL (/v1/crl/{key id}).
func (r *Responder) KeyID() string { return KeyID(r.cert) }

// KeyID returns c's subject key identifier as lowercase hex.
func KeyID(c *x509.Certificate) string { return hex.EncodeToString(c.SubjectKeyId) }

// SignCRL signs a complete CRL with the issuing key; see Responder.SignCRL.
func (i *Issuer) SignCRL(number *big.Int, thisUpdate, nextUpdate time.Time, revoked []x509.RevocationListEntry) ([]byte, error) {
	return i.Responder().SignCRL(number, thisUpdate, nextUpdate, revoked)
}

// SignOCSP signs an OCSP response with the issuing key; see
// Responder.SignOCSP.
func (i *Issuer) SignOCSP(tmpl ocsp.Response) ([]byte, error) {
	return i.Responder().SignOCSP(tmpl)
}

// SignCRL signs a complete CRL with the CA's key: CRL number number
// (positive, at most 20 octets; keeping it monotonic is the caller's job),
// thisUpdate and nextUpdate (after thisUpdate), and the revoked entries
// (SerialNumber, RevocationTime and ReasonCode; reason codes are checked
// with ReasonName, and unspecified (0) is omitted from the encoding as RFC
// 5280 recommends). It returns the DER CRL, whose signature was checked
// under the issuing certificate's key. The first CRL with entries is made
// by x509.CreateRevocationList; once crlTBS encoded it byte for byte, the
// responder's later CRLs are encoded by crlTBS (crltbs.go), without
// encoding/asn1's reflection over every entry.
func (r *Responder) SignCRL(number *big.Int, thisUpdate, nextUpdate time.Time, revoked []x509.RevocationListEntry) ([]byte, error) {
	if err := checkSerial(number); err != nil {
		return nil, fmt.Errorf("ca: sign CRL: CRL number: %w", err)
	}
	if thisUpdate.IsZero() || nextUpdate.IsZero() || !nextUpdate.After(thisUpdate) {
		return nil, errors.New("ca: sign CRL: thisUpdate and nextUpdate must be set, nextUpdate after thisUpdate")
	}
	entries := make([]x509.RevocationListEntry, len(revoked))
	for k, e := range revoked {
		if err := checkSerial(e.SerialNumber); err != nil {
			return nil, fmt.Errorf("ca: sign CRL: entry %d: %w", k, err)
		}
		if ReasonName(e.ReasonCode) == "" {
			return nil, fmt.Errorf("ca: sign CRL: entry %d: reason code %d not allowed", k, e.ReasonCode)
		}
		if e.RevocationTime.IsZero() {
			return nil, fmt.Errorf("ca: sign CRL: entry %d: missing revocation time", k)
		}
		entries[k] = x509.RevocationListEntry{
			SerialNumber:   e.SerialNumber,
			RevocationTime: e.RevocationTime.UTC(),
			ReasonCode:     e.ReasonCode,
		}
	}
	if sig := r.crlEnc.Load(); sig != nil {
		return r.signCRLEncoded(sig, number, thisUpdate, nextUpdate, entries)
	}
	tmpl := &x509.RevocationList{
		Number:                    number,
		ThisUpdate:                thisUpdate.UTC(),
		NextUpdate:                nextUpdate.UTC(),
		RevokedCertificateEntries: entries,
	}
	// CreateRevocationList checks the signature under the signer's public
	// key, which NewResponder matched to r.cert's, and fails when it does
	// not verify (TestSignCRL's misbehaving signer). The CRL is not parsed
	// back to check it again: at 100,000 entries that parse allocated 63 MB
	// (docs/performance-history.md, seventeenth pass).
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, r.cert, r.signer)
	if err != nil {
		return nil, fmt.Errorf("ca: sign CRL: %w", err)
	}
	r.learnCRLEncoding(der, number, thisUpdate, nextUpdate, entries)
	return der, nil
}

// SignOCSP signs an OCSP response with the issuing key (the issuing CA is
// its own responder; the certificate is not embedded). tmpl must set
// SerialNumber, Status (ocsp.Good, ocsp.Revoked or ocsp.Unknown), ThisUpdate
// and NextUpdate (after ThisUpdate); a revoked status needs RevokedAt and a
// RevocationReason accepted by ReasonName. IssuerHash defaults to SHA-1 (what
// most clients send; callers answering a request should copy its hash
// algorithm). The response is parsed back and its signature checked.
func (r *Responder) SignOCSP(tmpl ocsp.Response) ([]byte, error) {
	if err := checkSerial(tmpl.SerialNumber); err != nil {
		return nil, fmt.Errorf("ca: sign OCSP: serial: %w", err)
	}
	switch tmpl.Status {
	case ocsp.Good, ocsp.Unknown:
	case ocsp.Revoked:
		if tmpl.RevokedAt.IsZero() {
			return nil, errors.New("ca: sign OCSP: revoked status without revocation time")
		}
		if ReasonName(tmpl.RevocationReason) == "" {
			return nil, fmt.Errorf("ca: sign OCSP: revocation reason %d not allowed", tmpl.RevocationReason)
		}
	default:
		return nil, fmt.Errorf("ca: sign OCSP: status %d not allowed", tmpl.Status)
	}
	if tmpl.ThisUpdate.IsZero() || !tmpl.NextUpdate.After(tmpl.ThisUpdate) {
		return nil, errors.New("ca: sign OCSP: need thisUpdate and a later nextUpdate")
	}
	tmpl.Certificate = nil
	der, err := ocsp.CreateResponse(r.cert, r.cert, tmpl, r.signer)
	if err != nil {
		return nil, fmt.Errorf("ca: sign OCSP: %w", err)
	}
	if _, err := ocsp.ParseResponse(der, r.cert); err != nil {
		return nil, fmt.Errorf("ca: sign OCSP: parsing result: %w", err)
	}
	return der, nil
}

// NextCRL returns what the CRL of issuer that follows prev lists, for a CA
// whose CRL is extended rather than rebuilt (the root's CRL of revoked
// intermediates): prev's CRL number plus one (1 when prev is nil, the
// first CRL), prev's entries, and one entry for each of revoke that prev
// does not list yet, revoked at now (truncated to the second) with reason.
// added are the certificates of revoke that got an entry; the others were
// listed already and keep their first revocation time and reason. It
// refuses a prev that does not parse, verify under issuer or carry a CRL
// number, and a certificate of revoke that issuer did not issue (issuer
// name and signature). Sign the result with Responder.SignCRL.
func NextCRL(prev []byte, issuer *x509.Certificate, revoke []*x509.Certificate, reason int, now time.Time) (number *big.Int, entries []x509.RevocationListEntry, added []*x509.Certificate, err error) {
	if issuer == nil {
		return nil, nil, nil, errors.New("ca: next CRL: nil issuer")
	}
	if ReasonName(reason) == "" {
		return nil, nil, nil, fmt.Errorf("ca: next CRL: reason code %d not allowed", reason)
	}
	for _, c := range revoke {
		if c == nil || !bytes.Equal(c.RawIssuer, issuer.RawSubject) || c.CheckSignatureFrom(issuer) != nil {
			name := "<nil>"
			if c != nil {
				name = describe(c, "")
			}
			return nil, nil, nil, fmt.Errorf("ca: next CRL: %s was not issued by %q", name, issuer.Subject.CommonName)
		}
	}
	number = big.NewInt(1)
	if prev != nil {
		crl, err := x509.ParseRevocationList(prev)
		if err != nil || crl.CheckSignatureFrom(issuer) != nil || crl.Number == nil {
			return nil, nil, nil, fmt.Errorf("ca: next CRL: the previous CRL does not verify under %q; refusing to extend it", issuer.Subject.CommonName)
		}
		number.Add(crl.Number, number)
		entries = slices.Clone(crl.RevokedCertificateEntries)
	}
	for _, c := range revoke {
		if slices.ContainsFunc(entries, func(e x509.RevocationListEntry) bool { return e.SerialNumber.Cmp(c.SerialNumber) == 0 }) {
			continue
		}
		entries = append(entries, x509.RevocationListEntry{SerialNumber: c.SerialNumber, RevocationTime: now.UTC().Truncate(time.Second), ReasonCode: reason})
		added = append(added, c)
	}
	return number, entries, added, nil
}
