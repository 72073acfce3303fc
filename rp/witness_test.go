package rp_test

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"testing"

	fnote "github.com/transparency-dev/formats/note"
	"golang.org/x/mod/sumdb/note"

	"github.com/agent-trust-registry/atr/registry/translog"
	"github.com/agent-trust-registry/atr/rp"
)

const origin = "atr.example/log"

type witness struct {
	vkey   string
	signer note.Signer
}

func newWitness(t *testing.T, name string) witness {
	t.Helper()
	skey, vkey, err := note.GenerateKey(rand.Reader, name)
	if err != nil {
		t.Fatal(err)
	}
	s, err := fnote.NewSignerForCosignatureV1(skey)
	if err != nil {
		t.Fatal(err)
	}
	return witness{vkey: vkey, signer: s}
}

// cosign appends w's cosignature line for the checkpoint in msg.
func cosign(t *testing.T, msg []byte, w witness) []byte {
	t.Helper()
	text, _, ok := strings.Cut(string(msg), "\n\n")
	if !ok {
		t.Fatalf("not a signed note: %q", msg)
	}
	signed, err := note.Sign(&note.Note{Text: text + "\n"}, w.signer)
	if err != nil {
		t.Fatal(err)
	}
	_, line, _ := strings.Cut(string(signed), "\n\n")
	return append(append([]byte{}, msg...), line...)
}

func TestVerifyCheckpointWitnessPolicy(t *testing.T) {
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	ecS, err := translog.NewNoteSigner(origin, ecKey)
	if err != nil {
		t.Fatal(err)
	}
	edS, err := translog.NewEd25519NoteSigner(origin, edKey)
	if err != nil {
		t.Fatal(err)
	}
	ecVkey, _ := translog.VerifierKey(origin, ecKey.Public())
	edVkey, _ := translog.Ed25519VerifierKey(origin, edKey.Public())
	logVs, err := rp.ParseLogVerifiers(ecVkey + "\n" + edVkey + "\n")
	if err != nil {
		t.Fatalf("ParseLogVerifiers: %v", err)
	}
	edOnly, err := rp.ParseLogVerifiers(edVkey)
	if err != nil {
		t.Fatal(err)
	}
	_, otherKey, _ := ed25519.GenerateKey(rand.Reader)
	otherS, _ := translog.NewEd25519NoteSigner(origin, otherKey)

	sign := func(size int64, signers ...note.Signer) []byte {
		t.Helper()
		msg, err := translog.SignCheckpoint(translog.Checkpoint{Origin: origin, Size: size}, signers[0], signers[1:]...)
		if err != nil {
			t.Fatal(err)
		}
		return msg
	}
	w1, w2, w3 := newWitness(t, "w1.example/witness"), newWitness(t, "w2.example/witness"), newWitness(t, "w3.example/witness")
	bare := sign(5, ecS, edS)
	by1 := cosign(t, bare, w1)
	by12 := cosign(t, by1, w2)
	by11 := cosign(t, by1, w1)
	// A cosignature made for another tree size, pasted under this one.
	other := cosign(t, sign(6, ecS, edS), w1)
	_, pasted, _ := strings.Cut(string(other), "\n\n")
	pastedLine := pasted[strings.LastIndex(strings.TrimSuffix(pasted, "\n"), "\n")+1:]
	// Text altered after cosigning: size 5 → 7.
	altered := []byte(strings.Replace(string(by1), "\n5\n", "\n7\n", 1))
	// A bit of w1's signature flipped (last base64 character before "\n").
	flipped := []byte(string(by1))
	i := len(flipped) - 3
	if flipped[i] == 'A' {
		flipped[i] = 'B'
	} else {
		flipped[i] = 'A'
	}

	one := rp.WitnessPolicy{Keys: []string{w1.vkey}, Threshold: 1}
	two := rp.WitnessPolicy{Keys: []string{w1.vkey, w2.vkey}, Threshold: 2}
	tests := []struct {
		name    string
		msg     []byte
		log     note.Verifiers
		policy  rp.WitnessPolicy
		wantErr error // nil: accepted
	}{
		{"1-of-1 cosigned", by1, logVs, one, nil},
		{"1-of-1 cosigned, Ed25519 log key only", by1, edOnly, one, nil},
		{"1-of-1 uncosigned", bare, logVs, one, rp.ErrWitnessPolicy},
		{"1-of-1 text altered", altered, logVs, one, rp.ErrLogSignature},
		{"1-of-1 cosignature bit flipped", flipped, logVs, one, rp.ErrLogSignature},
		{"1-of-1 cosignature from another checkpoint", append(append([]byte{}, bare...), pastedLine...), logVs, one, rp.ErrLogSignature},
		{"1-of-1 cosigned by an unknown witness", cosign(t, bare, w3), logVs, one, rp.ErrWitnessPolicy},
		{"2-of-2 both", by12, logVs, two, nil},
		{"2-of-2 only one", by1, logVs, two, rp.ErrWitnessPolicy},
		{"2-of-2 one witness twice", by11, logVs, two, rp.ErrWitnessPolicy},
		{"2-of-2 one plus unknown", cosign(t, by1, w3), logVs, two, rp.ErrWitnessPolicy},
		{"1-of-2 either", cosign(t, bare, w2), logVs, rp.WitnessPolicy{Keys: two.Keys, Threshold: 1}, nil},
		{"0-of-0 log signature alone", bare, logVs, rp.WitnessPolicy{}, nil},
		{"no log signature (only another key)", cosign(t, sign(5, otherS), w1), logVs, one, rp.ErrLogSignature},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := rp.VerifyCheckpoint(tt.msg, tt.log, tt.policy)
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("VerifyCheckpoint = %v; want accepted", err)
				}
				if c.Origin != origin || c.Size != 5 {
					t.Errorf("checkpoint = %s/%d, want %s/5", c.Origin, c.Size, origin)
				}
				return
			}
			if !errors.Is(err, tt.wantErr) {
				t.Errorf("VerifyCheckpoint = %v; want %v", err, tt.wantErr)
			}
		})
	}
}

func TestWitnessPolicyValidate(t *testing.T) {
	w := newWitness(t, "w1.example/witness")
	tests := []struct {
		name    string
		p       rp.WitnessPolicy
		wantErr bool
	}{
		{"1-of-1", rp.WitnessPolicy{Keys: []string{w.vkey}, Threshold: 1}, false},
		{"0-of-1", rp.WitnessPolicy{Keys: []string{w.vkey}}, false},
		{"threshold above keys", rp.WitnessPolicy{Keys: []string{w.vkey}, Threshold: 2}, true},
		{"negative threshold", rp.WitnessPolicy{Keys: []string{w.vkey}, Threshold: -1}, true},
		{"same key twice", rp.WitnessPolicy{Keys: []string{w.vkey, w.vkey}, Threshold: 2}, true},
		{"garbage key", rp.WitnessPolicy{Keys: []string{"not a key"}, Threshold: 1}, true},
		// cosignature/v1 does not sign the name: one key under two names would count twice.
		{"one key under two names", rp.WitnessPolicy{Keys: []string{w.vkey, renamedVKey(t, w.vkey, "w2.example/witness")}, Threshold: 2}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.p.Validate()
			if got := err != nil; got != tt.wantErr {
				t.Errorf("Validate() = %v; want error %t", err, tt.wantErr)
			}
		})
	}
}

// renamedVKey is vkey's public key under another name (with the key ID that name gives).
func renamedVKey(t *testing.T, vkey, name string) string {
	t.Helper()
	b64 := strings.SplitN(vkey, "+", 3)[2]
	key, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.Sum256(append([]byte(name+"\n"), key...))
	return fmt.Sprintf("%s+%08x+%s", name, binary.BigEndian.Uint32(h[:4]), b64)
}

func TestWitnessPolicyOneKeyTwoNames(t *testing.T) {
	w := newWitness(t, "w1.example/witness")
	renamed := renamedVKey(t, w.vkey, "w2.example/witness")
	if err := (rp.WitnessPolicy{Keys: []string{renamed}, Threshold: 1}).Validate(); err != nil {
		t.Fatalf("the renamed key alone is a valid key: %v", err)
	}
	err := (rp.WitnessPolicy{Keys: []string{w.vkey, renamed}, Threshold: 2}).Validate()
	if err == nil || !strings.Contains(err.Error(), "under another name") {
		t.Errorf("Validate of one key under two names = %v; want a refusal", err)
	}
}
