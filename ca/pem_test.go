package ca

import (
	"bytes"
	"errors"
	"testing"
)

func TestParseCertificatesPEM(t *testing.T) {
	ca := newTestCA(t, "p256")
	one := EncodeCertificatesPEM(ca.inter)
	two := EncodeCertificatesPEM(ca.inter, ca.root)
	tests := []struct {
		name  string
		in    []byte
		max   int
		wantN int // 0 means refused
	}{
		{"one", one, 0, 1},
		{"two", two, 0, 2},
		{"whitespace around and between", []byte("\n  " + string(one) + "\r\n\n" + string(one) + "  \n"), 0, 2},
		{"max reached", two, 2, 2},
		{"over max", two, 1, 0},
		{"default max", bytes.Repeat(one, DefaultMaxCertificates+1), 0, 0},
		{"empty", nil, 0, 0},
		{"whitespace only", []byte("\n\n"), 0, 0},
		{"leading garbage", append([]byte("x"), one...), 0, 0},
		{"trailing garbage", append(append([]byte{}, one...), "junk"...), 0, 0},
		{"garbage between", []byte(string(one) + "junk\n" + string(one)), 0, 0},
		{"CSR block", readTestdata(t, "csr-p256.pem"), 0, 0},
		{"private key block", pemBlock("PRIVATE KEY", []byte{0x30, 0x00}), 0, 0},
		{"mixed types", append(append([]byte{}, one...), pemBlock("PUBLIC KEY", []byte{0x30, 0x00})...), 0, 0},
		{"headers", bytes.Replace(one, []byte("-----\n"), []byte("-----\nX: y\n\n"), 1), 0, 0},
		{"not DER", pemBlock("CERTIFICATE", []byte("hello")), 0, 0},
		{"DER with trailing byte", pemBlock("CERTIFICATE", append(append([]byte{}, ca.inter.Raw...), 0)), 0, 0},
		{"raw DER", ca.inter.Raw, 0, 0},
		{"oversize", append(append([]byte{}, one...), bytes.Repeat([]byte("\n"), MaxPEMSize)...), 0, 0},
		{"unterminated", one[:len(one)-10], 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseCertificatesPEM(tt.in, tt.max)
			if tt.wantN == 0 {
				var pe *PolicyError
				if !errors.As(err, &pe) {
					t.Fatalf("ParseCertificatesPEM = %d certs, %v; want *PolicyError", len(got), err)
				}
				return
			}
			if err != nil || len(got) != tt.wantN {
				t.Fatalf("ParseCertificatesPEM = %d certs, %v; want %d", len(got), err, tt.wantN)
			}
		})
	}
}

func FuzzParseCertificatesPEM(f *testing.F) {
	// More seeds live in testdata/fuzz/FuzzParseCertificatesPEM.
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		certs, err := ParseCertificatesPEM(in, 3)
		if err != nil {
			var pe *PolicyError
			if !errors.As(err, &pe) {
				t.Fatalf("error %v is not a *PolicyError", err)
			}
			return
		}
		if len(certs) == 0 || len(certs) > 3 {
			t.Fatalf("got %d certificates", len(certs))
		}
	})
}
