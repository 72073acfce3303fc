// Package catest is a software certificate authority for tests: a root, an
// issuing intermediate and agent leaves, all built and linted by package ca
// exactly as the registry builds them, with keys in memory instead of on a
// token. Use it where a test needs real ATR certificates and CRLs but no
// token or database; the registry's own tests use registrytest instead.
package catest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"math/big"
	"testing"
	"time"

	"github.com/agent-trust-registry/atr/ca"
)

// CA is a root → issuing intermediate → leaves hierarchy for one trust
// domain. Leaves live an hour and carry clientAuth and serverAuth.
type CA struct {
	Root, Issuing *x509.Certificate
	RootKey       crypto.Signer
	IssuingKey    crypto.Signer
	Issuer        *ca.Issuer
	TrustDomain   string
}

// New builds a CA for trustDomain (P-256 keys), failing t on any error.
func New(t testing.TB, trustDomain string) *CA {
	t.Helper()
	now := time.Now()
	rootKey := newKey(t)
	rt, err := ca.RootTemplate("Test Root "+trustDomain, 0, now)
	if err != nil {
		t.Fatal(err)
	}
	root, err := ca.CreateRoot(rt, rootKey)
	if err != nil {
		t.Fatal(err)
	}
	ik := newKey(t)
	it, err := ca.IntermediateTemplate("Test Issuing "+trustDomain, trustDomain, 0, now)
	if err != nil {
		t.Fatal(err)
	}
	ic, err := ca.CreateIntermediate(it, ca.CAKey{Cert: root, Signer: rootKey}, ik.Public(), now)
	if err != nil {
		t.Fatal(err)
	}
	iss, err := ca.NewIssuer(ik, ic, []*x509.Certificate{root}, ca.Profile{TrustDomain: trustDomain, ServerAuth: true,
		CRLURL: "http://127.0.0.1/v1/crl", OCSPURL: "http://127.0.0.1/v1/ocsp", Lifetime: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	return &CA{Root: root, RootKey: rootKey, Issuing: ic, IssuingKey: ik, Issuer: iss, TrustDomain: trustDomain}
}

func newKey(t testing.TB) crypto.Signer {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// Issue certifies k's public key for agent name, failing t on any error.
func (c *CA) Issue(t testing.TB, k crypto.Signer, name string) *x509.Certificate {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, k)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := c.IssueCSR(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), name)
	if err != nil {
		t.Fatal(err)
	}
	return leaf
}

// IssueCSR certifies the PEM CSR for agent name through the issuer's
// prepare (strict CSR and name checks, lint) and sign steps.
func (c *CA) IssueCSR(csrPEM []byte, name string) (*x509.Certificate, error) {
	csr, err := ca.ParseCSR(csrPEM)
	if err != nil {
		return nil, err
	}
	serial, err := ca.NewSerial(rand.Reader)
	if err != nil {
		return nil, err
	}
	p, err := c.Issuer.Prepare(csr, name, serial, time.Now())
	if err != nil {
		return nil, err
	}
	return c.Issuer.Sign(p)
}

// BundlePEM is the CA bundle (intermediate, root) as GET /v1/ca/bundle
// serves it.
func (c *CA) BundlePEM() []byte { return ca.EncodeCertificatesPEM(c.Issuing, c.Root) }

// CRL is a DER CRL of the issuing CA listing revoked.
func (c *CA) CRL(t testing.TB, thisUpdate, nextUpdate time.Time, revoked ...x509.RevocationListEntry) []byte {
	t.Helper()
	der, err := c.Issuer.SignCRL(big.NewInt(time.Now().UnixNano()), thisUpdate, nextUpdate, revoked)
	if err != nil {
		t.Fatal(err)
	}
	return der
}
