package translog

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/agent-trust-registry/atr/hsm"
	"github.com/agent-trust-registry/atr/hsm/hsmtest"
)

const vrfTD = "agents.atr.test"

// testVRFKey reads testdata/vrf-test-key.pem, a fixed RSA-3072 key made with
// `openssl genrsa 3072` for the known-answer test (it is no secret).
func testVRFKey(tb testing.TB) *rsa.PrivateKey {
	tb.Helper()
	data, err := os.ReadFile("testdata/vrf-test-key.pem")
	if err != nil {
		tb.Fatal(err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		tb.Fatal("testdata/vrf-test-key.pem: no PEM block")
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		tb.Fatal(err)
	}
	return k.(*rsa.PrivateKey)
}

// tokenVRFKey generates an RSA-3072 key on a fresh SoftHSM2 token.
func tokenVRFKey(tb testing.TB) *hsm.Signer {
	tb.Helper()
	tok := hsmtest.Open(tb, hsmtest.NewToken(tb, "atr-vrf"))
	s, err := tok.GenerateKey(context.Background(), "atr-vrf", hsm.RSA3072)
	if err != nil {
		tb.Fatalf("generating the VRF key on the token: %v", err)
	}
	return s
}

func TestNameSuffixes(t *testing.T) {
	for _, tc := range []struct {
		name string
		want []string
	}{
		{"a.b.acme", []string{"a.b.acme", "b.acme", "acme"}},
		{"acme", []string{"acme"}},
		{"billing-bot.acme", []string{"billing-bot.acme", "acme"}},
		{"x.y.z.w", []string{"x.y.z.w", "y.z.w", "z.w", "w"}},
		{"", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := NameSuffixes(tc.name); !slices.Equal(got, tc.want) {
				t.Errorf("NameSuffixes(%q) = %q, want %q", tc.name, got, tc.want)
			}
		})
	}
}

// TestVRFKnownAnswer pins the construction against an independent
// implementation. The expected indexes come from
//
//	printf 'atr-vrf-v1\0agents.atr.test\0billing-bot.acme' | openssl dgst -sha256 -sign registry/translog/testdata/vrf-test-key.pem | sha256sum
//	printf 'atr-vrf-v1\0agents.atr.test\0acme' | openssl dgst -sha256 -sign registry/translog/testdata/vrf-test-key.pem | sha256sum
func TestVRFKnownAnswer(t *testing.T) {
	key := testVRFKey(t)
	for _, tc := range []struct{ name, want string }{
		{"billing-bot.acme", "be8686ee1e3ac05004e7fa012753e2b4a385874ea6cf68bc0f2bd77dd50ede3b"},
		{"acme", "4c9833a055c37946f4e132b2b453a4e7bd8109fae768385f86a83611ae34bbc5"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			idx, proof, err := VRFProve(key, vrfTD, tc.name)
			if err != nil {
				t.Fatalf("VRFProve: %v", err)
			}
			if got := hex.EncodeToString(idx[:]); got != tc.want {
				t.Errorf("index = %s, want %s", got, tc.want)
			}
			got, err := VRFVerify(&key.PublicKey, vrfTD, tc.name, proof)
			if err != nil {
				t.Fatalf("VRFVerify: %v", err)
			}
			if got != idx {
				t.Errorf("VRFVerify index = %x, want %x", got, idx)
			}
		})
	}
}

// TestVRFDeterministic: the same name gives the same proof and index on
// every call, on a real token and with a software key; index is
// SHA-256(proof) and VRFVerify returns it; different names and trust
// domains give different indexes.
func TestVRFDeterministic(t *testing.T) {
	for _, tc := range []struct {
		name   string
		signer func(t *testing.T) crypto.Signer
	}{
		{"softhsm2", func(t *testing.T) crypto.Signer { return tokenVRFKey(t) }},
		{"software", func(t *testing.T) crypto.Signer { return testVRFKey(t) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := tc.signer(t)
			seen := map[[32]byte]string{}
			for _, in := range []struct{ td, name string }{
				{vrfTD, "a.b.acme"}, {vrfTD, "b.acme"}, {vrfTD, "acme"}, {"other.test", "acme"},
			} {
				i1, p1, err := VRFProve(s, in.td, in.name)
				if err != nil {
					t.Fatalf("VRFProve(%s, %s): %v", in.td, in.name, err)
				}
				i2, p2, err := VRFProve(s, in.td, in.name)
				if err != nil {
					t.Fatalf("VRFProve(%s, %s) again: %v", in.td, in.name, err)
				}
				if i1 != i2 || !bytes.Equal(p1, p2) {
					t.Errorf("%s/%s: two proofs differ: %x vs %x", in.td, in.name, p1, p2)
				}
				if want := sha256.Sum256(p1); i1 != want {
					t.Errorf("%s/%s: index %x, want SHA-256(proof) %x", in.td, in.name, i1, want)
				}
				if got, want := len(p1), s.Public().(*rsa.PublicKey).Size(); got != want {
					t.Errorf("%s/%s: proof of %d bytes, want %d", in.td, in.name, got, want)
				}
				got, err := VRFVerify(s.Public(), in.td, in.name, p1)
				if err != nil {
					t.Fatalf("VRFVerify(%s, %s): %v", in.td, in.name, err)
				}
				if got != i1 {
					t.Errorf("%s/%s: VRFVerify index %x, want %x", in.td, in.name, got, i1)
				}
				if prev, dup := seen[i1]; dup {
					t.Errorf("%s/%s: same index as %s", in.td, in.name, prev)
				}
				seen[i1] = in.td + "/" + in.name
			}
		})
	}
}

// TestVRFVerifyRefuses: a proof checked for another name, another trust
// domain, under another key, or altered in length is refused with ErrVRF.
func TestVRFVerifyRefuses(t *testing.T) {
	key := testVRFKey(t)
	other, err := rsa.GenerateKey(rand.Reader, 3072)
	if err != nil {
		t.Fatal(err)
	}
	_, proof, err := VRFProve(key, vrfTD, "a.b.acme")
	if err != nil {
		t.Fatal(err)
	}
	_, proofB, err := VRFProve(key, vrfTD, "b.acme")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		desc     string
		pub      crypto.PublicKey
		td, name string
		proof    []byte
	}{
		{"wrong name", &key.PublicKey, vrfTD, "a.b.acmf", proof},
		{"parent name", &key.PublicKey, vrfTD, "b.acme", proof},
		{"proof of another name", &key.PublicKey, vrfTD, "a.b.acme", proofB},
		{"wrong trust domain", &key.PublicKey, "agents.atr.tesu", "a.b.acme", proof},
		{"td/name boundary moved", &key.PublicKey, vrfTD + "\x00a", "b.acme", proof},
		{"other key", &other.PublicKey, vrfTD, "a.b.acme", proof},
		{"empty proof", &key.PublicKey, vrfTD, "a.b.acme", nil},
		{"truncated", &key.PublicKey, vrfTD, "a.b.acme", proof[:len(proof)-1]},
		{"leading zero byte", &key.PublicKey, vrfTD, "a.b.acme", append([]byte{0}, proof...)},
		{"trailing byte", &key.PublicKey, vrfTD, "a.b.acme", append(slices.Clone(proof), 0)},
		{"all zero", &key.PublicKey, vrfTD, "a.b.acme", make([]byte, len(proof))},
		{"empty name", &key.PublicKey, vrfTD, "", proof},
		{"empty trust domain", &key.PublicKey, "", "a.b.acme", proof},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			_, err := VRFVerify(tc.pub, tc.td, tc.name, tc.proof)
			if !errors.Is(err, ErrVRF) {
				t.Errorf("VRFVerify: got %v, want ErrVRF", err)
			}
		})
	}
}

// TestVRFFlippedBits flips every bit of every byte of a proof: none of the
// altered proofs verifies.
func TestVRFFlippedBits(t *testing.T) {
	key := testVRFKey(t)
	_, proof, err := VRFProve(key, vrfTD, "a.b.acme")
	if err != nil {
		t.Fatal(err)
	}
	for i := range proof {
		for bit := range 8 {
			p := slices.Clone(proof)
			p[i] ^= 1 << bit
			if _, err := VRFVerify(&key.PublicKey, vrfTD, "a.b.acme", p); !errors.Is(err, ErrVRF) {
				t.Errorf("proof with byte %d bit %d flipped: got %v, want ErrVRF", i, bit, err)
			}
		}
	}
}

// TestVRFUniqueness is the uniqueness property of RFC 9381 §3.1 as a test:
// the index is SHA-256 of the one accepted proof, so no second proof may
// verify for the same (key, td, name). The cases are the other
// representatives of the same RSA value (s + N, s − N… when they fit in k
// bytes, the same value in more bytes), a valid signature of the same
// message under another padding (PSS), and random proofs.
func TestVRFUniqueness(t *testing.T) {
	key := testVRFKey(t)
	name := "a.b.acme"
	_, proof, err := VRFProve(key, vrfTD, name)
	if err != nil {
		t.Fatal(err)
	}
	k := len(proof)
	s := new(big.Int).SetBytes(proof)
	var alts []struct {
		desc  string
		proof []byte
	}
	add := func(desc string, p []byte) {
		alts = append(alts, struct {
			desc  string
			proof []byte
		}{desc, p})
	}
	for m := int64(1); m <= 4; m++ {
		v := new(big.Int).Add(s, new(big.Int).Mul(key.N, big.NewInt(m)))
		if v.BitLen() <= 8*k {
			add("s+"+big.NewInt(m).String()+"N", v.FillBytes(make([]byte, k)))
		}
	}
	add("N-s", new(big.Int).Sub(key.N, s).FillBytes(make([]byte, k)))
	add("s in k+1 bytes", s.FillBytes(make([]byte, k+1)))
	d, err := vrfDigest(vrfTD, name)
	if err != nil {
		t.Fatal(err)
	}
	pss, err := rsa.SignPSS(rand.Reader, key, crypto.SHA256, d[:], nil)
	if err != nil {
		t.Fatal(err)
	}
	add("PSS signature of the same message", pss)
	for i := range 64 {
		p := make([]byte, k)
		if _, err := io.ReadFull(rand.Reader, p); err != nil {
			t.Fatal(err)
		}
		add(fmt.Sprintf("random %d", i), p)
	}
	for _, alt := range alts {
		t.Run(alt.desc, func(t *testing.T) {
			if bytes.Equal(alt.proof, proof) {
				t.Fatal("test bug: the alternative is the proof")
			}
			if _, err := VRFVerify(&key.PublicKey, vrfTD, name, alt.proof); !errors.Is(err, ErrVRF) {
				t.Errorf("a second proof verified: got %v, want ErrVRF", err)
			}
		})
	}
}

// vrfPublicOverride is a Signer that reports another public key than the
// one it signs with.
type vrfPublicOverride struct {
	crypto.Signer
	pub crypto.PublicKey
}

func (p vrfPublicOverride) Public() crypto.PublicKey { return p.pub }

// vrfBadSigner returns a fixed signature (or error) whatever it is asked.
type vrfBadSigner struct {
	pub crypto.PublicKey
	sig []byte
	err error
}

func (b vrfBadSigner) Public() crypto.PublicKey { return b.pub }
func (b vrfBadSigner) Sign(io.Reader, []byte, crypto.SignerOpts) ([]byte, error) {
	return b.sig, b.err
}

// TestVRFKeyPolicy: keys that are not RSA, shorter than 2048 bits or with an
// exponent other than 65537 are refused by VRFProve, VRFVerify and
// CheckVRFKey.
func TestVRFKeyPolicy(t *testing.T) {
	good := testVRFKey(t)
	k2048, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	short, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	e3 := &rsa.PublicKey{N: good.N, E: 3}
	_, proof, err := VRFProve(good, vrfTD, "acme")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		desc   string
		pub    crypto.PublicKey
		signer crypto.Signer
		wantOK bool
	}{
		{"rsa-3072 e=65537", &good.PublicKey, good, true},
		{"rsa-2048 e=65537 (the smallest)", &k2048.PublicKey, k2048, true},
		{"rsa-1024", &short.PublicKey, short, false},
		{"e=3", e3, vrfPublicOverride{good, e3}, false},
		{"ecdsa", &ec.PublicKey, ec, false},
		{"nil rsa key", (*rsa.PublicKey)(nil), vrfPublicOverride{good, (*rsa.PublicKey)(nil)}, false},
		{"no key", nil, vrfPublicOverride{good, nil}, false},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			_, err := CheckVRFKey(tc.pub)
			if got := err == nil; got != tc.wantOK {
				t.Errorf("CheckVRFKey: err %v, want ok=%v", err, tc.wantOK)
			}
			if err != nil && !errors.Is(err, ErrVRF) {
				t.Errorf("CheckVRFKey: %v does not wrap ErrVRF", err)
			}
			_, own, err := VRFProve(tc.signer, vrfTD, "acme")
			if got := err == nil; got != tc.wantOK {
				t.Errorf("VRFProve: err %v, want ok=%v", err, tc.wantOK)
			}
			if err != nil && !errors.Is(err, ErrVRF) {
				t.Errorf("VRFProve: %v does not wrap ErrVRF", err)
			}
			// VRFVerify refuses a bad key before looking at the proof (the
			// good key's proof, which would verify under it).
			if tc.wantOK {
				_, err = VRFVerify(tc.pub, vrfTD, "acme", own)
			} else {
				_, err = VRFVerify(tc.pub, vrfTD, "acme", proof)
			}
			if got := err == nil; got != tc.wantOK {
				t.Errorf("VRFVerify: err %v, want ok=%v", err, tc.wantOK)
			}
		})
	}
}

// TestVRFProveChecksSigner: a signer that misbehaves (returns a signature of
// another message, garbage, a PSS signature, or fails) never yields a proof.
func TestVRFProveChecksSigner(t *testing.T) {
	key := testVRFKey(t)
	_, otherProof, err := VRFProve(key, vrfTD, "other.acme")
	if err != nil {
		t.Fatal(err)
	}
	d, err := vrfDigest(vrfTD, "acme")
	if err != nil {
		t.Fatal(err)
	}
	pss, err := rsa.SignPSS(rand.Reader, key, crypto.SHA256, d[:], nil)
	if err != nil {
		t.Fatal(err)
	}
	tokenErr := errors.New("token gone")
	for _, tc := range []struct {
		desc    string
		s       crypto.Signer
		wantErr error
	}{
		{"signature of another name", vrfBadSigner{pub: &key.PublicKey, sig: otherProof}, ErrVRF},
		{"garbage", vrfBadSigner{pub: &key.PublicKey, sig: bytes.Repeat([]byte{7}, 384)}, ErrVRF},
		{"empty", vrfBadSigner{pub: &key.PublicKey}, ErrVRF},
		{"pss", vrfBadSigner{pub: &key.PublicKey, sig: pss}, ErrVRF},
		{"token error", vrfBadSigner{pub: &key.PublicKey, err: tokenErr}, tokenErr},
		{"nil signer", nil, ErrVRF},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			idx, proof, err := VRFProve(tc.s, vrfTD, "acme")
			if !errors.Is(err, tc.wantErr) {
				t.Errorf("VRFProve: got %v, want %v", err, tc.wantErr)
			}
			if proof != nil || idx != ([32]byte{}) {
				t.Errorf("VRFProve returned a proof (%x) with an error", proof)
			}
		})
	}
}

// TestVRFInputs: a zero byte in the trust domain or the name, or an empty
// one, would make the encoding ambiguous and is refused.
func TestVRFInputs(t *testing.T) {
	key := testVRFKey(t)
	for _, tc := range []struct {
		desc, td, name string
	}{
		{"zero byte in name", vrfTD, "a\x00b"},
		{"zero byte in trust domain", "a\x00b", "acme"},
		{"empty name", vrfTD, ""},
		{"empty trust domain", "", "acme"},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			if _, _, err := VRFProve(key, tc.td, tc.name); !errors.Is(err, ErrVRF) {
				t.Errorf("VRFProve(%q, %q): got %v, want ErrVRF", tc.td, tc.name, err)
			}
		})
	}
}

func TestParseVRFPublicKeyPEM(t *testing.T) {
	key := testVRFKey(t)
	pemOf := func(pub crypto.PublicKey) string {
		der, err := x509.MarshalPKIXPublicKey(pub)
		if err != nil {
			t.Fatal(err)
		}
		return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))
	}
	short, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	good := pemOf(&key.PublicKey)
	der, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	for _, tc := range []struct {
		desc, in string
		wantOK   bool
	}{
		{"good", good, true},
		{"good with surrounding whitespace", "\n" + good + "\n\n", true},
		{"trailing block", good + good, false},
		{"trailing text", good + "x", false},
		{"leading text", "x\n" + good, false},
		{"rsa-2048", pemOf(&short.PublicKey), false},
		{"ecdsa", pemOf(&ec.PublicKey), false},
		{"wrong type", strings.ReplaceAll(good, "PUBLIC KEY", "RSA PUBLIC KEY"), false},
		{"headers", string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Headers: map[string]string{"a": "b"}, Bytes: der})), false},
		{"not DER", string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: []byte{0x30, 0}})), false},
		{"empty", "", false},
		{"huge", strings.Repeat(" ", 20<<10) + good, false},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			got, err := ParseVRFPublicKeyPEM([]byte(tc.in))
			if (err == nil) != tc.wantOK {
				t.Fatalf("ParseVRFPublicKeyPEM: err %v, want ok=%v", err, tc.wantOK)
			}
			if err != nil {
				if !errors.Is(err, ErrVRF) {
					t.Errorf("error %v does not wrap ErrVRF", err)
				}
				return
			}
			if !got.Equal(&key.PublicKey) {
				t.Errorf("parsed key differs from the encoded one")
			}
		})
	}
}

// FuzzVRFVerify: VRFVerify never panics on arbitrary proofs, names and
// trust domains, and whatever it accepts is the unique proof VRFProve makes.
//
//	go test -run '^$' -fuzz FuzzVRFVerify -fuzztime 10s ./registry/translog/
func FuzzVRFVerify(f *testing.F) {
	key := testVRFKey(f)
	_, proof, err := VRFProve(key, vrfTD, "acme")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(vrfTD, "acme", proof)
	f.Add(vrfTD, "acme", proof[:10])
	f.Add(vrfTD, "", []byte{})
	f.Fuzz(func(t *testing.T, td, name string, p []byte) {
		idx, err := VRFVerify(&key.PublicKey, td, name, p)
		if err != nil {
			if !errors.Is(err, ErrVRF) {
				t.Fatalf("VRFVerify error %v does not wrap ErrVRF", err)
			}
			return
		}
		if idx != sha256.Sum256(p) {
			t.Fatalf("index is not SHA-256(proof)")
		}
		_, want, err := VRFProve(key, td, name)
		if err != nil || !bytes.Equal(want, p) {
			t.Fatalf("VRFVerify accepted a proof VRFProve does not make (%v)", err)
		}
	})
}

// BenchmarkVRFProve measures one name index on a SoftHSM2 key of each
// size the vrf-key ceremony offers (an issuance computes one per name suffix
// the registry has not seen).
func BenchmarkVRFProve(b *testing.B) {
	tok := hsmtest.Open(b, hsmtest.NewToken(b, "atr-vrf"))
	for _, alg := range []hsm.KeyAlgorithm{hsm.RSA2048, hsm.RSA3072} {
		b.Run(string(alg), func(b *testing.B) {
			s, err := tok.GenerateKey(context.Background(), "atr-vrf-"+string(alg), alg)
			if err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				if _, _, err := VRFProve(s, vrfTD, "billing-bot.acme"); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestVRFSecret pins VRFSecret against openssl, as TestVRFKnownAnswer does
// the proofs:
//
//	printf 'atr-vrf-secret-v1\0agents.atr.test\0opening' | openssl dgst -sha256 -sign registry/translog/testdata/vrf-test-key.pem | sha256sum
//
// The secret is the same on a token and in software for one key, differs
// per trust domain, purpose and key, is never the index of a name, and a
// signer that misbehaves or a bad input gives an error, never a secret.
func TestVRFSecret(t *testing.T) {
	key := testVRFKey(t)
	got, err := VRFSecret(key, vrfTD, "opening")
	if err != nil {
		t.Fatal(err)
	}
	if h := hex.EncodeToString(got[:]); h != "21bc2ee339af9bd78489fb14de0e72a322b723ea9bf9ee89680298d91d4cbdf5" {
		t.Errorf("VRFSecret = %s, want openssl's 21bc2ee3…", h)
	}
	tok := tokenVRFKey(t)
	a, err := VRFSecret(tok, vrfTD, "opening")
	if err != nil {
		t.Fatal(err)
	}
	b, err := VRFSecret(tok, vrfTD, "opening")
	if err != nil || a != b {
		t.Fatalf("the token's secret is not deterministic: %x then %x (%v)", a, b, err)
	}
	distinct := map[[32]byte]string{got: "software key", a: "token key"}
	for _, in := range []struct{ td, purpose string }{{"other.test", "opening"}, {vrfTD, "other"}} {
		s, err := VRFSecret(key, in.td, in.purpose)
		if err != nil {
			t.Fatal(err)
		}
		if prev, dup := distinct[s]; dup {
			t.Errorf("secret of %q/%q equals that of %s", in.td, in.purpose, prev)
		}
		distinct[s] = in.td + "/" + in.purpose
	}
	// No name's index: the purpose taken as a name gives another value.
	if idx, _, err := VRFProve(key, vrfTD, "opening"); err != nil || idx == got {
		t.Errorf("the VRF index of the name \"opening\" is the secret (%v)", err)
	}

	tokenErr := errors.New("token gone")
	_, otherProof, err := VRFProve(key, vrfTD, "other.acme")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		desc        string
		s           crypto.Signer
		td, purpose string
		wantErr     error
	}{
		{"signature of a name", vrfBadSigner{pub: &key.PublicKey, sig: otherProof}, vrfTD, "opening", ErrVRF},
		{"garbage", vrfBadSigner{pub: &key.PublicKey, sig: bytes.Repeat([]byte{7}, 384)}, vrfTD, "opening", ErrVRF},
		{"token error", vrfBadSigner{pub: &key.PublicKey, err: tokenErr}, vrfTD, "opening", tokenErr},
		{"nil signer", nil, vrfTD, "opening", ErrVRF},
		{"empty purpose", key, vrfTD, "", ErrVRF},
		{"zero byte in purpose", key, vrfTD, "a\x00b", ErrVRF},
		{"empty trust domain", key, "", "opening", ErrVRF},
		{"zero byte in trust domain", key, "a\x00b", "opening", ErrVRF},
	} {
		t.Run(tc.desc, func(t *testing.T) {
			s, err := VRFSecret(tc.s, tc.td, tc.purpose)
			if !errors.Is(err, tc.wantErr) {
				t.Errorf("VRFSecret: got %v, want %v", err, tc.wantErr)
			}
			if s != ([32]byte{}) {
				t.Errorf("VRFSecret returned a secret with an error")
			}
		})
	}
}
