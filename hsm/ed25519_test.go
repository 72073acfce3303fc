package hsm_test

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha512"
	"errors"
	"testing"

	"github.com/agent-trust-registry/atr/hsm"
	"github.com/agent-trust-registry/atr/hsm/hsmtest"
	"github.com/miekg/pkcs11"
)

func TestEd25519GenerateSignAndFind(t *testing.T) {
	cfg := hsmtest.NewToken(t, "atr-ed25519")
	tok := hsmtest.Open(t, cfg)
	s, err := tok.GenerateEd25519Key(t.Context(), "log-ed25519")
	if err != nil {
		t.Fatalf("GenerateEd25519Key: %v", err)
	}
	pub, ok := s.Public().(ed25519.PublicKey)
	if !ok || len(pub) != ed25519.PublicKeySize {
		t.Fatalf("Public() = %T (%d bytes); want a 32-byte ed25519.PublicKey", s.Public(), len(pub))
	}
	if err := s.CheckPolicy(t.Context()); err != nil {
		t.Errorf("CheckPolicy of a generated key: %v", err)
	}

	// The private key carries the CA key policy.
	raw := openRaw(t, cfg)
	got := raw.boolAttrs(t, pkcs11.CKO_PRIVATE_KEY, "log-ed25519", []uint{
		pkcs11.CKA_SENSITIVE, pkcs11.CKA_EXTRACTABLE, pkcs11.CKA_NEVER_EXTRACTABLE,
		pkcs11.CKA_SIGN, pkcs11.CKA_DECRYPT, pkcs11.CKA_DERIVE,
	})
	for typ, want := range map[uint]bool{
		pkcs11.CKA_SENSITIVE: true, pkcs11.CKA_EXTRACTABLE: false, pkcs11.CKA_NEVER_EXTRACTABLE: true,
		pkcs11.CKA_SIGN: true, pkcs11.CKA_DECRYPT: false, pkcs11.CKA_DERIVE: false,
	} {
		if got[typ] != want {
			t.Errorf("private key attribute 0x%x = %t, want %t", typ, got[typ], want)
		}
	}

	// Found again by URI (label only, and label plus id), same public key.
	byLabel := s.URI()
	byLabel.ID = nil
	for name, u := range map[string]hsm.URI{"label": byLabel, "label+id": s.URI()} {
		t.Run("find by "+name, func(t *testing.T) {
			f, err := tok.Ed25519Signer(t.Context(), u)
			if err != nil {
				t.Fatalf("Ed25519Signer(%s): %v", u.String(), err)
			}
			if !pub.Equal(f.Public()) {
				t.Errorf("found key has another public key")
			}
		})
	}

	tests := []struct {
		name    string
		msg     []byte
		opts    crypto.SignerOpts
		wantErr bool
	}{
		{"pure Ed25519, Hash(0)", []byte("checkpoint text\n"), crypto.Hash(0), false},
		{"pure Ed25519, Options", []byte("x"), &ed25519.Options{}, false},
		{"empty message", []byte{}, crypto.Hash(0), false},
		{"long message", make([]byte, 64<<10), crypto.Hash(0), false},
		{"a digest option (Ed25519ph) is refused", []byte("x"), crypto.SHA512, true},
		{"Ed25519ctx is refused", []byte("x"), &ed25519.Options{Context: "ctx"}, true},
		{"nil opts is refused", []byte("x"), nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sig, err := s.Sign(rand.Reader, tt.msg, tt.opts)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("Sign = nil error; want an error")
				}
				return
			}
			if err != nil {
				t.Fatalf("Sign: %v", err)
			}
			if !ed25519.Verify(pub, tt.msg, sig) {
				t.Errorf("signature does not verify with ed25519.Verify")
			}
			d := sha512.Sum512(tt.msg)
			if ed25519.Verify(pub, d[:], sig) {
				t.Errorf("signature verifies over the digest: the token signed a hash, not the message")
			}
		})
	}
}

func TestEd25519RefusedLabelsAndMissingKeys(t *testing.T) {
	tok := hsmtest.Open(t, hsmtest.NewToken(t, "atr-ed25519"))
	if _, err := tok.GenerateEd25519Key(t.Context(), "taken"); err != nil {
		t.Fatalf("GenerateEd25519Key: %v", err)
	}
	if _, err := tok.GenerateKey(t.Context(), "ecdsa", hsm.ECDSAP256); err != nil {
		t.Fatalf("GenerateKey: %v", err)
	}
	tests := []struct {
		name string
		do   func() error
		want error
	}{
		{"label of an Ed25519 key", func() error { _, err := tok.GenerateEd25519Key(t.Context(), "taken"); return err }, hsm.ErrExists},
		{"label of an ECDSA key", func() error { _, err := tok.GenerateEd25519Key(t.Context(), "ecdsa"); return err }, hsm.ErrExists},
		{"GenerateKey names the Ed25519 API", func() error { _, err := tok.GenerateKey(t.Context(), "new", hsm.Ed25519); return err }, nil},
		{"no such label", func() error {
			_, err := tok.Ed25519Signer(t.Context(), hsm.URI{Object: "missing"})
			return err
		}, hsm.ErrKeyNotFound},
		{"an ECDSA key is not an Ed25519 key", func() error {
			_, err := tok.Ed25519Signer(t.Context(), hsm.URI{Object: "ecdsa"})
			return err
		}, hsm.ErrKeyNotFound},
		{"another token", func() error {
			_, err := tok.Ed25519Signer(t.Context(), hsm.URI{Token: "someone-else", Object: "taken"})
			return err
		}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.do()
			if err == nil {
				t.Fatalf("got nil error; want an error")
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Errorf("got %v; want %v", err, tt.want)
			}
		})
	}
}

func TestEd25519SessionLossAndRecovery(t *testing.T) {
	cfg := hsmtest.NewToken(t, "atr-ed25519")
	tok := hsmtest.Open(t, cfg)
	s, err := tok.GenerateEd25519Key(t.Context(), "log-ed25519")
	if err != nil {
		t.Fatalf("GenerateEd25519Key: %v", err)
	}
	msg := []byte("before")
	if _, err := s.Sign(rand.Reader, msg, crypto.Hash(0)); err != nil {
		t.Fatalf("Sign before session loss: %v", err)
	}
	openRaw(t, cfg).killSessions(t)
	// The first use after the loss either fails with ErrUnavailable or (if
	// the token noticed first) works; it must never return a bad signature.
	if sig, err := s.Sign(rand.Reader, msg, crypto.Hash(0)); err == nil {
		if !ed25519.Verify(s.Public().(ed25519.PublicKey), msg, sig) {
			t.Fatalf("signature after session loss does not verify")
		}
	} else if !errors.Is(err, hsm.ErrUnavailable) {
		t.Fatalf("Sign after session loss = %v; want ErrUnavailable", err)
	}
	waitHealthy(t, tok)
	sig, err := s.Sign(rand.Reader, []byte("after"), crypto.Hash(0))
	if err != nil {
		t.Fatalf("Sign after recovery: %v", err)
	}
	if !ed25519.Verify(s.Public().(ed25519.PublicKey), []byte("after"), sig) {
		t.Errorf("signature after recovery does not verify")
	}
}

// TestEd25519SignKeepsItsSession: Sign finds the key once per generation of
// the token, not once per signature (a session and a search of the token,
// which on SoftHSM2 reads the file of every object on it). A key relabelled
// after the first signature keeps signing, with signatures that verify;
// destroyed, it is ErrKeyNotFound at the next Sign, as before.
func TestEd25519SignKeepsItsSession(t *testing.T) {
	cfg := hsmtest.NewToken(t, "atr-ed25519")
	tok := hsmtest.Open(t, cfg)
	s, err := tok.GenerateEd25519Key(t.Context(), "log-ed25519")
	if err != nil {
		t.Fatalf("GenerateEd25519Key: %v", err)
	}
	pub := s.Public().(ed25519.PublicKey)
	if _, err := s.Sign(rand.Reader, []byte("first"), crypto.Hash(0)); err != nil {
		t.Fatalf("Sign: %v", err)
	}
	raw := openRaw(t, cfg)
	sh := raw.session(t)
	priv := []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PRIVATE_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_ID, s.URI().ID),
	}
	if err := raw.p.FindObjectsInit(sh, priv); err != nil {
		t.Fatal(err)
	}
	hs, _, err := raw.p.FindObjects(sh, 10)
	_ = raw.p.FindObjectsFinal(sh)
	if err != nil || len(hs) != 1 {
		t.Fatalf("FindObjects = %d, %v; want 1", len(hs), err)
	}
	if err := raw.p.SetAttributeValue(sh, hs[0], []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_LABEL, "moved")}); err != nil {
		t.Fatalf("SetAttributeValue(CKA_LABEL): %v", err)
	}
	for i := range 3 {
		msg := []byte{byte(i)}
		sig, err := s.Sign(rand.Reader, msg, crypto.Hash(0))
		if err != nil {
			t.Fatalf("Sign %d after the label changed: %v (the key was searched again)", i, err)
		}
		if !ed25519.Verify(pub, msg, sig) {
			t.Fatalf("signature %d does not verify", i)
		}
	}
	if err := raw.p.DestroyObject(sh, hs[0]); err != nil {
		t.Fatalf("DestroyObject: %v", err)
	}
	if _, err := s.Sign(rand.Reader, []byte("gone"), crypto.Hash(0)); !errors.Is(err, hsm.ErrKeyNotFound) {
		t.Errorf("Sign with the key destroyed = %v; want ErrKeyNotFound", err)
	}
}

// TestEd25519CloseLeavesNoSession: the session an Ed25519Signer keeps is
// closed with its Token, so that closing the Token ends the process's login
// on the token as before.
func TestEd25519CloseLeavesNoSession(t *testing.T) {
	cfg := hsmtest.NewToken(t, "atr-ed25519")
	tok := hsmtest.Open(t, cfg)
	s, err := tok.GenerateEd25519Key(t.Context(), "log-ed25519")
	if err != nil {
		t.Fatalf("GenerateEd25519Key: %v", err)
	}
	if _, err := s.Sign(rand.Reader, []byte("x"), crypto.Hash(0)); err != nil {
		t.Fatalf("Sign: %v", err)
	}
	if err := tok.Close(); err != nil {
		t.Fatal(err)
	}
	raw := openRaw(t, cfg)
	info, err := raw.p.GetSessionInfo(raw.session(t))
	if err != nil {
		t.Fatal(err)
	}
	if info.State != pkcs11.CKS_RW_PUBLIC_SESSION {
		t.Errorf("after Close a new session's state is %d; want %d (public: nobody logged in)", info.State, pkcs11.CKS_RW_PUBLIC_SESSION)
	}
	if _, err := s.Sign(rand.Reader, []byte("y"), crypto.Hash(0)); !errors.Is(err, hsm.ErrUnavailable) {
		t.Errorf("Sign after Close = %v; want ErrUnavailable", err)
	}
}

func TestEd25519KeyReplacedFailsClosed(t *testing.T) {
	cfg := hsmtest.NewToken(t, "atr-ed25519")
	tok := hsmtest.Open(t, cfg)
	s, err := tok.GenerateEd25519Key(t.Context(), "log-ed25519")
	if err != nil {
		t.Fatalf("GenerateEd25519Key: %v", err)
	}
	// One signature first: the signer keeps the key's handle and session.
	if _, err := s.Sign(rand.Reader, []byte("before"), crypto.Hash(0)); err != nil {
		t.Fatalf("Sign: %v", err)
	}
	// Someone destroys the key and puts another under the same label and id.
	raw := openRaw(t, cfg)
	sh := raw.session(t)
	if err := raw.p.FindObjectsInit(sh, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_LABEL, "log-ed25519")}); err != nil {
		t.Fatal(err)
	}
	hs, _, err := raw.p.FindObjects(sh, 10)
	_ = raw.p.FindObjectsFinal(sh)
	if err != nil || len(hs) != 2 {
		t.Fatalf("FindObjects = %d, %v; want 2", len(hs), err)
	}
	for _, h := range hs {
		if err := raw.p.DestroyObject(sh, h); err != nil {
			t.Fatalf("DestroyObject: %v", err)
		}
	}
	if _, err := s.Sign(rand.Reader, []byte("x"), crypto.Hash(0)); !errors.Is(err, hsm.ErrKeyNotFound) {
		t.Errorf("Sign with the key destroyed = %v; want ErrKeyNotFound", err)
	}
	other, err := tok.GenerateEd25519Key(t.Context(), "log-ed25519")
	if err != nil {
		t.Fatalf("GenerateEd25519Key (replacement): %v", err)
	}
	// Point the old signer's id at the new key: relabel is enough, since the
	// signer finds by id and label; give the new key the old id.
	old := s.URI().ID
	sh2 := raw.session(t)
	if err := raw.p.FindObjectsInit(sh2, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_ID, other.URI().ID)}); err != nil {
		t.Fatal(err)
	}
	hs, _, err = raw.p.FindObjects(sh2, 10)
	_ = raw.p.FindObjectsFinal(sh2)
	if err != nil || len(hs) != 2 {
		t.Fatalf("FindObjects(new id) = %d, %v; want 2", len(hs), err)
	}
	for _, h := range hs {
		if err := raw.p.SetAttributeValue(sh2, h, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_ID, old)}); err != nil {
			t.Fatalf("SetAttributeValue(CKA_ID): %v", err)
		}
	}
	sig, err := s.Sign(rand.Reader, []byte("x"), crypto.Hash(0))
	if err == nil {
		t.Fatalf("Sign with a substituted key returned a signature %x; want an error", sig)
	}
	if !errors.Is(err, hsm.ErrUnavailable) {
		t.Errorf("Sign with a substituted key = %v; want ErrUnavailable", err)
	}
}
