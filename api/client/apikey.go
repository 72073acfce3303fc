package client

import (
	"errors"
	"fmt"
	"strings"
)

// The API key format, owned here because it is part of the wire protocol (the
// Authorization header) and both sides need it: the server (package registry) generates
// and parses keys with it, and the client checks a key before sending it.
//
//	atr_<id>_<secret>
//
// id is 16 lowercase hex digits (8 random bytes, public: it names the key in logs, the
// audit trail and the transparency log); secret is 64 lowercase hex digits (32 random
// bytes). Only SHA-256 of the whole key is stored.
const (
	APIKeyPrefix    = "atr_"
	APIKeyIDLen     = 16 // hex digits
	APIKeySecretLen = 64 // hex digits
	APIKeyLen       = len(APIKeyPrefix) + APIKeyIDLen + 1 + APIKeySecretLen
)

// ErrMalformedAPIKey is wrapped by every error of ParseAPIKey and WithAPIKey.
var ErrMalformedAPIKey = errors.New("client: malformed API key")

// ParseAPIKey checks that key is of the form atr_<16 hex>_<64 hex> (lowercase) and
// returns its id, which is safe to log. It does not ask the server whether the key is
// valid. The error describes what is wrong without repeating the key.
func ParseAPIKey(key string) (id string, err error) {
	bad := func(why string) (string, error) {
		return "", fmt.Errorf("%w: %s; want %s<%d hex digits>_<%d hex digits>", ErrMalformedAPIKey, why, APIKeyPrefix, APIKeyIDLen, APIKeySecretLen)
	}
	switch {
	case key == "":
		return bad("empty")
	case !strings.HasPrefix(key, APIKeyPrefix):
		return bad(fmt.Sprintf("%d characters without the %q prefix", len(key), APIKeyPrefix))
	case len(key) != APIKeyLen:
		return bad(fmt.Sprintf("%d characters, not %d", len(key), APIKeyLen))
	}
	id, secret := key[len(APIKeyPrefix):len(APIKeyPrefix)+APIKeyIDLen], key[len(APIKeyPrefix)+APIKeyIDLen+1:]
	if key[len(APIKeyPrefix)+APIKeyIDLen] != '_' || !isLowerHex(id) || !isLowerHex(secret) {
		return bad("not lowercase hex digits separated by '_'")
	}
	return id, nil
}

func isLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return s != ""
}
