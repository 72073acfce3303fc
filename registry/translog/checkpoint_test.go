package translog

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

const testOrigin = "atr.example/log"

// testKey returns a fixed P-256 test key derived from label (no key material
// is stored in the repository).
func testKey(t testing.TB, label string) *ecdsa.PrivateKey {
	t.Helper()
	d := sha256.Sum256([]byte("atr translog test key " + label))
	k, err := ecdsa.ParseRawPrivateKey(elliptic.P256(), d[:])
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func testSignerVerifier(t testing.TB, name, label string) (note.Signer, note.Verifier) {
	t.Helper()
	k := testKey(t, label)
	s, err := NewNoteSigner(name, k)
	if err != nil {
		t.Fatal(err)
	}
	v, err := NewNoteVerifier(name, k.Public())
	if err != nil {
		t.Fatal(err)
	}
	return s, v
}

func testCheckpoint() Checkpoint {
	var h tlog.Hash
	copy(h[:], bytes.Repeat([]byte{0x5d}, 32))
	return Checkpoint{Origin: testOrigin, Size: 20852163, Hash: h}
}

func TestCheckpointMarshalParse(t *testing.T) {
	c := testCheckpoint()
	c.Extensions = []string{"ext one"}
	b, err := c.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	want := testOrigin + "\n20852163\n" + base64.StdEncoding.EncodeToString(c.Hash[:]) + "\next one\n"
	if string(b) != want {
		t.Fatalf("Marshal = %q, want %q", b, want)
	}
	got, err := ParseCheckpoint(b)
	if err != nil {
		t.Fatal(err)
	}
	if got.Origin != c.Origin || got.Size != c.Size || got.Hash != c.Hash || len(got.Extensions) != 1 || got.Extensions[0] != "ext one" {
		t.Errorf("ParseCheckpoint = %+v, want %+v", got, c)
	}
}

func TestParseCheckpointRefuses(t *testing.T) {
	hash := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{0x5d}, 32))
	// The hash with its last character changed to one that decodes to the
	// same bytes under lenient decoding (unused low bits set).
	lenient := hash[:len(hash)-2] + "R="
	tests := []struct{ name, in string }{
		{"no final newline", testOrigin + "\n1\n" + hash},
		{"CRLF", testOrigin + "\r\n1\r\n" + hash + "\r\n"},
		{"two lines", testOrigin + "\n1\n"},
		{"empty origin", "\n1\n" + hash + "\n"},
		{"origin with space", "atr example\n1\n" + hash + "\n"},
		{"origin with plus", "atr+log\n1\n" + hash + "\n"},
		{"leading zero size", testOrigin + "\n01\n" + hash + "\n"},
		{"plus sign size", testOrigin + "\n+1\n" + hash + "\n"},
		{"negative size", testOrigin + "\n-1\n" + hash + "\n"},
		{"space in size", testOrigin + "\n 1\n" + hash + "\n"},
		{"size overflow", testOrigin + "\n9223372036854775808\n" + hash + "\n"},
		{"empty size", testOrigin + "\n\n" + hash + "\n"},
		{"hash without padding", testOrigin + "\n1\n" + strings.TrimRight(hash, "=") + "\n"},
		{"hash non-canonical low bits", testOrigin + "\n1\n" + lenient + "\n"},
		{"hash url alphabet", testOrigin + "\n1\n" + base64.URLEncoding.EncodeToString(bytes.Repeat([]byte{0xff}, 32)) + "\n"},
		{"hash too short", testOrigin + "\n1\n" + base64.StdEncoding.EncodeToString(make([]byte, 31)) + "\n"},
		{"hash with trailing space", testOrigin + "\n1\n" + hash + " \n"},
		{"empty extension line", testOrigin + "\n1\n" + hash + "\n\n"},
		{"invalid UTF-8", testOrigin + "\xff\n1\n" + hash + "\n"},
	}
	if lenient == hash {
		t.Fatal("lenient hash equals canonical")
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := ParseCheckpoint([]byte(tt.in)); !errors.Is(err, ErrInvalid) {
				t.Errorf("ParseCheckpoint(%q) error = %v, want ErrInvalid", tt.in, err)
			}
		})
	}
}

func TestSignOpenCheckpoint(t *testing.T) {
	s, v := testSignerVerifier(t, testOrigin, "a")
	c := testCheckpoint()
	msg, err := SignCheckpoint(c, s)
	if err != nil {
		t.Fatal(err)
	}
	got, err := OpenCheckpoint(msg, v)
	if err != nil {
		t.Fatalf("OpenCheckpoint: %v\n%s", err, msg)
	}
	if got.Origin != c.Origin || got.Size != c.Size || got.Hash != c.Hash {
		t.Errorf("OpenCheckpoint = %+v, want %+v", got, c)
	}

	// Extra signatures by unknown keys (say, witnesses) are ignored.
	ws, _ := testSignerVerifier(t, "witness.example", "w")
	n, err := note.Open(msg, note.VerifierList(v))
	if err != nil {
		t.Fatal(err)
	}
	cosigned, err := note.Sign(n, ws)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := OpenCheckpoint(cosigned, v); err != nil {
		t.Errorf("OpenCheckpoint(cosigned): %v", err)
	}

	text, _ := c.Marshal()
	sigLine := msg[len(text)+1:]
	_, wrongV := testSignerVerifier(t, testOrigin, "b")
	_, otherNameV := testSignerVerifier(t, "other.example/log", "a")
	bigger := c
	bigger.Size++
	biggerText, _ := bigger.Marshal()
	otherHash := c
	otherHash.Hash[31] ^= 1
	otherHashText, _ := otherHash.Marshal()
	flipSig := bytes.Clone(msg)
	// Flip a bit inside the base64 signature (after the 4-byte key ID).
	sigStart := bytes.LastIndexByte(flipSig, ' ') + 1
	raw, _ := base64.StdEncoding.DecodeString(strings.TrimSpace(string(flipSig[sigStart:])))
	raw[10] ^= 0x01
	flipSig = append(flipSig[:sigStart], base64.StdEncoding.EncodeToString(raw)+"\n"...)

	tests := []struct {
		name string
		msg  []byte
		v    note.Verifier
	}{
		{"wrong key", msg, wrongV},
		{"key with another name", msg, otherNameV},
		{"changed size", append(biggerText, append([]byte("\n"), sigLine...)...), v},
		{"changed hash", append(otherHashText, append([]byte("\n"), sigLine...)...), v},
		{"flipped signature bit", flipSig, v},
		{"extra whitespace in text", append([]byte(strings.Replace(string(text), "\n", " \n", 1)), append([]byte("\n"), sigLine...)...), v},
		{"extra blank line", append(bytes.Clone(text), append([]byte("\n\n"), sigLine...)...), v},
		{"trailing whitespace after signature", append(bytes.TrimSuffix(bytes.Clone(msg), []byte("\n")), " \n"...), v},
		{"no signature", append(bytes.Clone(text), '\n'), v},
		{"truncated", msg[:len(msg)-5], v},
		{"oversized", append(bytes.Repeat([]byte("a"), MaxCheckpointSize), msg...), v},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got, err := OpenCheckpoint(tt.msg, tt.v); err == nil {
				t.Errorf("OpenCheckpoint accepted %q as %+v", tt.msg, got)
			}
		})
	}
}

func TestNonCanonicalBase64Checkpoint(t *testing.T) {
	// A correctly signed note whose root hash is non-canonical base64 must
	// still be refused: the signature does not make the text parseable.
	s, v := testSignerVerifier(t, testOrigin, "a")
	hash := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{0x5d}, 32))
	text := testOrigin + "\n5\n" + hash[:len(hash)-2] + "R=\n"
	msg, err := note.Sign(&note.Note{Text: text}, s)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := OpenCheckpoint(msg, v); !errors.Is(err, ErrInvalid) {
		t.Errorf("OpenCheckpoint(non-canonical base64) error = %v, want ErrInvalid", err)
	}
}

func TestSignCheckpointRefuses(t *testing.T) {
	s, _ := testSignerVerifier(t, "other.example/log", "a")
	if _, err := SignCheckpoint(testCheckpoint(), s); !errors.Is(err, ErrInvalid) {
		t.Errorf("SignCheckpoint with a signer for another origin: %v, want ErrInvalid", err)
	}
	s, _ = testSignerVerifier(t, testOrigin, "a")
	c := testCheckpoint()
	c.Size = -1
	if _, err := SignCheckpoint(c, s); !errors.Is(err, ErrInvalid) {
		t.Errorf("SignCheckpoint(size -1): %v, want ErrInvalid", err)
	}
}

// TestECDSANoteFormat pins the signature type 0x02 wire format: key ID =
// SHA-256(SPKI)[:4], signature = 4-byte key ID || ASN.1 ECDSA over
// SHA-256(text).
func TestECDSANoteFormat(t *testing.T) {
	k := testKey(t, "a")
	s, v := testSignerVerifier(t, testOrigin, "a")
	spki, err := x509.MarshalPKIXPublicKey(k.Public())
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(spki)
	if got, want := s.KeyHash(), binary.BigEndian.Uint32(sum[:4]); got != want || v.KeyHash() != want {
		t.Errorf("KeyHash = %08x / %08x, want %08x", got, v.KeyHash(), want)
	}
	msg, err := SignCheckpoint(testCheckpoint(), s)
	if err != nil {
		t.Fatal(err)
	}
	text, _ := testCheckpoint().Marshal()
	line := strings.TrimSuffix(string(msg[len(text)+1:]), "\n")
	prefix := "— " + testOrigin + " "
	if !strings.HasPrefix(line, prefix) {
		t.Fatalf("signature line %q lacks %q", line, prefix)
	}
	raw, err := base64.StdEncoding.DecodeString(line[len(prefix):])
	if err != nil {
		t.Fatal(err)
	}
	if binary.BigEndian.Uint32(raw) != s.KeyHash() {
		t.Errorf("signature key ID %x, want %08x", raw[:4], s.KeyHash())
	}
	d := sha256.Sum256(text)
	if !ecdsa.VerifyASN1(&k.PublicKey, d[:], raw[4:]) {
		t.Error("signature is not ASN.1 ECDSA over SHA-256(text)")
	}

	vkey, err := VerifierKey(testOrigin, k.Public())
	if err != nil {
		t.Fatal(err)
	}
	wantPrefix := fmt.Sprintf("%s+%08x+", testOrigin, s.KeyHash())
	if !strings.HasPrefix(vkey, wantPrefix) || !strings.Contains(vkey, "+"+base64.StdEncoding.EncodeToString(append([]byte{0x02}, spki...))) {
		t.Errorf("VerifierKey = %q", vkey)
	}
	pv, err := ParseVerifierKey(vkey)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := OpenCheckpoint(msg, pv); err != nil {
		t.Errorf("OpenCheckpoint with parsed vkey: %v", err)
	}
	badKeys := []string{
		strings.Replace(vkey, "+", "+0", 1),
		vkey[:len(testOrigin)+1] + "00000000" + vkey[len(testOrigin)+9:],
		"noplus",
		testOrigin + "+00000000+" + base64.StdEncoding.EncodeToString(append([]byte{0x01}, make([]byte, 32)...)),
	}
	for _, bk := range badKeys {
		if _, err := ParseVerifierKey(bk); err == nil {
			t.Errorf("ParseVerifierKey(%q) succeeded", bk)
		}
	}
}

type badSigner struct{ crypto.Signer }

func (badSigner) Sign(io.Reader, []byte, crypto.SignerOpts) ([]byte, error) {
	return []byte{0x30, 0x00}, nil
}

func TestNoteSignerRefuses(t *testing.T) {
	_, edPriv, _ := ed25519.GenerateKey(nil)
	if _, err := NewNoteSigner(testOrigin, edPriv); err == nil {
		t.Error("NewNoteSigner accepted an Ed25519 key")
	}
	p384, err := ecdsa.GenerateKey(elliptic.P384(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewNoteSigner(testOrigin, p384); err == nil {
		t.Error("NewNoteSigner accepted a P-384 key")
	}
	for _, name := range []string{"", "a b", "a+b"} {
		if _, err := NewNoteVerifier(name, testKey(t, "a").Public()); err == nil {
			t.Errorf("NewNoteVerifier accepted name %q", name)
		}
	}
	s, err := NewNoteSigner(testOrigin, badSigner{testKey(t, "a")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := SignCheckpoint(testCheckpoint(), s); err == nil {
		t.Error("SignCheckpoint accepted a signature that does not verify")
	}
}

// selfCheckingBadSigner is badSigner with the ChecksSignatures mark of a
// signer that verifies its own signatures (hsm.Signer, hsm.Ed25519Signer).
type selfCheckingBadSigner struct{ badSigner }

func (selfCheckingBadSigner) ChecksSignatures() {}

// TestNoteSignersTrustSelfCheckingSigners: a token signer that checks every
// signature it returns (and fails closed) is not checked a second time by
// the note signers — each check is a P-256 or Ed25519 verification per
// checkpoint on the group commit's one writer. Any other signer still is.
// The bad signature stands in for the check: only a second check refuses it.
func TestNoteSignersTrustSelfCheckingSigners(t *testing.T) {
	_, edPriv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		newNote func(crypto.Signer) (note.Signer, error)
		key     crypto.Signer
	}{
		{"ECDSA", func(s crypto.Signer) (note.Signer, error) { return NewNoteSigner(testOrigin, s) }, testKey(t, "a")},
		{"Ed25519", func(s crypto.Signer) (note.Signer, error) { return NewEd25519NoteSigner(testOrigin, s) }, edPriv},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checked, err := tt.newNote(badSigner{tt.key})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := SignCheckpoint(testCheckpoint(), checked); err == nil {
				t.Error("a signature that does not verify was accepted from a signer without the mark")
			}
			trusted, err := tt.newNote(selfCheckingBadSigner{badSigner{tt.key}})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := SignCheckpoint(testCheckpoint(), trusted); err != nil {
				t.Errorf("the signature of a self-checking signer was checked again: %v", err)
			}
		})
	}
}

// barrierSigner's Sign waits until all of its group's signers are signing:
// it fails when they sign one after the other.
type barrierSigner struct {
	note.Signer
	b *barrier
}

// barrier opens when n signers arrived.
type barrier struct {
	n, calls atomic.Int32
	open     chan struct{}
}

func newBarrier(n int32) *barrier {
	b := &barrier{open: make(chan struct{})}
	b.n.Store(n)
	return b
}

// wait is an arrival at b that is not a signature: the caller's, which
// waits for the signers (TestStartSignCheckpoint).
func (b *barrier) wait() error {
	if b.n.Add(-1) == 0 {
		close(b.open)
	}
	select {
	case <-b.open:
		return nil
	case <-time.After(10 * time.Second):
		return errors.New("the signers did not sign meanwhile")
	}
}

func (s barrierSigner) Sign(msg []byte) ([]byte, error) {
	s.b.calls.Add(1)
	if s.b.n.Add(-1) == 0 {
		close(s.b.open)
	}
	select {
	case <-s.b.open:
		return s.Signer.Sign(msg)
	case <-time.After(10 * time.Second):
		return nil, errors.New("the other signers did not sign meanwhile: signed one after the other")
	}
}

// The checkpoint's signers sign at the same time (on a token each is a
// round trip the group commit's writer waits for), and the note is the one
// note.Sign writes with the signers themselves: same lines, same order.
func TestSignCheckpointSignsConcurrently(t *testing.T) {
	_, edPriv, _ := ed25519.GenerateKey(nil)
	edS, err := NewEd25519NoteSigner(testOrigin, edPriv)
	if err != nil {
		t.Fatal(err)
	}
	skey, _, err := note.GenerateKey(nil, testOrigin)
	if err != nil {
		t.Fatal(err)
	}
	sumdbS, err := note.NewSigner(skey)
	if err != nil {
		t.Fatal(err)
	}
	c := testCheckpoint()
	text, _ := c.Marshal()
	// Ed25519 signatures are deterministic: the expected note is exact.
	want, err := note.Sign(&note.Note{Text: string(text)}, edS, sumdbS)
	if err != nil {
		t.Fatal(err)
	}
	b := newBarrier(2)
	got, err := SignCheckpoint(c, barrierSigner{edS, b}, barrierSigner{sumdbS, b})
	if err != nil {
		t.Fatalf("SignCheckpoint: %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("SignCheckpoint =\n%s\nwant (note.Sign with the same signers)\n%s", got, want)
	}
	if n := b.calls.Load(); n != 2 {
		t.Errorf("%d signatures made, want 2 (one per signer)", n)
	}
}

// A signer's error is SignCheckpoint's error, as with note.Sign; among two
// signers or more (each then signs on a goroutine of its own: presign), one
// that panics is an error too, not a crash, in any position — and so is a
// lone signer's panic under StartSignCheckpoint (the registry's checkpoints).
func TestSignCheckpointSignerError(t *testing.T) {
	s, _ := testSignerVerifier(t, testOrigin, "a")
	for name, bad := range map[string]note.Signer{"error": failingSigner{s}, "panic": panickingSigner{s}} {
		for _, tc := range []struct {
			where   string
			signers []note.Signer
		}{
			{"last", []note.Signer{s, bad}},
			{"first", []note.Signer{bad, s}},
			{"middle", []note.Signer{s, bad, s}},
		} {
			t.Run(name+"/"+tc.where, func(t *testing.T) {
				_, err := SignCheckpoint(testCheckpoint(), tc.signers[0], tc.signers[1:]...)
				if err == nil || !strings.Contains(err.Error(), "token gone") {
					t.Fatalf("SignCheckpoint error = %v, want the signer's", err)
				}
			})
		}
		// StartSignCheckpoint signs on goroutines even with one signer.
		t.Run(name+"/alone, begun", func(t *testing.T) {
			if _, err := StartSignCheckpoint(testCheckpoint(), bad)(); err == nil || !strings.Contains(err.Error(), "token gone") {
				t.Fatalf("StartSignCheckpoint error = %v, want the signer's", err)
			}
		})
	}
}

type failingSigner struct{ note.Signer }

func (failingSigner) Sign([]byte) ([]byte, error) { return nil, errors.New("token gone") }

type panickingSigner struct{ note.Signer }

func (panickingSigner) Sign([]byte) ([]byte, error) { panic("token gone") }

// StartSignCheckpoint starts the signatures before its caller waits for
// them (the registry's batches send their statements meanwhile): here every
// signer signs while the caller has not waited yet, and the function it
// returns gives, as often as it is called, the note SignCheckpoint gives.
// Its refusals (a signer of another origin) come from that function too.
func TestStartSignCheckpoint(t *testing.T) {
	c := testCheckpoint()
	for _, n := range []int{1, 2} {
		t.Run(fmt.Sprintf("signers=%d", n), func(t *testing.T) {
			var signers []note.Signer
			for range n {
				_, priv, _ := ed25519.GenerateKey(nil)
				s, err := NewEd25519NoteSigner(testOrigin, priv)
				if err != nil {
					t.Fatal(err)
				}
				signers = append(signers, s)
			}
			want, err := SignCheckpoint(c, signers[0], signers[1:]...)
			if err != nil {
				t.Fatal(err)
			}
			b := newBarrier(int32(n + 1)) // the signers and this goroutine, before it waits
			gated := make([]note.Signer, n)
			for i, s := range signers {
				gated[i] = barrierSigner{s, b}
			}
			wait := StartSignCheckpoint(c, gated[0], gated[1:]...)
			if err := b.wait(); err != nil {
				t.Fatalf("before the wait: %v", err)
			}
			for range 2 {
				got, err := wait()
				if err != nil || !bytes.Equal(got, want) {
					t.Fatalf("wait() = %q, %v; want SignCheckpoint's note\n%s", got, err, want)
				}
			}
			if got := b.calls.Load(); got != int32(n) {
				t.Errorf("%d signatures made, want %d (one per signer)", got, n)
			}
		})
	}
	other, _ := testSignerVerifier(t, "other.example/log", "a")
	if _, err := StartSignCheckpoint(c, other)(); !errors.Is(err, ErrInvalid) {
		t.Errorf("a signer of another origin: %v, want ErrInvalid", err)
	}
}
