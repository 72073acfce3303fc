package hsm_test

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agent-trust-registry/atr/hsm"
	"github.com/agent-trust-registry/atr/hsm/hsmtest"
	"github.com/miekg/pkcs11"
)

func TestGenerateKeyAttributes(t *testing.T) {
	cfg := hsmtest.NewToken(t, "atr-gen")
	tok := hsmtest.Open(t, cfg)
	raw := openRaw(t, cfg)
	for _, alg := range []hsm.KeyAlgorithm{hsm.ECDSAP256, hsm.ECDSAP384, hsm.RSA3072} {
		t.Run(string(alg), func(t *testing.T) {
			label := "ca-" + string(alg)
			s, err := tok.GenerateKey(t.Context(), label, alg)
			if err != nil {
				t.Fatalf("GenerateKey: %v", err)
			}
			if got := s.URI(); got.Object != label || len(got.ID) != 16 || got.Token != cfg.TokenLabel {
				t.Errorf("URI() = %s; want object %q, 16-byte id, token %q", got.String(), label, cfg.TokenLabel)
			}
			priv := raw.boolAttrs(t, pkcs11.CKO_PRIVATE_KEY, label, []uint{
				pkcs11.CKA_TOKEN, pkcs11.CKA_PRIVATE, pkcs11.CKA_SENSITIVE, pkcs11.CKA_ALWAYS_SENSITIVE,
				pkcs11.CKA_EXTRACTABLE, pkcs11.CKA_NEVER_EXTRACTABLE, pkcs11.CKA_SIGN,
				pkcs11.CKA_DECRYPT, pkcs11.CKA_UNWRAP, pkcs11.CKA_DERIVE, pkcs11.CKA_SIGN_RECOVER,
			})
			want := map[uint]bool{
				pkcs11.CKA_TOKEN: true, pkcs11.CKA_PRIVATE: true, pkcs11.CKA_SENSITIVE: true,
				pkcs11.CKA_ALWAYS_SENSITIVE: true, pkcs11.CKA_EXTRACTABLE: false,
				pkcs11.CKA_NEVER_EXTRACTABLE: true, pkcs11.CKA_SIGN: true, pkcs11.CKA_DECRYPT: false,
				pkcs11.CKA_UNWRAP: false, pkcs11.CKA_DERIVE: false, pkcs11.CKA_SIGN_RECOVER: false,
			}
			for typ, w := range want {
				if priv[typ] != w {
					t.Errorf("private key attribute 0x%x = %t, want %t", typ, priv[typ], w)
				}
			}
			pub := raw.boolAttrs(t, pkcs11.CKO_PUBLIC_KEY, label, []uint{pkcs11.CKA_VERIFY, pkcs11.CKA_ENCRYPT, pkcs11.CKA_WRAP})
			if !pub[pkcs11.CKA_VERIFY] || pub[pkcs11.CKA_ENCRYPT] || pub[pkcs11.CKA_WRAP] {
				t.Errorf("public key attributes = %v; want verify only", pub)
			}
		})
	}

	t.Run("pkcs11-tool", func(t *testing.T) {
		if _, err := exec.LookPath("pkcs11-tool"); err != nil {
			t.Skip("pkcs11-tool (opensc) not installed")
		}
		out, err := exec.Command("pkcs11-tool", "--module", cfg.Module, "--token-label", cfg.TokenLabel,
			"--pin", cfg.PIN, "--list-objects").CombinedOutput()
		if err != nil {
			t.Fatalf("pkcs11-tool: %v\n%s", err, out)
		}
		blocks := strings.Split(string(out), "Private Key Object")
		if len(blocks) != 4 {
			t.Fatalf("pkcs11-tool lists %d private keys, want 3:\n%s", len(blocks)-1, out)
		}
		for _, b := range blocks[1:] {
			b, _, _ = strings.Cut(b, "Object;")
			for _, want := range []string{"sensitive", "always sensitive", "never extractable", "Usage:"} {
				if !strings.Contains(b, want) {
					t.Errorf("private key listing lacks %q:\n%s", want, b)
				}
			}
			usage := b[strings.Index(b, "Usage:"):]
			usage, _, _ = strings.Cut(usage, "\n")
			if strings.TrimSpace(usage) != "Usage:      sign" {
				t.Errorf("private key %q; want sign only", usage)
			}
		}
	})
}

func TestGenerateKeyRefusesExistingLabel(t *testing.T) {
	tok := hsmtest.Open(t, hsmtest.NewToken(t, "atr-exists"))
	first, err := tok.GenerateKey(t.Context(), "issuing-2026", hsm.ECDSAP256)
	if err != nil {
		t.Fatalf("GenerateKey: %v", err)
	}
	for _, alg := range []hsm.KeyAlgorithm{hsm.ECDSAP256, hsm.ECDSAP384} {
		if _, err := tok.GenerateKey(t.Context(), "issuing-2026", alg); !errors.Is(err, hsm.ErrExists) {
			t.Errorf("second GenerateKey(%s) error = %v; want ErrExists", alg, err)
		}
	}
	// A certificate object holding the label blocks it too.
	c := selfSigned(t, first, "x")
	if err := tok.ImportCertificate(t.Context(), "cert-label", first.URI().ID, c); err != nil {
		t.Fatalf("ImportCertificate: %v", err)
	}
	if _, err := tok.GenerateKey(t.Context(), "cert-label", hsm.ECDSAP256); !errors.Is(err, hsm.ErrExists) {
		t.Errorf("GenerateKey over a certificate label: error = %v; want ErrExists", err)
	}
	// The original key is untouched and still the only one with its label.
	again, err := tok.Signer(t.Context(), hsm.URI{Object: "issuing-2026"})
	if err != nil {
		t.Fatalf("Signer: %v", err)
	}
	if !again.Public().(*ecdsa.PublicKey).Equal(first.Public()) {
		t.Error("key under the label changed")
	}
	// Concurrent attempts: exactly one wins.
	var wg sync.WaitGroup
	var mu sync.Mutex
	wins := 0
	for range 4 {
		wg.Go(func() {
			_, err := tok.GenerateKey(t.Context(), "race", hsm.ECDSAP256)
			mu.Lock()
			defer mu.Unlock()
			if err == nil {
				wins++
			} else if !errors.Is(err, hsm.ErrExists) {
				t.Errorf("GenerateKey: %v", err)
			}
		})
	}
	wg.Wait()
	if wins != 1 {
		t.Errorf("%d concurrent GenerateKey calls succeeded; want 1", wins)
	}
}

func TestSignerMissingKey(t *testing.T) {
	cfg := hsmtest.NewToken(t, "atr-missing")
	tok := hsmtest.Open(t, cfg)
	if _, err := tok.GenerateKey(t.Context(), "present", hsm.ECDSAP256); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		uri  string
	}{
		{"label", "pkcs11:object=absent"},
		{"id", "pkcs11:id=%01%02"},
		{"label with token", "pkcs11:token=" + cfg.TokenLabel + ";object=absent"},
		{"present label, wrong id", "pkcs11:object=present;id=%01"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u, err := hsm.ParseURI(tt.uri)
			if err != nil {
				t.Fatalf("ParseURI: %v", err)
			}
			s, err := tok.Signer(t.Context(), u)
			if !errors.Is(err, hsm.ErrKeyNotFound) || s != nil {
				t.Errorf("Signer(%s) = %v, %v; want nil, ErrKeyNotFound", tt.uri, s, err)
			}
		})
	}
	t.Run("other token", func(t *testing.T) {
		_, err := tok.Signer(t.Context(), hsm.URI{Token: "atr-root", Object: "present"})
		if err == nil || errors.Is(err, hsm.ErrKeyNotFound) {
			t.Errorf("Signer for another token: error = %v; want a wrong-token error", err)
		}
	})
	t.Run("other module", func(t *testing.T) {
		_, err := tok.Signer(t.Context(), hsm.URI{Object: "present", ModulePath: "/tmp/evil.so"})
		if err == nil {
			t.Error("Signer with another module-path: no error")
		}
	})
	t.Run("found by URI round trip", func(t *testing.T) {
		s, err := tok.Signer(t.Context(), hsm.URI{Object: "present"})
		if err != nil {
			t.Fatal(err)
		}
		u, err := hsm.ParseURI(s.URI().String())
		if err != nil {
			t.Fatalf("ParseURI(%s): %v", s.URI().String(), err)
		}
		s2, err := tok.Signer(t.Context(), u)
		if err != nil {
			t.Fatalf("Signer(%s): %v", u.String(), err)
		}
		if !s2.Public().(*ecdsa.PublicKey).Equal(s.Public()) {
			t.Error("URI round trip found another key")
		}
	})
}

func TestSessionLossAndRecovery(t *testing.T) {
	cfg := hsmtest.NewToken(t, "atr-recover")
	cfg.PoolWaitTimeout = 0 // default 5s: must not matter, nothing may hang
	tok := hsmtest.Open(t, cfg)
	s, err := tok.GenerateKey(t.Context(), "issuing", hsm.ECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	raw := openRaw(t, cfg)

	t.Run("sign after sessions closed", func(t *testing.T) {
		raw.killSessions(t)
		if _, err := signOnce(t, s); !errors.Is(err, hsm.ErrUnavailable) {
			t.Fatalf("Sign after CloseAllSessions: error = %v; want ErrUnavailable", err)
		}
		waitHealthy(t, tok)
		sig, err := signOnce(t, s)
		if err != nil {
			t.Fatalf("Sign after recovery: %v", err)
		}
		if len(sig) == 0 {
			t.Fatal("empty signature")
		}
	})
	t.Run("health check detects lost login", func(t *testing.T) {
		raw.killSessions(t)
		if err := tok.Healthy(t.Context()); !errors.Is(err, hsm.ErrUnavailable) {
			t.Fatalf("Healthy after CloseAllSessions = %v; want ErrUnavailable", err)
		}
		waitHealthy(t, tok)
		if _, err := signOnce(t, s); err != nil {
			t.Fatalf("Sign after recovery: %v", err)
		}
	})
	t.Run("module finalized and re-initialized", func(t *testing.T) {
		if err := raw.p.Finalize(); err != nil {
			t.Fatalf("Finalize: %v", err)
		}
		if _, err := signOnce(t, s); !errors.Is(err, hsm.ErrUnavailable) {
			t.Fatalf("Sign after C_Finalize: error = %v; want ErrUnavailable", err)
		}
		if err := tok.Healthy(t.Context()); err == nil {
			// The rebuild may already have finished; that is fine, but then
			// signing must work at once.
			t.Log("token already recovered")
		}
		waitHealthy(t, tok)
		if _, err := signOnce(t, s); err != nil {
			t.Fatalf("Sign after recovery: %v", err)
		}
		// Other operations recover too.
		if _, err := tok.Objects(t.Context()); err != nil {
			t.Fatalf("Objects after recovery: %v", err)
		}
	})
	t.Run("token removed from the config and restored", func(t *testing.T) {
		conf := os.Getenv("SOFTHSM2_CONF")
		orig, err := os.ReadFile(conf)
		if err != nil {
			t.Fatal(err)
		}
		restore := func() {
			if err := os.WriteFile(conf, orig, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		t.Cleanup(restore)
		// The operator points the module at a token directory without our
		// token; the module is re-initialized (as after a library restart).
		empty := t.TempDir()
		if err := os.WriteFile(conf, []byte("directories.tokendir = "+empty+"\nobjectstore.backend = file\nlog.level = ERROR\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := raw.p.Finalize(); err != nil {
			t.Fatalf("Finalize: %v", err)
		}
		if _, err := signOnce(t, s); !errors.Is(err, hsm.ErrUnavailable) {
			t.Fatalf("Sign with the token gone: error = %v; want ErrUnavailable", err)
		}
		// It stays unavailable (fails closed) while the token is gone: the
		// rebuilds keep failing instead of signing with anything else.
		time.Sleep(500 * time.Millisecond)
		if err := tok.Healthy(t.Context()); !errors.Is(err, hsm.ErrUnavailable) {
			t.Fatalf("Healthy with the token gone = %v; want ErrUnavailable", err)
		}
		if _, err := signOnce(t, s); !errors.Is(err, hsm.ErrUnavailable) {
			t.Fatalf("Sign with the token gone: error = %v; want ErrUnavailable", err)
		}
		restore()
		waitHealthy(t, tok)
		if _, err := signOnce(t, s); err != nil {
			t.Fatalf("Sign after the token came back: %v", err)
		}
	})
	t.Run("closed token fails closed", func(t *testing.T) {
		tok2 := hsmtest.Open(t, cfg)
		s2, err := tok2.Signer(t.Context(), s.URI())
		if err != nil {
			t.Fatal(err)
		}
		if err := tok2.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := signOnce(t, s2); !errors.Is(err, hsm.ErrUnavailable) {
			t.Errorf("Sign on closed token: %v; want ErrUnavailable", err)
		}
		if err := tok2.Healthy(t.Context()); !errors.Is(err, hsm.ErrUnavailable) {
			t.Errorf("Healthy on closed token: %v; want ErrUnavailable", err)
		}
		// The first token is unaffected.
		if _, err := signOnce(t, s); err != nil {
			t.Errorf("Sign on the other token: %v", err)
		}
	})
}

func TestKeyReplacedUnderSignerFailsClosed(t *testing.T) {
	cfg := hsmtest.NewToken(t, "atr-swap")
	tok := hsmtest.Open(t, cfg)
	s, err := tok.GenerateKey(t.Context(), "issuing", hsm.ECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	// An attacker with the PIN deletes the key and creates another one with
	// the same label and ID, then forces a rebuild.
	raw := openRaw(t, cfg)
	sh := raw.session(t)
	if err := raw.p.FindObjectsInit(sh, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_LABEL, "issuing")}); err != nil {
		t.Fatal(err)
	}
	hs, _, err := raw.p.FindObjects(sh, 10)
	_ = raw.p.FindObjectsFinal(sh)
	if err != nil || len(hs) != 2 {
		t.Fatalf("found %d objects, %v; want 2", len(hs), err)
	}
	for _, h := range hs {
		if err := raw.p.DestroyObject(sh, h); err != nil {
			t.Fatal(err)
		}
	}
	ecParams := []byte{0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07}
	id := s.URI().ID
	_, _, err = raw.p.GenerateKeyPair(sh, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_EC_KEY_PAIR_GEN, nil)},
		[]*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true), pkcs11.NewAttribute(pkcs11.CKA_EC_PARAMS, ecParams),
			pkcs11.NewAttribute(pkcs11.CKA_LABEL, "issuing"), pkcs11.NewAttribute(pkcs11.CKA_ID, id),
			pkcs11.NewAttribute(pkcs11.CKA_VERIFY, true),
		},
		[]*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true), pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true),
			pkcs11.NewAttribute(pkcs11.CKA_LABEL, "issuing"), pkcs11.NewAttribute(pkcs11.CKA_ID, id),
			pkcs11.NewAttribute(pkcs11.CKA_SIGN, true), pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true),
		})
	if err != nil {
		t.Fatalf("GenerateKeyPair: %v", err)
	}
	raw.killSessions(t)
	if _, err := signOnce(t, s); err == nil {
		t.Fatal("Sign right after session loss succeeded")
	}
	waitHealthy(t, tok)
	sig, err := signOnce(t, s)
	if err == nil {
		t.Fatalf("Sign with a substituted key succeeded (%d-byte signature); want refusal", len(sig))
	}
	if !errors.Is(err, hsm.ErrKeyNotFound) {
		t.Errorf("Sign with a substituted key: %v; want ErrKeyNotFound", err)
	}
}

func TestPINNeverInErrorsOrLogs(t *testing.T) {
	cfg := hsmtest.NewToken(t, "atr-pin")
	buf := &syncBuffer{}
	log := bufferLogger(buf)
	var errs []error

	bad := cfg
	bad.PIN = "wrong-" + cfg.PIN
	if _, err := hsm.Open(t.Context(), bad, log); err == nil {
		t.Fatal("Open with a wrong PIN succeeded")
	} else {
		errs = append(errs, err)
	}
	if !strings.Contains(errs[0].Error(), "CKR_PIN_INCORRECT") {
		t.Errorf("Open with a wrong PIN: %v; want CKR_PIN_INCORRECT", errs[0])
	}
	missing := cfg
	missing.TokenLabel = "no-such-token"
	if _, err := hsm.Open(t.Context(), missing, log); err == nil {
		t.Fatal("Open of a missing token succeeded")
	} else {
		errs = append(errs, err)
	}

	tok, err := hsm.Open(t.Context(), cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	defer tok.Close()
	s, err := tok.GenerateKey(t.Context(), "k", hsm.ECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	_, err = tok.GenerateKey(t.Context(), "k", hsm.ECDSAP256)
	errs = append(errs, err)
	openRaw(t, cfg).killSessions(t)
	_, err = signOnce(t, s)
	errs = append(errs, err, tok.Healthy(t.Context()))
	waitHealthy(t, tok)
	_, err = tok.Signer(t.Context(), hsm.URI{Object: "nope"})
	errs = append(errs, err)

	for _, pin := range []string{cfg.PIN, bad.PIN} {
		for _, e := range errs {
			if e != nil && strings.Contains(e.Error(), pin) {
				t.Errorf("error contains the PIN: %v", e)
			}
		}
		if strings.Contains(buf.String(), pin) {
			t.Errorf("log output contains the PIN:\n%s", buf.String())
		}
		for _, f := range []string{"%v", "%+v", "%#v", "%s"} {
			if got := fmt.Sprintf(f, cfg); strings.Contains(got, cfg.PIN) {
				t.Errorf("Sprintf(%q, cfg) = %s: contains the PIN", f, got)
			}
		}
	}
	if !strings.Contains(buf.String(), "recovered") {
		t.Errorf("log lacks the recovery event:\n%s", buf.String())
	}
}

func TestConcurrentSigningWithSessionLoss(t *testing.T) {
	cfg := hsmtest.NewToken(t, "atr-conc")
	tok := hsmtest.Open(t, cfg)
	s, err := tok.GenerateKey(t.Context(), "issuing", hsm.ECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	raw := openRaw(t, cfg)
	// Sessions are pulled between phases, never while a C_Sign is in flight:
	// SoftHSM2 frees a session in C_CloseAllSessions even when another
	// thread is using it (it crashes), which a real device loss does not
	// do. The rebuild itself then runs concurrently with the next phase.
	const phases, workers, rounds = 4, 8, 15
	var mu sync.Mutex
	ok, unavailable := 0, 0
	for phase := range phases {
		var wg sync.WaitGroup
		for range workers {
			wg.Go(func() {
				for range rounds {
					sig, err := signOnce(t, s)
					mu.Lock()
					switch {
					case err == nil && len(sig) > 0:
						ok++
					case errors.Is(err, hsm.ErrUnavailable):
						unavailable++
					default:
						t.Errorf("Sign: %v", err)
					}
					mu.Unlock()
					_ = tok.Healthy(t.Context())
				}
			})
		}
		wg.Go(func() { _, _ = tok.Certificates(t.Context()) })
		wg.Wait()
		if phase < phases-1 {
			raw.killSessions(t)
		}
	}
	t.Logf("%d signatures, %d ErrUnavailable", ok, unavailable)
	waitHealthy(t, tok)
	if _, err := signOnce(t, s); err != nil {
		t.Fatalf("Sign after the storm: %v", err)
	}
}

func TestCertificatesAndObjects(t *testing.T) {
	cfg := hsmtest.NewToken(t, "atr-objs")
	tok := hsmtest.Open(t, cfg)
	root, err := tok.GenerateKey(t.Context(), "root", hsm.ECDSAP384)
	if err != nil {
		t.Fatal(err)
	}
	rootCert := selfSigned(t, root, "ATR Root")
	if err := tok.ImportCertificate(t.Context(), "root", root.URI().ID, rootCert); err != nil {
		t.Fatalf("ImportCertificate: %v", err)
	}
	if err := tok.ImportCertificate(t.Context(), "root", nil, rootCert); !errors.Is(err, hsm.ErrExists) {
		t.Errorf("ImportCertificate with a taken label: %v; want ErrExists", err)
	}
	if err := tok.ImportCertificate(t.Context(), "root-again", nil, rootCert); !errors.Is(err, hsm.ErrExists) {
		t.Errorf("ImportCertificate of the same certificate: %v; want ErrExists", err)
	}
	other, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	otherCert := selfSigned(t, other, "Other Root")
	if err := tok.ImportCertificate(t.Context(), "other-root", nil, otherCert); err != nil {
		t.Fatalf("ImportCertificate without id: %v", err)
	}
	certs, err := tok.Certificates(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(certs) != 2 || certs[0].Label != "other-root" || certs[1].Label != "root" ||
		!certs[1].Cert.Equal(rootCert) || !bytes.Equal(certs[1].ID, root.URI().ID) || len(certs[0].ID) != 16 {
		t.Fatalf("Certificates() = %+v; want other-root (random id), root (key id)", certs)
	}

	objs, err := tok.Objects(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, o := range objs {
		got = append(got, o.Label+"/"+o.Class+"/"+o.KeyType)
		if o.Class == "private-key" {
			if !o.Sensitive || o.Extractable || !o.AlwaysSensitive || !o.NeverExtractable || !o.Sign ||
				o.Decrypt || o.Unwrap || o.Derive {
				t.Errorf("private key %s attributes = %+v", o.Label, o)
			}
			if o.IDHex() != fmt.Sprintf("%x", root.URI().ID) {
				t.Errorf("IDHex() = %s; want %x", o.IDHex(), root.URI().ID)
			}
		}
		if o.Class == "certificate" && o.Label == "root" && o.Subject != "CN=ATR Root" {
			t.Errorf("certificate subject = %q", o.Subject)
		}
	}
	want := "other-root/certificate/ root/certificate/ root/private-key/EC P-384 root/public-key/EC P-384"
	if strings.Join(got, " ") != want {
		t.Errorf("Objects() = %s\nwant        %s", strings.Join(got, " "), want)
	}
}

func TestCheckKey(t *testing.T) {
	cfg := hsmtest.NewToken(t, "atr-check")
	tok := hsmtest.Open(t, cfg)
	good, err := tok.GenerateKey(t.Context(), "good", hsm.ECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	goodCert := selfSigned(t, good, "good")
	if err := tok.CheckKey(t.Context(), good, goodCert); err != nil {
		t.Errorf("CheckKey(good) = %v", err)
	}
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err := tok.CheckKey(t.Context(), good, selfSigned(t, other, "forged")); !errors.Is(err, hsm.ErrKeyPolicy) {
		t.Errorf("CheckKey with another key's certificate = %v; want ErrKeyPolicy", err)
	}

	// A key someone created outside ATR: extractable, not sensitive, may
	// decrypt and derive. CheckKey must refuse it.
	raw := openRaw(t, cfg)
	sh := raw.session(t)
	ecParams := []byte{0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07}
	id := []byte{0xba, 0xd0}
	_, _, err = raw.p.GenerateKeyPair(sh, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_EC_KEY_PAIR_GEN, nil)},
		[]*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true), pkcs11.NewAttribute(pkcs11.CKA_EC_PARAMS, ecParams),
			pkcs11.NewAttribute(pkcs11.CKA_LABEL, "weak"), pkcs11.NewAttribute(pkcs11.CKA_ID, id),
		},
		[]*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true), pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true),
			pkcs11.NewAttribute(pkcs11.CKA_LABEL, "weak"), pkcs11.NewAttribute(pkcs11.CKA_ID, id),
			pkcs11.NewAttribute(pkcs11.CKA_SIGN, true), pkcs11.NewAttribute(pkcs11.CKA_DERIVE, true),
			pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, false), pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, true),
		})
	if err != nil {
		t.Fatalf("GenerateKeyPair: %v", err)
	}
	weak, err := tok.Signer(t.Context(), hsm.URI{Object: "weak"})
	if err != nil {
		t.Fatalf("Signer(weak): %v", err)
	}
	if err := tok.CheckKeyPolicy(t.Context(), good); err != nil {
		t.Errorf("CheckKeyPolicy(good) = %v", err)
	}
	if err := tok.CheckKeyPolicy(t.Context(), weak); !errors.Is(err, hsm.ErrKeyPolicy) {
		t.Errorf("CheckKeyPolicy(weak) = %v; want ErrKeyPolicy (a log or VRF key made outside ATR)", err)
	}
	err = tok.CheckKey(t.Context(), weak, selfSigned(t, weak, "weak"))
	if !errors.Is(err, hsm.ErrKeyPolicy) {
		t.Fatalf("CheckKey(weak) = %v; want ErrKeyPolicy", err)
	}
	for _, want := range []string{"CKA_SENSITIVE=false", "CKA_EXTRACTABLE=true", "CKA_NEVER_EXTRACTABLE=false", "CKA_DERIVE=true"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("CheckKey(weak) error %q lacks %q", err, want)
		}
	}
	objs, err := tok.Objects(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		if o.Label == "weak" && o.Class == "private-key" && (!o.Extractable || o.Sensitive || !o.Derive) {
			t.Errorf("Objects shows weak key as %+v", o)
		}
	}
}

func TestOpenRefusesAmbiguousLabel(t *testing.T) {
	cfg := hsmtest.NewToken(t, "atr-dup")
	raw := openRaw(t, cfg)
	slots, err := raw.p.GetSlotList(true)
	if err != nil {
		t.Fatal(err)
	}
	initialized := false
	for _, s := range slots {
		ti, err := raw.p.GetTokenInfo(s)
		if err != nil {
			t.Fatal(err)
		}
		if ti.Flags&pkcs11.CKF_TOKEN_INITIALIZED == 0 {
			if err := raw.p.InitToken(s, "so-pin-1234", cfg.TokenLabel); err != nil {
				t.Fatalf("InitToken: %v", err)
			}
			initialized = true
			break
		}
	}
	if !initialized {
		t.Fatal("no free slot")
	}
	_, err = hsm.Open(t.Context(), cfg, hsmtest.Logger(t))
	if err == nil || !strings.Contains(err.Error(), "ambiguous") {
		t.Errorf("Open with two tokens labelled %q: %v; want ambiguous", cfg.TokenLabel, err)
	}
}

func TestRecoveryStopsOnWrongPIN(t *testing.T) {
	cfg := hsmtest.NewToken(t, "atr-pinchg")
	buf := &syncBuffer{}
	tok, err := hsm.Open(t.Context(), cfg, bufferLogger(buf))
	if err != nil {
		t.Fatal(err)
	}
	defer tok.Close()
	raw := openRaw(t, cfg)
	// Someone changes the PIN, then the sessions are lost: rebuilding must
	// try the old PIN once and then stop (a real HSM locks after a few).
	if err := raw.p.SetPIN(raw.session(t), cfg.PIN, cfg.PIN+"-new"); err != nil {
		t.Fatalf("SetPIN: %v", err)
	}
	raw.killSessions(t)
	if err := tok.Healthy(t.Context()); !errors.Is(err, hsm.ErrUnavailable) {
		t.Fatalf("Healthy = %v; want ErrUnavailable", err)
	}
	for range 50 {
		if strings.Contains(buf.String(), "not retrying") {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.Contains(buf.String(), "not retrying") {
		t.Fatalf("log lacks the fatal login event:\n%s", buf.String())
	}
	before := strings.Count(buf.String(), "PIN_INCORRECT")
	time.Sleep(300 * time.Millisecond)
	for range 5 {
		if err := tok.Healthy(t.Context()); !errors.Is(err, hsm.ErrUnavailable) || !strings.Contains(err.Error(), "cannot be recovered") {
			t.Fatalf("Healthy = %v; want ErrUnavailable, cannot be recovered", err)
		}
	}
	if after := strings.Count(buf.String(), "PIN_INCORRECT"); after != before || before != 1 {
		t.Errorf("login attempts with the wrong PIN logged %d then %d times; want exactly 1", before, after)
	}
	if strings.Contains(buf.String(), cfg.PIN) {
		t.Error("log contains the PIN")
	}
}

func BenchmarkSignECDSAP256(b *testing.B) {
	tok := hsmtest.Open(b, hsmtest.NewToken(b, "atr-bench"))
	s, err := tok.GenerateKey(b.Context(), "k", hsm.ECDSAP256)
	if err != nil {
		b.Fatal(err)
	}
	d := make([]byte, 32)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := s.Sign(rand.Reader, d, crypto.SHA256); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkSignEd25519 signs a checkpoint-sized message with an Ed25519 key
// on a token that holds the issuing token's keys (six key pairs), from
// 2 × GOMAXPROCS goroutines.
func BenchmarkSignEd25519(b *testing.B) {
	tok := hsmtest.Open(b, hsmtest.NewToken(b, "atr-bench"))
	for _, l := range []string{"issuing", "log", "jwt", "card", "vrf"} {
		if _, err := tok.GenerateKey(b.Context(), l, hsm.ECDSAP256); err != nil {
			b.Fatal(err)
		}
	}
	s, err := tok.GenerateEd25519Key(b.Context(), "log-ed25519")
	if err != nil {
		b.Fatal(err)
	}
	msg := make([]byte, 120)
	b.SetParallelism(2)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := s.Sign(rand.Reader, msg, crypto.Hash(0)); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// A token that lost its login hides private keys; that must read as
// "unavailable", never as "key not found" (which would be a wrong start-up
// verdict and would not trigger recovery).
func TestLoggedOutIsUnavailableNotMissing(t *testing.T) {
	cfg := hsmtest.NewToken(t, "atr-logout")
	tok := hsmtest.Open(t, cfg)
	s, err := tok.GenerateKey(t.Context(), "issuing", hsm.ECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	raw := openRaw(t, cfg)
	if err := raw.p.Logout(raw.session(t)); err != nil {
		t.Fatalf("Logout: %v", err)
	}
	_, err = tok.Signer(t.Context(), hsm.URI{Object: "issuing"})
	if !errors.Is(err, hsm.ErrUnavailable) || errors.Is(err, hsm.ErrKeyNotFound) {
		t.Fatalf("Signer while logged out: %v; want ErrUnavailable", err)
	}
	waitHealthy(t, tok)
	if _, err := signOnce(t, s); err != nil {
		t.Fatalf("Sign after recovery: %v", err)
	}
}
