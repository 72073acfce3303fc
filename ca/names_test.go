package ca

import (
	"crypto/x509"
	"errors"
	"net/url"
	"strings"
	"testing"
)

func TestNormalizeAgentName(t *testing.T) {
	label63 := strings.Repeat("a", 63)
	name253 := strings.Join([]string{label63, label63, label63, strings.Repeat("b", 61)}, ".")
	tests := []struct {
		in, want string // want "" means refused
	}{
		{"billing-bot.acme", "billing-bot.acme"},
		{"BILLING-bot.ACME", "billing-bot.acme"},
		{"a", "a"},
		{"0", "0"},
		{"a-b.c-d.e1", "a-b.c-d.e1"},
		{"abc--d", "abc--d"},             // "--" outside positions 3-4 is fine
		{"\u212Aey.acme", "key.acme"},    // KELVIN SIGN: NFC is ASCII 'K'
		{name253, name253},               // exactly 253
		{label63 + ".x", label63 + ".x"}, // 63-char label
		{"", ""},                         // empty
		{name253 + "b", ""},              // 254 characters
		{strings.Repeat("a", 64), ""},    // 64-char label
		{"../etc/passwd", ""},            // path traversal
		{"..", ""},                       // dots only
		{".", ""},                        //
		{"a..b", ""},                     // empty label
		{".a", ""},                       // leading dot
		{"a.", ""},                       // trailing dot
		{"a/b", ""},                      // slash
		{`a\b`, ""},                      // backslash
		{"-a", ""},                       // leading hyphen
		{"a-", ""},                       // trailing hyphen
		{"a.-b", ""},                     // hyphen at label start
		{"a b", ""},                      // space
		{" a", ""},                       // leading space
		{"a\t", ""},                      // tab
		{"a\nb", ""},                     // newline
		{"a\x00b", ""},                   // NUL
		{"a\x7f", ""},                    // DEL
		{"a_b", ""},                      // underscore
		{"a:b", ""},                      // colon
		{"a@b", ""},                      // at
		{"*.acme", ""},                   // wildcard
		{"bill\u0430ng.acme", ""},        // Cyrillic а (U+0430) confusable
		{"\u0430", ""},                   // Cyrillic alone
		{"caf\u00e9", ""},                // é, precomposed
		{"cafe\u0301", ""},               // e + combining acute: NFC é, still non-ASCII
		{"\u0130stanbul", "istanbul"},    // İ: Go lowercases it to ASCII i (same identity)
		{"xn--80ak6aa92e", ""},           // IDNA A-label (punycode confusable)
		{"ab--cd", ""},                   // reserved positions 3-4
		{"a\u200bb", ""},                 // zero-width space
		{"a\u00a0b", ""},                 // no-break space
		{"\xff\xfe", ""},                 // invalid UTF-8
		{"ｂｉｌｌｉｎｇ", ""},                  // fullwidth letters (NFC keeps them)
		{strings.Repeat("a", 2000), ""},  // way too long
		{strings.Repeat("a.", 126) + "a", strings.Repeat("a.", 126) + "a"}, // 253 with many labels
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := NormalizeAgentName(tt.in)
			if tt.want == "" {
				var pe *PolicyError
				if !errors.As(err, &pe) || pe.Field != "name" {
					t.Fatalf("NormalizeAgentName(%q) = %q, %v; want *PolicyError{Field: name}", tt.in, got, err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("NormalizeAgentName(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
			}
			if again, err := NormalizeAgentName(got); err != nil || again != got {
				t.Fatalf("not idempotent: %q -> %q, %v", got, again, err)
			}
		})
	}
}

func TestAgentName(t *testing.T) {
	mk := func(uris ...string) *x509.Certificate {
		c := &x509.Certificate{}
		for _, s := range uris {
			u, err := url.Parse(s)
			if err != nil {
				t.Fatal(err)
			}
			c.URIs = append(c.URIs, u)
		}
		return c
	}
	tests := []struct {
		name string
		cert *x509.Certificate
		want string
	}{
		{"ok", mk(AgentURI(testTD, "billing-bot.acme")), "billing-bot.acme"},
		{"nil", nil, ""},
		{"no URI", mk(), ""},
		{"two URIs", mk(AgentURI(testTD, "a"), AgentURI(testTD, "b")), ""},
		{"other trust domain", mk(AgentURI("other.example", "a")), ""},
		{"trust domain suffix", mk(AgentURI("evil."+testTD, "a")), ""},
		{"https scheme", mk("https://" + testTD + "/agent/a"), ""},
		{"not agent path", mk("spiffe://" + testTD + "/workload/a"), ""},
		{"nested path", mk("spiffe://" + testTD + "/agent/a/b"), ""},
		{"uppercase name", mk("spiffe://" + testTD + "/agent/A"), ""},
		{"empty name", mk("spiffe://" + testTD + "/agent/"), ""},
		{"dot-dot", mk("spiffe://" + testTD + "/agent/.."), ""},
		{"encoded slash", mk("spiffe://" + testTD + "/agent/a%2Fb"), ""},
		{"query", mk("spiffe://" + testTD + "/agent/a?x=1"), ""},
		{"fragment", mk("spiffe://" + testTD + "/agent/a#x"), ""},
		{"port", mk("spiffe://" + testTD + ":443/agent/a"), ""},
		{"userinfo", mk("spiffe://u@" + testTD + "/agent/a"), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := AgentName(tt.cert, testTD)
			if tt.want == "" {
				var pe *PolicyError
				if !errors.As(err, &pe) {
					t.Fatalf("AgentName = %q, %v; want *PolicyError", got, err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("AgentName = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func FuzzNormalizeAgentName(f *testing.F) {
	for _, s := range []string{"billing-bot.acme", "BILLING-bot.ACME", "../etc/passwd", "bill\u0430ng", "\u212Aey"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := NormalizeAgentName(s)
		if err != nil {
			var pe *PolicyError
			if !errors.As(err, &pe) {
				t.Fatalf("error %v is not a *PolicyError", err)
			}
			return
		}
		if len(n) == 0 || len(n) > MaxAgentNameLength {
			t.Fatalf("accepted %q of length %d", n, len(n))
		}
		for i := 0; i < len(n); i++ {
			c := n[i]
			if !(c == '.' || c == '-' || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')) {
				t.Fatalf("accepted %q with byte %q", n, c)
			}
		}
		if strings.Contains(n, "..") || strings.HasPrefix(n, ".") || strings.HasSuffix(n, ".") {
			t.Fatalf("accepted %q with empty label", n)
		}
		if again, err := NormalizeAgentName(n); err != nil || again != n {
			t.Fatalf("not idempotent: %q -> %q, %v", n, again, err)
		}
		u, err := url.Parse(AgentURI(testTD, n))
		if err != nil {
			t.Fatalf("AgentURI(%q) does not parse: %v", n, err)
		}
		if got, err := AgentName(&x509.Certificate{URIs: []*url.URL{u}}, testTD); err != nil || got != n {
			t.Fatalf("AgentName round trip of %q = %q, %v", n, got, err)
		}
	})
}
