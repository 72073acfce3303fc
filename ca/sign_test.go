package ca

import (
	"crypto"
	"crypto/x509"
	"io"
	"strings"
	"testing"
)

// lyingSigner claims the issuing key but signs with another one: a token
// that holds a substituted or stale object.
type lyingSigner struct {
	claimed crypto.PublicKey
	real    crypto.Signer
}

func (s lyingSigner) Public() crypto.PublicKey { return s.claimed }
func (s lyingSigner) Sign(r io.Reader, d []byte, o crypto.SignerOpts) ([]byte, error) {
	return s.real.Sign(r, d, o)
}

// TestSignRefusesBadSigner: the one verification of an issuance (the one
// x509.CreateCertificate makes) refuses a signature by any key but the
// issuing certificate's, so Sign never returns such a certificate.
func TestSignRefusesBadSigner(t *testing.T) {
	tc := newTestCA(t, "p256")
	bad, err := NewIssuer(lyingSigner{claimed: tc.inter.PublicKey, real: newKey(t, "p256")}, tc.inter, []*x509.Certificate{tc.root}, testProfile())
	if err != nil {
		t.Fatal(err)
	}
	k := newKey(t, "p256")
	p, err := bad.Prepare(newCSR(t, k), "bot.acme", testSerial(t), testNow)
	if err != nil {
		t.Fatal(err)
	}
	if c, err := bad.Sign(p); err == nil || c != nil || !strings.Contains(err.Error(), "verif") {
		t.Fatalf("Sign with a signer using another key: %v, %v; want a verification error", c, err)
	}
}
