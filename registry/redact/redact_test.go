package redact

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"
)

const (
	testKeyPEM = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIBkg4LVWM9nuwNSk3yByxZpYRTBnVJk5oUSdBLrVcFn0oAoGCCqGSM49\nAwEHoUQDQgAE7J2B\n-----END EC PRIVATE KEY-----"
	testAPIKey = "atr_0123456789abcdef_4f3c2b1a00112233445566778899aabbccddeeff00112233445566778899aabb"
)

func TestRedact(t *testing.T) {
	tests := []struct {
		name, in   string
		want       string   // exact output when non-empty
		mustNot    []string // substrings that must be gone
		mustRemain []string
	}{
		{name: "pem private key", in: "oops " + testKeyPEM + " after", want: "oops [REDACTED PRIVATE KEY] after"},
		{name: "pkcs8 key", in: "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----", want: "[REDACTED PRIVATE KEY]"},
		{name: "encrypted key", in: "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----", want: "[REDACTED PRIVATE KEY]"},
		{name: "unterminated key", in: "x -----BEGIN RSA PRIVATE KEY-----\nMIIEsecret", want: "x [REDACTED PRIVATE KEY]"},
		{name: "certificate kept", in: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----", mustRemain: []string{"MIIB"}},
		{name: "api key keeps id", in: "key " + testAPIKey + " used", want: "key atr_0123456789abcdef_[REDACTED] used"},
		{name: "malformed api key", in: "atr_notanid_butlongenough", want: "[REDACTED]"},
		{name: "bearer header", in: "Authorization: Bearer abc.def-ghi_jkl==", want: "Authorization: Bearer [REDACTED]"},
		{name: "basic header", in: "authorization: basic dXNlcjpwYXNz", want: "authorization: basic [REDACTED]"},
		// Found by FuzzRedact: the credential after two scheme words was kept.
		{name: "scheme words repeated", in: "BAsiC Bearer 0000000000000000 0", want: "BAsiC [REDACTED] 0"},
		{name: "assignment of a credential", in: "pin= Bearer 0000000000000000 0", want: "pin= [REDACTED] [REDACTED] 0"},
		{name: "assignment after a scheme word", in: "pin=basic password= hunter2", want: "pin=[REDACTED] [REDACTED] [REDACTED]"},
		{name: "scheme word ends a line", in: "password: basic\nuser_pin= 123456", want: "password: [REDACTED]\n[REDACTED] [REDACTED]"},
		{name: "chained schemes", in: "pin=bearer pin=bearer 0123456789abcdef", want: "pin=[REDACTED] [REDACTED] [REDACTED]"},
		{name: "assignment of a bare scheme word", in: "password: basic", want: "password: [REDACTED]"},
		{name: "pin assignment", in: "login failed pin=123456 slot", want: "login failed pin=[REDACTED] slot"},
		{name: "pkcs11 uri pin-value", in: "pkcs11:token=atr-issuing;object=k?pin-value=9876", want: "pkcs11:token=atr-issuing;object=k?pin-value=[REDACTED]"},
		{name: "json password", in: `{"password": "hunter2"}`, mustNot: []string{"hunter2"}},
		{name: "so-pin", in: "--so-pin 1111 so_pin=2222", mustNot: []string{"2222"}},
		{name: "plain text kept", in: "registered agent billing-bot.acme serial 0a1b", want: "registered agent billing-bot.acme serial 0a1b"},
		{name: "shipping not a pin", in: "shipping=fast", want: "shipping=fast"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Redact(tt.in)
			if tt.want != "" && got != tt.want {
				t.Errorf("Redact(%q) = %q; want %q", tt.in, got, tt.want)
			}
			for _, s := range tt.mustNot {
				if strings.Contains(got, s) {
					t.Errorf("Redact(%q) = %q; still contains %q", tt.in, got, s)
				}
			}
			for _, s := range tt.mustRemain {
				if !strings.Contains(got, s) {
					t.Errorf("Redact(%q) = %q; lost %q", tt.in, got, s)
				}
			}
			if again := Redact(got); again != got {
				t.Errorf("not idempotent: Redact(%q) = %q", got, again)
			}
		})
	}
}

func TestRedactMap(t *testing.T) {
	in := map[string]string{
		"team":        "billing",
		"user_pin":    "1234",
		"API-Key":     "whatever",
		"private_key": "x",
		"note":        "contains " + testAPIKey,
		"shipping":    "fast",
		"token_label": "atr-issuing",
	}
	got := RedactMap(in)
	want := map[string]string{
		"team":        "billing",
		"user_pin":    Placeholder,
		"API-Key":     Placeholder,
		"private_key": Placeholder,
		"note":        "contains atr_0123456789abcdef_[REDACTED]",
		"shipping":    "fast",
		"token_label": "atr-issuing",
	}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("RedactMap[%q] = %q; want %q", k, got[k], w)
		}
	}
	if in["user_pin"] != "1234" {
		t.Error("RedactMap modified its input")
	}
	if RedactMap(nil) != nil {
		t.Error("RedactMap(nil) != nil")
	}
}

// TestHook replays SEC-012/SEC-025: a secret passed to the logger by accident
// (message, string field, error field) never reaches the output.
func TestHook(t *testing.T) {
	var buf bytes.Buffer
	l := logrus.New()
	l.SetOutput(&buf)
	l.SetFormatter(&logrus.JSONFormatter{})
	l.AddHook(Hook{})
	e := logrus.NewEntry(l).WithField("request_id", "req-1")
	e.WithFields(logrus.Fields{
		"csr_or_key": testKeyPEM,
		"header":     "Bearer sekrit-token-value",
		"pin":        "424242",
		"items":      []string{testAPIKey},
	}).WithError(errors.New("parse failed near " + testAPIKey)).Error("request body: " + testKeyPEM)
	out := buf.String()
	for _, secret := range []string{"MHcCAQEEIBkg", "4f3c2b1a0011", "sekrit-token-value", "424242"} {
		if strings.Contains(out, secret) {
			t.Errorf("log output contains secret %q: %s", secret, out)
		}
	}
	for _, keep := range []string{"req-1", "atr_0123456789abcdef_", "request body"} {
		if !strings.Contains(out, keep) {
			t.Errorf("log output lost %q: %s", keep, out)
		}
	}
}

// FuzzRedact checks that secrets planted in arbitrary text are removed and
// that Redact is idempotent.
func FuzzRedact(f *testing.F) {
	f.Add("prefix ", " suffix", "4f3c2b1a00112233445566778899aabb")
	f.Add("pin=", "", "123456")
	f.Add("-----BEGIN PRIVATE KEY-----", "-----END PRIVATE KEY-----", "QUJD")
	f.Add("Authorization:\tBasic ", "", "dXNlcjpwYXNz")
	f.Add("pin=basic password=", "", "0123456789abcdef0123")
	f.Add("password: basic\nuser_pin=", "", "0123456789abcdef0123")
	f.Fuzz(func(t *testing.T, before, after, secret string) {
		if got := Redact(before + after); Redact(got) != got {
			t.Fatalf("not idempotent on %q: %q → %q", before+after, got, Redact(got))
		}
		// The patterns Redact skips where they cannot match would not have
		// matched: the result is the same as with every pattern run.
		for _, in := range []string{before + after, before + secret + after} {
			if got, want := Redact(in), redact(in, true); got != want {
				t.Fatalf("Redact(%q) = %q; with every pattern run: %q", in, got, want)
			}
		}
		sec := strings.Map(func(r rune) rune {
			if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
				return r
			}
			return -1
		}, secret)
		if len(sec) < 16 {
			return
		}
		// Separate the planted secret from fuzzed neighbours so that it is
		// a token of its own.
		// kept is what Redact rightly leaves of each planted secret (the
		// public key ID, the scheme, the PEM frame): the secret counts as
		// surviving only beyond its occurrences in the neighbours and there.
		for _, p := range []struct{ kept, planted string }{
			{"atr_0123456789abcdef_", "atr_0123456789abcdef_" + sec},
			{"Bearer ", "Bearer " + sec},
			{"pin=", "pin=" + sec},
			{"-----BEGIN EC PRIVATE KEY-----\n\n-----END EC PRIVATE KEY-----",
				"-----BEGIN EC PRIVATE KEY-----\n" + sec + "\n-----END EC PRIVATE KEY-----"},
		} {
			in := before + " " + p.planted + " " + after
			got := Redact(in)
			if strings.Count(got, sec) > strings.Count(before+" "+p.kept+" "+after, sec) {
				t.Fatalf("secret survived: Redact(%q) = %q", in, got)
			}
		}
	})
}
