package hsm

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// URI names a key (and the token that holds it) as an RFC 7512 PKCS#11 URI:
//
//	pkcs11:token=atr-issuing;object=issuing-2026;id=%01?pin-source=/run/secrets/pin
//
// Token and Serial select the token (at most one), Object (CKA_LABEL) and ID
// (CKA_ID) select the key (at least one). PinSource is a file holding the
// PIN (for ReadPIN); ModulePath is the PKCS#11 module. Token.Signer checks
// Token, Serial and ModulePath against the open token when they are set.
type URI struct {
	Token, Serial, Object string
	ID                    []byte
	PinSource, ModulePath string
}

const uriScheme = "pkcs11:"

// maxURILength bounds the input; real key URIs are far shorter.
const maxURILength = 4096

// ParseURI parses an RFC 7512 PKCS#11 URI that names a key. Values are
// percent-decoded. Duplicate attributes, unknown attributes, slot-id,
// pin-value, a fragment, empty values, token together with serial,
// module-name together with module-path, a type other than "private", and a
// URI naming neither object nor id are rejected.
func ParseURI(s string) (URI, error) {
	var u URI
	if len(s) > maxURILength {
		return u, fmt.Errorf("hsm: parsing PKCS#11 URI: longer than %d bytes", maxURILength)
	}
	if len(s) < len(uriScheme) || !strings.EqualFold(s[:len(uriScheme)], uriScheme) {
		return u, errors.New(`hsm: parsing PKCS#11 URI: must start with "pkcs11:"`)
	}
	rest := s[len(uriScheme):]
	if strings.Contains(rest, "#") {
		return u, errors.New("hsm: parsing PKCS#11 URI: fragments are not allowed")
	}
	path, query, hasQuery := strings.Cut(rest, "?")
	seen := map[string]bool{}
	var pathAttrs, queryAttrs []string
	if path != "" {
		pathAttrs = strings.Split(path, ";")
	}
	if hasQuery {
		if query == "" {
			return u, errors.New("hsm: parsing PKCS#11 URI: empty query")
		}
		queryAttrs = strings.Split(query, "&")
	}
	for _, a := range pathAttrs {
		name, val, err := splitAttr(a, isPathChar)
		if err != nil {
			return URI{}, err
		}
		if seen[name] {
			return URI{}, fmt.Errorf("hsm: parsing PKCS#11 URI: duplicate attribute %q", name)
		}
		seen[name] = true
		switch name {
		case "token":
			u.Token, err = textValue(name, val)
		case "serial":
			u.Serial, err = textValue(name, val)
		case "object":
			u.Object, err = textValue(name, val)
		case "id":
			u.ID = val
		case "type":
			if string(val) != "private" {
				err = fmt.Errorf("hsm: parsing PKCS#11 URI: type=%q: a key URI names a private key (type=private)", val)
			}
		case "slot-id", "slot-description", "slot-manufacturer":
			err = fmt.Errorf("hsm: parsing PKCS#11 URI: %s: tokens are selected by token or serial, never by slot", name)
		case "pin-value", "pin-source", "module-name", "module-path":
			err = fmt.Errorf("hsm: parsing PKCS#11 URI: %s belongs in the query (after '?')", name)
		default:
			err = fmt.Errorf("hsm: parsing PKCS#11 URI: unsupported path attribute %q", name)
		}
		if err != nil {
			return URI{}, err
		}
	}
	for _, a := range queryAttrs {
		name, val, err := splitAttr(a, isQueryChar)
		if err != nil {
			return URI{}, err
		}
		if seen[name] {
			return URI{}, fmt.Errorf("hsm: parsing PKCS#11 URI: duplicate attribute %q", name)
		}
		seen[name] = true
		switch name {
		case "pin-source":
			u.PinSource, err = textValue(name, val)
		case "module-path":
			u.ModulePath, err = textValue(name, val)
		case "pin-value":
			err = errors.New("hsm: parsing PKCS#11 URI: pin-value is not accepted; use pin-source with a file")
		case "module-name":
			err = errors.New("hsm: parsing PKCS#11 URI: module-name is not supported; use module-path")
		default:
			err = fmt.Errorf("hsm: parsing PKCS#11 URI: unsupported query attribute %q", name)
		}
		if err != nil {
			return URI{}, err
		}
	}
	if u.Token != "" && u.Serial != "" {
		return URI{}, errors.New("hsm: parsing PKCS#11 URI: token and serial conflict; select the token one way")
	}
	if u.Object == "" && len(u.ID) == 0 {
		return URI{}, errors.New("hsm: parsing PKCS#11 URI: ambiguous: names neither object nor id")
	}
	// The canonical form percent-encodes what the input may have spelled
	// plainly (an id byte "0" becomes "%30"): it must stay parseable too.
	if len(u.String()) > maxURILength {
		return URI{}, fmt.Errorf("hsm: parsing PKCS#11 URI: canonical form longer than %d bytes", maxURILength)
	}
	return u, nil
}

// splitAttr splits "name=value", checks the characters and percent-decodes
// the value. Empty names and empty values are refused.
func splitAttr(a string, allowed func(byte) bool) (string, []byte, error) {
	name, raw, ok := strings.Cut(a, "=")
	if !ok {
		return "", nil, fmt.Errorf("hsm: parsing PKCS#11 URI: attribute %q has no value", truncate(a))
	}
	if name == "" {
		return "", nil, errors.New("hsm: parsing PKCS#11 URI: empty attribute name")
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return "", nil, fmt.Errorf("hsm: parsing PKCS#11 URI: invalid attribute name %q", truncate(name))
		}
	}
	if raw == "" {
		return "", nil, fmt.Errorf("hsm: parsing PKCS#11 URI: attribute %q is empty", name)
	}
	val, err := percentDecode(raw, allowed)
	if err != nil {
		return "", nil, fmt.Errorf("hsm: parsing PKCS#11 URI: attribute %q: %w", name, err)
	}
	return name, val, nil
}

// textValue checks that a decoded text attribute is UTF-8 without control
// characters.
func textValue(name string, v []byte) (string, error) {
	if !utf8.Valid(v) {
		return "", fmt.Errorf("hsm: parsing PKCS#11 URI: attribute %q is not valid UTF-8", name)
	}
	for _, r := range string(v) {
		if r < 0x20 || r == 0x7f {
			return "", fmt.Errorf("hsm: parsing PKCS#11 URI: attribute %q contains control characters", name)
		}
	}
	return string(v), nil
}

func percentDecode(s string, allowed func(byte) bool) ([]byte, error) {
	out := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '%' {
			if i+2 >= len(s) {
				return nil, errors.New("truncated percent-encoding")
			}
			h, l := unhex(s[i+1]), unhex(s[i+2])
			if h < 0 || l < 0 {
				return nil, errors.New("invalid percent-encoding")
			}
			out = append(out, byte(h<<4|l))
			i += 2
			continue
		}
		if !allowed(c) {
			return nil, fmt.Errorf("character %q must be percent-encoded", c)
		}
		out = append(out, c)
	}
	return out, nil
}

func unhex(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'a' && c <= 'f':
		return int(c - 'a' + 10)
	case c >= 'A' && c <= 'F':
		return int(c - 'A' + 10)
	}
	return -1
}

func isUnreserved(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		c == '-' || c == '.' || c == '_' || c == '~'
}

// isPathChar: RFC 7512 pk11-pchar without the separators ';' '?' '#' '/'.
func isPathChar(c byte) bool {
	return isUnreserved(c) || strings.IndexByte(":[]@!$'()*+,=&", c) >= 0
}

// isQueryChar: RFC 7512 pk11-qchar; '&' separates query attributes.
func isQueryChar(c byte) bool {
	return isUnreserved(c) || strings.IndexByte(":[]@!$'()*+,=/?|", c) >= 0
}

func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

// String prints u in a canonical form that ParseURI reads back to an equal
// URI: path attributes token, serial, object, id, then the query attributes
// pin-source and module-path. The id is always fully percent-encoded.
func (u URI) String() string {
	var b strings.Builder
	b.WriteString(uriScheme)
	sep := ""
	attr := func(name, val string) {
		if val == "" {
			return
		}
		b.WriteString(sep)
		b.WriteString(name)
		b.WriteByte('=')
		b.WriteString(percentEncode([]byte(val), isPathSafe))
		sep = ";"
	}
	attr("token", u.Token)
	attr("serial", u.Serial)
	attr("object", u.Object)
	if len(u.ID) > 0 {
		b.WriteString(sep)
		b.WriteString("id=")
		for _, c := range u.ID {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	sep = "?"
	qattr := func(name, val string) {
		if val == "" {
			return
		}
		b.WriteString(sep)
		b.WriteString(name)
		b.WriteByte('=')
		b.WriteString(percentEncode([]byte(val), isQuerySafe))
		sep = "&"
	}
	qattr("pin-source", u.PinSource)
	qattr("module-path", u.ModulePath)
	return b.String()
}

// Equal reports whether u and v name the same attributes.
func (u URI) Equal(v URI) bool {
	return u.Token == v.Token && u.Serial == v.Serial && u.Object == v.Object &&
		bytes.Equal(u.ID, v.ID) && u.PinSource == v.PinSource && u.ModulePath == v.ModulePath
}

func isPathSafe(c byte) bool  { return isUnreserved(c) }
func isQuerySafe(c byte) bool { return isUnreserved(c) || c == '/' || c == ':' }

func percentEncode(v []byte, safe func(byte) bool) string {
	var b strings.Builder
	for _, c := range v {
		if safe(c) {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}
