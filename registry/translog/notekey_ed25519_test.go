package translog_test

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/note"

	"github.com/agent-trust-registry/atr/registry/translog"
)

func TestEd25519NoteSignerMatchesSumdbNote(t *testing.T) {
	// The reference: sumdb/note's own Ed25519 signer from the same seed.
	seed := make([]byte, ed25519.SeedSize)
	for i := range seed {
		seed[i] = byte(i)
	}
	priv := ed25519.NewKeyFromSeed(seed)
	const origin = "atr.example/log"
	ours, err := translog.NewEd25519NoteSigner(origin, priv)
	if err != nil {
		t.Fatalf("NewEd25519NoteSigner: %v", err)
	}
	vkey, err := translog.Ed25519VerifierKey(origin, priv.Public())
	if err != nil {
		t.Fatalf("Ed25519VerifierKey: %v", err)
	}
	want, err := note.NewEd25519VerifierKey(origin, priv.Public().(ed25519.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	if vkey != want {
		t.Errorf("Ed25519VerifierKey = %q, want %q", vkey, want)
	}
	ref, err := note.NewVerifier(want)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := ours.KeyHash(), ref.KeyHash(); got != want {
		t.Errorf("KeyHash = %08x, want %08x (sumdb/note)", got, want)
	}
	if ours.Name() != origin {
		t.Errorf("Name = %q, want %q", ours.Name(), origin)
	}
	msg, err := note.Sign(&note.Note{Text: "atr.example/log\n1\nKgAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n"}, ours)
	if err != nil {
		t.Fatalf("note.Sign: %v", err)
	}
	if _, err := note.Open(msg, note.VerifierList(ref)); err != nil {
		t.Errorf("sumdb/note does not verify our Ed25519 note: %v", err)
	}
	// Ed25519 is deterministic: sumdb/note's signer over the same key
	// writes the same signature line.
	skey := fmt.Sprintf("PRIVATE+KEY+%s+%08x+%s", origin, ref.KeyHash(),
		base64.StdEncoding.EncodeToString(append([]byte{translog.SigTypeEd25519}, seed...)))
	refS, err := note.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	wantMsg, err := note.Sign(&note.Note{Text: "atr.example/log\n1\nKgAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n"}, refS)
	if err != nil {
		t.Fatal(err)
	}
	if string(msg) != string(wantMsg) {
		t.Errorf("signed note =\n%s\nwant (sumdb/note)\n%s", msg, wantMsg)
	}
	v, err := translog.NewEd25519NoteVerifier(origin, priv.Public())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := note.Open(msg, note.VerifierList(v)); err != nil {
		t.Errorf("NewEd25519NoteVerifier does not verify: %v", err)
	}
}

func TestEd25519NoteSignerRefuses(t *testing.T) {
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tests := []struct {
		name   string
		origin string
		pub    any
	}{
		{"ECDSA key", "atr.example/log", ec.Public()},
		{"empty name", "", priv.Public()},
		{"name with plus", "a+b", priv.Public()},
		{"name with space", "a b", priv.Public()},
		{"short key", "atr.example/log", ed25519.PublicKey(make([]byte, 31))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := translog.Ed25519VerifierKey(tt.origin, tt.pub)
			if !errors.Is(err, translog.ErrInvalid) {
				t.Errorf("Ed25519VerifierKey = %v; want ErrInvalid", err)
			}
		})
	}
	if _, err := translog.NewEd25519NoteSigner("atr.example/log", ec); !errors.Is(err, translog.ErrInvalid) {
		t.Errorf("NewEd25519NoteSigner(ECDSA) = %v; want ErrInvalid", err)
	}
}

// A checkpoint signed by both keys opens with either verifier alone.
func TestDualSignedCheckpoint(t *testing.T) {
	const origin = "atr.example/log"
	_, edPriv, _ := ed25519.GenerateKey(rand.Reader)
	ecPriv, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ecS, err := translog.NewNoteSigner(origin, ecPriv)
	if err != nil {
		t.Fatal(err)
	}
	edS, err := translog.NewEd25519NoteSigner(origin, edPriv)
	if err != nil {
		t.Fatal(err)
	}
	ecV, _ := translog.NewNoteVerifier(origin, ecPriv.Public())
	edV, _ := translog.NewEd25519NoteVerifier(origin, edPriv.Public())
	c := translog.Checkpoint{Origin: origin, Size: 3}
	msg, err := translog.SignCheckpoint(c, ecS, edS)
	if err != nil {
		t.Fatalf("SignCheckpoint: %v", err)
	}
	if n := strings.Count(string(msg), "\n— "+origin+" "); n != 2 {
		t.Errorf("%d signature lines, want 2:\n%s", n, msg)
	}
	for name, v := range map[string]note.Verifier{"ecdsa": ecV, "ed25519": edV} {
		t.Run(name, func(t *testing.T) {
			got, err := translog.OpenCheckpoint(msg, v)
			if err != nil {
				t.Fatalf("OpenCheckpoint: %v", err)
			}
			if got.Size != c.Size {
				t.Errorf("Size = %d, want %d", got.Size, c.Size)
			}
		})
	}
}
