package hsm

import (
	"errors"
	"fmt"

	"github.com/miekg/pkcs11"
	"github.com/thales-e-security/pool"
)

// Sentinel errors callers may branch on with errors.Is. They are never
// reassigned.
var (
	// ErrKeyNotFound: no key pair on the token matches the URI.
	ErrKeyNotFound = errors.New("hsm: key not found")
	// ErrExists: an object with the requested label (or certificate) already
	// exists; the token is never overwritten.
	ErrExists = errors.New("hsm: object already exists")
	// ErrUnavailable: the token cannot be used right now (lost sessions,
	// device error, not logged in, pool exhausted, closed). The Token is
	// rebuilding itself; retry later.
	ErrUnavailable = errors.New("hsm: token unavailable")
	// ErrKeyPolicy: a key's attributes or public key do not meet ATR's policy
	// (returned by CheckKey).
	ErrKeyPolicy = errors.New("hsm: key policy violation")
)

// tokenTrouble reports whether err means the token, its sessions or the
// login state are gone, so that the crypto11 context must be rebuilt.
func tokenTrouble(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, pool.ErrTimeout) || errors.Is(err, pool.ErrClosed) {
		return true
	}
	var pe pkcs11.Error
	if errors.As(err, &pe) {
		switch uint(pe) {
		case pkcs11.CKR_SESSION_HANDLE_INVALID,
			pkcs11.CKR_SESSION_CLOSED,
			pkcs11.CKR_SESSION_COUNT,
			pkcs11.CKR_DEVICE_ERROR,
			pkcs11.CKR_DEVICE_REMOVED,
			pkcs11.CKR_DEVICE_MEMORY,
			pkcs11.CKR_TOKEN_NOT_PRESENT,
			pkcs11.CKR_TOKEN_NOT_RECOGNIZED,
			pkcs11.CKR_USER_NOT_LOGGED_IN,
			pkcs11.CKR_CRYPTOKI_NOT_INITIALIZED,
			pkcs11.CKR_OBJECT_HANDLE_INVALID,
			pkcs11.CKR_KEY_HANDLE_INVALID,
			pkcs11.CKR_GENERAL_ERROR:
			return true
		}
	}
	return false
}

// isP11 reports whether err carries the PKCS#11 return value code.
func isP11(err error, code uint) bool {
	var pe pkcs11.Error
	return errors.As(err, &pe) && uint(pe) == code
}

// unavailable wraps cause so that it matches both ErrUnavailable and cause.
func unavailable(what string, cause error) error {
	if cause == nil {
		return fmt.Errorf("hsm: %s: %w", what, ErrUnavailable)
	}
	return fmt.Errorf("hsm: %s: %w: %w", what, ErrUnavailable, cause)
}
