package ca

import (
	"bytes"
	"crypto/rand"
	"encoding/asn1"
	"errors"
	"math/big"
	"strings"
	"testing"
	"testing/iotest"
	"time"
)

func TestNewSerialEntropy(t *testing.T) {
	const n = 1000
	seen := make(map[string]bool, n)
	var ones [SerialRandomBits]int
	at := time.Date(2026, 12, 4, 19, 0, 0, 0, time.UTC)
	for range n {
		s, err := NewSerialAt(rand.Reader, at)
		if err != nil {
			t.Fatal(err)
		}
		if s.Sign() <= 0 {
			t.Fatalf("serial %v not positive", s)
		}
		der, err := asn1.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		if l := len(der) - 2; l != SerialBits/8 { // minus tag and length octets
			t.Fatalf("serial %v encodes to %d octets, want %d", s, l, SerialBits/8)
		}
		if seen[s.String()] {
			t.Fatalf("duplicate serial %v", s)
		}
		seen[s.String()] = true
		if got := new(big.Int).Rsh(s, SerialRandomBits).Int64(); got != at.UnixMilli() {
			t.Fatalf("serial %x leads with %d, want the milliseconds %d", s, got, at.UnixMilli())
		}
		for b := range SerialRandomBits {
			ones[b] += int(s.Bit(b))
		}
	}
	// Every random bit position is set in roughly half of the serials (a
	// stuck bit would show as 0 or n; the bounds are > 6 sigma).
	for b, c := range ones {
		if c < 400 || c > 600 {
			t.Errorf("bit %d set in %d of %d serials", b, c, n)
		}
	}
}

// TestNewSerialIncreasesWithTime: serials made later are larger, as numbers
// and as FormatSerial spells them (the databases' text keys), so that the
// serial indexes take new serials at their end; serials of the same
// millisecond differ in their random part only.
func TestNewSerialIncreasesWithTime(t *testing.T) {
	at := []time.Time{
		time.Date(2004, 11, 4, 0, 0, 0, 0, time.UTC), // milliseconds need 41 bits from here on
		time.Date(2026, 12, 4, 19, 0, 0, 0, time.UTC),
		time.Date(2026, 12, 4, 19, 0, 0, int(time.Millisecond), time.UTC),
		time.Date(2026, 12, 4, 19, 0, 1, 0, time.UTC),
		time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC),
	}
	var before []string // the serials of the time before, as FormatSerial spells them
	for _, ti := range at {
		var these []string
		for range 50 {
			s, err := NewSerialAt(rand.Reader, ti)
			if err != nil {
				t.Fatal(err)
			}
			f := FormatSerial(s)
			if len(f) != 2*SerialBits/8 {
				t.Fatalf("%v: FormatSerial = %q, want %d digits", ti, f, 2*SerialBits/8)
			}
			for _, b := range before {
				p, _ := ParseSerial(b)
				if f <= b || s.Cmp(p) <= 0 {
					t.Fatalf("serial at %v (%s) not above one made earlier (%s)", ti, f, b)
				}
			}
			these = append(these, f)
		}
		before = these
	}
}

func TestNewSerialBrokenReader(t *testing.T) {
	tests := []struct {
		name string
		r    func() *bytes.Reader
	}{
		{"short read", func() *bytes.Reader { return bytes.NewReader(make([]byte, SerialRandomBits/8-1)) }},
		{"all zeros", func() *bytes.Reader { return bytes.NewReader(make([]byte, SerialRandomBits/8)) }},
		{"mostly zeros", func() *bytes.Reader { return bytes.NewReader(append(make([]byte, SerialRandomBits/8-1), 1)) }},
		{"just below 2^16", func() *bytes.Reader {
			return bytes.NewReader(append(make([]byte, SerialRandomBits/8-2), 0xff, 0xff))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if s, err := NewSerial(tt.r()); err == nil {
				t.Fatalf("NewSerial = %v, nil; want error", s)
			}
		})
	}
	// 2^16 itself is a random part a working source gives.
	if _, err := NewSerial(bytes.NewReader(append(make([]byte, SerialRandomBits/8-3), 1, 0, 0))); err != nil {
		t.Fatalf("NewSerial with a random part of 2^16: %v", err)
	}
	// A clock before 2004-11-04 (milliseconds below 2^40) is wrong: the
	// serial would be shorter than 16 octets.
	for _, at := range []time.Time{{}, time.Unix(0, 0), time.Date(2004, 11, 3, 0, 0, 0, 0, time.UTC)} {
		if s, err := NewSerialAt(rand.Reader, at); err == nil {
			t.Errorf("NewSerialAt(%v) = %x, nil; want error", at, s)
		}
	}
	if _, err := NewSerial(iotest.ErrReader(errors.New("boom"))); err == nil {
		t.Fatal("NewSerial with failing reader succeeded")
	}
	if _, err := NewSerial(nil); err == nil {
		t.Fatal("NewSerial(nil) succeeded")
	}
}

func TestCheckSerial(t *testing.T) {
	max := new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), 159), big.NewInt(1)) // 20 octets
	tests := []struct {
		name string
		n    *big.Int
		ok   bool
	}{
		{"one", big.NewInt(1), true},
		{"20 octets", max, true},
		{"21 octets", new(big.Int).Lsh(big.NewInt(1), 159), false},
		{"zero", big.NewInt(0), false},
		{"negative", big.NewInt(-5), false},
		{"nil", nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := checkSerial(tt.n); (err == nil) != tt.ok {
				t.Fatalf("checkSerial(%v) = %v; want ok=%v", tt.n, err, tt.ok)
			}
		})
	}
}

// TestSerialSpellings: FormatSerial is openssl's spelling in lower case (two digits per
// byte), and ParseSerial accepts every spelling ATR used or openssl prints (issue 11 item 6).
func TestSerialSpellings(t *testing.T) {
	tests := []struct {
		in, want string
		ok       bool
	}{
		{"0a1b", "0a1b", true},
		{"a1b", "0a1b", true},    // ATR's spelling before issue 11
		{"0A1B", "0a1b", true},   // openssl x509 -serial
		{"0A:1B", "0a1b", true},  // openssl x509 -text
		{"0x0a1b", "0a1b", true}, // Go's %#x
		{"00a1b", "0a1b", true},  // extra leading zeros
		{"ff", "ff", true},       // top bit set: no DER "00" octet in the spelling
		{strings.Repeat("7f", 20), strings.Repeat("7f", 20), true},
		{strings.Repeat("ff", 20), "", false}, // 21 DER octets
		{"0", "", false},
		{"", "", false},
		{"-1", "", false},
		{"0g", "", false},
		{"0a 1b", "", false},
		{strings.Repeat("1", 43), "", false},
	}
	for _, tt := range tests {
		got, err := CanonicalSerial(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("CanonicalSerial(%q) = %q, %v; want %q, ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
		if err != nil && !errors.Is(err, ErrBadSerial) {
			t.Errorf("CanonicalSerial(%q): error %v does not wrap ErrBadSerial", tt.in, err)
		}
	}
	for _, n := range []*big.Int{big.NewInt(1), big.NewInt(0xabc), new(big.Int).Lsh(big.NewInt(1), 127)} {
		s := FormatSerial(n)
		if len(s)%2 != 0 {
			t.Errorf("FormatSerial(%v) = %q: odd length", n, s)
		}
		back, err := ParseSerial(s)
		if err != nil || back.Cmp(n) != 0 {
			t.Errorf("ParseSerial(FormatSerial(%v)) = %v, %v", n, back, err)
		}
	}
	if FormatSerial(nil) != "" || FormatSerial(big.NewInt(-5)) != "" || FormatSerial(new(big.Int)) != "" {
		t.Error("FormatSerial of nil, negative or zero is not empty")
	}
}

func FuzzParseSerial(f *testing.F) {
	for _, s := range []string{"0a1b", "A:B", "0x", "::", strings.Repeat("f", 40)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseSerial(s)
		if err != nil {
			return
		}
		c := FormatSerial(n)
		if again, err := CanonicalSerial(c); err != nil || again != c {
			t.Fatalf("canonical %q does not round-trip: %q, %v", c, again, err)
		}
	})
}

// TestSerialFloorAt: a serial NewSerialAt made before t sorts below
// SerialFloorAt(t) as text (how the databases compare them) and as a
// number; one made at t or after does not.
func TestSerialFloorAt(t *testing.T) {
	at := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	floor, err := SerialFloorAt(at)
	if err != nil {
		t.Fatal(err)
	}
	if len(floor) != 32 {
		t.Fatalf("SerialFloorAt = %q; want 32 digits, as every serial of these years", floor)
	}
	fl, _ := new(big.Int).SetString(floor, 16)
	for _, c := range []struct {
		made  time.Time
		below bool
	}{
		{at.Add(-time.Hour), true},
		{at.Add(-time.Millisecond), true},
		{at, false},
		{at.Add(time.Millisecond), false},
		{at.AddDate(10, 0, 0), false},
		{time.Date(2005, 1, 1, 0, 0, 0, 0, time.UTC), true},
	} {
		for range 50 {
			s, err := NewSerialAt(rand.Reader, c.made)
			if err != nil {
				t.Fatal(err)
			}
			text := FormatSerial(s)
			if (text < floor) != c.below || (s.Cmp(fl) < 0) != c.below {
				t.Fatalf("serial %s made at %v: below %s = %v; want %v", text, c.made, floor, text < floor, c.below)
			}
		}
	}
	for _, wrong := range []time.Time{time.Unix(3600, 0), time.Date(2004, 11, 3, 0, 0, 0, 0, time.UTC)} {
		if f, err := SerialFloorAt(wrong); err == nil {
			t.Errorf("SerialFloorAt(%v) = %q; want an error (a wrong clock)", wrong, f)
		}
	}
}
