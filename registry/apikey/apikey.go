// Package apikey is the format of ATR API keys, in one place for the server that
// generates and checks them (package registry) and for clients that must not send a
// malformed key (package api/client, the atr CLI):
//
//	atr_<id>_<secret>
//
// id is 16 lowercase hex digits (8 random bytes, public: it names the key in logs, the
// audit trail and the transparency log); secret is 64 lowercase hex digits (32 random
// bytes). Only SHA-256 of the whole key is stored. The package imports only the
// standard library.
package apikey

import (
	"errors"
	"fmt"
	"strings"
)

// The parts of a key.
const (
	Prefix    = "atr_"
	IDLen     = 16 // hex digits
	SecretLen = 64 // hex digits
	Len       = len(Prefix) + IDLen + 1 + SecretLen
)

// ErrMalformed is wrapped by every error of Parse.
var ErrMalformed = errors.New("apikey: malformed API key")

// Parse checks that key is of the form atr_<16 hex>_<64 hex> (lowercase) and returns
// its id, which is safe to log. It does not ask anyone whether the key is valid. The
// error describes what is wrong without repeating the key.
func Parse(key string) (id string, err error) {
	bad := func(why string) (string, error) {
		return "", fmt.Errorf("%w: %s; want %s<%d hex digits>_<%d hex digits>", ErrMalformed, why, Prefix, IDLen, SecretLen)
	}
	switch {
	case key == "":
		return bad("empty")
	case !strings.HasPrefix(key, Prefix):
		return bad(fmt.Sprintf("%d characters without the %q prefix", len(key), Prefix))
	case len(key) != Len:
		return bad(fmt.Sprintf("%d characters, not %d", len(key), Len))
	}
	id, secret := key[len(Prefix):len(Prefix)+IDLen], key[len(Prefix)+IDLen+1:]
	if key[len(Prefix)+IDLen] != '_' || !ValidID(id) || !isLowerHex(secret) {
		return bad("not lowercase hex digits separated by '_'")
	}
	return id, nil
}

// ValidID reports whether id has the form of a key id: IDLen lowercase hex digits.
func ValidID(id string) bool { return len(id) == IDLen && isLowerHex(id) }

func isLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return s != ""
}
