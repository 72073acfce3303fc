//go:build ignore

// gen.go writes the PKI of rp's examples: a root and an issuing CA, an
// agent certificate, and two CRLs of the issuing CA (one empty, one
// revoking the agent's certificate), all valid from 2026 to 2036.
//
//	cd rp/testdata && go run gen.go
package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/url"
	"os"
	"time"
)

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func write(name, typ string, ders ...[]byte) {
	var out []byte
	for _, d := range ders {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: d})...)
	}
	if err := os.WriteFile(name, out, 0o644); err != nil {
		panic(err)
	}
}

func main() {
	from := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	until := time.Date(2036, 1, 1, 0, 0, 0, 0, time.UTC)
	rootKey := must(ecdsa.GenerateKey(elliptic.P256(), rand.Reader))
	issKey := must(ecdsa.GenerateKey(elliptic.P256(), rand.Reader))
	leafKey := must(ecdsa.GenerateKey(elliptic.P256(), rand.Reader))
	rt := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "Example Root"},
		NotBefore: from, NotAfter: until, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	rootDER := must(x509.CreateCertificate(rand.Reader, rt, rt, rootKey.Public(), rootKey))
	root := must(x509.ParseCertificate(rootDER))
	it := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "Example Issuing"},
		NotBefore: from, NotAfter: until, IsCA: true, BasicConstraintsValid: true, MaxPathLenZero: true,
		KeyUsage:    x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageOCSPSigning}}
	issDER := must(x509.CreateCertificate(rand.Reader, it, root, issKey.Public(), rootKey))
	iss := must(x509.ParseCertificate(issDER))
	id := must(url.Parse("spiffe://example.org/agent/billing-bot.acme"))
	lt := &x509.Certificate{SerialNumber: big.NewInt(0x1234), NotBefore: from, NotAfter: until, URIs: []*url.URL{id},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	leafDER := must(x509.CreateCertificate(rand.Reader, lt, iss, leafKey.Public(), issKey))
	write("bundle.pem", "CERTIFICATE", rootDER, issDER)
	write("agent.pem", "CERTIFICATE", leafDER)
	crl := func(number int64, revoked ...x509.RevocationListEntry) []byte {
		return must(x509.CreateRevocationList(rand.Reader, &x509.RevocationList{Number: big.NewInt(number),
			ThisUpdate: from, NextUpdate: until, RevokedCertificateEntries: revoked}, iss, issKey))
	}
	write("agent.crl.pem", "X509 CRL", crl(1))
	write("revoked.crl.pem", "X509 CRL", crl(2, x509.RevocationListEntry{SerialNumber: lt.SerialNumber,
		RevocationTime: from.Add(24 * time.Hour), ReasonCode: 1}))
}
