package registry

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"testing"
)

// TestOpeningMACBindsEveryInput: the MAC of an opening changes with the key,
// the agent name and the opening's bytes, and the name and the opening are
// not interchangeable across their separator.
func TestOpeningMACBindsEveryInput(t *testing.T) {
	k1, k2 := &[32]byte{1}, &[32]byte{2}
	base := openingMAC(k1, "a.acme", []byte(`{"v":1}`))
	if len(base) != 32 {
		t.Fatalf("MAC of %d bytes, want 32", len(base))
	}
	for _, tc := range []struct {
		desc   string
		key    *[32]byte
		agent  string
		opened string
	}{
		{"another key", k2, "a.acme", `{"v":1}`},
		{"another agent", k1, "b.acme", `{"v":1}`},
		{"another opening", k1, "a.acme", `{"v":2}`},
		{"a byte moved across the separator", k1, "a.acm", "e\x00{\"v\":1}"},
	} {
		if got := openingMAC(tc.key, tc.agent, []byte(tc.opened)); bytes.Equal(got, base) {
			t.Errorf("%s: the same MAC", tc.desc)
		}
	}
}

// TestMACKeyOnlyUnderItsPublicKey: the openings' MAC key is used only while
// the VRF signer's public key is the one it was derived under.
func TestMACKeyOnlyUnderItsPublicKey(t *testing.T) {
	a, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	b, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	k := &macKey{secret: [32]byte{7}, pub: a.Public()}
	if got := k.current(&rsa.PublicKey{N: a.N, E: a.E}); got == nil || *got != k.secret {
		t.Errorf("under its own public key (an equal copy): %v, want the secret", got)
	}
	if got := k.current(b.Public()); got != nil {
		t.Errorf("under another public key: the secret")
	}
	if got := k.current(nil); got != nil {
		t.Errorf("under no public key: the secret")
	}
}
