package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agent-trust-registry/atr/hsm"
	"github.com/agent-trust-registry/atr/hsm/hsmtest"
	"github.com/agent-trust-registry/atr/registry/translog"
)

func TestMain(m *testing.M) { os.Exit(hsmtest.Main(m)) }

// devTokens is a data dir with a fresh root token and online token.
type devTokens struct {
	dir           string
	root, issuing hsm.Config
	env           map[string]string
}

func newDevTokens(t *testing.T) *devTokens {
	t.Helper()
	d := &devTokens{dir: t.TempDir(), root: hsmtest.NewToken(t, "atr-root"), issuing: hsmtest.NewToken(t, "atr-issuing")}
	d.env = map[string]string{
		"ATR_DATA_DIR":          d.dir,
		"ATR_PKCS11_MODULE":     d.issuing.Module,
		"ATR_PKCS11_TOKEN":      d.issuing.TokenLabel,
		"ATR_PKCS11_PIN":        d.issuing.PIN,
		"ATR_PKCS11_ROOT_TOKEN": d.root.TokenLabel,
		"ATR_PKCS11_ROOT_PIN":   d.root.PIN,
		"ATR_LOG_LEVEL":         "warn",
		"SOFTHSM2_CONF":         os.Getenv("SOFTHSM2_CONF"),
	}
	return d
}

// atr runs the command in-process and returns its exit status, stdout and stderr.
func (d *devTokens) atr(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	a, out, errb := testApp(d.env)
	a.argv = append([]string{"atr"}, args...)
	code := a.run(context.Background(), args)
	return code, out.String(), errb.String()
}

func (d *devTokens) mustAtr(t *testing.T, args ...string) string {
	t.Helper()
	code, out, errb := d.atr(t, args...)
	if code != 0 {
		t.Fatalf("atr %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, out, errb)
	}
	return out
}

func (d *devTokens) transcripts(t *testing.T, name string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(d.dir, "ceremonies", "*-"+name+".json"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func readTranscript(t *testing.T, path string) transcript {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var tr transcript
	if err := json.Unmarshal(data, &tr); err != nil {
		t.Fatalf("transcript %s: %v", path, err)
	}
	return tr
}

func fileSHA256(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.Sum256(data)
	return hex.EncodeToString(h[:])
}

func opensslVerify(t *testing.T, args ...string) {
	t.Helper()
	if _, err := exec.LookPath("openssl"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("openssl is required in CI")
		}
		t.Skip("openssl not installed")
	}
	out, err := exec.Command("openssl", append([]string{"verify"}, args...)...).CombinedOutput()
	if err != nil || !strings.Contains(string(out), ": OK") {
		t.Fatalf("openssl verify %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// checkTranscript checks the fields every transcript must have, that each
// output's recorded hash is the file's, that every CA private key it lists
// is sensitive and never extractable, and that no PIN appears in it.
func (d *devTokens) checkTranscript(t *testing.T, path, ceremony string, wantTokens ...string) transcript {
	t.Helper()
	tr := readTranscript(t, path)
	if tr.Ceremony != ceremony || tr.Operator != "tester" || tr.Time.IsZero() || len(tr.Command) < 2 || tr.Module == "" {
		t.Errorf("transcript %s: ceremony %q operator %q time %v command %q module %q", path, tr.Ceremony, tr.Operator, tr.Time, tr.Command, tr.Module)
	}
	if len(tr.Outputs) == 0 {
		t.Errorf("transcript %s lists no outputs", path)
	}
	for _, o := range tr.Outputs {
		if got := fileSHA256(t, o.Path); got != o.SHA256 {
			t.Errorf("transcript %s: %s sha256 %s, file has %s", path, o.Path, o.SHA256, got)
		}
	}
	for _, tok := range wantTokens {
		objs, ok := tr.Tokens[tok]
		if !ok || len(objs) == 0 {
			t.Errorf("transcript %s: no object listing for token %s", path, tok)
		}
		for _, o := range objs {
			if o.Class == "private-key" && (o.Private == nil || !o.Private.Sensitive || o.Private.Extractable || !o.Private.NeverExtractable || o.Private.Decrypt || o.Private.Unwrap || o.Private.Derive) {
				t.Errorf("transcript %s: private key %q attributes %+v", path, o.Label, o.Private)
			}
		}
	}
	data, _ := os.ReadFile(path)
	for _, pin := range []string{d.root.PIN, d.issuing.PIN} {
		if strings.Contains(string(data), pin) {
			t.Errorf("transcript %s contains a PIN", path)
		}
	}
	return tr
}

func TestCeremonies(t *testing.T) {
	d := newDevTokens(t)
	caDir := filepath.Join(d.dir, "ca")
	root, inter, bundle := filepath.Join(caDir, "root.pem"), filepath.Join(caDir, "intermediate.pem"), filepath.Join(caDir, "bundle.pem")

	// intermediate before root: refused, nothing generated.
	if code, _, errb := d.atr(t, "ceremony", "intermediate", "--operator", "tester"); code == 0 || !strings.Contains(errb, "ceremony root") {
		t.Fatalf("intermediate without a root: exit %d, stderr %s; want a refusal naming 'ceremony root'", code, errb)
	}

	d.mustAtr(t, "ceremony", "root", "--operator", "tester", "--cn", "Test Root")
	rt := d.transcripts(t, "root")
	if len(rt) != 1 {
		t.Fatalf("root transcripts: %v", rt)
	}
	tr := d.checkTranscript(t, rt[0], "root", d.root.TokenLabel)
	if len(tr.Keys) != 1 || tr.Keys[0].Token != d.root.TokenLabel || len(tr.Certificates) != 1 {
		t.Errorf("root transcript keys %+v certificates %+v", tr.Keys, tr.Certificates)
	}
	if _, ok := tr.Tokens[d.issuing.TokenLabel]; ok {
		t.Errorf("the root ceremony touched the online token")
	}
	opensslVerify(t, "-CAfile", root, root)

	t.Run("root refuses to overwrite", func(t *testing.T) {
		before := fileSHA256(t, root)
		code, _, errb := d.atr(t, "ceremony", "root", "--operator", "tester")
		if code != 1 || !strings.Contains(errb, "refusing to overwrite") {
			t.Errorf("second root ceremony: exit %d, stderr %s; want exit 1 and a refusal", code, errb)
		}
		d.mustAtr(t, "ceremony", "root", "--operator", "tester", "--if-missing")
		if got := len(d.transcripts(t, "root")); got != 1 {
			t.Errorf("root transcripts after refusals: %d, want 1", got)
		}
		if fileSHA256(t, root) != before {
			t.Error("root.pem changed")
		}
	})

	d.mustAtr(t, "ceremony", "intermediate", "--operator", "tester", "--trust-domain", "example.org")
	it := d.transcripts(t, "intermediate")
	if len(it) != 1 {
		t.Fatalf("intermediate transcripts: %v", it)
	}
	tr = d.checkTranscript(t, it[0], "intermediate", d.root.TokenLabel, d.issuing.TokenLabel)
	if tr.TrustDomain != "example.org" || len(tr.Keys) != 1 || tr.Keys[0].Token != d.issuing.TokenLabel {
		t.Errorf("intermediate transcript trust domain %q keys %+v", tr.TrustDomain, tr.Keys)
	}
	opensslVerify(t, "-CAfile", root, inter)
	opensslVerify(t, "-CAfile", root, "-untrusted", bundle, inter)

	t.Run("intermediate refuses to overwrite", func(t *testing.T) {
		code, _, errb := d.atr(t, "ceremony", "intermediate", "--operator", "tester")
		if code != 1 || !strings.Contains(errb, "refusing to overwrite") {
			t.Errorf("second intermediate ceremony: exit %d, stderr %s", code, errb)
		}
		d.mustAtr(t, "ceremony", "intermediate", "--operator", "tester", "--if-missing")
	})

	t.Run("online token holds issuing key, intermediate and root", func(t *testing.T) {
		tok := hsmtest.Open(t, d.issuing)
		certs, err := tok.Certificates(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		roots, inters := splitCAs(certs)
		if len(roots) != 1 || len(inters) != 1 {
			t.Fatalf("online token: %d roots, %d intermediates; want 1 and 1", len(roots), len(inters))
		}
		m, err := loadCA(context.Background(), Config{PKCS11Token: d.issuing.TokenLabel}, tok, time.Now())
		if err != nil {
			t.Fatalf("loadCA: %v", err)
		}
		if m.issuing.Label != defaultIssuingLabel {
			t.Errorf("issuing label %q, want %q", m.issuing.Label, defaultIssuingLabel)
		}
	})

	d.mustAtr(t, "ceremony", "log-key", "--operator", "tester")
	if lt := d.transcripts(t, "log-key"); len(lt) != 1 {
		t.Fatalf("log-key transcripts: %v", lt)
	} else {
		d.checkTranscript(t, lt[0], "log-key", d.issuing.TokenLabel)
	}
	if code, _, errb := d.atr(t, "ceremony", "log-key", "--operator", "tester"); code != 1 || !strings.Contains(errb, "refusing to overwrite") {
		t.Errorf("second log-key ceremony: exit %d, stderr %s", code, errb)
	}

	d.mustAtr(t, "ceremony", "vrf-key", "--operator", "tester")
	if vt := d.transcripts(t, "vrf-key"); len(vt) != 1 {
		t.Fatalf("vrf-key transcripts: %v", vt)
	} else if tr := d.checkTranscript(t, vt[0], "vrf-key", d.issuing.TokenLabel); len(tr.Keys) != 1 || tr.Keys[0].Algorithm != "rsa-3072" || tr.Keys[0].Label != defaultVRFKeyLabel {
		t.Errorf("vrf-key transcript keys %+v, want one rsa-3072 key %q", tr.Keys, defaultVRFKeyLabel)
	}
	t.Run("vrf-key", func(t *testing.T) {
		vrfPEM := filepath.Join(d.dir, "ca", vrfKeyPEMName)
		data, err := os.ReadFile(vrfPEM)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := translog.ParseVRFPublicKeyPEM(data); err != nil {
			t.Errorf("%s: %v", vrfKeyPEMName, err)
		}
		if code, _, errb := d.atr(t, "ceremony", "vrf-key", "--operator", "tester"); code != 1 || !strings.Contains(errb, "refusing to overwrite") {
			t.Errorf("second vrf-key ceremony: exit %d, stderr %s", code, errb)
		}
		d.mustAtr(t, "ceremony", "vrf-key", "--operator", "tester", "--if-missing")
		if again, _ := os.ReadFile(vrfPEM); !bytes.Equal(again, data) {
			t.Error("vrf-key.pem changed on --if-missing")
		}
		if vt := d.transcripts(t, "vrf-key"); len(vt) != 1 {
			t.Errorf("vrf-key transcripts after --if-missing: %v, want still 1", vt)
		}
		// An existing key that is not an acceptable VRF key is never adopted.
		if code, _, errb := d.atr(t, "ceremony", "vrf-key", "--operator", "tester", "--if-missing", "--label", defaultLogKeyLabel); code != 1 || !strings.Contains(errb, "cannot be the VRF key") {
			t.Errorf("vrf-key --if-missing over the ECDSA log key: exit %d, stderr %s", code, errb)
		}
		// --algorithm: rsa-2048 on request (written under another label and
		// to another directory so the default key stays), nothing weaker.
		out := t.TempDir()
		d.mustAtr(t, "ceremony", "vrf-key", "--operator", "tester", "--algorithm", "rsa-2048", "--label", "atr-vrf-2048", "--out-dir", out)
		data, err = os.ReadFile(filepath.Join(out, vrfKeyPEMName))
		if err != nil {
			t.Fatal(err)
		}
		if k, err := translog.ParseVRFPublicKeyPEM(data); err != nil || k.N.BitLen() != 2048 {
			t.Errorf("--algorithm rsa-2048: %v, %v", k, err)
		}
		// --if-missing over the existing RSA-3072 key keeps it and says so.
		if code, _, errb := d.atr(t, "ceremony", "vrf-key", "--operator", "tester", "--if-missing", "--algorithm", "rsa-2048"); code != 0 || !strings.Contains(errb, "--algorithm applies only to a new key") {
			t.Errorf("vrf-key --if-missing --algorithm rsa-2048 over an RSA-3072 key: exit %d, stderr %s", code, errb)
		}
		for _, alg := range []string{"ecdsa-p256", "rsa-1024", "rsa2048"} {
			if code, _, errb := d.atr(t, "ceremony", "vrf-key", "--operator", "tester", "--algorithm", alg, "--label", "atr-vrf-x"); code != 2 || !strings.Contains(errb, "rsa-2048, rsa-3072, rsa-4096") {
				t.Errorf("vrf-key --algorithm %s: exit %d, stderr %s", alg, code, errb)
			}
		}
	})

	t.Run("show is read-only", func(t *testing.T) {
		out1 := d.mustAtr(t, "ceremony", "show")
		out2 := d.mustAtr(t, "ceremony", "show", "--root")
		for _, want := range []string{defaultIssuingLabel, defaultLogKeyLabel, defaultVRFKeyLabel, `"never_extractable": true`} {
			if !strings.Contains(out1, want) {
				t.Errorf("show lacks %q:\n%s", want, out1)
			}
		}
		if !strings.Contains(out2, defaultRootLabel) {
			t.Errorf("show --root lacks %q:\n%s", defaultRootLabel, out2)
		}
		if again := d.mustAtr(t, "ceremony", "show"); again != out1 {
			t.Error("the token changed between two show runs")
		}
	})

	t.Run("rotate-intermediate", func(t *testing.T) {
		before := fileSHA256(t, inter)
		d.mustAtr(t, "ceremony", "rotate-intermediate", "--operator", "tester", "--label", "atr-issuing-2", "--lifetime", "9000h")
		if rt := d.transcripts(t, "rotate-intermediate"); len(rt) != 1 {
			t.Fatalf("rotate transcripts: %v", rt)
		} else {
			d.checkTranscript(t, rt[0], "rotate-intermediate", d.root.TokenLabel, d.issuing.TokenLabel)
		}
		if fileSHA256(t, inter) == before {
			t.Error("intermediate.pem unchanged after rotation")
		}
		opensslVerify(t, "-CAfile", root, inter)
		tok := hsmtest.Open(t, d.issuing)
		certs, err := tok.Certificates(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		_, inters := splitCAs(certs)
		if len(inters) != 2 {
			t.Errorf("intermediates after rotation: %d, want 2 (the old one stays)", len(inters))
		}
		m, err := loadCA(context.Background(), Config{PKCS11Token: d.issuing.TokenLabel}, tok, time.Now().Add(time.Minute))
		if err != nil {
			t.Fatal(err)
		}
		if m.issuing.Label != "atr-issuing-2" {
			t.Errorf("the server would issue from %q, want the newest, atr-issuing-2", m.issuing.Label)
		}
		if code, _, _ := d.atr(t, "ceremony", "rotate-intermediate", "--operator", "tester", "--label", "atr-issuing-2"); code != 1 {
			t.Errorf("rotating onto an existing label: exit %d, want 1", code)
		}
	})
}

func TestServeNeverTouchesRootToken(t *testing.T) {
	a, out, _ := testApp(nil)
	a.run(context.Background(), []string{"serve", "--help"})
	for _, f := range []string{"-root-token", "-root-pin-file"} {
		if strings.Contains(out.String(), f) {
			t.Errorf("serve accepts %s: the server must only log into the online token", f)
		}
	}
}
