package ca

import (
	"bytes"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"net/url"
	"testing"
	"time"
)

// TestLeafTBSMatchesCreateCertificate: leafTBS encodes every leaf
// leafTemplate builds byte for byte as x509.CreateCertificate does under the
// lint issuer — for each issuing key type, leaf key type, profile (client
// or client and server auth, with and without CRL and OCSP URLs) and
// validity encoding (UTCTime, GeneralizedTime from 2050) — and Prepare's
// TBS is that encoding.
func TestLeafTBSMatchesCreateCertificate(t *testing.T) {
	profiles := map[string]func(*Profile){
		"client and server": func(*Profile) {},
		"client only":       func(p *Profile) { p.ServerAuth = false },
		"no CRL, no OCSP":   func(p *Profile) { p.CRLURL, p.OCSPURL = "", "" },
		"OCSP only":         func(p *Profile) { p.CRLURL = "" },
	}
	for _, issuing := range []string{"p256", "p384", "ed25519", "rsa2048"} {
		ca := newTestCA(t, issuing)
		for pname, mutate := range profiles {
			p := ca.issuer.profile
			mutate(&p)
			iss, err := NewIssuer(ca.interKey, ca.inter, []*x509.Certificate{ca.root}, p)
			if err != nil {
				t.Fatalf("%s, %s: NewIssuer: %v", issuing, pname, err)
			}
			for _, leafAlg := range []string{"p256", "p384", "ed25519", "rsa2048"} {
				k := newKey(t, leafAlg)
				serial := testSerial(t)
				tmpl, err := iss.leafTemplate(k.Public(), "billing-bot.team.acme", serial, testNow)
				if err != nil {
					t.Fatal(err)
				}
				spki, err := spkiOf(k.Public())
				if err != nil {
					t.Fatal(err)
				}
				for _, far := range []bool{false, true} {
					if far {
						tmpl.NotBefore = time.Date(2049, 12, 31, 23, 59, 59, 0, time.UTC)
						tmpl.NotAfter = time.Date(2050, 1, 1, 0, 0, 0, 0, time.UTC)
					}
					got, err := iss.leafTBS(tmpl, spki, iss.leafSig.algID)
					if err != nil {
						t.Fatalf("%s issuer, %s, %s leaf: leafTBS: %v", issuing, pname, leafAlg, err)
					}
					der, err := x509.CreateCertificate(rand.Reader, tmpl, iss.lintCert, k.Public(), iss.lintSigner)
					if err != nil {
						t.Fatal(err)
					}
					want, err := x509.ParseCertificate(der)
					if err != nil {
						t.Fatal(err)
					}
					if !bytes.Equal(got, want.RawTBSCertificate) {
						t.Errorf("%s issuer, %s, %s leaf, 2050: %v: leafTBS\n%x\nwant (x509.CreateCertificate)\n%x", issuing, pname, leafAlg, far, got, want.RawTBSCertificate)
					}
				}
				prep, err := iss.Prepare(newCSR(t, k), "billing-bot.team.acme", serial, testNow)
				if err != nil {
					t.Fatalf("%s issuer, %s, %s leaf: Prepare: %v", issuing, pname, leafAlg, err)
				}
				tmpl, _ = iss.leafTemplate(k.Public(), "billing-bot.team.acme", serial, testNow)
				der, err := x509.CreateCertificate(rand.Reader, tmpl, iss.lintCert, k.Public(), iss.lintSigner)
				if err != nil {
					t.Fatal(err)
				}
				if want, _ := x509.ParseCertificate(der); want == nil || !bytes.Equal(prep.TBS(), want.RawTBSCertificate) {
					t.Errorf("%s issuer, %s, %s leaf: Prepare's TBS is not x509.CreateCertificate's", issuing, pname, leafAlg)
				}
			}
		}
	}
}

// TestLeafTBSRefusesOtherFields: a template that sets anything leafTBS
// does not encode is refused, never encoded without it.
func TestLeafTBSRefusesOtherFields(t *testing.T) {
	ca := newTestCA(t, "p256")
	k := newKey(t, "p256")
	spki, err := spkiOf(k.Public())
	if err != nil {
		t.Fatal(err)
	}
	tests := map[string]func(*x509.Certificate){
		"subject":  func(c *x509.Certificate) { c.Subject = pkix.Name{CommonName: "a"} },
		"DNS name": func(c *x509.Certificate) { c.DNSNames = []string{"a.example"} },
		"extra extension": func(c *x509.Certificate) {
			c.ExtraExtensions = []pkix.Extension{{Id: asn1.ObjectIdentifier{1, 2, 3}, Value: []byte{5, 0}}}
		},
		"caIssuers":                   func(c *x509.Certificate) { c.IssuingCertificateURL = []string{"http://x.example/ca"} },
		"name constraint":             func(c *x509.Certificate) { c.PermittedURIDomains = []string{testTD} },
		"CA":                          func(c *x509.Certificate) { c.IsCA = true },
		"no basic constraints":        func(c *x509.Certificate) { c.BasicConstraintsValid = false },
		"unknown EKU":                 func(c *x509.Certificate) { c.UnknownExtKeyUsage = []asn1.ObjectIdentifier{{1, 2, 3}} },
		"code signing EKU":            func(c *x509.Certificate) { c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageCodeSigning} },
		"authority key id":            func(c *x509.Certificate) { c.AuthorityKeyId = []byte{1} },
		"max path length":             func(c *x509.Certificate) { c.MaxPathLen = 1 },
		"key usage past decipherOnly": func(c *x509.Certificate) { c.KeyUsage = x509.KeyUsageDecipherOnly << 1 },
		"non-ASCII OCSP URL":          func(c *x509.Certificate) { c.OCSPServer = []string{"http://ö.example"} },
		"non-ASCII URI SAN path": func(c *x509.Certificate) {
			c.URIs = []*url.URL{{Scheme: "spiffe", Host: testTD, Opaque: "//" + testTD + "/ö"}}
		},
	}
	for name, mutate := range tests {
		t.Run(name, func(t *testing.T) {
			tmpl, err := ca.issuer.leafTemplate(k.Public(), "a", testSerial(t), testNow)
			if err != nil {
				t.Fatal(err)
			}
			mutate(tmpl)
			if tbs, err := ca.issuer.leafTBS(tmpl, spki, ca.issuer.leafSig.algID); err == nil {
				t.Errorf("leafTBS encoded a template with %s: %x", name, tbs)
			}
		})
	}
	if _, err := ca.issuer.leafTBS(nil, spki, ca.issuer.leafSig.algID); !errors.Is(err, errLeafTemplate) {
		t.Errorf("leafTBS(nil) = %v; want errLeafTemplate", err)
	}
}
