package ca

import (
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/big"
	"strings"
)

// SerialBits is the number of random bits in a serial number.
const SerialBits = 128

// minSerialBits is the shortest serial NewSerial accepts from its reader.
// A uniformly random 128-bit value is shorter than 64 bits with probability
// 2^-64, so a shorter value means the reader is broken (all zeros, say).
const minSerialBits = 64

// NewSerial reads SerialBits random bits from r and returns them as a
// positive serial number. Its DER encoding is at most 17 octets (a leading
// zero octet is added when the top bit is set), well within RFC 5280's 20.
// r must be a cryptographically secure source such as crypto/rand.Reader. A
// short read, or a value below 2^64 (which a working source produces with
// probability 2^-64), is an error.
func NewSerial(r io.Reader) (*big.Int, error) {
	if r == nil {
		return nil, errors.New("ca: new serial: nil random source")
	}
	var b [SerialBits / 8]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return nil, fmt.Errorf("ca: new serial: reading random bits: %w", err)
	}
	n := new(big.Int).SetBytes(b[:])
	if n.BitLen() < minSerialBits {
		return nil, errors.New("ca: new serial: random source returned a value below 2^64 (broken source?)")
	}
	return n, nil
}

// checkSerial enforces RFC 5280 4.1.2.2 on a serial: positive, at most 20
// octets when DER-encoded.
func checkSerial(n *big.Int) error {
	if n == nil || n.Sign() <= 0 {
		return errors.New("serial must be positive")
	}
	// DER length: BitLen/8 + 1 (the +1 covers the leading zero octet when
	// the top bit of the top octet is set).
	if n.BitLen()/8+1 > 20 {
		return errors.New("serial longer than 20 octets")
	}
	return nil
}

// FormatSerial returns the canonical spelling of a serial number in ATR's API,
// CLI, logs and database: lowercase hexadecimal with an even number of digits,
// two per octet of the magnitude, without a leading "00" octet. This is
// openssl's spelling (`openssl x509 -serial`, `openssl crl -text`) in lower
// case, so a serial from either compares equal after lower-casing. Serials
// are positive (RFC 5280 4.1.2.2); a nil or non-positive n formats as "".
func FormatSerial(n *big.Int) string {
	if n == nil || n.Sign() <= 0 {
		return ""
	}
	return hex.EncodeToString(n.Bytes())
}

// ErrBadSerial reports a serial number spelling ParseSerial cannot read.
var ErrBadSerial = errors.New("ca: malformed serial number")

// ParseSerial reads a serial number in any spelling ATR has used or openssl
// prints: hexadecimal, upper or lower case, odd or even length, with an
// optional "0x" prefix and optional ":" separators between octets
// ("0A:1B:…"). The result is positive and at most 20 octets (RFC 5280).
// Use FormatSerial(n) to get the canonical spelling back.
func ParseSerial(s string) (*big.Int, error) {
	t := strings.TrimPrefix(strings.TrimPrefix(s, "0x"), "0X")
	t = strings.ReplaceAll(t, ":", "")
	if t == "" || len(t) > 42 {
		return nil, fmt.Errorf("%w: want 1 to 40 hex digits", ErrBadSerial)
	}
	for _, c := range t {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
			return nil, fmt.Errorf("%w: want hex digits", ErrBadSerial)
		}
	}
	n, ok := new(big.Int).SetString(t, 16)
	if !ok {
		return nil, fmt.Errorf("%w: want hex digits", ErrBadSerial)
	}
	if err := checkSerial(n); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadSerial, err)
	}
	return n, nil
}

// CanonicalSerial returns FormatSerial(ParseSerial(s)).
func CanonicalSerial(s string) (string, error) {
	n, err := ParseSerial(s)
	if err != nil {
		return "", err
	}
	return FormatSerial(n), nil
}
