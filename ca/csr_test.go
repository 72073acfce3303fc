package ca

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseCSRFiles(t *testing.T) {
	tests := []struct {
		file      string
		wantField string // "" means accepted
	}{
		{"csr-p256.pem", ""},
		{"csr-p256.der", ""},
		{"csr-p384.pem", ""},
		{"csr-ed25519.pem", ""},
		{"csr-rsa2048.pem", ""},
		{"csr-p256-extensions.pem", ""},
		{"csr-p224.pem", "key"},
		{"csr-p521.pem", "key"},
		{"csr-rsa1024.pem", "key"},
		{"csr-rsa2056.pem", "key"},
		{"csr-rsa2048e3.pem", "key"},
		{"csr-rsa2048-sha1.pem", "csr"},
		{"csr-p256-badsig.pem", "csr"},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			csr, err := ParseCSR(readTestdata(t, tt.file))
			if tt.wantField == "" {
				if err != nil || csr == nil {
					t.Fatalf("ParseCSR = %v, %v; want accepted", csr, err)
				}
				return
			}
			var pe *PolicyError
			if !errors.As(err, &pe) || pe.Field != tt.wantField {
				t.Fatalf("ParseCSR error = %v; want *PolicyError{Field: %q}", err, tt.wantField)
			}
		})
	}
}

func TestParseCSRFraming(t *testing.T) {
	good := readTestdata(t, "csr-p256.pem")
	der := readTestdata(t, "csr-p256.der")
	cert := pemBlock("CERTIFICATE", der)
	withHeader := bytes.Replace(good, []byte("-----\n"), []byte("-----\nProc-Type: 4,ENCRYPTED\n\n"), 1)
	tests := []struct {
		name string
		in   []byte
		ok   bool
	}{
		{"pem", good, true},
		{"der", der, true},
		{"surrounding whitespace", append(append([]byte(" \r\n\t"), good...), "\n\n  "...), true},
		{"empty", nil, false},
		{"whitespace only", []byte(" \n"), false},
		{"leading garbage", append([]byte("hello\n"), good...), false},
		{"trailing garbage", append(append([]byte{}, good...), "x"...), false},
		{"garbage after END on its line", bytes.Replace(good, []byte("REQUEST-----\n"), []byte("REQUEST-----x\n"), 2), false},
		{"two blocks", append(append([]byte{}, good...), good...), false},
		{"wrong type", cert, false},
		{"NEW CERTIFICATE REQUEST", pemBlock("NEW CERTIFICATE REQUEST", der), false},
		{"headers", withHeader, false},
		{"bad base64", bytes.Replace(good, []byte("MI"), []byte("M!"), 1), false},
		{"malformed first block then good", append([]byte("-----BEGIN CERTIFICATE REQUEST-----\n!!!\n"), good...), false},
		{"der trailing data", append(append([]byte{}, der...), 0), false},
		{"der truncated", der[:len(der)-1], false},
		{"pem of garbage", pemBlock("CERTIFICATE REQUEST", []byte("not DER")), false},
		{"oversize", append(append([]byte{}, good...), bytes.Repeat([]byte(" "), MaxCSRSize)...), false},
		{"binary", []byte{0xff, 0x00, 0x01}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseCSR(tt.in)
			if tt.ok {
				if err != nil {
					t.Fatalf("ParseCSR: %v; want accepted", err)
				}
				return
			}
			var pe *PolicyError
			if !errors.As(err, &pe) {
				t.Fatalf("ParseCSR error = %v; want *PolicyError", err)
			}
		})
	}
}

func TestCheckPublicKey(t *testing.T) {
	rsaKey := func(bits, e int) *rsa.PublicKey {
		k := newKey(t, "rsa2048").Public().(*rsa.PublicKey)
		if bits != 2048 {
			k = &rsa.PublicKey{N: new(big.Int).Lsh(big.NewInt(1), uint(bits-1)), E: k.E}
			k.N.SetBit(k.N, 0, 1)
		}
		return &rsa.PublicKey{N: k.N, E: e}
	}
	// A 2048-bit odd modulus divisible by 3.
	div3 := new(big.Int).Lsh(big.NewInt(1), 2047)
	div3.Add(div3, big.NewInt(3-new(big.Int).Mod(div3, big.NewInt(3)).Int64()))
	if div3.Bit(0) == 0 {
		div3.Add(div3, big.NewInt(3))
	}
	even := new(big.Int).Lsh(big.NewInt(1), 2047)
	offCurve := *newKey(t, "p256").Public().(*ecdsa.PublicKey)
	offCurve.X = new(big.Int).Add(offCurve.X, big.NewInt(1))
	tests := []struct {
		name string
		pub  any
		ok   bool
	}{
		{"p256", newKey(t, "p256").Public(), true},
		{"p384", newKey(t, "p384").Public(), true},
		{"ed25519", newKey(t, "ed25519").Public(), true},
		{"rsa2048", rsaKey(2048, 65537), true},
		{"p224", newKey(t, "p224").Public(), false},
		{"p521", newKey(t, "p521").Public(), false},
		{"rsa1024", newKey(t, "rsa1024").Public(), false},
		{"rsa2047", rsaKey(2047, 65537), false},
		{"rsa8192", rsaKey(8192, 65537), false},
		{"rsa e=3", rsaKey(2048, 3), false},
		{"rsa e=65539", rsaKey(2048, 65539), false},
		{"rsa even modulus", &rsa.PublicKey{N: even, E: 65537}, false},
		{"rsa small factor", &rsa.PublicKey{N: div3, E: 65537}, false},
		{"ecdsa off curve", &offCurve, false},
		{"nil ecdsa curve", &ecdsa.PublicKey{}, false},
		{"nil rsa", &rsa.PublicKey{}, false},
		{"short ed25519", []byte{1, 2, 3}, false},
		{"nil", nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckPublicKey(tt.pub)
			if tt.ok != (err == nil) {
				t.Fatalf("CheckPublicKey = %v; want ok=%v", err, tt.ok)
			}
			var pe *PolicyError
			if err != nil && (!errors.As(err, &pe) || pe.Field != "key") {
				t.Fatalf("error %v is not *PolicyError{Field: key}", err)
			}
		})
	}
}

// TestCSRExtensionsNotCopied issues from a CSR that asks for CA:TRUE,
// keyCertSign, a DNS SAN, a foreign SPIFFE ID and a subject, and checks that
// none of it reaches the certificate.
func TestCSRExtensionsNotCopied(t *testing.T) {
	ca := newTestCA(t, "p256")
	csr, err := ParseCSR(readTestdata(t, "csr-p256-extensions.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if len(csr.Request().Extensions) == 0 || csr.Request().Subject.CommonName != "evil" {
		t.Fatal("fixture lost its extensions or subject")
	}
	c := ca.issueCSR(t, csr, "billing-bot.acme")
	if c.IsCA || c.KeyUsage != x509.KeyUsageDigitalSignature || len(c.DNSNames) != 0 ||
		len(c.URIs) != 1 || c.URIs[0].String() != AgentURI(testTD, "billing-bot.acme") ||
		c.Subject.String() != "" {
		t.Fatalf("CSR content leaked: IsCA=%v KU=%v DNS=%v URIs=%v subject=%q", c.IsCA, c.KeyUsage, c.DNSNames, c.URIs, c.Subject)
	}
}

// TestPrepareCertifiesOnlyTheCheckedKey: a *CSR comes only from ParseCSR
// (which refuses weak keys and CSRs without proof of possession:
// TestParseCSRFiles), so Prepare does not check the self-signature again;
// changing the parsed request afterwards — replacing its key, or changing
// the key or the input bytes in place — does not change the key Prepare
// certifies, and a nil or zero CSR is refused.
func TestPrepareCertifiesOnlyTheCheckedKey(t *testing.T) {
	ca := newTestCA(t, "p256")
	other := newKey(t, "p256").Public().(*ecdsa.PublicKey) // not the key that signed the CSR
	edOther := newKey(t, "ed25519").Public().(ed25519.PublicKey)
	for name, tt := range map[string]struct {
		alg    string
		mutate func(req *x509.CertificateRequest, der []byte, signer crypto.PublicKey)
	}{
		"key replaced": {"p256", func(req *x509.CertificateRequest, _ []byte, _ crypto.PublicKey) { req.PublicKey = other }},
		"key changed in place": {"p256", func(req *x509.CertificateRequest, _ []byte, _ crypto.PublicKey) {
			*req.PublicKey.(*ecdsa.PublicKey) = *other
		}},
		"Ed25519 key changed in place": {"ed25519", func(req *x509.CertificateRequest, _ []byte, _ crypto.PublicKey) {
			copy(req.PublicKey.(ed25519.PublicKey), edOther)
		}},
		"input bytes changed": {"ed25519", func(_ *x509.CertificateRequest, der []byte, signer crypto.PublicKey) {
			i := bytes.Index(der, signer.(ed25519.PublicKey))
			if i < 0 {
				t.Fatal("the key is not in the request's bytes")
			}
			copy(der[i:], edOther)
		}},
	} {
		t.Run(name, func(t *testing.T) {
			signer := newKey(t, tt.alg)
			want, err := x509.MarshalPKIXPublicKey(signer.Public())
			if err != nil {
				t.Fatal(err)
			}
			der := csrDER(t, signer)
			csr, err := ParseCSR(der)
			if err != nil {
				t.Fatal(err)
			}
			tt.mutate(csr.Request(), der, signer.Public())
			if got := ca.issueCSR(t, csr, "a").RawSubjectPublicKeyInfo; !bytes.Equal(got, want) {
				t.Fatal("Prepare certified a key changed after ParseCSR checked it")
			}
		})
	}
	for name, csr := range map[string]*CSR{"nil": nil, "zero": {}} {
		if _, err := ca.issuer.Prepare(csr, "a", testSerial(t), testNow); err == nil {
			t.Errorf("Prepare accepted a %s CSR", name)
		}
	}
}

func csrDER(t testing.TB, k crypto.Signer) []byte {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, k)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func FuzzParseCSR(f *testing.F) {
	for _, name := range []string{"csr-p256.pem", "csr-p256.der", "csr-ed25519.pem"} {
		b, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		csr, err := ParseCSR(in)
		if err != nil {
			var pe *PolicyError
			if !errors.As(err, &pe) {
				t.Fatalf("error %v is not a *PolicyError", err)
			}
			if strings.Contains(err.Error(), string(in)) && len(in) > 16 {
				t.Fatalf("error echoes the input")
			}
			return
		}
		if err := CheckPublicKey(csr.pub); err != nil {
			t.Fatalf("accepted CSR with bad key: %v", err)
		}
		if !csr.pub.(interface{ Equal(crypto.PublicKey) bool }).Equal(csr.Request().PublicKey) {
			t.Fatal("the key to certify is not the request's key")
		}
		if err := csr.Request().CheckSignature(); err != nil {
			t.Fatalf("accepted CSR with bad signature: %v", err)
		}
	})
}
