package ca

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"time"
)

// The CA certificates of the key ceremonies go through the same pipeline as
// agent leaves and the server certificate (Issuer.Prepare, Issuer.Sign):
//
//	Step 1: the template (RootTemplate, IntermediateTemplateWithOptions) is
//	        signed with a throwaway key of the same algorithm and size as the
//	        real signer, under a lint issuer that mirrors the real issuer's
//	        subject and key identifier (for a root: the template itself), so
//	        that its TBSCertificate is byte-identical to the real one.
//	Step 2: the result is linted with zlint (the same lint selection as
//	        leaves) and ATR's CA lints (rootLints, intermediateLints); any
//	        error or fatal finding is a *LintError and nothing is signed.
//	Step 3: the real signer (the root key on its token) signs.
//	Step 4: the result is refused unless its TBSCertificate equals the
//	        linted one and its signature verifies under the issuer (for a
//	        root, under its own key) — the signer is checked, not trusted.
//
// CreateCertificate, which signs without linting, remains for tests and
// fixtures; ATR's ceremonies use CreateRoot and CreateIntermediate.

// CreateRoot signs the root template tmpl (from RootTemplate) with signer,
// the root's own key, through the linted path above, and returns the
// self-signed root certificate. A template the lints refuse is a
// *LintError, and nothing was signed with signer.
func CreateRoot(tmpl *x509.Certificate, signer crypto.Signer) (*x509.Certificate, error) {
	if tmpl == nil || signer == nil {
		return nil, errors.New("ca: create root: nil template or signer")
	}
	tbs, err := lintCA(tmpl, nil, signer.Public(), signer.Public(), rootLints)
	if le := (*LintError)(nil); errors.As(err, &le) {
		return nil, le
	} else if err != nil {
		return nil, fmt.Errorf("ca: create root: %w", err)
	}
	c, err := signCA(tmpl, nil, signer.Public(), signer, tbs)
	if err != nil {
		return nil, fmt.Errorf("ca: create root: %w", err)
	}
	return c, nil
}

// CreateIntermediate has root (the root certificate and the signer of its
// key) certify pub with the intermediate template tmpl (from
// IntermediateTemplateWithOptions) through the linted path above. It
// refuses an intermediate that would outlive the root, and checks that the
// result verifies to the root at now (x509.Certificate.Verify: validity,
// name constraints). A template the lints refuse is a *LintError, and
// nothing was signed with the root's key.
func CreateIntermediate(tmpl *x509.Certificate, root CAKey, pub crypto.PublicKey, now time.Time) (*x509.Certificate, error) {
	if tmpl == nil || root.Cert == nil || root.Signer == nil || pub == nil {
		return nil, errors.New("ca: create intermediate: nil argument")
	}
	if !SamePublicKey(root.Signer.Public(), root.Cert.PublicKey) {
		return nil, errors.New("ca: create intermediate: the root signer's key is not the root certificate's")
	}
	if tmpl.NotAfter.After(root.Cert.NotAfter) {
		return nil, fmt.Errorf("ca: create intermediate: the intermediate would outlive the root (root expires %s); use a shorter lifetime",
			root.Cert.NotAfter.UTC().Format(time.RFC3339))
	}
	lints := func(c *x509.Certificate) []Finding { return intermediateLints(c, root.Cert) }
	tbs, err := lintCA(tmpl, root.Cert, pub, root.Signer.Public(), lints)
	if le := (*LintError)(nil); errors.As(err, &le) {
		return nil, le
	} else if err != nil {
		return nil, fmt.Errorf("ca: create intermediate: %w", err)
	}
	c, err := signCA(tmpl, root.Cert, pub, root.Signer, tbs)
	if err != nil {
		return nil, fmt.Errorf("ca: create intermediate: %w", err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(root.Cert)
	if _, err := c.Verify(x509.VerifyOptions{Roots: pool, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return nil, fmt.Errorf("ca: create intermediate: the new intermediate does not verify against the root: %w", err)
	}
	return c, nil
}

// lintCA is steps 1 and 2: it signs tmpl over pub with a throwaway key like
// signerPub under a lint issuer mirroring parent (nil: self-signed), lints
// the result and returns its TBSCertificate.
func lintCA(tmpl, parent *x509.Certificate, pub, signerPub crypto.PublicKey, atr profileLints) ([]byte, error) {
	lintKey, err := newLintKey(signerPub)
	if err != nil {
		return nil, err
	}
	lintParent := tmpl
	if parent != nil {
		if lintParent, err = newLintIssuerCert(parent, lintKey); err != nil {
			return nil, err
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, lintParent, pub, lintKey)
	if err != nil {
		return nil, fmt.Errorf("lint: signing with the lint key: %w", err)
	}
	set, err := newLintSet()
	if err != nil {
		return nil, err
	}
	findings, _, err := lintWith(der, set, parent == nil, atr)
	if err != nil {
		return nil, err
	}
	if len(findings) > 0 {
		return nil, &LintError{Findings: findings}
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("lint: parsing the lint certificate: %w", err)
	}
	return c.RawTBSCertificate, nil
}

// signCA is steps 3 and 4: the real signature of tmpl over pub by signer
// under parent (nil: self-signed), refused unless the TBSCertificate is tbs
// and the signature verifies.
func signCA(tmpl, parent *x509.Certificate, pub crypto.PublicKey, signer crypto.Signer, tbs []byte) (*x509.Certificate, error) {
	p := parent
	if p == nil {
		p = tmpl
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p, pub, signer)
	if err != nil {
		return nil, fmt.Errorf("signing: %w", err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parsing the signed certificate: %w", err)
	}
	if !bytes.Equal(c.RawTBSCertificate, tbs) {
		return nil, errors.New("the signed TBSCertificate differs from the linted one")
	}
	issuer := parent
	if issuer == nil {
		issuer = c
	}
	if err := c.CheckSignatureFrom(issuer); err != nil {
		return nil, fmt.Errorf("the signature does not verify: %w", err)
	}
	return c, nil
}

// Extension OIDs of CA certificates besides those of leaves (lint.go).
const (
	oidExtNameConstraints = "2.5.29.30"
)

// rootLints are ATR's lints of the root profile (RootTemplate): self-issued,
// then caLints with pathLen 1, key usage keyCertSign|cRLSign, lifetime at
// most MaxRootLifetime, and no name constraints or CRL distribution point.
func rootLints(c *x509.Certificate) []Finding {
	var out []Finding
	if !bytes.Equal(c.RawSubject, c.RawIssuer) {
		out = append(out, Finding{Lint: "e_atr_root_self_issued", Status: "error", Details: "issuer is not the subject"})
	}
	if len(c.AuthorityKeyId) > 0 && !bytes.Equal(c.AuthorityKeyId, c.SubjectKeyId) {
		out = append(out, Finding{Lint: "e_atr_authority_key_id", Status: "error", Details: "a root's authority key identifier, if present, is its subject key identifier"})
	}
	return append(out, caLints(c, caProfile{
		pathLen:    1,
		keyUsage:   x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		lifetime:   MaxRootLifetime,
		extensions: []string{oidExtKeyUsage, oidExtBasicConstraints, oidExtSubjectKeyID, oidExtAuthorityKeyID},
	})...)
}

// intermediateLints are ATR's lints of the issuing CA profile
// (IntermediateTemplateWithOptions) under root: issued by root (authority
// key identifier, validity inside the root's), then caLints with pathLen 0,
// key usage keyCertSign|cRLSign|digitalSignature, lifetime at most
// MaxIntermediateLifetime; name constraints, if any, are critical and only
// permit URI domains; at most one CRL distribution point.
func intermediateLints(c, root *x509.Certificate) []Finding {
	var out []Finding
	fail := func(lintName, format string, args ...any) {
		out = append(out, Finding{Lint: lintName, Status: "error", Details: fmt.Sprintf(format, args...)})
	}
	if !bytes.Equal(c.RawIssuer, root.RawSubject) {
		fail("e_atr_issuer_name", "issuer is not the root's subject")
	}
	if !bytes.Equal(c.AuthorityKeyId, root.SubjectKeyId) {
		fail("e_atr_authority_key_id", "authority key identifier is not the root's subject key identifier")
	}
	if c.NotBefore.Before(root.NotBefore) || c.NotAfter.After(root.NotAfter) {
		fail("e_atr_within_issuer_validity", "validity not inside the root's")
	}
	if len(c.PermittedDNSDomains)+len(c.ExcludedDNSDomains)+len(c.PermittedIPRanges)+len(c.ExcludedIPRanges)+
		len(c.PermittedEmailAddresses)+len(c.ExcludedEmailAddresses)+len(c.ExcludedURIDomains) > 0 || len(c.PermittedURIDomains) > 1 {
		fail("e_atr_ca_name_constraints", "name constraints other than one permitted URI domain (the trust domain)")
	}
	if len(c.CRLDistributionPoints) > 1 {
		fail("e_atr_crl_distribution_point", "%d CRL distribution points, want at most 1", len(c.CRLDistributionPoints))
	}
	for _, e := range c.Extensions {
		if e.Id.String() == oidExtNameConstraints && !e.Critical {
			fail("e_atr_ca_name_constraints", "name constraints extension not critical")
		}
	}
	return append(out, caLints(c, caProfile{
		pathLen:    0,
		keyUsage:   x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		lifetime:   MaxIntermediateLifetime,
		extensions: []string{oidExtKeyUsage, oidExtBasicConstraints, oidExtSubjectKeyID, oidExtAuthorityKeyID, oidExtNameConstraints, oidExtCRLDP},
	})...)
}

// caProfile is what the root and issuing CA profiles differ in.
type caProfile struct {
	pathLen    int
	keyUsage   x509.KeyUsage
	lifetime   time.Duration
	extensions []string // the extensions the profile allows
}

// caLints are the lints every CA certificate of ATR passes: subject CN=…
// only (checkCN), critical basicConstraints cA=true with the profile's
// pathLen, the profile's key usage (critical) and no extended key usage,
// serial and key policy, a subject key identifier, the profile's lifetime
// (plus the backdate) and only the profile's extensions, each once.
func caLints(c *x509.Certificate, p caProfile) []Finding {
	var out []Finding
	fail := func(lintName, format string, args ...any) {
		out = append(out, Finding{Lint: lintName, Status: "error", Details: fmt.Sprintf(format, args...)})
	}
	if len(c.Subject.Names) != 1 || checkCN(c.Subject.CommonName) != nil {
		fail("e_atr_ca_subject", "subject %q, want exactly one printable common name", c.Subject.String())
	}
	if !c.BasicConstraintsValid || !c.IsCA {
		fail("e_atr_ca_basic_constraints", "basicConstraints missing or cA=false")
	} else if c.MaxPathLen != p.pathLen || (p.pathLen == 0 && !c.MaxPathLenZero) {
		fail("e_atr_ca_basic_constraints", "pathLenConstraint %d, want %d", c.MaxPathLen, p.pathLen)
	}
	if c.KeyUsage != p.keyUsage {
		fail("e_atr_key_usage", "key usage %#x, want %#x", c.KeyUsage, p.keyUsage)
	}
	if len(c.ExtKeyUsage)+len(c.UnknownExtKeyUsage) > 0 {
		fail("e_atr_ca_ext_key_usage", "a CA certificate carries no extended key usage")
	}
	if err := checkSerial(c.SerialNumber); err != nil || c.SerialNumber.BitLen() < minSerialBits {
		fail("e_atr_serial", "serial must be positive, at least %d bits and at most 20 octets", minSerialBits)
	}
	if err := CheckPublicKey(c.PublicKey); err != nil {
		fail("e_atr_key_policy", "%v", err)
	}
	if len(c.SubjectKeyId) == 0 {
		fail("e_atr_subject_key_id", "missing subject key identifier")
	}
	if d := c.NotAfter.Sub(c.NotBefore); d <= 0 || d > p.lifetime+caBackdate {
		fail("e_atr_ca_lifetime", "validity %v exceeds %v + backdate %v", d, p.lifetime, caBackdate)
	}
	seen := map[string]bool{}
	for _, e := range c.Extensions {
		id := e.Id.String()
		if !slices.Contains(p.extensions, id) {
			fail("e_atr_extensions_allowed", "extension %v not in the CA profile", e.Id)
		}
		if seen[id] {
			fail("e_atr_extensions_allowed", "extension %v repeated", e.Id)
		}
		seen[id] = true
		if (id == oidExtKeyUsage || id == oidExtBasicConstraints) && !e.Critical {
			fail("e_atr_ca_critical", "extension %v not critical", e.Id)
		}
	}
	if !seen[oidExtKeyUsage] || !seen[oidExtBasicConstraints] {
		fail("e_atr_ca_critical", "key usage or basic constraints extension missing")
	}
	return out
}
