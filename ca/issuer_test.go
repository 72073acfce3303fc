package ca

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	zx509 "github.com/zmap/zcrypto/x509"
	"github.com/zmap/zlint/v3"
	"github.com/zmap/zlint/v3/lint"
)

func TestIssueRoundTrip(t *testing.T) {
	for _, issuerAlg := range []string{"p256", "p384", "rsa2048", "ed25519"} {
		for _, leafAlg := range []string{"p256", "p384", "ed25519", "rsa2048"} {
			t.Run(issuerAlg+"/"+leafAlg, func(t *testing.T) {
				ca := newTestCA(t, issuerAlg)
				k := newKey(t, leafAlg)
				p, err := ca.issuer.Prepare(newCSR(t, k), "billing-bot.acme", testSerial(t), testNow)
				if err != nil {
					t.Fatalf("Prepare: %v", err)
				}
				leaf, err := ca.issuer.Sign(p)
				if err != nil {
					t.Fatalf("Sign: %v", err)
				}
				if !bytes.Equal(leaf.RawTBSCertificate, p.TBS()) {
					t.Fatal("signed TBS differs from Prepared.TBS")
				}
				if err := ca.verifier.Verify(leaf, nil, testNow); err != nil {
					t.Fatalf("Verify: %v", err)
				}
			})
		}
	}
}

func TestLeafProfile(t *testing.T) {
	ca := newTestCA(t, "p256")
	k := newKey(t, "p256")
	serial := testSerial(t)
	p, err := ca.issuer.Prepare(newCSR(t, k), "billing-bot.acme", serial, testNow.Add(123*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	c, err := ca.issuer.Sign(p)
	if err != nil {
		t.Fatal(err)
	}
	crit := map[string]bool{}
	for _, e := range c.Extensions {
		crit[e.Id.String()] = e.Critical
	}
	wantSKID, _ := subjectKeyID(k.Public())
	checks := []struct {
		what      string
		got, want any
	}{
		{"serial", c.SerialNumber.String(), serial.String()},
		{"Prepared.Serial", p.Serial().String(), serial.String()},
		{"subject", c.Subject.String(), ""},
		{"URIs", len(c.URIs), 1},
		{"URI", c.URIs[0].String(), "spiffe://" + testTD + "/agent/billing-bot.acme"},
		{"SAN critical (empty subject)", crit[oidExtSAN], true},
		{"DNS names", len(c.DNSNames), 0},
		{"BasicConstraintsValid", c.BasicConstraintsValid, true},
		{"IsCA", c.IsCA, false},
		{"KeyUsage", c.KeyUsage, x509.KeyUsageDigitalSignature},
		{"KeyUsage critical", crit[oidExtKeyUsage], true},
		{"EKU", c.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth}},
		{"NotBefore", c.NotBefore, testNow.Add(-DefaultBackdate)},
		{"NotAfter", c.NotAfter, testNow.Add(DefaultLeafLifetime)},
		{"Prepared.NotAfter", p.NotAfter(), c.NotAfter},
		{"CRL DP", c.CRLDistributionPoints, []string{testProfile().CRLURL}},
		{"OCSP", c.OCSPServer, []string{testProfile().OCSPURL}},
		{"AKID", c.AuthorityKeyId, ca.inter.SubjectKeyId},
		{"SKID", c.SubjectKeyId, wantSKID},
		{"issuer", c.Issuer.String(), ca.inter.Subject.String()},
		{"extensions", len(c.Extensions), 8},
	}
	for _, ch := range checks {
		if !equalAny(ch.got, ch.want) {
			t.Errorf("%s = %v, want %v", ch.what, ch.got, ch.want)
		}
	}
	if !k.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(c.PublicKey) {
		t.Error("certificate key is not the CSR key")
	}
}

func equalAny(a, b any) bool {
	switch a := a.(type) {
	case []byte:
		return bytes.Equal(a, b.([]byte))
	case []string:
		return slices.Equal(a, b.([]string))
	case []x509.ExtKeyUsage:
		return slices.Equal(a, b.([]x509.ExtKeyUsage))
	case time.Time:
		return a.Equal(b.(time.Time))
	}
	return a == b
}

func TestProfileDefaultsAndLimits(t *testing.T) {
	base := testProfile()
	tests := []struct {
		name   string
		mutate func(*Profile)
		ok     bool
	}{
		{"defaults", func(*Profile) {}, true},
		{"30 days", func(p *Profile) { p.Lifetime = MaxLeafLifetime }, true},
		{"1 minute backdate", func(p *Profile) { p.Backdate = time.Minute }, true},
		{"no CRL or OCSP", func(p *Profile) { p.CRLURL, p.OCSPURL = "", "" }, true},
		{"31 days", func(p *Profile) { p.Lifetime = MaxLeafLifetime + time.Hour }, false},
		{"negative lifetime", func(p *Profile) { p.Lifetime = -time.Hour }, false},
		{"2 minute backdate", func(p *Profile) { p.Backdate = 2 * time.Minute }, false},
		{"negative backdate", func(p *Profile) { p.Backdate = -time.Second }, false},
		{"no trust domain", func(p *Profile) { p.TrustDomain = "" }, false},
		{"single-label trust domain", func(p *Profile) { p.TrustDomain = "localhost" }, false},
		{"trust domain zlint calls not FQDN", func(p *Profile) { p.TrustDomain = "a.b" }, false},
		{"dev trust domain", func(p *Profile) { p.TrustDomain = "atr.local" }, false}, // name constraints of ca.inter
		{"uppercase trust domain", func(p *Profile) { p.TrustDomain = "Agents.example.com" }, false},
		{"trust domain with path", func(p *Profile) { p.TrustDomain = "a.example/x" }, false},
		{"ldap CRL", func(p *Profile) { p.CRLURL = "ldap://x.example/crl" }, false},
		{"relative OCSP", func(p *Profile) { p.OCSPURL = "/ocsp" }, false},
	}
	ca := newTestCA(t, "p256")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := base
			tt.mutate(&p)
			_, err := NewIssuer(ca.interKey, ca.inter, []*x509.Certificate{ca.root}, p)
			if (err == nil) != tt.ok {
				t.Fatalf("NewIssuer = %v; want ok=%v", err, tt.ok)
			}
		})
	}
}

func TestNewIssuerChecks(t *testing.T) {
	ca := newTestCA(t, "p256")
	other := newTestCA(t, "p256")
	// A CA certificate without name constraints for our trust domain.
	it, _ := IntermediateTemplate("Other TD", "other.example.com", 0, testNow.Add(-time.Hour))
	otherTD, err := CreateCertificate(it, ca.root, ca.interKey.Public(), ca.rootKey)
	if err != nil {
		t.Fatal(err)
	}
	leaf, leafKey := ca.issue(t, "a", "p256")
	tests := []struct {
		name   string
		signer crypto.Signer
		cert   *x509.Certificate
		chain  []*x509.Certificate
	}{
		{"key mismatch", newKey(t, "p256"), ca.inter, nil},
		{"not a CA", leafKey, leaf, nil},
		{"name constraints exclude trust domain", ca.interKey, otherTD, nil},
		{"wrong chain", ca.interKey, ca.inter, []*x509.Certificate{other.root}},
		{"nil chain element", ca.interKey, ca.inter, []*x509.Certificate{nil}},
		{"nil signer", nil, ca.inter, nil},
		{"nil cert", ca.interKey, nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := NewIssuer(tt.signer, tt.cert, tt.chain, testProfile()); err == nil {
				t.Fatal("NewIssuer succeeded")
			}
		})
	}
	// Chain() is the issuing certificate followed by the chain.
	if got := ca.issuer.Chain(); len(got) != 2 || got[0] != ca.inter || got[1] != ca.root {
		t.Fatalf("Chain() = %v", got)
	}
}

func TestPrepareRefusals(t *testing.T) {
	ca := newTestCA(t, "p256")
	csr := newCSR(t, newKey(t, "p256"))
	tests := []struct {
		name   string
		agent  string
		serial *big.Int
		now    time.Time
		policy bool // want *PolicyError
	}{
		{"not normalized", "Billing-Bot", testSerial(t), testNow, true},
		{"bad name", "../x", testSerial(t), testNow, true},
		{"nil serial", "a", nil, testNow, false},
		{"zero serial", "a", big.NewInt(0), testNow, false},
		{"low-entropy serial", "a", big.NewInt(12345), testNow, false},
		{"21-octet serial", "a", new(big.Int).Lsh(big.NewInt(1), 165), testNow, false},
		{"before issuer", "a", testSerial(t), ca.inter.NotBefore.Add(-time.Hour), false},
		{"leaf would outlive issuer", "a", testSerial(t), ca.inter.NotAfter.Add(-time.Hour), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ca.issuer.Prepare(csr, tt.agent, tt.serial, tt.now)
			if err == nil {
				t.Fatal("Prepare succeeded")
			}
			var pe *PolicyError
			if errors.As(err, &pe) != tt.policy {
				t.Fatalf("Prepare error %v; want PolicyError=%v", err, tt.policy)
			}
		})
	}
}

// TestAgentLints feeds deliberately broken templates through the internal
// lint function and checks that the named lints refuse them.
func TestAgentLints(t *testing.T) {
	ca := newTestCA(t, "p256")
	k := newKey(t, "p256")
	tests := []struct {
		name     string
		mutate   func(*x509.Certificate)
		wantLint string
	}{
		{"two URI SANs", func(c *x509.Certificate) { c.URIs = append(c.URIs, mustURL(t, AgentURI(testTD, "b"))) }, "e_atr_one_uri_san"},
		{"no URI SAN", func(c *x509.Certificate) { c.URIs = nil; c.DNSNames = []string{"a.example.com"} }, "e_atr_one_uri_san"},
		{"foreign trust domain", func(c *x509.Certificate) { c.URIs = []*url.URL{mustURL(t, AgentURI("evil.example", "a"))} }, "e_atr_one_uri_san"},
		{"other agent", func(c *x509.Certificate) { c.URIs = []*url.URL{mustURL(t, AgentURI(testTD, "b"))} }, "e_atr_one_uri_san"},
		{"DNS SAN", func(c *x509.Certificate) { c.DNSNames = []string{"a.example.com"} }, "e_atr_no_other_sans"},
		{"subject", func(c *x509.Certificate) { c.Subject = pkix.Name{CommonName: "a"} }, "e_atr_empty_subject"},
		{"cA=true", func(c *x509.Certificate) { c.IsCA = true }, "e_atr_not_ca"},
		{"no basic constraints", func(c *x509.Certificate) { c.BasicConstraintsValid = false }, "e_atr_not_ca"},
		{"keyCertSign", func(c *x509.Certificate) { c.KeyUsage |= x509.KeyUsageCertSign }, "e_atr_key_usage"},
		{"keyEncipherment", func(c *x509.Certificate) { c.KeyUsage |= x509.KeyUsageKeyEncipherment }, "e_atr_key_usage"},
		{"no key usage", func(c *x509.Certificate) { c.KeyUsage = 0 }, "e_atr_key_usage"},
		{"code signing EKU", func(c *x509.Certificate) { c.ExtKeyUsage = append(c.ExtKeyUsage, x509.ExtKeyUsageCodeSigning) }, "e_atr_ext_key_usage"},
		{"no EKU", func(c *x509.Certificate) { c.ExtKeyUsage = nil }, "e_atr_ext_key_usage"},
		{"too long", func(c *x509.Certificate) { c.NotAfter = c.NotAfter.Add(time.Hour) }, "e_atr_lifetime"},
		{"before issuer", func(c *x509.Certificate) { c.NotBefore = ca.inter.NotBefore.Add(-time.Second) }, "e_atr_within_issuer_validity"},
		{"short serial", func(c *x509.Certificate) { c.SerialNumber = big.NewInt(7) }, "e_atr_serial"},
		{"no SKID", func(c *x509.Certificate) { c.SubjectKeyId = nil }, "e_atr_subject_key_id"},
		{"wrong CRL", func(c *x509.Certificate) { c.CRLDistributionPoints = []string{"http://evil.example/crl"} }, "e_atr_crl_distribution_point"},
		{"no OCSP", func(c *x509.Certificate) { c.OCSPServer = nil }, "e_atr_ocsp_aia"},
		{"caIssuers", func(c *x509.Certificate) { c.IssuingCertificateURL = []string{"http://x.example/ca"} }, "e_atr_ocsp_aia"},
		{"extra extension", func(c *x509.Certificate) {
			c.ExtraExtensions = []pkix.Extension{{Id: []int{1, 2, 3, 4}, Value: []byte{0x05, 0x00}}}
		}, "e_atr_extensions_allowed"},
		{"name constraints on leaf", func(c *x509.Certificate) { c.PermittedURIDomains = []string{testTD} }, "e_atr_extensions_allowed"},
		// zlint (RFC 5280) findings.
		{"relative URI (zlint)", func(c *x509.Certificate) { c.URIs = []*url.URL{mustURL(t, "agent/a")} }, "e_ext_san_uri_relative"},
		{"URI host not FQDN (zlint)", func(c *x509.Certificate) { c.URIs = []*url.URL{mustURL(t, "spiffe://localhost/agent/a")} }, "e_ext_san_uri_host_not_fqdn_or_ip"},
		{"DNS SAN with NUL (zlint community)", func(c *x509.Certificate) { c.DNSNames = []string{"a\x00.example.com"} }, "e_san_dns_name_includes_null_char"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tmpl, err := ca.issuer.leafTemplate(k.Public(), "a", testSerial(t), testNow)
			if err != nil {
				t.Fatal(err)
			}
			tt.mutate(tmpl)
			_, err = ca.issuer.lintTemplate(tmpl, k.Public(), "a")
			var le *LintError
			if !errors.As(err, &le) {
				t.Fatalf("lintTemplate error = %v; want *LintError", err)
			}
			if !slices.Contains(le.Lints(), tt.wantLint) {
				t.Fatalf("lints %v do not include %s", le.Lints(), tt.wantLint)
			}
		})
	}
	// The unmodified template passes.
	tmpl, _ := ca.issuer.leafTemplate(k.Public(), "a", testSerial(t), testNow)
	if _, err := ca.issuer.lintTemplate(tmpl, k.Public(), "a"); err != nil {
		t.Fatalf("good template: %v", err)
	}
}

// TestLintWeakLeafKey: a key CheckPublicKey refuses never reaches a
// certificate even if it reaches prepare without ParseCSR.
func TestLintWeakLeafKey(t *testing.T) {
	ca := newTestCA(t, "p256")
	weak := newKey(t, "p521").Public()
	_, err := ca.issuer.prepare(weak, "a", testSerial(t), testNow)
	var le *LintError
	if !errors.As(err, &le) || !slices.Contains(le.Lints(), "e_atr_key_policy") {
		t.Fatalf("prepare with P-521 key: %v; want e_atr_key_policy", err)
	}
}

// TestLintSetMatchesZlint: the lint set ATR runs reports what zlint's own
// LintCertificateEx reports with the same filtered registry — the same
// error and fatal findings, with their details — on certificates that pass
// and on certificates zlint refuses, for P-256, P-384 and RSA keys (the
// Fermat lint is configurable), with every certificate linted by several
// goroutines at once (one instance of each lint serves them all).
func TestLintSetMatchesZlint(t *testing.T) {
	ca := newTestCA(t, "p256")
	set, err := newLintSet()
	if err != nil {
		t.Fatal(err)
	}
	reg, err := lint.GlobalRegistry().Filter(lint.FilterOptions{IncludeSources: lintIncludeSources(), ExcludeNames: lintExcludeNames()})
	if err != nil {
		t.Fatal(err)
	}
	if len(set.lints) != len(reg.CertificateLints().Lints()) || len(set.lints) == 0 {
		t.Fatalf("set holds %d lints, the filtered registry %d", len(set.lints), len(reg.CertificateLints().Lints()))
	}
	tests := []struct {
		name     string
		key      string
		mutate   func(*x509.Certificate)
		wantLint string // a zlint finding the certificate must have; "" for none
	}{
		{"good p256", "p256", func(*x509.Certificate) {}, ""},
		{"good p384", "p384", func(*x509.Certificate) {}, ""},
		{"good rsa", "rsa2048", func(*x509.Certificate) {}, ""},
		{"relative URI", "p256", func(c *x509.Certificate) { c.URIs = []*url.URL{mustURL(t, "agent/a")} }, "e_ext_san_uri_relative"},
		{"URI host not FQDN", "rsa2048", func(c *x509.Certificate) { c.URIs = []*url.URL{mustURL(t, "spiffe://localhost/agent/a")} }, "e_ext_san_uri_host_not_fqdn_or_ip"},
		{"DNS SAN with NUL", "p384", func(c *x509.Certificate) { c.DNSNames = []string{"a\x00.example.com"} }, "e_san_dns_name_includes_null_char"},
		{"no SKID, no AKID", "p256", func(c *x509.Certificate) { c.SubjectKeyId = nil; c.AuthorityKeyId = nil }, ""},
		{"serial 0", "p256", func(c *x509.Certificate) { c.SerialNumber = big.NewInt(0) }, "e_serial_number_not_positive"},
	}
	total := 0
	for _, tt := range tests {
		k := newKey(t, tt.key)
		tmpl, err := ca.issuer.leafTemplate(k.Public(), "a", testSerial(t), testNow)
		if err != nil {
			t.Fatal(err)
		}
		tt.mutate(tmpl)
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.issuer.lintCert, k.Public(), ca.issuer.lintSigner)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		zc, err := zx509.ParseCertificate(der)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		var want []Finding
		for name, r := range zlint.LintCertificateEx(zc, reg).Results {
			if r.Status == lint.Error || r.Status == lint.Fatal {
				want = append(want, Finding{Lint: name, Status: r.Status.String(), Details: r.Details})
			}
		}
		byName := func(a, b Finding) int { return strings.Compare(a.Lint, b.Lint) }
		slices.SortFunc(want, byName)
		if tt.wantLint != "" && !slices.ContainsFunc(want, func(f Finding) bool { return f.Lint == tt.wantLint }) {
			t.Errorf("%s: zlint found %v, want %s among them", tt.name, want, tt.wantLint)
		}
		total += len(want)
		var wg sync.WaitGroup
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				got := set.run(zc)
				slices.SortFunc(got, byName)
				if !slices.Equal(got, want) {
					t.Errorf("%s: lint set found %v, zlint %v", tt.name, got, want)
				}
			}()
		}
		wg.Wait()
	}
	if total == 0 {
		t.Fatal("no certificate had a zlint finding: the comparison showed nothing")
	}
}

// TestLintSetRecoversPanics: a lint that panics is a fatal finding named
// after it, as in zlint, not a crashed issuance.
func TestLintSetRecoversPanics(t *testing.T) {
	meta := &lint.CertificateLint{LintMetadata: lint.LintMetadata{Name: "e_test_panics", Source: lint.Community}}
	set := &lintSet{lints: []setLint{{meta: meta, inst: panickingLint{}}}}
	got := set.run(&zx509.Certificate{})
	if len(got) != 1 || got[0].Lint != "e_test_panics" || got[0].Status != "fatal" || !strings.Contains(got[0].Details, "panicked") {
		t.Fatalf("findings %+v, want one fatal finding of e_test_panics", got)
	}
}

type panickingLint struct{}

func (panickingLint) CheckApplies(*zx509.Certificate) bool { return true }
func (panickingLint) Execute(*zx509.Certificate) *lint.LintResult {
	panic("boom")
}

// misbehavingSigner wraps the real issuing key and breaks its signatures.
type misbehavingSigner struct {
	real crypto.Signer
	mode string
}

func (m misbehavingSigner) Public() crypto.PublicKey { return m.real.Public() }

func (m misbehavingSigner) Sign(r io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	switch m.mode {
	case "garbage":
		return []byte("not a signature"), nil
	case "empty":
		return nil, nil
	case "other message":
		other := sha256.Sum256([]byte("something else"))
		return m.real.Sign(r, other[:], opts)
	case "error":
		return nil, errors.New("token unavailable")
	}
	return m.real.Sign(r, digest, opts)
}

// otherKeySigner claims the issuer's public key but signs with another key.
type otherKeySigner struct {
	pub   crypto.PublicKey
	other crypto.Signer
}

func (o otherKeySigner) Public() crypto.PublicKey { return o.pub }
func (o otherKeySigner) Sign(r io.Reader, d []byte, opts crypto.SignerOpts) ([]byte, error) {
	return o.other.Sign(r, d, opts)
}

func TestSignCatchesMisbehavingSigner(t *testing.T) {
	ca := newTestCA(t, "p256")
	signers := map[string]crypto.Signer{
		"garbage":       misbehavingSigner{ca.interKey, "garbage"},
		"empty":         misbehavingSigner{ca.interKey, "empty"},
		"other message": misbehavingSigner{ca.interKey, "other message"},
		"error":         misbehavingSigner{ca.interKey, "error"},
		"other key":     otherKeySigner{ca.interKey.Public(), newKey(t, "p256")},
	}
	csr := newCSR(t, newKey(t, "p256"))
	for name, s := range signers {
		t.Run(name, func(t *testing.T) {
			bad := *ca.issuer
			bad.signer = s
			p, err := bad.Prepare(csr, "a", testSerial(t), testNow)
			if err != nil {
				t.Fatal(err) // the lint path does not use the real signer
			}
			if c, err := bad.Sign(p); err == nil {
				t.Fatalf("Sign with %s signer returned a certificate (serial %v)", name, c.SerialNumber)
			}
		})
	}
}

func TestSignCatchesTBSMismatch(t *testing.T) {
	ca := newTestCA(t, "p256")
	other := newTestCA(t, "p256")
	csr := newCSR(t, newKey(t, "p256"))
	p, err := ca.issuer.Prepare(csr, "a", testSerial(t), testNow)
	if err != nil {
		t.Fatal(err)
	}
	// A recorded TBS that differs from what would be signed.
	tampered := *p
	tampered.tbs = append([]byte(nil), p.tbs...)
	tampered.tbs[len(tampered.tbs)-1] ^= 1
	if _, err := ca.issuer.Sign(&tampered); err == nil {
		t.Fatal("Sign accepted a TBS mismatch")
	}
	// A Prepared from another issuer (different issuer name and AKID).
	if _, err := other.issuer.Sign(p); err == nil {
		t.Fatal("Sign accepted a certificate prepared by another issuer")
	}
	if _, err := ca.issuer.Sign(nil); err == nil {
		t.Fatal("Sign(nil) succeeded")
	}
	// The genuine one works.
	if _, err := ca.issuer.Sign(p); err != nil {
		t.Fatal(err)
	}
}

func TestConcurrentIssuance(t *testing.T) {
	ca := newTestCA(t, "p256")
	errs := make(chan error, 8)
	for range 8 {
		go func() {
			k := newKey(t, "p256")
			der, _ := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, k)
			csr, err := ParseCSR(der)
			if err != nil {
				errs <- err
				return
			}
			s, _ := NewSerial(rand.Reader)
			p, err := ca.issuer.Prepare(csr, "a", s, testNow)
			if err != nil {
				errs <- err
				return
			}
			_, err = ca.issuer.Sign(p)
			errs <- err
		}()
	}
	for range 8 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

// TestSignedCertificateIsItsParse: the certificate Sign returns is what
// x509.ParseCertificate makes of its DER, field for field, for every issuer
// and leaf key type, agent leaves and the server's TLS certificate (Sign
// patches the parsed lint certificate instead of parsing again).
func TestSignedCertificateIsItsParse(t *testing.T) {
	for _, issuerAlg := range []string{"p256", "p384", "rsa2048", "ed25519"} {
		ca := newTestCA(t, issuerAlg)
		for _, leafAlg := range []string{"p256", "p384", "ed25519", "rsa2048"} {
			k := newKey(t, leafAlg)
			p, err := ca.issuer.Prepare(newCSR(t, k), "billing-bot.acme", testSerial(t), testNow)
			if err != nil {
				t.Fatalf("%s/%s: Prepare: %v", issuerAlg, leafAlg, err)
			}
			c, err := ca.issuer.Sign(p)
			if err != nil {
				t.Fatalf("%s/%s: Sign: %v", issuerAlg, leafAlg, err)
			}
			want, err := x509.ParseCertificate(c.Raw)
			if err != nil {
				t.Fatalf("%s/%s: %v", issuerAlg, leafAlg, err)
			}
			if !reflect.DeepEqual(c, want) {
				t.Errorf("%s/%s: Sign's certificate differs from its parse", issuerAlg, leafAlg)
			}
		}
		sp, err := ca.issuer.PrepareServer(newKey(t, "p256").Public(), []string{"atr.example.org"}, nil, testSerial(t), testNow, time.Hour)
		if err != nil {
			t.Fatalf("%s: PrepareServer: %v", issuerAlg, err)
		}
		c, err := ca.issuer.Sign(sp)
		if err != nil {
			t.Fatalf("%s: Sign server: %v", issuerAlg, err)
		}
		if want, err := x509.ParseCertificate(c.Raw); err != nil || !reflect.DeepEqual(c, want) {
			t.Errorf("%s: the server certificate Sign returns differs from its parse (%v)", issuerAlg, err)
		}
	}
}

// TestLintSetRefusesAMissingSource: a registry without the lints of a
// selected source (zlint registers each source's lints only when its
// package is imported) is refused, not run with the lints it has: the
// production binary once ran the community lints alone.
func TestLintSetRefusesAMissingSource(t *testing.T) {
	community, err := lint.GlobalRegistry().Filter(lint.FilterOptions{IncludeSources: lint.SourceList{lint.Community}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := newLintSetOf(community, lintIncludeSources()); err == nil || !strings.Contains(err.Error(), "no lint of source") {
		t.Fatalf("newLintSetOf(community lints only) = %v, want an error naming the missing source", err)
	}
	if _, err := newLintSet(); err != nil {
		t.Fatalf("newLintSet: %v", err)
	}
}
