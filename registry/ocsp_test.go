package registry

// Tests of the OCSP GET decoder (ocsp.go). The request checks and the
// responder are tested in revocation_test.go on a real token.

import (
	"bytes"
	"encoding/base64"
	"errors"
	"net/url"
	"strings"
	"testing"
)

func TestDecodeOCSPGet(t *testing.T) {
	der := []byte{0x30, 0x51, 0xfb, 0xef, 0xff, 0x00, 0x3e}
	std := base64.StdEncoding.EncodeToString(der) // contains '+' and '/'
	if !strings.ContainsAny(std, "+/") {
		t.Fatalf("test vector %q should contain + or /", std)
	}
	tests := []struct {
		name, path string
		ok         bool
	}{
		{"standard", std, true},
		{"url-encoded", url.PathEscape(std), true},
		{"fully escaped", strings.NewReplacer("+", "%2B", "/", "%2F", "=", "%3D").Replace(std), true},
		{"no padding", strings.TrimRight(std, "="), true},
		{"plus mangled to space", strings.ReplaceAll(std, "+", " "), true},
		{"empty", "", false},
		{"url-safe alphabet", base64.URLEncoding.EncodeToString(der), true},
		{"url-safe alphabet, unpadded", base64.RawURLEncoding.EncodeToString(der), true},
		{"mixed alphabets", "+_" + base64.RawStdEncoding.EncodeToString(der), false},
		{"bad escape", "%zz", false},
		{"not base64", "!!!!", false},
		{"too long", strings.Repeat("A", maxOCSPGetPathSize+1), false},
		{"decodes to too much", base64.StdEncoding.EncodeToString(make([]byte, MaxOCSPRequestSize+1)), false},
		{"decodes to nothing", "====", false},
		{"padding escaped", strings.ReplaceAll(std, "=", "%3D"), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DecodeOCSPGet(tt.path)
			if !tt.ok {
				if !errors.Is(err, ErrInvalid) {
					t.Fatalf("DecodeOCSPGet(%q) = %x, %v; want ErrInvalid", tt.path, got, err)
				}
				return
			}
			if err != nil || !bytes.Equal(got, der) {
				t.Fatalf("DecodeOCSPGet(%q) = %x, %v; want %x", tt.path, got, err, der)
			}
		})
	}
}

// ocspGetSpellings are the ways a client may write der in the GET path:
// RFC 6960 A.1 (URL-escaped standard base64), unescaped, without padding,
// and with '+' turned into ' ' by form decoding.
func ocspGetSpellings(der []byte) []string {
	std := base64.StdEncoding.EncodeToString(der)
	raw := base64.RawStdEncoding.EncodeToString(der)
	return []string{std, raw, url.PathEscape(std), url.QueryEscape(std), url.PathEscape(raw),
		strings.NewReplacer("+", "%2B", "/", "%2F", "=", "%3D").Replace(std), strings.ReplaceAll(std, "+", " ")}
}

// FuzzDecodeOCSPGet checks DecodeOCSPGet on its decoded bytes: any input
// either decodes to 1..MaxOCSPRequestSize bytes that every spelling of
// their encoding decodes to again, or is ErrInvalid with no bytes; and any
// bytes (the input taken as a DER request) come back from every spelling of
// their encoding. Seeds: testdata/fuzz/FuzzDecodeOCSPGet.
func FuzzDecodeOCSPGet(f *testing.F) {
	f.Fuzz(func(t *testing.T, path string) {
		der, err := DecodeOCSPGet(path)
		if err != nil {
			if der != nil || !errors.Is(err, ErrInvalid) {
				t.Fatalf("DecodeOCSPGet(%q) = %x, %v; want nil, ErrInvalid", path, der, err)
			}
		} else {
			if len(der) == 0 || len(der) > MaxOCSPRequestSize {
				t.Fatalf("DecodeOCSPGet(%q) = %d bytes, want 1..%d", path, len(der), MaxOCSPRequestSize)
			}
			for _, p := range ocspGetSpellings(der) {
				checkSpelling(t, p, der)
			}
		}
		if raw := []byte(path); len(raw) > 0 && len(raw) <= MaxOCSPRequestSize {
			for _, p := range ocspGetSpellings(raw) {
				checkSpelling(t, p, raw)
			}
		}
	})
}

// checkSpelling checks that DecodeOCSPGet(p) is der, or ErrInvalid when p
// is longer than the decoder accepts.
func checkSpelling(t *testing.T, p string, der []byte) {
	t.Helper()
	got, err := DecodeOCSPGet(p)
	if len(p) > maxOCSPGetPathSize {
		if !errors.Is(err, ErrInvalid) {
			t.Fatalf("DecodeOCSPGet(%d characters) = %v, want ErrInvalid (over %d)", len(p), err, maxOCSPGetPathSize)
		}
		return
	}
	if err != nil || !bytes.Equal(got, der) {
		t.Fatalf("DecodeOCSPGet(%q) = %x, %v; want %x", p, got, err, der)
	}
}
