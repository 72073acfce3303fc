package ca

import (
	"crypto/x509"
	"encoding/pem"
)

// Limits of ParseCertificatesPEM.
const (
	// MaxPEMSize is the largest PEM document ParseCertificatesPEM accepts.
	MaxPEMSize = 64 << 10
	// DefaultMaxCertificates is used when ParseCertificatesPEM is given max <= 0.
	DefaultMaxCertificates = 8
)

// ParseCertificatesPEM parses untrusted PEM holding 1..max certificates
// (max <= 0 means DefaultMaxCertificates): only "CERTIFICATE" blocks, no PEM
// headers, nothing but whitespace before, between and after the blocks, at
// most MaxPEMSize bytes, and each block exactly one DER certificate with no
// trailing data. Every refusal is a *PolicyError (Field "pem" or
// "certificate"), which callers map to "400 invalid request".
func ParseCertificatesPEM(data []byte, max int) ([]*x509.Certificate, error) {
	if max <= 0 {
		max = DefaultMaxCertificates
	}
	if len(data) > MaxPEMSize {
		return nil, policyErr("pem", "larger than %d bytes", MaxPEMSize)
	}
	ders, err := decodeStrictPEM(data, pemTypeCert, max)
	if err != nil {
		return nil, err
	}
	out := make([]*x509.Certificate, 0, len(ders))
	for k, der := range ders {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, policyErr("certificate", "certificate %d is malformed", k+1)
		}
		out = append(out, c)
	}
	return out, nil
}

// EncodeCertificatesPEM returns the PEM encoding of certs, in order.
func EncodeCertificatesPEM(certs ...*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: pemTypeCert, Bytes: c.Raw})...)
	}
	return out
}
