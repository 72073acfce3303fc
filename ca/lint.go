package ca

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"fmt"
	"slices"
	"sort"

	zx509 "github.com/zmap/zcrypto/x509"
	// zlint registers its lints in the packages under lints/, which its
	// root package imports; ATR does not call the root package, so it
	// imports it for them. Without it only the community lints this
	// package imports itself (smallkey.go) would run: newLintSet refuses
	// that (TestLintSetRefusesAMissingSource).
	_ "github.com/zmap/zlint/v3"
	"github.com/zmap/zlint/v3/lint"
)

// Lint selection. ATR's leaves are SPIFFE client certificates in a private
// PKI, not Web PKI TLS server certificates, so we run the zlint lints whose
// source is an IETF RFC that governs every X.509 certificate (RFC 5280 and
// the algorithm RFCs 3279, 5480 and 8813, and RFC 5891 for IDNs) plus the
// community lints (weak keys, Fermat-factorable RSA, validity sanity,
// malformed names). The CA/Browser Forum (TLS, S/MIME, code signing, EV),
// Mozilla, Apple, Chrome and ETSI lints are excluded: they encode root-store
// policies for publicly trusted certificates (e.g. "subscriber certificates
// must have a subject", "must contain a certificate policy", "must have an
// AIA caIssuers URL") that do not apply to a private SPIFFE CA. RFC 6962
// (CT) and RFC 6960 lints do not apply to leaves we issue.
//
// lintExcludeNames lists lints from the included sources that do not fit
// the profile, with the reason; keep it short and justified.
func lintIncludeSources() lint.SourceList {
	return lint.SourceList{lint.RFC5280, lint.RFC3279, lint.RFC5480, lint.RFC8813, lint.RFC5891, lint.Community}
}

func lintExcludeNames() []string {
	return []string{
		// Checks each certificate's signature against the keys of a
		// compromised public CA (eMudhra): an ECDSA verification per lint
		// run (most of Prepare's cost) that cannot apply to a certificate
		// signed by our own lint key.
		"e_cert_issued_by_compromised_emudhra_ca",
	}
}

// newLintSet returns the filtered zlint registry ATR lints with, made
// ready to run.
func newLintSet() (*lintSet, error) {
	opts := lint.FilterOptions{IncludeSources: lintIncludeSources()}
	if ex := lintExcludeNames(); len(ex) > 0 {
		opts.ExcludeNames = ex
	}
	r, err := lint.GlobalRegistry().Filter(opts)
	if err != nil {
		return nil, fmt.Errorf("building zlint registry: %w", err)
	}
	return newLintSetOf(r, lintIncludeSources())
}

// newLintSetOf makes the lint set of the registry r, which must hold
// certificate lints of every source in sources.
func newLintSetOf(r lint.Registry, sources lint.SourceList) (*lintSet, error) {
	for _, src := range sources {
		if len(r.CertificateLints().BySource(src)) == 0 {
			return nil, fmt.Errorf("building zlint registry: no lint of source %s is registered", src)
		}
	}
	cfg := r.GetConfiguration()
	set := &lintSet{config: cfg}
	for _, l := range r.CertificateLints().Lints() {
		sl := setLint{meta: l}
		// zlint keeps to itself which lints of the CA/Browser Forum's
		// sources apply to a certificate; those run through its own
		// Execute. None is in ATR's selection today.
		if l.OverrideFrameworkFilter || !frameworkFiltered(l.Source) {
			sl.inst = l.Lint()
			if err := cfg.MaybeConfigure(sl.inst, l.Name); err != nil {
				return nil, fmt.Errorf("configuring zlint lint %s: %w", l.Name, err)
			}
			if l.Name == smallKeyLintName {
				// The same check, a table lookup for P-256 keys instead
				// of ~32 point additions (smallkey.go).
				sl.inst = smallKeyLint{sl.inst}
			}
		}
		set.lints = append(set.lints, sl)
	}
	return set, nil
}

// frameworkFiltered reports whether zlint decides, before a lint of source
// runs, that its framework does not apply to a certificate.
func frameworkFiltered(source lint.LintSource) bool {
	switch source {
	case lint.CABFBaselineRequirements, lint.CABFSMIMEBaselineRequirements, lint.CABFCSBaselineRequirements:
		return true
	}
	return false
}

// lintSet runs a zlint registry's certificate lints as
// zlint.LintCertificateEx does (CheckApplies, CheckEffective, Execute; a
// panic is a fatal finding), returning only the error and fatal findings.
// Unlike LintCertificateEx it makes and configures each lint once, not once
// per certificate, and keeps no result of a lint that passed or did not
// apply: zlint's per-certificate instances, configuration and result map
// were 19 of a leaf lint's 66 KB of allocations (docs/performance-history.md,
// sixteenth pass). The lints of ATR's selection hold
// no state but their configuration, so one instance serves every goroutine
// (TestLintSetMatchesZlint runs them concurrently under -race).
type lintSet struct {
	config lint.Configuration
	lints  []setLint
}

// setLint is one lint of a lintSet: its metadata and, unless zlint's own
// Execute must run it, its instance, configured.
type setLint struct {
	meta *lint.CertificateLint
	inst lint.CertificateLintInterface
}

// run lints zc and returns the error and fatal findings, in no order.
func (s *lintSet) run(zc *zx509.Certificate) []Finding {
	var out []Finding
	for i := range s.lints {
		if r := s.lints[i].run(zc, s.config); r != nil {
			switch r.Status {
			case lint.Error, lint.Fatal:
				out = append(out, Finding{Lint: s.lints[i].meta.Name, Status: r.Status.String(), Details: r.Details})
			}
		}
	}
	return out
}

// run runs one lint on zc and returns its result, or nil if the lint does
// not apply or is not effective for zc.
func (l *setLint) run(zc *zx509.Certificate, cfg lint.Configuration) (r *lint.LintResult) {
	if l.inst == nil {
		return l.meta.Execute(zc, cfg)
	}
	defer func() {
		if err := recover(); err != nil {
			r = &lint.LintResult{Status: lint.Fatal, Details: fmt.Sprintf("'%s' panicked. Error: %v", l.meta.Name, err)}
		}
	}()
	if !l.inst.CheckApplies(zc) || !l.meta.CheckEffective(zc) {
		return nil
	}
	return l.inst.Execute(zc)
}

// profileLints are ATR's own lints of one certificate profile: agentLints
// for agent leaves, serverLints (server.go) for the registry's TLS server
// certificate. Each profile's certificates are linted with its own lints
// only: an agent lint such as e_atr_one_uri_san never applies to a server
// certificate, nor a server lint to an agent leaf.
type profileLints func(c *x509.Certificate) []Finding

// agentProfile returns the agent lints for the leaf of agent name.
func (i *Issuer) agentProfile(name string) profileLints {
	return func(c *x509.Certificate) []Finding { return i.agentLints(c, name) }
}

// lintTemplate signs tmpl over pub with the throwaway lint key under the
// lint issuer, then runs zlint and the agent lints on the result. It
// returns the lint certificate, parsed, or a *LintError.
func (i *Issuer) lintTemplate(tmpl *x509.Certificate, pub crypto.PublicKey, name string) (*x509.Certificate, error) {
	return i.lintTemplateAs(tmpl, pub, i.agentProfile(name))
}

// lintTemplateAs is lintTemplate with the profile lints atr.
func (i *Issuer) lintTemplateAs(tmpl *x509.Certificate, pub crypto.PublicKey, atr profileLints) (*x509.Certificate, error) {
	der, err := x509.CreateCertificate(rand.Reader, tmpl, i.lintCert, pub, i.lintSigner)
	if err != nil {
		return nil, fmt.Errorf("ca: lint: signing with the lint key: %w", err)
	}
	return i.lintCertificate(der, atr)
}

// lintTBS lints the certificate of the TBSCertificate tbs (leafTBS) that
// carries the placeholder signature (leafSig) with zlint and the profile
// lints atr, and returns it, parsed, or a *LintError.
func (i *Issuer) lintTBS(tbs []byte, atr profileLints) (*x509.Certificate, error) {
	der, err := certificateDER(tbs, i.leafSig.algID, i.leafSig.placeholder)
	if err != nil {
		return nil, fmt.Errorf("ca: lint: encoding the lint certificate: %w", err)
	}
	return i.lintCertificate(der, atr)
}

// lintCertificate runs zlint and the profile lints atr on the lint
// certificate der and returns it, parsed, or a *LintError.
func (i *Issuer) lintCertificate(der []byte, atr profileLints) (*x509.Certificate, error) {
	findings, c, err := lintWith(der, i.lints, false, atr)
	if err != nil {
		return nil, err
	}
	if len(findings) > 0 {
		return nil, &LintError{Findings: findings}
	}
	return c, nil
}

// lintDER runs zlint and the agent lints on a DER certificate and returns
// the error and fatal findings, sorted by lint name.
func (i *Issuer) lintDER(der []byte, name string) ([]Finding, error) {
	return i.lintDERAs(der, i.agentProfile(name))
}

// lintDERAs is lintDER with the profile lints atr.
func (i *Issuer) lintDERAs(der []byte, atr profileLints) ([]Finding, error) {
	findings, _, err := lintWith(der, i.lints, false, atr)
	return findings, err
}

// lintWith runs the zlint lints of set and the profile lints atr on a DER
// certificate and returns the error and fatal findings, sorted by lint
// name, and the certificate as crypto/x509 parsed it. selfSigned tells
// zlint that the certificate stands for a self-signed one (a root template
// signed with the throwaway lint key, whose signature does not verify under
// its own public key, which is how zcrypto would otherwise decide), so that
// zlint applies its root CA lints.
func lintWith(der []byte, set *lintSet, selfSigned bool, atr profileLints) ([]Finding, *x509.Certificate, error) {
	zc, err := zx509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("ca: lint: zcrypto cannot parse the certificate: %w", err)
	}
	if selfSigned {
		zc.SelfSigned = true
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("ca: lint: crypto/x509 cannot parse the certificate: %w", err)
	}
	findings := set.run(zc)
	findings = append(findings, atr(c)...)
	sort.Slice(findings, func(a, b int) bool { return findings[a].Lint < findings[b].Lint })
	return findings, c, nil
}

// Extension OIDs an agent certificate may carry; anything else (notably
// anything a CSR might have asked for) is a lint error.
const (
	oidExtKeyUsage         = "2.5.29.15"
	oidExtExtKeyUsage      = "2.5.29.37"
	oidExtBasicConstraints = "2.5.29.19"
	oidExtSubjectKeyID     = "2.5.29.14"
	oidExtAuthorityKeyID   = "2.5.29.35"
	oidExtSAN              = "2.5.29.17"
	oidExtCRLDP            = "2.5.29.31"
	oidExtAIA              = "1.3.6.1.5.5.7.1.1"
)

// agentLints are ATR's own lints of the agent profile, over the certificate
// as crypto/x509 parses it: the agent identity, extended key usage and
// lifetime, then leafLints. Names start with "e_atr_".
func (i *Issuer) agentLints(c *x509.Certificate, name string) []Finding {
	var out []Finding
	fail := func(lintName, format string, args ...any) {
		out = append(out, Finding{Lint: lintName, Status: "error", Details: fmt.Sprintf(format, args...)})
	}
	p := i.profile

	// Identity: exactly one URI SAN, the agent's SPIFFE ID; no other names.
	if len(c.URIs) != 1 {
		fail("e_atr_one_uri_san", "%d URI SANs, want 1", len(c.URIs))
	} else if got, err := AgentName(c, p.TrustDomain); err != nil || got != name {
		fail("e_atr_one_uri_san", "URI SAN %q is not %q", c.URIs[0].String(), AgentURI(p.TrustDomain, name))
	}
	if len(c.DNSNames)+len(c.EmailAddresses)+len(c.IPAddresses) > 0 {
		fail("e_atr_no_other_sans", "DNS, email or IP SANs present")
	}
	want := i.leafEKUs()
	if !slices.Equal(c.ExtKeyUsage, want) || len(c.UnknownExtKeyUsage) > 0 {
		fail("e_atr_ext_key_usage", "extended key usage %v (+%d unknown), want %v", c.ExtKeyUsage, len(c.UnknownExtKeyUsage), want)
	}
	if d := c.NotAfter.Sub(c.NotBefore); d <= 0 || d > p.Lifetime+p.Backdate || d > MaxLeafLifetime+MaxBackdate {
		fail("e_atr_lifetime", "validity %v exceeds profile lifetime %v + backdate %v", d, p.Lifetime, p.Backdate)
	}
	return append(out, i.leafLints(c)...)
}

// leafLints are ATR's lints every end-entity certificate of the issuer
// passes, agent leaf or server certificate: empty subject, not a CA,
// digitalSignature only, validity inside the issuer's, serial, key policy,
// key identifiers, the profile's CRL and OCSP URLs, and only the profile's
// extensions.
func (i *Issuer) leafLints(c *x509.Certificate) []Finding {
	var out []Finding
	fail := func(lintName, format string, args ...any) {
		out = append(out, Finding{Lint: lintName, Status: "error", Details: fmt.Sprintf(format, args...)})
	}
	p := i.profile

	if !bytes.Equal(c.RawSubject, []byte{0x30, 0x00}) { // empty RDNSequence
		fail("e_atr_empty_subject", "subject is %q, want empty", c.Subject.String())
	}

	// Not a CA, signing only.
	if !c.BasicConstraintsValid || c.IsCA {
		fail("e_atr_not_ca", "basicConstraints missing or cA=true")
	}
	if c.KeyUsage != x509.KeyUsageDigitalSignature {
		fail("e_atr_key_usage", "key usage %#x, want digitalSignature only", c.KeyUsage)
	}

	// Validity within the issuer.
	if c.NotBefore.Before(i.cert.NotBefore) || c.NotAfter.After(i.cert.NotAfter) {
		fail("e_atr_within_issuer_validity", "validity not inside the issuing certificate's")
	}

	// Serial and key.
	if err := checkSerial(c.SerialNumber); err != nil || c.SerialNumber.BitLen() < minSerialBits {
		fail("e_atr_serial", "serial must be positive, at least %d bits and at most 20 octets", minSerialBits)
	}
	if err := CheckPublicKey(c.PublicKey); err != nil {
		fail("e_atr_key_policy", "%v", err)
	}

	// Key identifiers and revocation pointers.
	if len(c.SubjectKeyId) == 0 {
		fail("e_atr_subject_key_id", "missing subject key identifier")
	}
	if !bytes.Equal(c.AuthorityKeyId, i.cert.SubjectKeyId) {
		fail("e_atr_authority_key_id", "authority key identifier is not the issuer's subject key identifier")
	}
	if !slices.Equal(c.CRLDistributionPoints, nonEmpty(p.CRLURL)) {
		fail("e_atr_crl_distribution_point", "CRL distribution points %q, want %q", c.CRLDistributionPoints, nonEmpty(p.CRLURL))
	}
	if !slices.Equal(c.OCSPServer, nonEmpty(p.OCSPURL)) || len(c.IssuingCertificateURL) > 0 {
		fail("e_atr_ocsp_aia", "OCSP servers %q (+%d caIssuers), want %q", c.OCSPServer, len(c.IssuingCertificateURL), nonEmpty(p.OCSPURL))
	}

	// Only the extensions of the profile, each once.
	allowed := []string{oidExtKeyUsage, oidExtExtKeyUsage, oidExtBasicConstraints,
		oidExtSubjectKeyID, oidExtAuthorityKeyID, oidExtSAN, oidExtCRLDP, oidExtAIA}
	seen := map[string]bool{}
	for _, e := range c.Extensions {
		id := e.Id.String()
		if !slices.Contains(allowed, id) {
			fail("e_atr_extensions_allowed", "extension %v not in the leaf profile", e.Id)
		}
		if seen[id] {
			fail("e_atr_extensions_allowed", "extension %v repeated", e.Id)
		}
		seen[id] = true
		if id == oidExtKeyUsage && !e.Critical {
			fail("e_atr_key_usage", "key usage extension not critical")
		}
	}
	if !seen[oidExtKeyUsage] {
		fail("e_atr_key_usage", "key usage extension missing")
	}
	return out
}

func nonEmpty(s string) []string {
	if s == "" {
		return nil
	}
	return []string{s}
}
