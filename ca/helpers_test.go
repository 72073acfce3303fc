package ca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"
)

const testTD = "agents.example.com"

// testNow is the fake clock of these tests.
var testNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

type testCA struct {
	rootKey, interKey crypto.Signer
	root, inter       *x509.Certificate
	issuer            *Issuer
	verifier          *Verifier
}

func newKey(t testing.TB, alg string) crypto.Signer {
	t.Helper()
	var (
		k   crypto.Signer
		err error
	)
	switch alg {
	case "p256":
		k, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case "p384":
		k, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case "p521":
		k, err = ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	case "p224":
		k, err = ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	case "ed25519":
		_, k, err = ed25519.GenerateKey(rand.Reader)
	case "rsa2048":
		k, err = rsa.GenerateKey(rand.Reader, 2048)
	case "rsa1024":
		k, err = rsa.GenerateKey(rand.Reader, 1024)
	default:
		t.Fatalf("unknown key algorithm %q", alg)
	}
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func testProfile() Profile {
	return Profile{
		TrustDomain: testTD,
		CRLURL:      "http://atr.example.com/v1/crl",
		OCSPURL:     "http://atr.example.com/v1/ocsp",
		ServerAuth:  true,
	}
}

// newTestCA builds a software root and intermediate (issuing key of type
// alg) valid around testNow, an Issuer and a Verifier.
func newTestCA(t testing.TB, alg string) *testCA {
	t.Helper()
	ca := &testCA{rootKey: newKey(t, "p384"), interKey: newKey(t, alg)}
	rt, err := RootTemplate("ATR Test Root", 0, testNow.Add(-24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if ca.root, err = CreateCertificate(rt, rt, ca.rootKey.Public(), ca.rootKey); err != nil {
		t.Fatal(err)
	}
	it, err := IntermediateTemplate("ATR Test Issuing CA", testTD, 0, testNow.Add(-24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if ca.inter, err = CreateCertificate(it, ca.root, ca.interKey.Public(), ca.rootKey); err != nil {
		t.Fatal(err)
	}
	if ca.issuer, err = NewIssuer(ca.interKey, ca.inter, []*x509.Certificate{ca.root}, testProfile()); err != nil {
		t.Fatal(err)
	}
	if ca.verifier, err = NewVerifier([]*x509.Certificate{ca.root}, []*x509.Certificate{ca.inter}, testTD); err != nil {
		t.Fatal(err)
	}
	return ca
}

func newCSR(t testing.TB, k crypto.Signer) *CSR {
	t.Helper()
	csr, err := ParseCSR(csrDER(t, k))
	if err != nil {
		t.Fatal(err)
	}
	return csr
}

func testSerial(t testing.TB) *big.Int {
	t.Helper()
	s, err := NewSerial(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// issue issues a leaf for name over a fresh key of type alg at testNow.
func (ca *testCA) issue(t testing.TB, name, alg string) (*x509.Certificate, crypto.Signer) {
	t.Helper()
	k := newKey(t, alg)
	return ca.issueCSR(t, newCSR(t, k), name), k
}

// issueCSR issues a leaf for name from csr at testNow.
func (ca *testCA) issueCSR(t testing.TB, csr *CSR, name string) *x509.Certificate {
	t.Helper()
	p, err := ca.issuer.Prepare(csr, name, testSerial(t), testNow)
	if err != nil {
		t.Fatalf("Prepare: %v", err)
	}
	c, err := ca.issuer.Sign(p)
	if err != nil {
		t.Fatalf("Sign: %v", err)
	}
	return c
}

func writePEM(t testing.TB, dir, name string, certs ...*x509.Certificate) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, EncodeCertificatesPEM(certs...), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

// mustURL parses s or fails the test.
func mustURL(t testing.TB, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}
