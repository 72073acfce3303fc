package hsm_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"testing"

	"github.com/agent-trust-registry/atr/hsm"
	"github.com/agent-trust-registry/atr/hsm/hsmtest"
)

func TestSignVerifies(t *testing.T) {
	tok := hsmtest.Open(t, hsmtest.NewToken(t, "atr-sign"))
	for _, alg := range hsm.KeyAlgorithms() {
		t.Run(string(alg), func(t *testing.T) {
			if testing.Short() && alg == hsm.RSA4096 {
				t.Skip("slow key generation in -short mode")
			}
			s, err := tok.GenerateKey(t.Context(), "key-"+string(alg), alg)
			if err != nil {
				t.Fatalf("GenerateKey: %v", err)
			}
			msg := []byte("to be signed")
			d256 := sha256.Sum256(msg)
			d384 := sha512.Sum384(msg)
			switch pub := s.Public().(type) {
			case *ecdsa.PublicKey:
				sig, err := s.Sign(rand.Reader, d256[:], crypto.SHA256)
				if err != nil {
					t.Fatalf("Sign: %v", err)
				}
				if !ecdsa.VerifyASN1(pub, d256[:], sig) {
					t.Error("ECDSA signature does not verify")
				}
			case *rsa.PublicKey:
				sig, err := s.Sign(rand.Reader, d256[:], crypto.SHA256)
				if err != nil {
					t.Fatalf("Sign PKCS1v15: %v", err)
				}
				if err := rsa.VerifyPKCS1v15(pub, crypto.SHA256, d256[:], sig); err != nil {
					t.Errorf("PKCS1v15 verify: %v", err)
				}
				opts := &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: crypto.SHA384}
				sig, err = s.Sign(rand.Reader, d384[:], opts)
				if err != nil {
					t.Fatalf("Sign PSS: %v", err)
				}
				if err := rsa.VerifyPSS(pub, crypto.SHA384, d384[:], sig, opts); err != nil {
					t.Errorf("PSS verify: %v", err)
				}
			default:
				t.Fatalf("Public() = %T", pub)
			}
		})
	}
}
