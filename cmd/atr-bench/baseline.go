package main

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"fmt"
	"math/big"
	"net/url"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/agent-trust-registry/atr/ca"
	"github.com/agent-trust-registry/atr/hsm"
)

// tokenBench measures raw token rates on the bench's own token (never the
// server's): ECDSA P-256 signatures through hsm.Signer (crypto11) and
// x509.CreateCertificate through the same signer.
type tokenBench struct {
	tok     *hsm.Token
	signer  *hsm.Signer
	caCert  *x509.Certificate
	leafKey *ecdsa.PrivateKey
	digest  [32]byte
}

func openTokenBench(ctx context.Context, cfg hsm.Config, log *logrus.Entry) (*tokenBench, error) {
	tok, err := hsm.Open(ctx, cfg, log)
	if err != nil {
		return nil, fmt.Errorf("opening the bench token: %w", err)
	}
	tb := &tokenBench{tok: tok, digest: sha256.Sum256([]byte("atr-bench"))}
	fail := func(err error) (*tokenBench, error) { tok.Close(); return nil, err }
	if tb.signer, err = tok.GenerateKey(ctx, fmt.Sprintf("bench-%d", time.Now().UnixNano()), hsm.ECDSAP256); err != nil {
		return fail(fmt.Errorf("generating the bench key: %w", err))
	}
	// A CA certificate for the bench key and an agent-shaped leaf key.
	rootTmpl, err := ca.RootTemplate("atr-bench baseline CA", 24*time.Hour, time.Now())
	if err != nil {
		return fail(fmt.Errorf("bench CA template: %w", err))
	}
	if tb.caCert, err = ca.CreateCertificate(rootTmpl, rootTmpl, tb.signer.Public(), tb.signer); err != nil {
		return fail(fmt.Errorf("bench CA certificate: %w", err))
	}
	if tb.leafKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		return fail(err)
	}
	return tb, nil
}

func (tb *tokenBench) close() { tb.tok.Close() }

// sign measures signatures of a SHA-256 digest on conc goroutines for d.
func (tb *tokenBench) sign(ctx context.Context, d time.Duration, conc int) Stats {
	return runFor(ctx, d, conc, func() error {
		_, err := tb.signer.Sign(rand.Reader, tb.digest[:], crypto.SHA256)
		return err
	})
}

// create measures x509.CreateCertificate of an agent-shaped leaf through
// the token signer on conc goroutines for d.
func (tb *tokenBench) create(ctx context.Context, d time.Duration, conc int) Stats {
	now := time.Now()
	return runFor(ctx, d, conc, func() error {
		_, err := x509.CreateCertificate(rand.Reader, leafTemplate(now), tb.caCert, tb.leafKey.Public(), tb.signer)
		return err
	})
}

// leafTemplate mirrors the agent profile of package ca (URI SAN, key usages,
// CRL distribution point, OCSP AIA, 128-bit serial) so that the raw
// CreateCertificate baseline signs a certificate of the same shape.
func leafTemplate(now time.Time) *x509.Certificate {
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	u, _ := url.Parse("spiffe://atr.local/agent/baseline.bench")
	return &x509.Certificate{
		SerialNumber:          serial,
		NotBefore:             now.Add(-30 * time.Second),
		NotAfter:              now.Add(23 * time.Hour),
		URIs:                  []*url.URL{u},
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		SubjectKeyId:          serial.Bytes()[:8],
		CRLDistributionPoints: []string{"https://127.0.0.1/v1/crl"},
		OCSPServer:            []string{"https://127.0.0.1/v1/ocsp"},
	}
}

// measureVerifyBaseline runs x509.Certificate.Verify of leaf (an agent
// certificate issued by the server under test) on one goroutine: the
// per-core rate of raw chain building.
func measureVerifyBaseline(ctx context.Context, leaf *x509.Certificate, roots, inters []*x509.Certificate, d time.Duration) Stats {
	rp, ip := x509.NewCertPool(), x509.NewCertPool()
	for _, c := range roots {
		rp.AddCert(c)
	}
	for _, c := range inters {
		ip.AddCert(c)
	}
	return runFor(ctx, d, 1, func() error {
		_, err := leaf.Verify(x509.VerifyOptions{Roots: rp, Intermediates: ip, CurrentTime: time.Now(),
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
		return err
	})
}
