package ca

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/url"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/cryptosigner"
	"github.com/go-jose/go-jose/v4/jwt"
)

// JWT-SVID policy (SPIFFE JWT-SVID specification, ES256 only).
const (
	// MaxJWTSVIDLifetime is the longest a JWT-SVID lives (exp − iat), and
	// DefaultJWTSVIDLifetime what a request without a lifetime gets.
	MaxJWTSVIDLifetime     = 5 * time.Minute
	DefaultJWTSVIDLifetime = MaxJWTSVIDLifetime
	// MinJWTSVIDLifetime is the shortest lifetime a caller may ask for:
	// shorter tokens would be dead on arrival at a verifier whose clock is
	// a few seconds off.
	MinJWTSVIDLifetime = 10 * time.Second
	// MaxJWTAudiences and MaxJWTAudienceLength bound the aud claim.
	MaxJWTAudiences      = 8
	MaxJWTAudienceLength = 256
	// JWKUseJWTSVID is the "use" of a JWT authority in a SPIFFE bundle;
	// JWKUseSig is the "use" of keys in an ordinary JWKS (RFC 7517).
	JWKUseJWTSVID = "jwt-svid"
	JWKUseSig     = "sig"
)

// JWK is the public JSON Web Key (RFC 7517) of an ES256 key: an ECDSA P-256
// key, kty "EC", with Kid its RFC 7638 thumbprint. It is what the JWKS and
// the SPIFFE bundle publish.
type JWK struct {
	Kty string `json:"kty"`
	Crv string `json:"crv"`
	X   string `json:"x"`
	Y   string `json:"y"`
	Kid string `json:"kid"`
	Use string `json:"use,omitempty"`
	Alg string `json:"alg,omitempty"`
}

// ecP256 returns pub as an ECDSA P-256 key, or a *PolicyError for anything
// else (ES256 is the only algorithm ATR signs JWTs with).
func ecP256(pub crypto.PublicKey) (*ecdsa.PublicKey, error) {
	k, ok := pub.(*ecdsa.PublicKey)
	if !ok || k == nil || k.Curve != elliptic.P256() {
		return nil, policyErr("key", "a JWT key must be ECDSA P-256 (ES256), not %T", pub)
	}
	return k, nil
}

// ecCoordinates returns the base64url (unpadded) x and y of a P-256 key,
// each 32 bytes before encoding (RFC 7518 §6.2.1.2).
func ecCoordinates(k *ecdsa.PublicKey) (x, y string, err error) {
	raw, err := k.Bytes() // 0x04 || X || Y
	if err != nil {
		return "", "", fmt.Errorf("ca: jwk: %w", err)
	}
	b64 := base64.RawURLEncoding.EncodeToString
	return b64(raw[1:33]), b64(raw[33:65]), nil
}

// JWKThumbprint is the RFC 7638 JWK thumbprint (SHA-256, base64url without
// padding) of an ECDSA P-256 public key: ATR's key ID ("kid") for JWT keys.
func JWKThumbprint(pub crypto.PublicKey) (string, error) {
	k, err := ecP256(pub)
	if err != nil {
		return "", err
	}
	x, y, err := ecCoordinates(k)
	if err != nil {
		return "", err
	}
	// RFC 7638 §3.2: the required members in lexicographic order, no white space.
	sum := sha256.Sum256([]byte(`{"crv":"P-256","kty":"EC","x":"` + x + `","y":"` + y + `"}`))
	return base64.RawURLEncoding.EncodeToString(sum[:]), nil
}

// NewJWK returns the public JWK of an ECDSA P-256 key with its thumbprint as
// kid, alg ES256 and the given use (JWKUseJWTSVID, JWKUseSig, or "").
func NewJWK(pub crypto.PublicKey, use string) (JWK, error) {
	k, err := ecP256(pub)
	if err != nil {
		return JWK{}, err
	}
	x, y, err := ecCoordinates(k)
	if err != nil {
		return JWK{}, err
	}
	kid, err := JWKThumbprint(k)
	if err != nil {
		return JWK{}, err
	}
	return JWK{Kty: "EC", Crv: "P-256", X: x, Y: y, Kid: kid, Use: use, Alg: string(jose.ES256)}, nil
}

// CheckJWTAudience checks the audience of a JWT-SVID request: 1 to
// MaxJWTAudiences values, each 1 to MaxJWTAudienceLength bytes of UTF-8
// without control characters or surrounding spaces, no value twice. A
// refusal is a *PolicyError with Field "audience".
func CheckJWTAudience(aud []string) error {
	switch {
	case len(aud) == 0:
		return policyErr("audience", "at least one audience is required")
	case len(aud) > MaxJWTAudiences:
		return policyErr("audience", "at most %d audiences", MaxJWTAudiences)
	}
	for i, a := range aud {
		switch {
		case a == "":
			return policyErr("audience", "audience %d is empty", i+1)
		case len(a) > MaxJWTAudienceLength:
			return policyErr("audience", "audience %d is longer than %d bytes", i+1, MaxJWTAudienceLength)
		case !utf8.ValidString(a):
			return policyErr("audience", "audience %d is not valid UTF-8", i+1)
		case strings.TrimSpace(a) != a:
			return policyErr("audience", "audience %d has surrounding white space", i+1)
		case strings.ContainsFunc(a, func(r rune) bool { return r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) }):
			return policyErr("audience", "audience %d has control characters", i+1)
		case slices.Contains(aud[:i], a):
			return policyErr("audience", "audience %d repeats an earlier one", i+1)
		}
	}
	return nil
}

// CheckJWTSVIDLifetime checks a requested lifetime: zero (the default) or
// whole seconds from MinJWTSVIDLifetime to MaxJWTSVIDLifetime. A refusal is
// a *PolicyError with Field "ttl".
func CheckJWTSVIDLifetime(ttl time.Duration) error {
	switch {
	case ttl == 0:
		return nil
	case ttl < MinJWTSVIDLifetime || ttl > MaxJWTSVIDLifetime:
		return policyErr("ttl", "must be between %d and %d seconds", int(MinJWTSVIDLifetime/time.Second), int(MaxJWTSVIDLifetime/time.Second))
	case ttl%time.Second != 0:
		return policyErr("ttl", "must be whole seconds")
	}
	return nil
}

// checkSPIFFEID checks that id is a SPIFFE ID with a path:
// spiffe://<trust domain>/<path>, nothing else.
func checkSPIFFEID(id string) error {
	u, err := url.Parse(id)
	if err != nil || u.Scheme != "spiffe" || u.User != nil || u.Port() != "" || u.RawQuery != "" ||
		u.Fragment != "" || u.Opaque != "" || u.RawPath != "" || len(u.Path) < 2 || u.Path[0] != '/' || strings.HasSuffix(u.Path, "/") {
		return policyErr("subject", "not a SPIFFE ID with a path")
	}
	return validTrustDomain(u.Host)
}

// JWTSVIDRequest is what a JWT-SVID is made of. The caller (the registry)
// has authenticated the agent; Subject is its SPIFFE ID (AgentURI) and
// NotAfter its certificate's NotAfter.
type JWTSVIDRequest struct {
	Subject  string        // sub: spiffe://<trust domain>/agent/<name>
	Audience []string      // aud, checked by CheckJWTAudience
	Issuer   string        // iss, optional (the registry's public URL)
	Lifetime time.Duration // 0: DefaultJWTSVIDLifetime; else CheckJWTSVIDLifetime
	NotAfter time.Time     // exp is never later (the credential the token stands for)
}

// JWTSVID is a signed JWT-SVID and the claims in it.
type JWTSVID struct {
	Token     string // compact JWS
	KeyID     string // kid of the header
	Subject   string
	Audience  []string
	Issuer    string
	ID        string // jti: 128 random bits, base64url
	IssuedAt  time.Time
	ExpiresAt time.Time
}

// JWTSigner signs JWT-SVIDs (ES256) with a crypto.Signer, typically an ECDSA
// P-256 key on the token that never leaves it.
type JWTSigner struct {
	signer crypto.Signer
	pub    *ecdsa.PublicKey
	kid    string
}

// NewJWTSigner wraps s, which must hold an ECDSA P-256 key.
func NewJWTSigner(s crypto.Signer) (*JWTSigner, error) {
	if s == nil {
		return nil, errors.New("ca: jwt signer: nil signer")
	}
	pub, err := ecP256(s.Public())
	if err != nil {
		return nil, err
	}
	kid, err := JWKThumbprint(pub)
	if err != nil {
		return nil, err
	}
	return &JWTSigner{signer: s, pub: pub, kid: kid}, nil
}

// KeyID is the kid of the JWTs it signs (the key's RFC 7638 thumbprint).
func (j *JWTSigner) KeyID() string { return j.kid }

// Public is the public key.
func (j *JWTSigner) Public() *ecdsa.PublicKey { return j.pub }

// jwtSVIDClaims are the claims ATR puts in a JWT-SVID, in this order.
type jwtSVIDClaims struct {
	Issuer   string           `json:"iss,omitempty"`
	Subject  string           `json:"sub"`
	Audience jwt.Audience     `json:"aud"`
	Expiry   *jwt.NumericDate `json:"exp"`
	IssuedAt *jwt.NumericDate `json:"iat"`
	ID       string           `json:"jti"`
}

// IssueJWTSVID checks req against the policy and signs a JWT-SVID: header
// alg ES256, typ JWT, kid KeyID(); claims sub, aud, iat = now (whole
// seconds), exp = iat + lifetime but never after req.NotAfter, jti 128 bits
// from rand, iss when req.Issuer is set. Policy refusals are *PolicyError
// values. As crypto/x509 does, the signature is checked after signing, to
// ensure the crypto.Signer behaved.
func (j *JWTSigner) IssueJWTSVID(req JWTSVIDRequest, now time.Time, rand io.Reader) (*JWTSVID, error) {
	if err := checkSPIFFEID(req.Subject); err != nil {
		return nil, err
	}
	if err := CheckJWTAudience(req.Audience); err != nil {
		return nil, err
	}
	if err := CheckJWTSVIDLifetime(req.Lifetime); err != nil {
		return nil, err
	}
	lifetime := req.Lifetime
	if lifetime == 0 {
		lifetime = DefaultJWTSVIDLifetime
	}
	iat := now.UTC().Truncate(time.Second)
	exp := iat.Add(lifetime)
	if na := req.NotAfter.UTC().Truncate(time.Second); !req.NotAfter.IsZero() && na.Before(exp) {
		exp = na
	}
	if exp.Sub(iat) < time.Second {
		return nil, policyErr("certificate", "expires before a JWT-SVID could be used")
	}
	var id [16]byte
	if _, err := io.ReadFull(rand, id[:]); err != nil {
		return nil, fmt.Errorf("ca: jwt-svid: reading randomness: %w", err)
	}
	claims := jwtSVIDClaims{
		Issuer:   req.Issuer,
		Subject:  req.Subject,
		Audience: jwt.Audience(slices.Clone(req.Audience)),
		Expiry:   jwt.NewNumericDate(exp),
		IssuedAt: jwt.NewNumericDate(iat),
		ID:       base64.RawURLEncoding.EncodeToString(id[:]),
	}
	sig, err := jose.NewSigner(
		jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: cryptosigner.Opaque(j.signer), KeyID: j.kid}},
		(&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return nil, fmt.Errorf("ca: jwt-svid: %w", err)
	}
	token, err := jwt.Signed(sig).Claims(claims).Serialize()
	if err != nil {
		return nil, fmt.Errorf("ca: jwt-svid: signing: %w", err)
	}
	if err := j.check(token, claims); err != nil {
		return nil, err
	}
	return &JWTSVID{
		Token: token, KeyID: j.kid, Subject: claims.Subject, Audience: []string(claims.Audience), Issuer: claims.Issuer,
		ID: claims.ID, IssuedAt: iat, ExpiresAt: exp,
	}, nil
}

// check parses a token just signed and verifies it with the public key:
// header as intended, signature valid, claims those that were signed.
func (j *JWTSigner) check(token string, want jwtSVIDClaims) error {
	tok, err := jwt.ParseSigned(token, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		return fmt.Errorf("ca: jwt-svid: signer produced an unparsable token: %w", err)
	}
	if len(tok.Headers) != 1 || tok.Headers[0].KeyID != j.kid || tok.Headers[0].Algorithm != string(jose.ES256) ||
		tok.Headers[0].ExtraHeaders[jose.HeaderType] != "JWT" {
		return errors.New("ca: jwt-svid: signer produced an unexpected header")
	}
	var got jwtSVIDClaims
	if err := tok.Claims(j.pub, &got); err != nil {
		return fmt.Errorf("ca: jwt-svid: signature does not verify (signer misbehaved): %w", err)
	}
	if got.Subject != want.Subject || got.Issuer != want.Issuer || got.ID != want.ID || !slices.Equal(got.Audience, want.Audience) ||
		got.Expiry == nil || *got.Expiry != *want.Expiry || got.IssuedAt == nil || *got.IssuedAt != *want.IssuedAt {
		return errors.New("ca: jwt-svid: signed claims differ from the intended ones")
	}
	return nil
}
