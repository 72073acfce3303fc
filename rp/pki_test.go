package rp_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net/url"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"
)

// testPKI is a root, an issuing CA under it and agent certificates, built
// with crypto/x509 alone: what a relying party is shown.
type testPKI struct {
	root, issuing       *x509.Certificate
	rootKey, issuingKey *ecdsa.PrivateKey
	serial              int64
}

func mustKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func mustCreate(t testing.TB, tmpl, parent *x509.Certificate, pub crypto.PublicKey, key crypto.Signer) *x509.Certificate {
	t.Helper()
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// newTestPKI builds a root and an issuing CA named name (two PKIs with the
// same name differ only by their keys). The issuing CA has a CRL
// distribution point at crlURL when it is not "".
func newTestPKI(t testing.TB, name, rootCRLURL string) *testPKI {
	t.Helper()
	now := time.Now()
	p := &testPKI{rootKey: mustKey(t), issuingKey: mustKey(t), serial: 100}
	rt := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name + " Root"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	p.root = mustCreate(t, rt, rt, p.rootKey.Public(), p.rootKey)
	it := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: name + " Issuing"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		MaxPathLenZero: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageOCSPSigning}}
	if rootCRLURL != "" {
		it.CRLDistributionPoints = []string{rootCRLURL}
	}
	p.issuing = mustCreate(t, it, p.root, p.issuingKey.Public(), p.rootKey)
	return p
}

// leafOpts shape an agent certificate.
type leafOpts struct {
	key       crypto.Signer // the leaf's key; default a fresh P-256 key
	uri       string        // SPIFFE ID; default spiffe://test.local/agent/bot.acme
	crlURL    string
	ocspURL   string
	notBefore time.Time
	notAfter  time.Time
}

func (p *testPKI) leaf(t testing.TB, o leafOpts) *x509.Certificate {
	t.Helper()
	now := time.Now()
	if o.uri == "" {
		o.uri = "spiffe://test.local/agent/bot.acme"
	}
	if o.notBefore.IsZero() {
		o.notBefore = now.Add(-time.Minute)
	}
	if o.notAfter.IsZero() {
		o.notAfter = now.Add(time.Hour)
	}
	u, err := url.Parse(o.uri)
	if err != nil {
		t.Fatal(err)
	}
	p.serial++
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(p.serial), NotBefore: o.notBefore, NotAfter: o.notAfter,
		URIs: []*url.URL{u}, KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	if o.crlURL != "" {
		tmpl.CRLDistributionPoints = []string{o.crlURL}
	}
	if o.ocspURL != "" {
		tmpl.OCSPServer = []string{o.ocspURL}
	}
	if o.key == nil {
		o.key = mustKey(t)
	}
	return mustCreate(t, tmpl, p.issuing, o.key.Public(), p.issuingKey)
}

// crl is a CRL of issuer (signed with key) current from thisUpdate to
// nextUpdate.
func signCRL(t testing.TB, issuer *x509.Certificate, key crypto.Signer, thisUpdate, nextUpdate time.Time, revoked ...x509.RevocationListEntry) *x509.RevocationList {
	t.Helper()
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{Number: big.NewInt(7), ThisUpdate: thisUpdate,
		NextUpdate: nextUpdate, RevokedCertificateEntries: revoked}, issuer, key)
	if err != nil {
		t.Fatal(err)
	}
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		t.Fatal(err)
	}
	return crl
}

// leafCRL is a current CRL of the issuing CA revoking serials with reason.
func (p *testPKI) leafCRL(t testing.TB, reason int, serials ...*big.Int) *x509.RevocationList {
	now := time.Now()
	var es []x509.RevocationListEntry
	for _, s := range serials {
		es = append(es, x509.RevocationListEntry{SerialNumber: s, RevocationTime: now.Add(-time.Minute), ReasonCode: reason})
	}
	return signCRL(t, p.issuing, p.issuingKey, now.Add(-time.Minute), now.Add(time.Hour), es...)
}

// ocspAnswer is an OCSP answer about leaf signed by the issuing CA.
func (p *testPKI) ocspAnswer(t testing.TB, leaf *x509.Certificate, status, reason int, thisUpdate, nextUpdate time.Time) []byte {
	t.Helper()
	der, err := ocsp.CreateResponse(p.issuing, p.issuing, ocsp.Response{Status: status, SerialNumber: leaf.SerialNumber,
		ThisUpdate: thisUpdate, NextUpdate: nextUpdate, RevokedAt: thisUpdate, RevocationReason: reason}, p.issuingKey)
	if err != nil {
		t.Fatal(err)
	}
	return der
}
