package ca

// A2A agent cards (issue 16). An agent card is the JSON document an A2A
// agent publishes about itself (A2A specification v1.0, "AgentCard"); a card
// may carry JWS signatures over its RFC 8785 (JCS) canonical form without the
// "signatures" member (§8.4). This file parses a submitted card strictly,
// canonicalizes it, signs it (ES256, detached payload) with a crypto.Signer —
// the card key on the token — and verifies such signatures.
//
// The canonical form the A2A SDKs verify is not plain JCS of the card as
// sent: @a2a-js/sdk (canonicalizeAgentCard) first round-trips the card
// through the v1.0 protobuf schema, which drops members outside the schema,
// members whose value is a protobuf default (a false non-optional boolean)
// and then every empty value ("", null, [], {}). ParseAgentCard therefore
// accepts only cards in that normal form — members of the v1.0 schema in
// their camelCase JSON names, of their proper JSON type, no empty value
// anywhere, no false where the SDK would drop it, exactly one member of each
// oneof — so the SDK's normalization leaves the card unchanged, the JCS of
// the card is exactly what the SDK verifies, and nothing a relying party
// reads in the card is outside the signature.

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/asn1"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/url"
	"slices"
	"sort"
	"strings"
	"unicode/utf8"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/gowebpki/jcs"
)

// Limits on a submitted agent card.
const (
	// MaxAgentCardSize caps a card's JSON encoding, signatures included.
	MaxAgentCardSize = 64 << 10
	// maxCardDepth caps the nesting of objects and arrays.
	maxCardDepth = 16
	// maxCardSignatures caps the signatures a card to verify may carry.
	maxCardSignatures = 8
)

// AgentCardJWSType is the "typ" of ATR's card signatures (as in the A2A
// specification's example and @a2a-js/sdk's).
const AgentCardJWSType = "JOSE"

// AgentCard is a parsed agent card in normal form (see the file comment).
type AgentCard struct {
	// Name is the card's "name".
	Name string
	// InterfaceURLs are the "url"s of "supportedInterfaces", in order.
	InterfaceURLs []string
	// Signatures are the card's "signatures", as parsed (not verified).
	Signatures []AgentCardSignature

	body map[string]any // the card without "signatures"
}

// AgentCardSignature is one JWS over a card (A2A AgentCardSignature): the
// base64url protected header and signature of a JWS in flattened JSON
// serialization whose payload, detached, is the card's canonical form.
type AgentCardSignature struct {
	Protected string         `json:"protected"`
	Signature string         `json:"signature"`
	Header    map[string]any `json:"header,omitempty"`
}

// AgentCardHeader is the protected header of ATR's card signatures.
type AgentCardHeader struct {
	Alg string `json:"alg"`
	Kid string `json:"kid"`
	Typ string `json:"typ"`
}

// ParseAgentCard parses a card strictly: at most MaxAgentCardSize bytes of
// UTF-8, one JSON object, no duplicate member, nesting at most 16 deep, and
// the normal form of the A2A v1.0 schema (file comment). "name" and at least
// one entry of "supportedInterfaces" with a "url" are required. A
// "signatures" member, when present, must be an array of AgentCardSignature
// objects; it is kept in Signatures and is not part of the canonical form.
// Refusals are *PolicyError with Field "card".
func ParseAgentCard(data []byte) (*AgentCard, error) {
	if len(data) > MaxAgentCardSize {
		return nil, policyErr("card", "larger than %d bytes", MaxAgentCardSize)
	}
	if !utf8.Valid(data) {
		return nil, policyErr("card", "not UTF-8")
	}
	v, err := decodeCardJSON(data)
	if err != nil {
		return nil, err
	}
	// encoding/json turns an escaped lone surrogate ("\ud800") into U+FFFD:
	// ATR would sign something other than what was sent. Refused, with the
	// replacement character itself, which no card needs.
	if hasReplacementChar(v) {
		return nil, policyErr("card", "contains U+FFFD or an unpaired surrogate escape")
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return nil, policyErr("card", "not a JSON object")
	}
	c := &AgentCard{body: make(map[string]any, len(obj))}
	for k, val := range obj {
		if k == "signatures" {
			continue
		}
		c.body[k] = val
	}
	if sigs, ok := obj["signatures"]; ok {
		if c.Signatures, err = parseCardSignatures(sigs); err != nil {
			return nil, err
		}
	}
	// Error paths name schema members and indexes only, never input.
	if err := cardSchema().check("card", c.body); err != nil {
		return nil, err
	}
	c.Name, _ = c.body["name"].(string)
	if c.Name == "" {
		return nil, policyErr("card", "name is required")
	}
	ifaces, _ := c.body["supportedInterfaces"].([]any)
	for i, x := range ifaces {
		u, _ := x.(map[string]any)["url"].(string)
		if u == "" {
			return nil, policyErr("card", "supportedInterfaces[%d].url is required", i)
		}
		c.InterfaceURLs = append(c.InterfaceURLs, u)
	}
	if len(c.InterfaceURLs) == 0 {
		return nil, policyErr("card", "supportedInterfaces is required")
	}
	return c, nil
}

// hasReplacementChar reports whether any string or member name in v holds
// U+FFFD.
func hasReplacementChar(v any) bool {
	switch x := v.(type) {
	case string:
		return strings.ContainsRune(x, utf8.RuneError)
	case []any:
		return slices.ContainsFunc(x, hasReplacementChar)
	case map[string]any:
		for k, e := range x {
			if strings.ContainsRune(k, utf8.RuneError) || hasReplacementChar(e) {
				return true
			}
		}
	}
	return false
}

// decodeCardJSON decodes exactly one JSON value, refusing duplicate object
// members, nesting deeper than maxCardDepth and trailing data. Numbers stay
// json.Number.
func decodeCardJSON(data []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	v, err := decodeCardValue(dec, 0)
	if err != nil {
		var pe *PolicyError
		if errors.As(err, &pe) {
			return nil, err
		}
		return nil, policyErr("card", "not valid JSON")
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, policyErr("card", "data after the JSON value")
	}
	return v, nil
}

func decodeCardValue(dec *json.Decoder, depth int) (any, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	d, ok := tok.(json.Delim)
	if !ok {
		return tok, nil // string, json.Number, bool or nil
	}
	if depth >= maxCardDepth {
		return nil, policyErr("card", "nested deeper than %d", maxCardDepth)
	}
	switch d {
	case '{':
		obj := map[string]any{}
		for dec.More() {
			kt, err := dec.Token()
			if err != nil {
				return nil, err
			}
			k, ok := kt.(string)
			if !ok {
				return nil, errors.New("object key is not a string")
			}
			if _, dup := obj[k]; dup {
				return nil, policyErr("card", "duplicate member")
			}
			if obj[k], err = decodeCardValue(dec, depth+1); err != nil {
				return nil, err
			}
		}
		if _, err := dec.Token(); err != nil { // '}'
			return nil, err
		}
		return obj, nil
	case '[':
		arr := []any{}
		for dec.More() {
			v, err := decodeCardValue(dec, depth+1)
			if err != nil {
				return nil, err
			}
			arr = append(arr, v)
		}
		if _, err := dec.Token(); err != nil { // ']'
			return nil, err
		}
		return arr, nil
	}
	return nil, errors.New("unexpected delimiter")
}

func parseCardSignatures(v any) ([]AgentCardSignature, error) {
	arr, ok := v.([]any)
	if !ok {
		return nil, policyErr("card", "signatures is not an array")
	}
	if len(arr) > maxCardSignatures {
		return nil, policyErr("card", "more than %d signatures", maxCardSignatures)
	}
	out := make([]AgentCardSignature, 0, len(arr))
	for i, x := range arr {
		m, ok := x.(map[string]any)
		if !ok {
			return nil, policyErr("card", "signatures[%d] is not an object", i)
		}
		var s AgentCardSignature
		for k, val := range m {
			switch k {
			case "protected", "signature":
				str, ok := val.(string)
				if !ok || str == "" {
					return nil, policyErr("card", "signatures[%d].%s is not a non-empty string", i, k)
				}
				if k == "protected" {
					s.Protected = str
				} else {
					s.Signature = str
				}
			case "header":
				h, ok := val.(map[string]any)
				if !ok {
					return nil, policyErr("card", "signatures[%d].header is not an object", i)
				}
				s.Header = h
			default:
				return nil, policyErr("card", "signatures[%d] has an unknown member", i)
			}
		}
		if s.Protected == "" || s.Signature == "" {
			return nil, policyErr("card", "signatures[%d] needs protected and signature", i)
		}
		out = append(out, s)
	}
	return out, nil
}

// Canonical returns the RFC 8785 canonical form of the card without
// "signatures": the JWS payload of a card signature.
func (c *AgentCard) Canonical() ([]byte, error) {
	raw, err := json.Marshal(c.body)
	if err != nil {
		return nil, fmt.Errorf("ca: agent card: encoding: %w", err)
	}
	out, err := jcs.Transform(raw)
	if err != nil {
		return nil, policyErr("card", "cannot be canonicalized (RFC 8785): %v", err)
	}
	return out, nil
}

// Digest is the SHA-256 of Canonical.
func (c *AgentCard) Digest() ([32]byte, error) {
	b, err := c.Canonical()
	if err != nil {
		return [32]byte{}, err
	}
	return sha256.Sum256(b), nil
}

// JSON returns the card with sigs as its "signatures" (none: no member),
// members in canonical order.
func (c *AgentCard) JSON(sigs ...AgentCardSignature) ([]byte, error) {
	out := make(map[string]any, len(c.body)+1)
	for k, v := range c.body {
		out[k] = v
	}
	if len(sigs) > 0 {
		out["signatures"] = sigs
	}
	raw, err := json.Marshal(out)
	if err != nil {
		return nil, fmt.Errorf("ca: agent card: encoding: %w", err)
	}
	return jcs.Transform(raw)
}

// SignAgentCard signs c's canonical form with signer, which must hold an
// ECDSA P-256 key: ES256, protected header {"alg":"ES256","kid":<the
// key's JWKThumbprint, its kid in the JWKS>,"typ":"JOSE"}, payload detached, header (the
// unprotected header) as given. No "jku": a relying party takes the key
// from the JWKS of the registry it trusts, never from a URL in the card.
// The signature is checked against the public key before it is returned.
func SignAgentCard(signer crypto.Signer, c *AgentCard, header map[string]any) (AgentCardSignature, error) {
	pub, ok := signer.Public().(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		return AgentCardSignature{}, errors.New("ca: agent card: the card key is not ECDSA P-256")
	}
	kid, err := JWKThumbprint(pub)
	if err != nil {
		return AgentCardSignature{}, err
	}
	payload, err := c.Canonical()
	if err != nil {
		return AgentCardSignature{}, err
	}
	hdr, err := json.Marshal(AgentCardHeader{Alg: string(jose.ES256), Kid: kid, Typ: AgentCardJWSType})
	if err != nil {
		return AgentCardSignature{}, fmt.Errorf("ca: agent card: header: %w", err)
	}
	protected := base64.RawURLEncoding.EncodeToString(hdr)
	digest := sha256.Sum256([]byte(protected + "." + base64.RawURLEncoding.EncodeToString(payload)))
	der, err := signer.Sign(rand.Reader, digest[:], crypto.SHA256)
	if err != nil {
		return AgentCardSignature{}, fmt.Errorf("ca: agent card: signing: %w", err)
	}
	var rs struct{ R, S *big.Int }
	if rest, err := asn1.Unmarshal(der, &rs); err != nil || len(rest) > 0 || rs.R == nil || rs.S == nil {
		return AgentCardSignature{}, errors.New("ca: agent card: the signer returned a malformed ECDSA signature")
	}
	raw := make([]byte, 64)
	rs.R.FillBytes(raw[:32])
	rs.S.FillBytes(raw[32:])
	sig := AgentCardSignature{Protected: protected, Signature: base64.RawURLEncoding.EncodeToString(raw), Header: header}
	// Check the signature to ensure the crypto.Signer behaved correctly.
	if err := verifyCardSignature(sig, payload, func(string) (crypto.PublicKey, error) { return pub, nil }); err != nil {
		return AgentCardSignature{}, fmt.Errorf("ca: agent card: the new signature does not verify: %w", err)
	}
	return sig, nil
}

// ErrAgentCardSignature is returned by VerifyAgentCard when no signature of
// the card verifies.
var ErrAgentCardSignature = errors.New("ca: agent card: no valid signature")

// VerifyAgentCard parses a signed card (ParseAgentCard) and returns it with
// the first of its signatures that verifies: protected header with alg
// ES256, typ "JOSE", a kid that key resolves to an ECDSA P-256 public key,
// no "crit", and a valid ES256 signature over the card's canonical form.
// It fails with ErrAgentCardSignature when none does.
func VerifyAgentCard(data []byte, key func(kid string) (crypto.PublicKey, error)) (*AgentCard, AgentCardSignature, error) {
	c, err := ParseAgentCard(data)
	if err != nil {
		return nil, AgentCardSignature{}, err
	}
	payload, err := c.Canonical()
	if err != nil {
		return nil, AgentCardSignature{}, err
	}
	var errs []error
	for _, s := range c.Signatures {
		err := verifyCardSignature(s, payload, key)
		if err == nil {
			return c, s, nil
		}
		errs = append(errs, err)
	}
	return nil, AgentCardSignature{}, fmt.Errorf("%w: %v", ErrAgentCardSignature, errors.Join(errs...))
}

func verifyCardSignature(s AgentCardSignature, payload []byte, key func(kid string) (crypto.PublicKey, error)) error {
	hdrJSON, err := base64.RawURLEncoding.DecodeString(s.Protected)
	if err != nil {
		return errors.New("protected header is not base64url")
	}
	var hdr map[string]any
	if err := json.Unmarshal(hdrJSON, &hdr); err != nil {
		return errors.New("protected header is not a JSON object")
	}
	kid, _ := hdr["kid"].(string)
	switch {
	case hdr["alg"] != string(jose.ES256):
		return errors.New("alg is not ES256")
	case hdr["typ"] != AgentCardJWSType:
		return fmt.Errorf("typ is not %q", AgentCardJWSType)
	case kid == "":
		return errors.New("no kid")
	case hdr["crit"] != nil:
		return errors.New("crit is not supported")
	}
	pub, err := key(kid)
	if err != nil {
		return fmt.Errorf("key %q: %w", kid, err)
	}
	if ec, ok := pub.(*ecdsa.PublicKey); !ok || ec.Curve != elliptic.P256() {
		return fmt.Errorf("key %q is not ECDSA P-256", kid)
	}
	jws, err := jose.ParseDetached(s.Protected+".."+s.Signature, payload, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		return fmt.Errorf("malformed JWS: %w", err)
	}
	if _, err := jws.Verify(pub); err != nil {
		return fmt.Errorf("signature: %w", err)
	}
	return nil
}

// CheckAgentCardURL reports whether the card endpoint u lies under prefix,
// the https URL an owner registered for the agent: both https with a host,
// no user info, no fragment; the same host and port (case-insensitive); u's
// path equal to prefix's path or below it at a "/" boundary; no "." or ".."
// segment and no encoded "/", "\" or "." in u's path. prefix has no query;
// u may.
func CheckAgentCardURL(prefix, u string) error {
	p, err := parseHTTPSURL(prefix)
	if err != nil {
		return policyErr("a2a_url", "registered URL prefix: %s", err)
	}
	if p.RawQuery != "" || p.ForceQuery {
		return policyErr("a2a_url", "registered URL prefix has a query")
	}
	got, err := parseHTTPSURL(u)
	if err != nil {
		return policyErr("card", "interface URL: %s", err)
	}
	// Hosts are compared as lowercase ASCII (A-labels): a Unicode host
	// could case-fold to another domain than IDNA maps it to (ẞ, ς).
	if !asciiHost(p.Host) {
		return policyErr("a2a_url", "registered URL prefix host must be ASCII (an IDN in its xn-- form)")
	}
	if !asciiHost(got.Host) || strings.ToLower(got.Host) != strings.ToLower(p.Host) {
		return policyErr("card", "interface URL host is not the registered host")
	}
	path := got.EscapedPath()
	lower := strings.ToLower(path)
	// Encoded separators, dots and percent signs (double decoding), and
	// path parameters (";", as in "/a/..;/b") are refused.
	if strings.Contains(lower, "%2f") || strings.Contains(lower, "%5c") || strings.Contains(lower, "%2e") ||
		strings.Contains(lower, "%25") || strings.ContainsAny(path, `\;`) {
		return policyErr("card", "interface URL path has an encoded separator, dot or percent sign, or a ';'")
	}
	if dec, err := url.PathUnescape(path); err != nil || !utf8.ValidString(dec) {
		return policyErr("card", "interface URL path is not valid percent-encoded UTF-8 (overlong forms included)")
	}
	for _, seg := range strings.Split(path, "/") {
		if seg == "." || seg == ".." {
			return policyErr("card", "interface URL path has a dot segment")
		}
	}
	base := strings.TrimSuffix(p.EscapedPath(), "/")
	if base != "" && path != base && !strings.HasPrefix(path, base+"/") {
		return policyErr("card", "interface URL is not under the registered URL prefix")
	}
	return nil
}

// asciiHost reports whether host (with its port) is printable ASCII.
func asciiHost(host string) bool {
	for i := 0; i < len(host); i++ {
		if host[i] <= 0x20 || host[i] >= 0x7f {
			return false
		}
	}
	return host != ""
}

func parseHTTPSURL(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return nil, errors.New("not a URL")
	case u.Scheme != "https":
		return nil, errors.New("not https")
	case u.Opaque != "" || u.Host == "" || u.Hostname() == "":
		return nil, errors.New("no host")
	case u.User != nil:
		return nil, errors.New("has user info")
	case u.Fragment != "" || strings.Contains(s, "#"):
		return nil, errors.New("has a fragment")
	}
	return u, nil
}

// cardKind is the JSON shape of a card member.
type cardKind int

const (
	kindString    cardKind = iota // a non-empty string
	kindStrings                   // a non-empty array of non-empty strings
	kindBool                      // true or false (an optional bool: the SDK keeps false)
	kindTrue                      // true (a plain proto3 bool: the SDK drops false)
	kindObject                    // an object of type elem
	kindObjects                   // a non-empty array of objects of type elem
	kindMap                       // a non-empty object whose values are objects of type elem
	kindStringMap                 // a non-empty object whose values are non-empty strings
	kindStruct                    // a non-empty object of any JSON (google.protobuf.Struct)
)

type cardField struct {
	kind cardKind
	elem *cardType
}

// cardType is an object type of the A2A v1.0 schema.
type cardType struct {
	name   string
	fields map[string]cardField
	oneOf  bool // exactly one member (a protobuf oneof)
}

// cardSchema is the A2A v1.0 AgentCard as @a2a-js/sdk's AgentCard.fromJSON
// reads it (camelCase names only), without "signatures".
func cardSchema() *cardType {
	str := cardField{kind: kindString}
	strs := cardField{kind: kindStrings}
	obj := func(t *cardType) cardField { return cardField{kind: kindObject, elem: t} }
	objs := func(t *cardType) cardField { return cardField{kind: kindObjects, elem: t} }
	scopes := cardField{kind: kindStringMap}
	stringList := &cardType{name: "StringList", fields: map[string]cardField{"list": strs}}
	securityRequirement := &cardType{name: "SecurityRequirement", fields: map[string]cardField{
		"schemes": {kind: kindMap, elem: stringList}}}
	flow := func(name string, urls ...string) *cardType {
		t := &cardType{name: name, fields: map[string]cardField{"refreshUrl": str, "scopes": scopes}}
		for _, u := range urls {
			t.fields[u] = str
		}
		return t
	}
	authCode := flow("AuthorizationCodeOAuthFlow", "authorizationUrl", "tokenUrl")
	authCode.fields["pkceRequired"] = cardField{kind: kindTrue}
	flows := &cardType{name: "OAuthFlows", oneOf: true, fields: map[string]cardField{
		"authorizationCode": obj(authCode),
		"clientCredentials": obj(flow("ClientCredentialsOAuthFlow", "tokenUrl")),
		"implicit":          obj(flow("ImplicitOAuthFlow", "authorizationUrl")),
		"password":          obj(flow("PasswordOAuthFlow", "tokenUrl")),
		"deviceCode":        obj(flow("DeviceCodeOAuthFlow", "deviceAuthorizationUrl", "tokenUrl")),
	}}
	securityScheme := &cardType{name: "SecurityScheme", oneOf: true, fields: map[string]cardField{
		"apiKeySecurityScheme": obj(&cardType{name: "APIKeySecurityScheme", fields: map[string]cardField{
			"description": str, "location": str, "name": str}}),
		"httpAuthSecurityScheme": obj(&cardType{name: "HTTPAuthSecurityScheme", fields: map[string]cardField{
			"description": str, "scheme": str, "bearerFormat": str}}),
		"oauth2SecurityScheme": obj(&cardType{name: "OAuth2SecurityScheme", fields: map[string]cardField{
			"description": str, "flows": obj(flows), "oauth2MetadataUrl": str}}),
		"openIdConnectSecurityScheme": obj(&cardType{name: "OpenIdConnectSecurityScheme", fields: map[string]cardField{
			"description": str, "openIdConnectUrl": str}}),
		"mtlsSecurityScheme": obj(&cardType{name: "MutualTlsSecurityScheme", fields: map[string]cardField{
			"description": str}}),
	}}
	return &cardType{name: "AgentCard", fields: map[string]cardField{
		"name":        str,
		"description": str,
		"supportedInterfaces": objs(&cardType{name: "AgentInterface", fields: map[string]cardField{
			"url": str, "protocolBinding": str, "tenant": str, "protocolVersion": str}}),
		"provider": obj(&cardType{name: "AgentProvider", fields: map[string]cardField{
			"url": str, "organization": str}}),
		"version":          str,
		"documentationUrl": str,
		"capabilities": obj(&cardType{name: "AgentCapabilities", fields: map[string]cardField{
			"streaming":         {kind: kindBool},
			"pushNotifications": {kind: kindBool},
			"extensions": objs(&cardType{name: "AgentExtension", fields: map[string]cardField{
				"uri": str, "description": str, "required": {kind: kindTrue}, "params": {kind: kindStruct}}}),
			"extendedAgentCard": {kind: kindBool},
		}}),
		"securitySchemes":      {kind: kindMap, elem: securityScheme},
		"securityRequirements": objs(securityRequirement),
		"defaultInputModes":    strs,
		"defaultOutputModes":   strs,
		"skills": objs(&cardType{name: "AgentSkill", fields: map[string]cardField{
			"id": str, "name": str, "description": str, "tags": strs, "examples": strs,
			"inputModes": strs, "outputModes": strs, "securityRequirements": objs(securityRequirement)}}),
		"iconUrl": str,
	}}
}

// check checks that v, found at path, is an object of type t in normal form.
func (t *cardType) check(path string, v any) error {
	obj, ok := v.(map[string]any)
	if !ok {
		return policyErr("card", "%s is not an object", path)
	}
	if len(obj) == 0 {
		return policyErr("card", "%s is empty", path)
	}
	if t.oneOf && len(obj) != 1 {
		return policyErr("card", "%s (%s) needs exactly one member", path, t.name)
	}
	keys := make([]string, 0, len(obj))
	for k := range obj {
		keys = append(keys, k)
	}
	sort.Strings(keys) // the first error is deterministic
	for _, k := range keys {
		f, ok := t.fields[k]
		if !ok {
			return policyErr("card", "%s has a member that is not in %s (A2A v1.0, camelCase)", path, t.name)
		}
		if err := f.check(path+"."+k, obj[k]); err != nil {
			return err
		}
	}
	return nil
}

func (f cardField) check(path string, v any) error {
	switch f.kind {
	case kindString:
		if s, ok := v.(string); !ok || s == "" {
			return policyErr("card", "%s is not a non-empty string", path)
		}
	case kindBool:
		if _, ok := v.(bool); !ok {
			return policyErr("card", "%s is not a boolean", path)
		}
	case kindTrue:
		if b, ok := v.(bool); !ok || !b {
			return policyErr("card", "%s must be true or absent", path)
		}
	case kindObject:
		return f.elem.check(path, v)
	case kindStrings, kindObjects:
		arr, ok := v.([]any)
		if !ok || len(arr) == 0 {
			return policyErr("card", "%s is not a non-empty array", path)
		}
		for i, x := range arr {
			p := fmt.Sprintf("%s[%d]", path, i)
			if f.kind == kindStrings {
				if s, ok := x.(string); !ok || s == "" {
					return policyErr("card", "%s is not a non-empty string", p)
				}
			} else if err := f.elem.check(p, x); err != nil {
				return err
			}
		}
	case kindMap, kindStringMap:
		obj, ok := v.(map[string]any)
		if !ok || len(obj) == 0 {
			return policyErr("card", "%s is not a non-empty object", path)
		}
		for k, x := range obj {
			p := path + ".*" // map keys are input: never echoed
			if err := checkMemberName(p, k); err != nil {
				return err
			}
			if f.kind == kindStringMap {
				if s, ok := x.(string); !ok || s == "" {
					return policyErr("card", "%s is not a non-empty string", p)
				}
			} else if err := f.elem.check(p, x); err != nil {
				return err
			}
		}
	case kindStruct:
		if _, ok := v.(map[string]any); !ok {
			return policyErr("card", "%s is not an object", path)
		}
		return checkAnyJSON(path, v)
	}
	return nil
}

// checkMemberName refuses "__proto__": JavaScript drops it when it copies
// an object, so the SDK would not sign or verify that member.
func checkMemberName(path, k string) error {
	if k == "__proto__" {
		return policyErr("card", "%s: member name __proto__", path)
	}
	return nil
}

// checkAnyJSON checks free JSON (a Struct): no empty value anywhere (the SDK
// drops them), no __proto__ member, finite numbers.
func checkAnyJSON(path string, v any) error {
	switch x := v.(type) {
	case nil:
		return policyErr("card", "%s is null", path)
	case string:
		if x == "" {
			return policyErr("card", "%s is an empty string", path)
		}
	case json.Number:
		if _, err := x.Float64(); err != nil {
			return policyErr("card", "%s is not a finite number", path)
		}
	case []any:
		if len(x) == 0 {
			return policyErr("card", "%s is an empty array", path)
		}
		for i, e := range x {
			if err := checkAnyJSON(fmt.Sprintf("%s[%d]", path, i), e); err != nil {
				return err
			}
		}
	case map[string]any:
		if len(x) == 0 {
			return policyErr("card", "%s is an empty object", path)
		}
		for k, e := range x {
			p := path + ".*"
			if err := checkMemberName(p, k); err != nil {
				return err
			}
			if err := checkAnyJSON(p, e); err != nil {
				return err
			}
		}
	}
	return nil
}
