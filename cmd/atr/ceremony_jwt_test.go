package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agent-trust-registry/atr/hsm"
	"github.com/agent-trust-registry/atr/hsm/hsmtest"
)

// TestCeremonyJWTKey: `atr ceremony jwt-key` makes an ECDSA P-256 key on the
// online token (sensitive, never extractable, sign-only) under its label,
// writes its public key and a transcript, refuses to run twice, does nothing
// with --if-missing, never adopts a key that is not ES256, and makes a second
// key under a new label for a rotation.
func TestCeremonyJWTKey(t *testing.T) {
	d := newDevTokens(t)
	d.mustAtr(t, "ceremony", "jwt-key", "--operator", "tester")
	jt := d.transcripts(t, "jwt-key")
	if len(jt) != 1 {
		t.Fatalf("jwt-key transcripts: %v", jt)
	}
	if tr := d.checkTranscript(t, jt[0], "jwt-key", d.issuing.TokenLabel); len(tr.Keys) != 1 || tr.Keys[0].Algorithm != string(hsm.ECDSAP256) || tr.Keys[0].Label != defaultJWTKeyLabel {
		t.Errorf("jwt-key transcript keys %+v, want one %s key %q", tr.Keys, hsm.ECDSAP256, defaultJWTKeyLabel)
	}
	pubPEM := filepath.Join(d.dir, "ca", jwtKeyPEMName)
	data, err := os.ReadFile(pubPEM)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(data)
	if blk == nil || blk.Type != "PUBLIC KEY" {
		t.Fatalf("%s: not a PUBLIC KEY PEM", jwtKeyPEMName)
	}
	pub, err := x509.ParsePKIXPublicKey(blk.Bytes)
	if k, ok := pub.(*ecdsa.PublicKey); err != nil || !ok || k.Curve != elliptic.P256() {
		t.Fatalf("%s: %T, %v; want an ECDSA P-256 key", jwtKeyPEMName, pub, err)
	}
	tok := hsmtest.Open(t, d.issuing)
	s, err := tok.Signer(context.Background(), hsm.URI{Token: d.issuing.TokenLabel, Object: defaultJWTKeyLabel})
	if err != nil {
		t.Fatal(err)
	}
	if !s.Public().(*ecdsa.PublicKey).Equal(pub) {
		t.Error("jwt-key.pem is not the key on the token")
	}
	if err := tok.CheckKeyPolicy(context.Background(), s); err != nil {
		t.Errorf("JWT key attributes: %v", err)
	}

	if code, _, errb := d.atr(t, "ceremony", "jwt-key", "--operator", "tester"); code != 1 || !strings.Contains(errb, "refusing to overwrite") {
		t.Errorf("second jwt-key ceremony: exit %d, stderr %s", code, errb)
	}
	d.mustAtr(t, "ceremony", "jwt-key", "--operator", "tester", "--if-missing")
	if again, _ := os.ReadFile(pubPEM); !bytes.Equal(again, data) {
		t.Error("jwt-key.pem changed on --if-missing")
	}
	if jt := d.transcripts(t, "jwt-key"); len(jt) != 1 {
		t.Errorf("jwt-key transcripts after --if-missing: %v, want still 1", jt)
	}
	// An existing key that is not ES256 (here P-384) is never adopted.
	if _, err := tok.GenerateKey(context.Background(), "p384", hsm.ECDSAP384); err != nil {
		t.Fatal(err)
	}
	if code, _, errb := d.atr(t, "ceremony", "jwt-key", "--operator", "tester", "--if-missing", "--label", "p384"); code != 1 || !strings.Contains(errb, "cannot be the JWT-SVID key") {
		t.Errorf("jwt-key --if-missing over a P-384 key: exit %d, stderr %s", code, errb)
	}
	if code, _, errb := d.atr(t, "ceremony", "card-key", "--operator", "tester", "--if-missing", "--label", "p384"); code != 1 || !strings.Contains(errb, "cannot be the agent-card key") {
		t.Errorf("card-key --if-missing over a P-384 key: exit %d, stderr %s", code, errb)
	}

	// Rotation: a second key under a new label; jwt-key.pem is then its key.
	d.mustAtr(t, "ceremony", "jwt-key", "--operator", "tester", "--label", "atr-jwt-2")
	s2, err := tok.Signer(context.Background(), hsm.URI{Token: d.issuing.TokenLabel, Object: "atr-jwt-2"})
	if err != nil {
		t.Fatal(err)
	}
	if s2.Public().(*ecdsa.PublicKey).Equal(pub) {
		t.Error("the rotated key is the old one")
	}
	data, err = os.ReadFile(pubPEM)
	if err != nil {
		t.Fatal(err)
	}
	if blk, _ := pem.Decode(data); blk == nil {
		t.Fatal("jwt-key.pem after rotation: no PEM")
	} else if p2, err := x509.ParsePKIXPublicKey(blk.Bytes); err != nil || !s2.Public().(*ecdsa.PublicKey).Equal(p2) {
		t.Errorf("jwt-key.pem after rotation is not the new key (%v)", err)
	}
}
