package ca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"os"
	"strings"
	"testing"
)

func readCard(t *testing.T) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/agentcard/card.json")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// setMember returns the card with a member replaced (a JSON value), or
// deleted when value is "".
func setMember(t *testing.T, card []byte, key, value string) []byte {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(card, &m); err != nil {
		t.Fatal(err)
	}
	if value == "" {
		delete(m, key)
	} else {
		m[key] = json.RawMessage(value)
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseAgentCard(t *testing.T) {
	good := readCard(t)
	c, err := ParseAgentCard(good)
	if err != nil {
		t.Fatalf("ParseAgentCard(testdata card) = %v", err)
	}
	if c.Name != "billing-bot.acme" || len(c.InterfaceURLs) != 2 || c.InterfaceURLs[1] != "https://agents.acme.example/a2a/billing/grpc" {
		t.Errorf("got name %q, urls %q", c.Name, c.InterfaceURLs)
	}
	iface := `[{"url":"https://a.example/x"}]`
	tests := []struct {
		desc    string
		data    []byte
		wantErr string // substring of the PolicyError; "" for success
	}{
		{"minimal", []byte(`{"name":"a","supportedInterfaces":` + iface + `}`), ""},
		{"with signatures", setMember(t, good, "signatures", `[{"protected":"e30","signature":"AA","header":{"x":1}}]`), ""},
		{"not an object", []byte(`["name"]`), "not a JSON object"},
		{"not JSON", []byte(`{"name":`), "not valid JSON"},
		{"trailing data", []byte(`{"name":"a","supportedInterfaces":` + iface + `} {}`), "data after"},
		{"duplicate member", []byte(`{"name":"a","name":"b","supportedInterfaces":` + iface + `}`), "duplicate member"},
		{"not UTF-8", []byte("{\"name\":\"\xff\"}"), "not UTF-8"},
		{"lone surrogate escape", setMember(t, good, "description", `"a\ud800b"`), "unpaired surrogate"},
		{"replacement character", setMember(t, good, "description", `"a\ufffdb"`), "U+FFFD"},
		{"surrogate pair (fine)", setMember(t, good, "description", `"a\ud83d\ude00b"`), ""},
		{"too large", []byte(`{"name":"` + strings.Repeat("a", MaxAgentCardSize) + `"}`), "larger than"},
		{"too deep", []byte(`{"name":"a","supportedInterfaces":` + iface + `,"capabilities":{"extensions":[{"params":` +
			strings.Repeat(`{"a":`, 20) + `1` + strings.Repeat(`}`, 20) + `}]}}`), "nested deeper"},
		{"no name", setMember(t, good, "name", ""), "name is required"},
		{"no interfaces", setMember(t, good, "supportedInterfaces", ""), "supportedInterfaces is required"},
		{"interface without url", setMember(t, good, "supportedInterfaces", `[{"protocolBinding":"JSONRPC"}]`), "url is required"},
		{"unknown member (v0.3 url)", setMember(t, good, "url", `"https://a.example"`), "card has a member that is not in AgentCard"},
		{"snake_case alias", setMember(t, good, "icon_url", `"https://a.example/i.png"`), "not in AgentCard"},
		{"wrong type", setMember(t, good, "version", `1`), "version is not a non-empty string"},
		{"empty string", setMember(t, good, "description", `""`), "description is not a non-empty string"},
		{"null", setMember(t, good, "provider", `null`), "provider is not an object"},
		{"empty array", setMember(t, good, "skills", `[]`), "skills is not a non-empty array"},
		{"empty object", setMember(t, good, "capabilities", `{}`), "capabilities is empty"},
		{"false proto default", setMember(t, good, "capabilities", `{"extensions":[{"uri":"u","required":false}]}`), "must be true or absent"},
		{"oneof with two", setMember(t, good, "securitySchemes", `{"a":{"mtlsSecurityScheme":{"description":"x"},"apiKeySecurityScheme":{"name":"k"}}}`), "exactly one member"},
		{"oneof with none", setMember(t, good, "securitySchemes", `{"a":{}}`), "is empty"},
		{"__proto__ map key", setMember(t, good, "securitySchemes", `{"__proto__":{"mtlsSecurityScheme":{"description":"x"}}}`), "__proto__"},
		{"__proto__ in params", setMember(t, good, "capabilities", `{"extensions":[{"uri":"u","params":{"__proto__":{"a":1}}}]}`), "__proto__"},
		{"empty in params", setMember(t, good, "capabilities", `{"extensions":[{"uri":"u","params":{"a":[1,null]}}]}`), "is null"},
		{"huge number", setMember(t, good, "capabilities", `{"extensions":[{"uri":"u","params":{"a":1e400}}]}`), "finite number"},
		{"empty scope description", setMember(t, good, "securitySchemes", `{"o":{"oauth2SecurityScheme":{"flows":{"implicit":{"authorizationUrl":"https://x","scopes":{"s":""}}}}}}`), "not a non-empty string"},
		{"signatures not an array", setMember(t, good, "signatures", `{}`), "signatures is not an array"},
		{"signature unknown member", setMember(t, good, "signatures", `[{"protected":"e30","signature":"AA","payload":"x"}]`), "an unknown member"},
		{"signature incomplete", setMember(t, good, "signatures", `[{"protected":"e30"}]`), "needs protected and signature"},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			_, err := ParseAgentCard(tt.data)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("ParseAgentCard = %v, want success", err)
				}
				return
			}
			var pe *PolicyError
			if !errors.As(err, &pe) || pe.Field != "card" || !strings.Contains(pe.Reason, tt.wantErr) {
				t.Fatalf("ParseAgentCard = %v, want a card PolicyError containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestAgentCardCanonical(t *testing.T) {
	// The canonical form drops signatures, sorts members (RFC 8785) and
	// writes numbers as ECMAScript does.
	c, err := ParseAgentCard([]byte(`{"supportedInterfaces":[{"url":"https://a.example/x"}],"name":"a",
		"capabilities":{"extensions":[{"uri":"u","params":{"z":1.50,"a":1e2,"s":"<&>"}}]},
		"signatures":[{"protected":"e30","signature":"AA"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.Canonical()
	if err != nil {
		t.Fatal(err)
	}
	want := `{"capabilities":{"extensions":[{"params":{"a":100,"s":"<&>","z":1.5},"uri":"u"}]},"name":"a","supportedInterfaces":[{"url":"https://a.example/x"}]}`
	if string(got) != want {
		t.Errorf("Canonical =\n%s\nwant\n%s", got, want)
	}
	d, _ := c.Digest()
	if d != sha256.Sum256([]byte(want)) {
		t.Errorf("Digest is not the SHA-256 of Canonical")
	}
}

func newCardKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestSignAgentCard(t *testing.T) {
	key := newCardKey(t)
	good := readCard(t)
	c, err := ParseAgentCard(good)
	if err != nil {
		t.Fatal(err)
	}
	sig, err := SignAgentCard(key, c, map[string]any{"atr_log_index": 7})
	if err != nil {
		t.Fatalf("SignAgentCard = %v", err)
	}
	hdrJSON, _ := base64.RawURLEncoding.DecodeString(sig.Protected)
	kid, _ := JWKThumbprint(key.Public())
	if want := `{"alg":"ES256","kid":"` + kid + `","typ":"JOSE"}`; string(hdrJSON) != want {
		t.Errorf("protected header = %s, want %s", hdrJSON, want)
	}
	signed, err := c.JSON(sig)
	if err != nil {
		t.Fatal(err)
	}
	keys := func(k string) (crypto.PublicKey, error) {
		if k != kid {
			return nil, errors.New("unknown kid")
		}
		return key.Public(), nil
	}
	vc, vs, err := VerifyAgentCard(signed, keys)
	if err != nil {
		t.Fatalf("VerifyAgentCard(signed card) = %v", err)
	}
	if vc.Name != c.Name || vs.Signature != sig.Signature || vs.Header["atr_log_index"] != json.Number("7") {
		t.Errorf("VerifyAgentCard returned %q, %+v", vc.Name, vs)
	}

	// Altering any top-level member, the signature or the protected header
	// breaks it; the unprotected header is not covered.
	var m map[string]json.RawMessage
	if err := json.Unmarshal(signed, &m); err != nil {
		t.Fatal(err)
	}
	for k := range m {
		if k == "signatures" {
			continue
		}
		t.Run("alter "+k, func(t *testing.T) {
			altered := setMember(t, signed, k, alteredValue(t, m[k]))
			if _, _, err := VerifyAgentCard(altered, keys); !errors.Is(err, ErrAgentCardSignature) {
				t.Errorf("VerifyAgentCard(card with %s altered) = %v, want ErrAgentCardSignature", k, err)
			}
		})
	}
	other := newCardKey(t)
	otherSig, err := SignAgentCard(other, c, nil)
	if err != nil {
		t.Fatal(err)
	}
	flipped := []byte(sig.Signature)
	flipped[3] ^= 1
	hdr := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
	for _, tt := range []struct {
		desc string
		sig  AgentCardSignature
	}{
		{"signature flipped", AgentCardSignature{Protected: sig.Protected, Signature: string(flipped)}},
		{"other key's signature", AgentCardSignature{Protected: sig.Protected, Signature: otherSig.Signature}},
		{"unknown kid", otherSig},
		{"typ changed", AgentCardSignature{Protected: hdr(`{"alg":"ES256","kid":"` + kid + `","typ":"JWT"}`), Signature: sig.Signature}},
		{"alg none", AgentCardSignature{Protected: hdr(`{"alg":"none","kid":"` + kid + `","typ":"JOSE"}`), Signature: sig.Signature}},
		{"header reordered", AgentCardSignature{Protected: hdr(`{"typ":"JOSE","alg":"ES256","kid":"` + kid + `"}`), Signature: sig.Signature}},
		{"crit", AgentCardSignature{Protected: hdr(`{"alg":"ES256","kid":"` + kid + `","typ":"JOSE","crit":["x"]}`), Signature: sig.Signature}},
	} {
		t.Run(tt.desc, func(t *testing.T) {
			b, err := c.JSON(tt.sig)
			if err != nil {
				t.Fatal(err)
			}
			if _, _, err := VerifyAgentCard(b, keys); !errors.Is(err, ErrAgentCardSignature) {
				t.Errorf("VerifyAgentCard = %v, want ErrAgentCardSignature", err)
			}
		})
	}
	unsigned, _ := c.JSON()
	if _, _, err := VerifyAgentCard(unsigned, keys); !errors.Is(err, ErrAgentCardSignature) {
		t.Errorf("VerifyAgentCard(unsigned card) = %v, want ErrAgentCardSignature", err)
	}
}

// alteredValue changes a JSON value while keeping its type.
func alteredValue(t *testing.T, v json.RawMessage) string {
	t.Helper()
	var x any
	if err := json.Unmarshal(v, &x); err != nil {
		t.Fatal(err)
	}
	switch x := x.(type) {
	case string:
		b, _ := json.Marshal(x + "x")
		return string(b)
	case []any:
		b, _ := json.Marshal(append(x, x[0]))
		return string(b)
	case map[string]any:
		for k := range x {
			delete(x, k)
			break
		}
		if len(x) == 0 {
			return `{"description":"x"}`
		}
		b, _ := json.Marshal(x)
		return string(b)
	}
	t.Fatalf("no alteration for %s", v)
	return ""
}

func TestSignAgentCardRefusesOtherKeys(t *testing.T) {
	c, err := ParseAgentCard(readCard(t))
	if err != nil {
		t.Fatal(err)
	}
	k384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if _, err := SignAgentCard(k384, c, nil); err == nil {
		t.Error("SignAgentCard with a P-384 key succeeded")
	}
	if _, err := SignAgentCard(badSigner{newCardKey(t)}, c, nil); err == nil || !strings.Contains(err.Error(), "does not verify") {
		t.Errorf("SignAgentCard with a misbehaving signer = %v, want a failed check", err)
	}
}

// badSigner signs the wrong digest.
type badSigner struct{ *ecdsa.PrivateKey }

func (s badSigner) Sign(r io.Reader, digest []byte, o crypto.SignerOpts) ([]byte, error) {
	d := sha256.Sum256(digest)
	return s.PrivateKey.Sign(r, d[:], o)
}

func TestCheckAgentCardURL(t *testing.T) {
	const prefix = "https://agents.acme.example/a2a/billing"
	tests := []struct {
		prefix, url string
		ok          bool
	}{
		{prefix, "https://agents.acme.example/a2a/billing", true},
		{prefix, "https://agents.acme.example/a2a/billing/", true},
		{prefix, "https://agents.acme.example/a2a/billing/v1?x=1", true},
		{prefix, "https://AGENTS.acme.example/a2a/billing/v1", true},
		{prefix + "/", "https://agents.acme.example/a2a/billing/v1", true},
		{"https://agents.acme.example", "https://agents.acme.example/anything", true},
		{prefix, "https://agents.acme.example/a2a/billingx", false},
		{prefix, "https://agents.acme.example/a2a", false},
		{prefix, "http://agents.acme.example/a2a/billing", false},
		{prefix, "https://agents.acme.example:8443/a2a/billing", false},
		{prefix, "https://evil.example/a2a/billing", false},
		{prefix, "https://agents.acme.example.evil.example/a2a/billing", false},
		{prefix, "https://user@agents.acme.example/a2a/billing", false},
		{prefix, "https://agents.acme.example/a2a/billing/../admin", false},
		{prefix, "https://agents.acme.example/a2a/billing/%2e%2e/admin", false},
		{prefix, "https://agents.acme.example/a2a/billing%2f..%2fadmin", false},
		{prefix, "https://agents.acme.example/a2a/billing#frag", false},
		{prefix, "//agents.acme.example/a2a/billing", false},
		{prefix, "https:agents.acme.example/a2a/billing", false},
		{"http://agents.acme.example", "http://agents.acme.example/x", false},
		{"https://agents.acme.example/?q=1", "https://agents.acme.example/?q=1", false},
		{"", "https://agents.acme.example/", false},
		// Unicode hosts: ẞ case-folds to ß but IDNA maps STRAẞE to strasse, another domain.
		{"https://straße.example/a2a", "https://STRAẞE.example/a2a/x", false},
		{"https://xn--strae-oqa.example/a2a", "https://xn--strae-oqa.example/a2a/x", true},
		{"https://xn--strae-oqa.example/a2a", "https://straße.example/a2a/x", false},
		// Path tricks servers resolve differently.
		{prefix, "https://agents.acme.example/a2a/billing/..;/admin", false},
		{prefix, "https://agents.acme.example/a2a/billing/%252e%252e/admin", false},
		{prefix, "https://agents.acme.example/a2a/billing/%c0%ae%c0%ae/admin", false}, // overlong "..": invalid UTF-8
		{prefix, "https://agents.acme.example/a2a/billing/caf%C3%A9", true},
	}
	for _, tt := range tests {
		err := CheckAgentCardURL(tt.prefix, tt.url)
		if (err == nil) != tt.ok {
			t.Errorf("CheckAgentCardURL(%q, %q) = %v, want ok=%v", tt.prefix, tt.url, err, tt.ok)
		}
	}
}

func FuzzParseAgentCard(f *testing.F) {
	f.Add([]byte(`{"name":"a","supportedInterfaces":[{"url":"https://a.example/x"}]}`))
	f.Add([]byte(`{"name":"a","name":"b"}`))
	f.Add([]byte(`{"capabilities":{"extensions":[{"params":{"a":[1,{"b":"c"}]}}]}}`))
	key := newCardKey(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseAgentCard(data)
		if err != nil {
			var pe *PolicyError
			if !errors.As(err, &pe) {
				t.Fatalf("ParseAgentCard error %v is not a *PolicyError", err)
			}
			return
		}
		// A card that parses canonicalizes, and its canonical form (plus
		// ATR's signature) parses again to the same canonical form.
		canon, err := c.Canonical()
		if err != nil {
			return // numbers out of range for RFC 8785
		}
		sig, err := SignAgentCard(key, c, nil)
		if err != nil {
			t.Fatalf("SignAgentCard(parsed card) = %v", err)
		}
		signed, err := c.JSON(sig)
		if err != nil {
			t.Fatal(err)
		}
		if len(signed) > MaxAgentCardSize {
			return
		}
		c2, err := ParseAgentCard(signed)
		if err != nil {
			t.Fatalf("ParseAgentCard(signed card) = %v", err)
		}
		canon2, err := c2.Canonical()
		if err != nil || string(canon2) != string(canon) {
			t.Fatalf("canonical form changed after signing: %s vs %s (%v)", canon, canon2, err)
		}
	})
}
