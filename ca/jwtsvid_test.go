package ca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
)

const jwtTestSubject = "spiffe://atr.example.org/agent/billing-bot.acme"

func newP256(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// jwtBundle is the go-spiffe JWT bundle of the trust domain holding pub under kid.
func jwtBundle(t testing.TB, kid string, pub crypto.PublicKey) *jwtbundle.Bundle {
	t.Helper()
	td := spiffeid.RequireTrustDomainFromString("atr.example.org")
	return jwtbundle.FromJWTAuthorities(td, map[string]crypto.PublicKey{kid: pub})
}

func TestJWTKeyPolicy(t *testing.T) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		s    crypto.Signer
		ok   bool
	}{
		{"p256", newP256(t), true},
		{"p384", p384, false},
		{"rsa", rsaKey, false},
		{"ed25519", edKey, false},
		{"nil", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewJWTSigner(tc.s)
			if (err == nil) != tc.ok {
				t.Fatalf("NewJWTSigner: got %v, want ok=%v", err, tc.ok)
			}
			if tc.s != nil {
				if _, err := NewJWK(tc.s.Public(), JWKUseSig); (err == nil) != tc.ok {
					t.Fatalf("NewJWK: got %v, want ok=%v", err, tc.ok)
				}
			}
		})
	}
}

// TestJWKThumbprintMatchesGoJose checks kid against an independent RFC 7638
// implementation, and the JWK against go-jose's parser.
func TestJWKThumbprintMatchesGoJose(t *testing.T) {
	for i := 0; i < 20; i++ {
		k := newP256(t)
		want, err := (&jose.JSONWebKey{Key: k.Public()}).Thumbprint(crypto.SHA256)
		if err != nil {
			t.Fatal(err)
		}
		got, err := JWKThumbprint(k.Public())
		if err != nil {
			t.Fatal(err)
		}
		if got != base64.RawURLEncoding.EncodeToString(want) {
			t.Fatalf("JWKThumbprint = %s, want %s", got, base64.RawURLEncoding.EncodeToString(want))
		}
		jwk, err := NewJWK(k.Public(), JWKUseJWTSVID)
		if err != nil {
			t.Fatal(err)
		}
		b, err := json.Marshal(jwk)
		if err != nil {
			t.Fatal(err)
		}
		var parsed jose.JSONWebKey
		if err := parsed.UnmarshalJSON(b); err != nil {
			t.Fatalf("go-jose refuses %s: %v", b, err)
		}
		if !parsed.Valid() || !k.PublicKey.Equal(parsed.Key) || parsed.KeyID != got || parsed.Use != "jwt-svid" || parsed.Algorithm != "ES256" {
			t.Fatalf("go-jose reads %s as %+v", b, parsed)
		}
	}
}

func TestIssueJWTSVID(t *testing.T) {
	key := newP256(t)
	s, err := NewJWTSigner(key)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 12, 3, 12, 0, 0, 500e6, time.UTC)
	iat := now.Truncate(time.Second)
	long := now.Add(24 * time.Hour)
	base := func(mod func(*JWTSVIDRequest)) JWTSVIDRequest {
		r := JWTSVIDRequest{Subject: jwtTestSubject, Audience: []string{"https://payments.example.org"}, NotAfter: long}
		if mod != nil {
			mod(&r)
		}
		return r
	}
	for _, tc := range []struct {
		name      string
		req       JWTSVIDRequest
		wantExp   time.Time // zero: refused
		wantField string    // PolicyError field of a refusal
	}{
		{"default lifetime", base(nil), iat.Add(5 * time.Minute), ""},
		{"shorter", base(func(r *JWTSVIDRequest) { r.Lifetime = 2 * time.Minute }), iat.Add(2 * time.Minute), ""},
		{"minimum", base(func(r *JWTSVIDRequest) { r.Lifetime = MinJWTSVIDLifetime }), iat.Add(MinJWTSVIDLifetime), ""},
		{"maximum", base(func(r *JWTSVIDRequest) { r.Lifetime = MaxJWTSVIDLifetime }), iat.Add(MaxJWTSVIDLifetime), ""},
		{"capped by certificate", base(func(r *JWTSVIDRequest) { r.NotAfter = now.Add(90*time.Second + 200*time.Millisecond) }), iat.Add(90 * time.Second), ""},
		{"several audiences", base(func(r *JWTSVIDRequest) { r.Audience = []string{"a", "b", "c"} }), iat.Add(5 * time.Minute), ""},
		{"with issuer", base(func(r *JWTSVIDRequest) { r.Issuer = "https://atr.example.org:8443" }), iat.Add(5 * time.Minute), ""},
		{"too long", base(func(r *JWTSVIDRequest) { r.Lifetime = 5*time.Minute + time.Second }), time.Time{}, "ttl"},
		{"too short", base(func(r *JWTSVIDRequest) { r.Lifetime = 5 * time.Second }), time.Time{}, "ttl"},
		{"negative", base(func(r *JWTSVIDRequest) { r.Lifetime = -time.Minute }), time.Time{}, "ttl"},
		{"fractional", base(func(r *JWTSVIDRequest) { r.Lifetime = 90*time.Second + time.Millisecond }), time.Time{}, "ttl"},
		{"certificate expired", base(func(r *JWTSVIDRequest) { r.NotAfter = now.Add(-time.Minute) }), time.Time{}, "certificate"},
		{"certificate expiring", base(func(r *JWTSVIDRequest) { r.NotAfter = now.Add(400 * time.Millisecond) }), time.Time{}, "certificate"},
		{"no audience", base(func(r *JWTSVIDRequest) { r.Audience = nil }), time.Time{}, "audience"},
		{"empty audience", base(func(r *JWTSVIDRequest) { r.Audience = []string{"a", ""} }), time.Time{}, "audience"},
		{"too many audiences", base(func(r *JWTSVIDRequest) { r.Audience = strings.Split("a b c d e f g h i", " ") }), time.Time{}, "audience"},
		{"audience too long", base(func(r *JWTSVIDRequest) { r.Audience = []string{strings.Repeat("a", MaxJWTAudienceLength+1)} }), time.Time{}, "audience"},
		{"longest audience", base(func(r *JWTSVIDRequest) { r.Audience = []string{strings.Repeat("a", MaxJWTAudienceLength)} }), iat.Add(5 * time.Minute), ""},
		{"duplicate audience", base(func(r *JWTSVIDRequest) { r.Audience = []string{"a", "b", "a"} }), time.Time{}, "audience"},
		{"control character", base(func(r *JWTSVIDRequest) { r.Audience = []string{"a\nb"} }), time.Time{}, "audience"},
		{"white space", base(func(r *JWTSVIDRequest) { r.Audience = []string{" a"} }), time.Time{}, "audience"},
		{"invalid UTF-8", base(func(r *JWTSVIDRequest) { r.Audience = []string{"a\xff"} }), time.Time{}, "audience"},
		{"subject not spiffe", base(func(r *JWTSVIDRequest) { r.Subject = "https://atr.example.org/agent/x" }), time.Time{}, "subject"},
		{"subject without path", base(func(r *JWTSVIDRequest) { r.Subject = "spiffe://atr.example.org" }), time.Time{}, "subject"},
		{"subject with query", base(func(r *JWTSVIDRequest) { r.Subject = jwtTestSubject + "?x=1" }), time.Time{}, "subject"},
		{"subject bad trust domain", base(func(r *JWTSVIDRequest) { r.Subject = "spiffe://ATR/agent/x" }), time.Time{}, "trust domain"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := s.IssueJWTSVID(tc.req, now, rand.Reader)
			if tc.wantExp.IsZero() {
				var pe *PolicyError
				if !errors.As(err, &pe) || pe.Field != tc.wantField {
					t.Fatalf("IssueJWTSVID: got %v, want a PolicyError on %q", err, tc.wantField)
				}
				return
			}
			if err != nil {
				t.Fatalf("IssueJWTSVID: %v", err)
			}
			if !got.IssuedAt.Equal(iat) || !got.ExpiresAt.Equal(tc.wantExp) {
				t.Fatalf("iat, exp = %v, %v; want %v, %v", got.IssuedAt, got.ExpiresAt, iat, tc.wantExp)
			}
			if got.ExpiresAt.Sub(got.IssuedAt) > MaxJWTSVIDLifetime || got.ExpiresAt.After(tc.req.NotAfter) {
				t.Fatalf("exp %v past 5 minutes or the certificate's NotAfter %v", got.ExpiresAt, tc.req.NotAfter)
			}
			// Read back with go-jose, independently of IssueJWTSVID's own check.
			tok, err := jwt.ParseSigned(got.Token, []jose.SignatureAlgorithm{jose.ES256})
			if err != nil {
				t.Fatal(err)
			}
			h := tok.Headers[0]
			if h.Algorithm != "ES256" || h.KeyID != s.KeyID() || h.ExtraHeaders[jose.HeaderType] != "JWT" {
				t.Fatalf("header = %+v", h)
			}
			var c jwt.Claims
			if err := tok.Claims(&key.PublicKey, &c); err != nil {
				t.Fatalf("signature: %v", err)
			}
			if c.Subject != tc.req.Subject || !c.Audience.Contains(tc.req.Audience[0]) || len(c.Audience) != len(tc.req.Audience) ||
				c.Issuer != tc.req.Issuer || !c.Expiry.Time().Equal(tc.wantExp) || !c.IssuedAt.Time().Equal(iat) || c.ID != got.ID {
				t.Fatalf("claims = %+v, want those of %+v", c, tc.req)
			}
			if id, err := base64.RawURLEncoding.DecodeString(c.ID); err != nil || len(id) != 16 {
				t.Fatalf("jti %q: want 128 bits, base64url", c.ID)
			}
		})
	}
}

// TestJWTSVIDWithGoSPIFFE: go-spiffe's jwtsvid.ParseAndValidate accepts a
// fresh token for its audience and refuses another audience, an expired
// token and a token whose kid names another key.
func TestJWTSVIDWithGoSPIFFE(t *testing.T) {
	key := newP256(t)
	s, err := NewJWTSigner(key)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	bundle := jwtBundle(t, s.KeyID(), key.Public())
	issue := func(at time.Time) string {
		t.Helper()
		svid, err := s.IssueJWTSVID(JWTSVIDRequest{Subject: jwtTestSubject, Audience: []string{"payments", "ledger"}, NotAfter: now.Add(time.Hour)}, at, rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return svid.Token
	}
	fresh := issue(now)
	got, err := jwtsvid.ParseAndValidate(fresh, bundle, []string{"ledger"})
	if err != nil {
		t.Fatalf("go-spiffe refuses a fresh token: %v", err)
	}
	if got.ID.String() != jwtTestSubject {
		t.Fatalf("go-spiffe reads sub %s", got.ID)
	}
	if _, err := jwtsvid.ParseAndValidate(fresh, bundle, []string{"other"}); err == nil {
		t.Fatal("go-spiffe accepts another audience")
	}
	if _, err := jwtsvid.ParseAndValidate(issue(now.Add(-10*time.Minute)), bundle, []string{"ledger"}); err == nil {
		t.Fatal("go-spiffe accepts an expired token")
	}
	other := jwtBundle(t, s.KeyID(), newP256(t).Public())
	if _, err := jwtsvid.ParseAndValidate(fresh, other, []string{"ledger"}); err == nil {
		t.Fatal("go-spiffe accepts a token under another key")
	}
}

// wrongSigner signs with a key other than the one it claims.
type wrongSigner struct{ claimed, real *ecdsa.PrivateKey }

func (w wrongSigner) Public() crypto.PublicKey { return w.claimed.Public() }
func (w wrongSigner) Sign(r io.Reader, d []byte, o crypto.SignerOpts) ([]byte, error) {
	return w.real.Sign(r, d, o)
}

func TestIssueJWTSVIDChecksTheSigner(t *testing.T) {
	s, err := NewJWTSigner(wrongSigner{claimed: newP256(t), real: newP256(t)})
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.IssueJWTSVID(JWTSVIDRequest{Subject: jwtTestSubject, Audience: []string{"a"}}, time.Now(), rand.Reader)
	if err == nil || !strings.Contains(err.Error(), "does not verify") {
		t.Fatalf("a misbehaving signer: got %v, want a verification failure", err)
	}
}

// FuzzJWTSVIDAudience: whatever audiences a caller sends, CheckJWTAudience
// either refuses them or they go into a token that go-jose reads back as
// exactly those audiences.
func FuzzJWTSVIDAudience(f *testing.F) {
	for _, seed := range [][2]string{{"payments", ""}, {"https://a.example/x?y=1", "b"}, {"a\x00b", ""}, {" a", "a"}, {"é", "e\u0301"}, {"a", "a"}} {
		f.Add(seed[0], seed[1])
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	s, err := NewJWTSigner(key)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		aud := []string{a}
		if b != "" {
			aud = append(aud, b)
		}
		if CheckJWTAudience(aud) != nil {
			return
		}
		svid, err := s.IssueJWTSVID(JWTSVIDRequest{Subject: jwtTestSubject, Audience: aud}, time.Now(), rand.Reader)
		if err != nil {
			t.Fatalf("accepted audience %q: %v", aud, err)
		}
		tok, err := jwt.ParseSigned(svid.Token, []jose.SignatureAlgorithm{jose.ES256})
		if err != nil {
			t.Fatal(err)
		}
		var c jwt.Claims
		if err := tok.Claims(&key.PublicKey, &c); err != nil {
			t.Fatal(err)
		}
		if len(c.Audience) != len(aud) || c.Audience[0] != aud[0] || (len(aud) == 2 && c.Audience[1] != aud[1]) {
			t.Fatalf("aud %q read back as %q", aud, c.Audience)
		}
	})
}
