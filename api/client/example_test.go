package client_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log"
	"os"

	"github.com/agent-trust-registry/atr/api/client"
)

// newCSR makes a key pair locally and a PEM CSR for it; only the CSR leaves the machine.
func newCSR() (*ecdsa.PrivateKey, []byte) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		log.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		log.Fatal(err)
	}
	return key, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

// An owner registers an agent with an API key. The server's TLS certificate chains to
// the ATR bundle.
func ExampleClient_Register() {
	bundle, err := os.ReadFile("var/ca/bundle.pem")
	if err != nil {
		log.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(bundle)
	apiKey, err := os.ReadFile("var/admin.apikey")
	if err != nil {
		log.Fatal(err)
	}
	c, err := client.New("https://127.0.0.1:8443", client.WithRootCAs(pool), client.WithAPIKey(string(apiKey)))
	if err != nil {
		log.Fatal(err)
	}
	_, csr := newCSR()
	cert, err := c.Register(context.Background(), client.RegisterRequest{Name: "billing-bot.acme", CSR: string(csr)})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("serial", cert.Serial, "log index", cert.LogIndex)
}

// An agent renews over mTLS with its current certificate; no API key is involved.
func ExampleClient_Rotate() {
	current, err := tls.LoadX509KeyPair("agent.crt", "agent.key")
	if err != nil {
		log.Fatal(err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		log.Fatal(err)
	}
	c, err := client.New("https://atr.example.org:8443", client.WithRootCAs(pool), client.WithClientCertificate(current))
	if err != nil {
		log.Fatal(err)
	}
	_, csr := newCSR()
	cert, err := c.Rotate(context.Background(), "billing-bot.acme", csr)
	var e *client.Error
	if errors.As(err, &e) && e.Code == "rate_limited" {
		log.Fatalf("retry in %s (request %s)", e.RetryAfter, e.RequestID)
	}
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("new certificate valid until", cert.NotAfter)
}

// A relying party checks a certificate an agent presented.
func ExampleClient_Verify() {
	presented, err := os.ReadFile("presented.pem")
	if err != nil {
		log.Fatal(err)
	}
	c, err := client.New("https://atr.example.org:8443")
	if err != nil {
		log.Fatal(err)
	}
	res, err := c.Verify(context.Background(), presented, nil)
	if err != nil {
		log.Fatal(err)
	}
	if !res.Verified {
		fmt.Println("refused:", res.Reason)
		return
	}
	fmt.Println("agent", res.Agent, "serial", res.Serial)
}
