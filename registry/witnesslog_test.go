package registry_test

import (
	"context"
	"crypto/rand"
	"errors"
	"strings"
	"testing"

	fnote "github.com/transparency-dev/formats/note"
	"golang.org/x/mod/sumdb/note"

	"github.com/agent-trust-registry/atr/registry"
	"github.com/agent-trust-registry/atr/registry/registrytest"
	"github.com/agent-trust-registry/atr/registry/translog"
	"github.com/agent-trust-registry/atr/rp"
)

type testWitness struct {
	vkey     string
	signer   note.Signer
	verifier note.Verifier
}

func newTestWitness(t *testing.T, name string) testWitness {
	t.Helper()
	skey, vkey, err := note.GenerateKey(rand.Reader, name)
	if err != nil {
		t.Fatal(err)
	}
	s, err := fnote.NewSignerForCosignatureV1(skey)
	if err != nil {
		t.Fatal(err)
	}
	v, err := fnote.NewVerifierForCosignatureV1(vkey)
	if err != nil {
		t.Fatal(err)
	}
	return testWitness{vkey: vkey, signer: s, verifier: v}
}

// cosignLines is what a witness returns: its signature lines over the
// checkpoint text of msg.
func (w testWitness) cosignLines(t *testing.T, msg []byte) []byte {
	t.Helper()
	text, _, _ := strings.Cut(string(msg), "\n\n")
	signed, err := note.Sign(&note.Note{Text: text + "\n"}, w.signer)
	if err != nil {
		t.Fatal(err)
	}
	_, lines, _ := strings.Cut(string(signed), "\n\n")
	return []byte(lines)
}

func TestCheckpointsDualSignedAndCosigned(t *testing.T) {
	for _, db := range registrytest.Databases() {
		t.Run(db, func(t *testing.T) {
			f := registrytest.NewFixture(t, registrytest.WithDatabase(db))
			ctx := context.Background()
			owner := f.Owner("acme", "acme")
			bot1 := register(t, f, owner, "bot-1.acme")
			register(t, f, owner, "bot-2.acme")

			// Both log keys sign; the vkey endpoint's lines verify it.
			cp1, err := f.Registry.SignedCheckpoint(ctx)
			if err != nil {
				t.Fatalf("SignedCheckpoint: %v", err)
			}
			if n := strings.Count(string(cp1), "\n— "+f.LogOrigin+" "); n != 2 {
				t.Fatalf("checkpoint has %d log signature lines, want 2:\n%s", n, cp1)
			}
			vkeys := strings.Split(f.Registry.LogVerifierKey(), "\n")
			if len(vkeys) != 2 {
				t.Fatalf("LogVerifierKey has %d lines, want 2 (ECDSA, Ed25519): %q", len(vkeys), vkeys)
			}
			edV, err := note.NewVerifier(vkeys[1]) // Ed25519 only: what witnesses use
			if err != nil {
				t.Fatalf("sumdb/note cannot read the second vkey line: %v", err)
			}
			c1, err := translog.OpenCheckpoint(cp1, edV)
			if err != nil {
				t.Fatalf("Ed25519 signature: %v", err)
			}
			if _, err := translog.OpenCheckpoint(cp1, f.NoteVerifier); err != nil {
				t.Fatalf("ECDSA signature: %v", err)
			}
			if got, err := f.Registry.Checkpoint(ctx); err != nil || string(got) != string(cp1) {
				t.Fatalf("Checkpoint without cosignatures = %q, %v; want the signed checkpoint", got, err)
			}

			w1, w2 := newTestWitness(t, "w1.example/witness"), newTestWitness(t, "w2.example/witness")
			lines := w1.cosignLines(t, cp1)
			refusals := []struct {
				name  string
				size  int64
				v     note.Verifier
				lines []byte
				want  error
			}{
				{"another witness's verifier", c1.Size, w2.verifier, lines, registry.ErrInvalid},
				{"not signature lines", c1.Size, w1.verifier, []byte("hello\n"), registry.ErrInvalid},
				{"no final newline", c1.Size, w1.verifier, lines[:len(lines)-1], registry.ErrInvalid},
				{"too long", c1.Size, w1.verifier, []byte(strings.Repeat(string(lines), 100)), registry.ErrInvalid},
				{"no checkpoint of that size", c1.Size + 100, w1.verifier, lines, registry.ErrNotFound},
			}
			for _, tt := range refusals {
				t.Run(tt.name, func(t *testing.T) {
					if n, err := f.Registry.AddCosignatures(ctx, tt.size, tt.v, tt.lines); !errors.Is(err, tt.want) || n != 0 {
						t.Errorf("AddCosignatures = %d, %v; want 0, %v", n, err, tt.want)
					}
				})
			}
			if n, err := f.Registry.AddCosignatures(ctx, c1.Size, w1.verifier, lines); err != nil || n != 1 {
				t.Fatalf("AddCosignatures = %d, %v; want 1, nil", n, err)
			}
			if n, err := f.Registry.AddCosignatures(ctx, c1.Size, w1.verifier, w1.cosignLines(t, cp1)); err != nil || n != 0 {
				t.Errorf("second cosignature of a size = %d, %v; want 0 (first kept), nil", n, err)
			}
			served, err := f.Registry.Checkpoint(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if want := string(cp1) + string(lines); string(served) != want {
				t.Fatalf("served checkpoint =\n%s\nwant\n%s", served, want)
			}
			logVs, err := rp.ParseLogVerifiers(f.Registry.LogVerifierKey())
			if err != nil {
				t.Fatal(err)
			}
			if _, err := rp.VerifyCheckpoint(served, logVs, rp.WitnessPolicy{Keys: []string{w1.vkey}, Threshold: 1}); err != nil {
				t.Errorf("1-of-1 policy refuses the served checkpoint: %v", err)
			}

			// A verify's receipt is made against the cosigned checkpoint.
			res, err := f.Registry.VerifyWithReceipt(ctx, []byte(bot1.CertificatePEM), nil)
			if err != nil || res.Receipt == nil {
				t.Fatalf("VerifyWithReceipt: %+v, %v", res, err)
			}
			if r, err := translog.ParseReceipt(res.Receipt); err != nil || !r.Witnessed || string(r.Checkpoint) != string(served) {
				t.Fatalf("verify's receipt: %v; witnessed %t, checkpoint\n%s\nwant\n%s", err, r.Witnessed, r.Checkpoint, served)
			}

			// The log grows: the newest checkpoint has no cosignature yet.
			register(t, f, owner, "bot-3.acme")
			cosigned := []struct {
				name     string
				minSize  int64
				wantSize int64
				wantCos  bool
				wantErr  error
			}{
				{"older cosigned one preferred", c1.Size, c1.Size, true, nil},
				{"zero", 0, c1.Size, true, nil},
				{"newer than any cosigned", c1.Size + 1, c1.Size + 1, false, nil},
				{"beyond the tree", c1.Size + 100, 0, false, registry.ErrNotFound},
			}
			for _, tt := range cosigned {
				t.Run(tt.name, func(t *testing.T) {
					got, err := f.Registry.CosignedCheckpoint(ctx, tt.minSize)
					if tt.wantErr != nil {
						if !errors.Is(err, tt.wantErr) {
							t.Fatalf("CosignedCheckpoint(%d) = %v; want %v", tt.minSize, err, tt.wantErr)
						}
						return
					}
					if err != nil {
						t.Fatalf("CosignedCheckpoint(%d): %v", tt.minSize, err)
					}
					c, err := translog.OpenCheckpoint(got, f.NoteVerifier)
					if err != nil {
						t.Fatal(err)
					}
					if c.Size != tt.wantSize {
						t.Errorf("size %d, want %d", c.Size, tt.wantSize)
					}
					if gotCos := strings.Contains(string(got), "— w1.example/witness "); gotCos != tt.wantCos {
						t.Errorf("cosigned = %t, want %t:\n%s", gotCos, tt.wantCos, got)
					}
				})
			}
		})
	}
}

func TestNewRefusesEd25519SignerForAnotherOrigin(t *testing.T) {
	f := registrytest.NewFixture(t)
	other, err := translog.NewEd25519NoteSigner("other.example/log", f.LogKeyEd25519)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		signer  note.Signer
		wantErr bool
	}{
		{"same origin", f.NoteSignerEd25519, false},
		{"no Ed25519 signer", nil, false},
		{"another origin", other, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := f.Config
			cfg.Store = f.Store
			cfg.LogSignerEd25519 = tt.signer
			_, err := registry.New(cfg)
			if got := err != nil; got != tt.wantErr {
				t.Errorf("registry.New = %v; want error %t", err, tt.wantErr)
			}
		})
	}
}
