package ca

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"math/big"
)

// MaxCSRSize is the largest CSR ParseCSR accepts, PEM or DER, in bytes.
const MaxCSRSize = 64 << 10

const (
	pemTypeCSR  = "CERTIFICATE REQUEST"
	pemTypeCert = "CERTIFICATE"
)

// ParseCSR parses a certificate signing request from untrusted input and
// enforces ATR's CSR policy. The input is either PEM — exactly one
// "CERTIFICATE REQUEST" block without headers and with nothing but
// whitespace around it — or raw DER; either way at most MaxCSRSize bytes.
// The CSR's self-signature must verify (proof of possession of the private
// key), its signature algorithm must not use SHA-1 or MD5, and its public key
// must pass CheckPublicKey. Every refusal is a *PolicyError.
//
// The CSR's subject, attributes and requested extensions are parsed but
// never used: the certificate is built from the profile and the CSR's
// public key only.
func ParseCSR(pemOrDER []byte) (*CSR, error) {
	if len(pemOrDER) == 0 {
		return nil, policyErr("csr", "empty")
	}
	if len(pemOrDER) > MaxCSRSize {
		return nil, policyErr("csr", "larger than %d bytes", MaxCSRSize)
	}
	der := pemOrDER
	if looksLikePEM(pemOrDER) {
		blocks, err := decodeStrictPEM(pemOrDER, pemTypeCSR, 1)
		if err != nil {
			return nil, err
		}
		der = blocks[0]
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, policyErr("csr", "malformed certificate request")
	}
	switch csr.SignatureAlgorithm {
	case x509.SHA256WithRSA, x509.SHA384WithRSA, x509.SHA512WithRSA,
		x509.SHA256WithRSAPSS, x509.SHA384WithRSAPSS, x509.SHA512WithRSAPSS,
		x509.ECDSAWithSHA256, x509.ECDSAWithSHA384, x509.ECDSAWithSHA512,
		x509.PureEd25519:
	default:
		return nil, policyErr("csr", "signature algorithm %v not allowed", csr.SignatureAlgorithm)
	}
	if err := CheckPublicKey(csr.PublicKey); err != nil {
		return nil, err
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, policyErr("csr", "self-signature does not verify (no proof of possession)")
	}
	// The key Prepare certifies is its own, parsed from a copy of the bytes
	// that were checked: changing the request that Request returns, or the
	// caller's input (which an Ed25519 key points into), cannot change it.
	pub, err := x509.ParsePKIXPublicKey(bytes.Clone(csr.RawSubjectPublicKeyInfo))
	if err != nil {
		return nil, policyErr("csr", "malformed public key")
	}
	return &CSR{req: csr, pub: pub}, nil
}

// CSR is a certificate signing request that ParseCSR accepted: its
// signature algorithm is allowed, its public key passed CheckPublicKey and
// its self-signature verified (proof of possession). Only ParseCSR makes
// one, and Issuer.Prepare takes nothing else, so Prepare does not check the
// self-signature again (it did while it took any *x509.CertificateRequest).
type CSR struct {
	req *x509.CertificateRequest
	pub crypto.PublicKey
}

// Request returns the parsed request, for reading what it asks for (the
// subject, SANs and extensions, which ATR never copies into a
// certificate). Prepare does not read it: changing it, its public key
// included, changes nothing that is issued. The key Prepare certifies is
// not handed out.
func (c *CSR) Request() *x509.CertificateRequest { return c.req }

// smallPrimesProduct is the product of the odd primes below 1000; an RSA
// modulus sharing a factor with it is trivially factorable. It is computed
// on each call (no package-level state); the cost is negligible.
func smallPrimesProduct() *big.Int {
	var composite [1000]bool
	p := big.NewInt(1)
	for n := 3; n < len(composite); n += 2 {
		if composite[n] {
			continue
		}
		p.Mul(p, big.NewInt(int64(n)))
		for m := n * n; m < len(composite); m += 2 * n {
			composite[m] = true
		}
	}
	return p
}

// CheckPublicKey enforces ATR's key policy for agent keys: ECDSA on P-256 or
// P-384, Ed25519, or RSA with a modulus of exactly 2048, 3072 or 4096 bits,
// public exponent 65537, an odd modulus and no prime factor below 1000.
// Anything else (P-224, P-521, RSA-1024, odd sizes, DSA, X25519, …) is a
// *PolicyError with Field "key".
func CheckPublicKey(pub crypto.PublicKey) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k == nil || k.Curve == nil {
			return policyErr("key", "missing ECDSA key")
		}
		switch k.Curve {
		case elliptic.P256(), elliptic.P384():
		default:
			return policyErr("key", "ECDSA curve %s not allowed (P-256 or P-384)", k.Curve.Params().Name)
		}
		// Reject points not on the curve (x509 already does, but the key
		// may come from elsewhere). ECDH conversion performs the full check.
		if _, err := k.ECDH(); err != nil {
			return policyErr("key", "ECDSA point is not on the curve")
		}
		return nil
	case ed25519.PublicKey:
		if len(k) != ed25519.PublicKeySize {
			return policyErr("key", "Ed25519 key has %d bytes", len(k))
		}
		return nil
	case *rsa.PublicKey:
		if k == nil || k.N == nil {
			return policyErr("key", "missing RSA key")
		}
		switch k.N.BitLen() {
		case 2048, 3072, 4096:
		default:
			return policyErr("key", "RSA modulus of %d bits not allowed (2048, 3072 or 4096)", k.N.BitLen())
		}
		if k.E != 65537 {
			return policyErr("key", "RSA public exponent %d not allowed (65537)", k.E)
		}
		if k.N.Bit(0) == 0 {
			return policyErr("key", "RSA modulus is even")
		}
		if new(big.Int).GCD(nil, nil, k.N, smallPrimesProduct()).Cmp(big.NewInt(1)) != 0 {
			return policyErr("key", "RSA modulus has a small prime factor")
		}
		return nil
	default:
		return policyErr("key", "key type %T not allowed", pub)
	}
}

// looksLikePEM reports whether b starts, after optional whitespace, with a
// PEM BEGIN line. DER always starts with 0x30, so there is no ambiguity.
func looksLikePEM(b []byte) bool {
	return bytes.HasPrefix(bytes.TrimLeft(b, " \t\r\n"), []byte("-----BEGIN"))
}

// decodeStrictPEM decodes data as a sequence of 1..max PEM blocks, all of
// type typ, without headers, separated and surrounded only by whitespace,
// and returns their DER contents. The field of any *PolicyError is "pem".
func decodeStrictPEM(data []byte, typ string, max int) ([][]byte, error) {
	var out [][]byte
	rest := data
	for {
		trimmed := bytes.TrimLeft(rest, " \t\r\n")
		if len(trimmed) == 0 {
			break
		}
		if !bytes.HasPrefix(trimmed, []byte("-----BEGIN "+typ+"-----")) {
			if bytes.HasPrefix(trimmed, []byte("-----BEGIN ")) {
				return nil, policyErr("pem", "unexpected PEM block type (want %q)", typ)
			}
			return nil, policyErr("pem", "data outside PEM blocks")
		}
		if len(out) == max {
			return nil, policyErr("pem", "more than %d PEM blocks", max)
		}
		block, next := pem.Decode(trimmed)
		if block == nil {
			return nil, policyErr("pem", "malformed PEM block")
		}
		// pem.Decode skips anything it cannot parse until the next BEGIN
		// line; make sure it consumed exactly one block (the one we saw).
		consumed := trimmed[:len(trimmed)-len(next)]
		if bytes.Count(consumed, []byte("-----BEGIN")) != 1 {
			return nil, policyErr("pem", "malformed PEM block")
		}
		if block.Type != typ {
			return nil, policyErr("pem", "unexpected PEM block type (want %q)", typ)
		}
		if len(block.Headers) != 0 {
			return nil, policyErr("pem", "PEM headers not allowed")
		}
		out = append(out, block.Bytes)
		rest = next
	}
	if len(out) == 0 {
		return nil, policyErr("pem", "no %q PEM block", typ)
	}
	return out, nil
}
