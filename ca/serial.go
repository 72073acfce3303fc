package ca

import (
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/big"
	"strings"
	"time"
)

// SerialBits is the length of a serial number in bits: SerialTimeBits of
// time, then SerialRandomBits of randomness.
const SerialBits = SerialTimeBits + SerialRandomBits

// SerialTimeBits is the time that leads each serial: milliseconds since the
// Unix epoch, big-endian (until the year 10889).
const SerialTimeBits = 48

// SerialRandomBits is the random part of a serial, more than the 64 bits
// the CA/Browser Forum asks of a CSPRNG (BR 7.1).
const SerialRandomBits = 80

// minSerialBits is the shortest serial the issuers accept (RFC 5280 leaves
// the length open; a serial of fewer bits cannot hold 64 random ones).
const minSerialBits = 64

// minSerialRandom is the smallest random part NewSerial accepts from its
// reader: a uniformly random 80-bit value is below 2^16 with probability
// 2^-64, so a smaller one means the reader is broken (all zeros, say).
const minSerialRandom = 1 << 16

// NewSerial returns a new serial number for a certificate issued now:
// NewSerialAt(r, time.Now()).
func NewSerial(r io.Reader) (*big.Int, error) {
	return NewSerialAt(r, time.Now())
}

// NewSerialAt returns a positive serial number of SerialBits bits: the
// milliseconds since the Unix epoch at t, then SerialRandomBits read from r,
// which must be a cryptographically secure source such as
// crypto/rand.Reader. From 2004 (when the milliseconds reach 2^40) to the
// year 6429 (2^47, when DER adds a leading zero octet) it encodes to 16
// octets, well within RFC 5280's 20, and FormatSerial spells it with 32
// digits, so that the serials' text order is their numeric order.
//
// The time makes serials of one registry increase with their issuance, so
// the databases' serial indexes take each new serial where the one before
// went (their last page; in a database upgraded from random serials, one
// point inside the index) instead of on a random leaf (issue 14, tenth
// pass); the random part keeps a serial unpredictable. A time before
// 2004-11-04 (a clock that is wrong), a short read, or a random part below
// 2^16 (which a working source gives with probability 2^-64) is an error.
func NewSerialAt(r io.Reader, t time.Time) (*big.Int, error) {
	if r == nil {
		return nil, errors.New("ca: new serial: nil random source")
	}
	ms := t.UnixMilli()
	if ms < 1<<40 {
		return nil, fmt.Errorf("ca: new serial: time %v is before 2004-11-04: the clock is wrong", t.UTC())
	}
	var b [SerialBits / 8]byte
	for i := SerialTimeBits/8 - 1; i >= 0; i-- {
		b[i] = byte(ms)
		ms >>= 8
	}
	random := b[SerialTimeBits/8:]
	if _, err := io.ReadFull(r, random); err != nil {
		return nil, fmt.Errorf("ca: new serial: reading random bits: %w", err)
	}
	if new(big.Int).SetBytes(random).Cmp(big.NewInt(minSerialRandom)) < 0 {
		return nil, errors.New("ca: new serial: random source returned a value below 2^16 (broken source?)")
	}
	return new(big.Int).SetBytes(b[:]), nil // ≥ 2^120: the time is ≥ 2^40
}

// SerialFloorAt returns, as FormatSerial spells it, the smallest serial
// NewSerialAt makes at t: every serial it made before t sorts below it, as
// text and as a number, and every serial it made at t or later does not.
// Like NewSerialAt it refuses a time before 2004-11-04, whose floor would
// be spelled with fewer digits and sort above every serial.
func SerialFloorAt(t time.Time) (string, error) {
	ms := t.UnixMilli()
	if ms < 1<<40 {
		return "", fmt.Errorf("ca: serial floor: time %v is before 2004-11-04: the clock is wrong", t.UTC())
	}
	return FormatSerial(new(big.Int).Lsh(big.NewInt(ms), SerialRandomBits)), nil
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
