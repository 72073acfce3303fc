package ca

import (
	"errors"
	"fmt"
	"io"
	"math/big"
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
