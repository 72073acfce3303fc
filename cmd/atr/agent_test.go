package main

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/agent-trust-registry/atr/api/client"
	"github.com/agent-trust-registry/atr/ca"
)

// testCA is a software CA (root → issuing CA → leaves) built with package
// ca, for tests that need real certificates and CRLs but no token.
type testCA struct {
	root, issuing *x509.Certificate
	issuingKey    crypto.Signer
	issuer        *ca.Issuer
	trustDomain   string
}

func newTestCA(t *testing.T, trustDomain string) *testCA {
	t.Helper()
	now := time.Now()
	rootKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rt, err := ca.RootTemplate("Test Root "+trustDomain, 0, now)
	if err != nil {
		t.Fatal(err)
	}
	root, err := ca.CreateCertificate(rt, rt, rootKey.Public(), rootKey)
	if err != nil {
		t.Fatal(err)
	}
	ik, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	it, err := ca.IntermediateTemplate("Test Issuing "+trustDomain, trustDomain, 0, now)
	if err != nil {
		t.Fatal(err)
	}
	ic, err := ca.CreateCertificate(it, root, ik.Public(), rootKey)
	if err != nil {
		t.Fatal(err)
	}
	iss, err := ca.NewIssuer(ik, ic, []*x509.Certificate{root}, ca.Profile{TrustDomain: trustDomain, ServerAuth: true,
		CRLURL: "http://127.0.0.1/v1/crl", OCSPURL: "http://127.0.0.1/v1/ocsp", Lifetime: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{root: root, issuing: ic, issuingKey: ik, issuer: iss, trustDomain: trustDomain}
}

// issue certifies pub's CSR for agent name.
func (c *testCA) issue(t *testing.T, k crypto.Signer, name string) *x509.Certificate {
	t.Helper()
	csrPEM, err := buildCSR(k)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := c.issueCSR(csrPEM, name)
	if err != nil {
		t.Fatal(err)
	}
	return leaf
}

func (c *testCA) issueCSR(csrPEM []byte, name string) (*x509.Certificate, error) {
	csr, err := ca.ParseCSR(csrPEM)
	if err != nil {
		return nil, err
	}
	serial, err := ca.NewSerial(rand.Reader)
	if err != nil {
		return nil, err
	}
	p, err := c.issuer.Prepare(csr, name, serial, time.Now())
	if err != nil {
		return nil, err
	}
	return c.issuer.Sign(p)
}

func (c *testCA) bundlePEM() []byte { return ca.EncodeCertificatesPEM(c.issuing, c.root) }

func (c *testCA) crl(t *testing.T, thisUpdate, nextUpdate time.Time, revoked ...x509.RevocationListEntry) []byte {
	t.Helper()
	der, err := c.issuer.SignCRL(big.NewInt(time.Now().UnixNano()), thisUpdate, nextUpdate, revoked)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func writeTestFile(t *testing.T, path string, data []byte, mode os.FileMode) string {
	t.Helper()
	if err := os.WriteFile(path, data, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
	return path
}

// tempFiles lists leftovers of writeAtomic in dir.
func tempFiles(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if strings.Contains(e.Name(), ".tmp-") || strings.HasSuffix(e.Name(), agentStagedSuffix) {
			out = append(out, e.Name())
		}
	}
	return out
}

func TestWriteAtomic(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "secret.key")

	t.Run("creates with the mode, whatever the umask", func(t *testing.T) {
		// A restrictive umask (safe for concurrent tests): the certificate
		// mode must still be exactly 0644 and the key's 0600.
		old := syscall.Umask(0o077)
		defer syscall.Umask(old)
		pub := filepath.Join(dir, "cert.pem")
		for _, w := range []struct {
			path string
			mode os.FileMode
		}{{p, 0o600}, {pub, 0o644}} {
			if err := writeAtomic(w.path, []byte("one"), w.mode, false); err != nil {
				t.Fatal(err)
			}
			st, err := os.Stat(w.path)
			if err != nil {
				t.Fatal(err)
			}
			if got := st.Mode().Perm(); got != w.mode {
				t.Errorf("%s: mode %04o, want %04o", w.path, got, w.mode)
			}
		}
	})
	t.Run("refuses to overwrite and leaves the file intact", func(t *testing.T) {
		err := writeAtomic(p, []byte("two"), 0o600, false)
		if !errors.Is(err, fs.ErrExist) {
			t.Fatalf("err %v, want fs.ErrExist", err)
		}
		if got, _ := os.ReadFile(p); string(got) != "one" {
			t.Errorf("content %q, want %q", got, "one")
		}
	})
	t.Run("replaces when asked", func(t *testing.T) {
		if err := writeAtomic(p, []byte("three"), 0o600, true); err != nil {
			t.Fatal(err)
		}
		if got, _ := os.ReadFile(p); string(got) != "three" {
			t.Errorf("content %q, want three", got)
		}
	})
	t.Run("refuses to write through a symlink target name", func(t *testing.T) {
		link := filepath.Join(dir, "link.key")
		if err := os.Symlink(filepath.Join(dir, "elsewhere"), link); err != nil {
			t.Fatal(err)
		}
		if err := writeAtomic(link, []byte("x"), 0o600, false); !errors.Is(err, fs.ErrExist) {
			t.Errorf("writing over a dangling symlink: err %v, want fs.ErrExist", err)
		}
		if _, err := os.Stat(filepath.Join(dir, "elsewhere")); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("the symlink target was created")
		}
	})
	t.Run("missing directory fails cleanly", func(t *testing.T) {
		if err := writeAtomic(filepath.Join(dir, "nope", "k"), []byte("x"), 0o600, false); err == nil {
			t.Error("no error writing into a missing directory")
		}
	})
	if left := tempFiles(t, dir); len(left) != 0 {
		t.Errorf("temporary files left: %v", left)
	}
}

// TestWriteAtomicNoPartialReads replaces a file many times while readers
// read it: every read must be one complete version.
func TestWriteAtomicNoPartialReads(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "cert.pem")
	versions := make([][]byte, 8)
	for i := range versions {
		versions[i] = bytes.Repeat([]byte{byte('a' + i)}, 64<<10+i)
	}
	if err := writeAtomic(p, versions[0], 0o644, false); err != nil {
		t.Fatal(err)
	}
	var stop atomic.Bool
	var wg sync.WaitGroup
	var bad atomic.Int64
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				got, err := os.ReadFile(p)
				if err != nil {
					bad.Add(1)
					continue
				}
				ok := false
				for _, v := range versions {
					if bytes.Equal(got, v) {
						ok = true
						break
					}
				}
				if !ok {
					bad.Add(1)
				}
			}
		}()
	}
	for i := range 200 {
		if err := writeAtomic(p, versions[i%len(versions)], 0o644, true); err != nil {
			t.Fatal(err)
		}
	}
	stop.Store(true)
	wg.Wait()
	if n := bad.Load(); n != 0 {
		t.Errorf("%d reads saw a missing or partial file", n)
	}
	if left := tempFiles(t, dir); len(left) != 0 {
		t.Errorf("temporary files left: %v", left)
	}
}

func TestKeygen(t *testing.T) {
	for _, tt := range []struct {
		typ  string
		want string
	}{{"", "p256"}, {"p256", "p256"}, {"p384", "p384"}, {"ed25519", "ed25519"}} {
		t.Run("type "+tt.want+"/"+tt.typ, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "agent.key")
			args := []string{"agent", "keygen", "--key", p}
			if tt.typ != "" {
				args = append(args, "--type", tt.typ)
			}
			a, out, errb := testApp(nil)
			if code := runAtr(a, args); code != 0 {
				t.Fatalf("exit %d: %s", code, errb)
			}
			st, err := os.Stat(p)
			if err != nil {
				t.Fatal(err)
			}
			if st.Mode().Perm() != 0o600 {
				t.Errorf("mode %04o, want 0600", st.Mode().Perm())
			}
			k, err := loadAgentKey(p)
			if err != nil {
				t.Fatal(err)
			}
			if got := agentKeyType(k); got != tt.want {
				t.Errorf("type %s, want %s", got, tt.want)
			}
			if !strings.Contains(out.String(), spkiFingerprint(k.Public())) {
				t.Errorf("output %q lacks the public key fingerprint", out)
			}
			before, _ := os.ReadFile(p)
			a, _, errb = testApp(nil)
			if code := runAtr(a, args); code != 1 {
				t.Errorf("second keygen: exit %d, want 1", code)
			}
			if !strings.Contains(errb.String(), "refusing to overwrite") {
				t.Errorf("stderr %q does not say it refused to overwrite", errb)
			}
			if after, _ := os.ReadFile(p); !bytes.Equal(before, after) {
				t.Error("the existing key was changed")
			}
		})
	}
	t.Run("bad type is a usage error", func(t *testing.T) {
		a, _, _ := testApp(nil)
		if code := runAtr(a, []string{"agent", "keygen", "--key", filepath.Join(t.TempDir(), "k"), "--type", "rsa1024"}); code != 2 {
			t.Errorf("exit %d, want 2", code)
		}
	})
	t.Run("key path from ATR_AGENT_KEY", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "env.key")
		a, _, errb := testApp(map[string]string{"ATR_AGENT_KEY": p})
		if code := runAtr(a, []string{"agent", "keygen"}); code != 0 {
			t.Fatalf("exit %d: %s", code, errb)
		}
		if _, err := os.Stat(p); err != nil {
			t.Error(err)
		}
	})
}

func TestReadSecretFileRefusesOpenModes(t *testing.T) {
	dir := t.TempDir()
	k, _ := generateAgentKey("p256")
	data, _ := marshalAgentKey(k)
	for _, tt := range []struct {
		mode os.FileMode
		ok   bool
	}{{0o600, true}, {0o400, true}, {0o640, false}, {0o644, false}, {0o606, false}} {
		t.Run(fmt.Sprintf("%04o", tt.mode), func(t *testing.T) {
			p := writeTestFile(t, filepath.Join(dir, fmt.Sprintf("k%o", tt.mode)), data, tt.mode)
			_, err := loadAgentKey(p)
			if (err == nil) != tt.ok {
				t.Errorf("loadAgentKey with mode %04o: err %v, want ok=%v", tt.mode, err, tt.ok)
			}
		})
	}
}

func TestAgentFlagPrecedence(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		args []string
		want agentOpts
	}{
		{"defaults", nil, nil, agentOpts{}},
		{"environment", map[string]string{"ATR_SERVER": "https://env:1", "ATR_CA_BUNDLE": "env.pem", "ATR_AGENT_KEY": "env.key",
			"ATR_AGENT_CERT": "env.pem", "ATR_API_KEY_FILE": "env.apikey", "ATR_AGENT_NAME": "env.acme", "ATR_API_KEY": "atr_env"}, nil,
			agentOpts{server: "https://env:1", caBundle: "env.pem", key: "env.key", cert: "env.pem", apiKeyFile: "env.apikey", name: "env.acme", apiKey: "atr_env"}},
		{"flags win over the environment", map[string]string{"ATR_SERVER": "https://env:1", "ATR_AGENT_KEY": "env.key"},
			[]string{"--server", "https://flag:2", "--key", "flag.key", "--chain", "c.pem"},
			agentOpts{server: "https://flag:2", key: "flag.key", chain: "c.pem"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := flag.NewFlagSet("t", flag.ContinueOnError)
			var o agentOpts
			o.bind(fs, envFrom(tt.env), afServer|afCABundle|afKey|afCert|afAPIKey|afName)
			if err := fs.Parse(tt.args); err != nil {
				t.Fatal(err)
			}
			if o != tt.want {
				t.Errorf("got %+v, want %+v", o, tt.want)
			}
		})
	}
	t.Run("there is no --api-key flag", func(t *testing.T) {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		fs.SetOutput(new(bytes.Buffer))
		var o agentOpts
		o.bind(fs, envFrom(nil), afAPIKey)
		if err := fs.Parse([]string{"--api-key", "atr_secret"}); err == nil {
			t.Error("an API key was accepted on the command line")
		}
	})
}

func TestChainPath(t *testing.T) {
	for _, tt := range []struct{ cert, override, want string }{
		{"agent.pem", "", "agent.chain.pem"},
		{"/etc/atr/agent.crt", "", "/etc/atr/agent.crt.chain.pem"},
		{"agent.pem", "other.pem", "other.pem"},
	} {
		if got := chainPath(tt.cert, tt.override); got != tt.want {
			t.Errorf("chainPath(%q, %q) = %q, want %q", tt.cert, tt.override, got, tt.want)
		}
	}
}

func TestParseSignalTarget(t *testing.T) {
	for _, tt := range []struct {
		in      string
		want    signalTarget
		wantErr bool
	}{
		{"1234", signalTarget{pid: 1234, sig: syscall.SIGHUP}, false},
		{"1234:SIGHUP", signalTarget{pid: 1234, sig: syscall.SIGHUP}, false},
		{"1234:usr1", signalTarget{pid: 1234, sig: syscall.SIGUSR1}, false},
		{"/run/x.pid:TERM", signalTarget{pidFile: "/run/x.pid", sig: syscall.SIGTERM}, false},
		{"1:HUP", signalTarget{}, true},
		{"-5", signalTarget{}, true},
		{"12:KILL", signalTarget{}, true},
		{"abc", signalTarget{}, true},
	} {
		got, err := parseSignalTarget(tt.in)
		if (err != nil) != tt.wantErr || (!tt.wantErr && got != tt.want) {
			t.Errorf("parseSignalTarget(%q) = %+v, %v; want %+v, err=%v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestRenewalDelay(t *testing.T) {
	nb := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	na := nb.Add(90 * time.Minute)
	for _, tt := range []struct {
		name string
		now  time.Time
		j    float64
		rb   time.Duration
		want time.Duration
	}{
		{"middle of the jitter: 2/3", nb, 0.5, 0, 60 * time.Minute},
		{"earliest: 2/3 - 10%", nb, 0, 0, 51 * time.Minute},
		{"latest: 2/3 + 10%", nb, 1, 0, 69 * time.Minute},
		{"later start", nb.Add(30 * time.Minute), 0.5, 0, 30 * time.Minute},
		{"overdue renews at once", nb.Add(80 * time.Minute), 0.5, 0, 0},
		{"renew-before, middle", nb, 0.5, 40 * time.Minute, 50 * time.Minute},
		{"renew-before, earliest", nb, 0, 40 * time.Minute, 45 * time.Minute},
		{"renew-before, latest", nb, 1, 40 * time.Minute, 55 * time.Minute},
		{"renew-before longer than the lifetime", nb, 0.5, 2 * time.Hour, 0},
	} {
		if got := renewalDelay(nb, na, tt.now, tt.j, tt.rb); got != tt.want {
			t.Errorf("%s: renewalDelay = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestRetryable(t *testing.T) {
	for _, tt := range []struct {
		err  error
		want bool
	}{
		{errors.New("dial tcp: connection refused"), true},
		{&client.Error{Status: 503, Code: "unavailable"}, true},
		{&client.Error{Status: 429, Code: "rate_limited"}, true},
		{&client.Error{Status: 409, Code: "conflict"}, true},
		{&client.Error{Status: 403, Code: "forbidden"}, false},
		{&client.Error{Status: 401, Code: "unauthenticated"}, false},
		{explain("renewing", &client.Error{Status: 401, Code: "unauthenticated"}), false},
		{usagef("bad"), false},
	} {
		if got := retryable(tt.err); got != tt.want {
			t.Errorf("retryable(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}

func TestExplainShowsCodeAndRequestID(t *testing.T) {
	err := explain("registering x.acme", fmt.Errorf("wrapped: %w", &client.Error{Status: 403, Code: "forbidden", Message: "not allowed", RequestID: "req-123"}))
	for _, want := range []string{"forbidden", "403", "req-123", "registering x.acme"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q lacks %q", err, want)
		}
	}
	var ce *client.Error
	if !errors.As(err, &ce) {
		t.Error("the *client.Error is not reachable with errors.As")
	}
}

// agentFiles sets up a registered agent on disk: key, certificate, chain.
type agentFiles struct {
	dir, key, cert, chain string
}

func newAgentFiles(t *testing.T, c *testCA, name string, k crypto.Signer) agentFiles {
	t.Helper()
	dir := t.TempDir()
	f := agentFiles{dir: dir, key: filepath.Join(dir, "agent.key"), cert: filepath.Join(dir, "agent.pem")}
	f.chain = chainPath(f.cert, "")
	data, err := marshalAgentKey(k)
	if err != nil {
		t.Fatal(err)
	}
	writeTestFile(t, f.key, data, 0o600)
	writeTestFile(t, f.cert, ca.EncodeCertificatesPEM(c.issue(t, k, name)), 0o644)
	writeTestFile(t, f.chain, ca.EncodeCertificatesPEM(c.issuing), 0o644)
	return f
}

// checkPair asserts that the key and certificate on disk match.
func (f agentFiles) checkPair(t *testing.T) *x509.Certificate {
	t.Helper()
	k, err := loadAgentKey(f.key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, chain, err := loadAgentCert(f.cert, f.chain)
	if err != nil {
		t.Fatal(err)
	}
	if !keyMatches(k, leaf) {
		t.Fatal("the certificate on disk does not certify the key on disk")
	}
	if len(chain) == 0 || leaf.CheckSignatureFrom(chain[0]) != nil {
		t.Fatal("the chain on disk does not sign the certificate")
	}
	return leaf
}

// fakeRotator issues through a testCA and records what it was shown.
type fakeRotator struct {
	c      *testCA
	mu     sync.Mutex
	seen   []*x509.Certificate // client certificates presented
	fail   error
	calls  int
	status *client.VerifyResult // what Verify answers (default: verified)
}

func (f *fakeRotator) Verify(context.Context, []byte, []byte) (*client.VerifyResult, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.status != nil {
		return f.status, nil
	}
	return &client.VerifyResult{Verified: true}, nil
}

func (f *fakeRotator) dial(cert tls.Certificate) (rotator, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seen = append(f.seen, cert.Leaf)
	return f, nil
}

func (f *fakeRotator) Rotate(_ context.Context, name string, csr []byte) (*client.Certificate, error) {
	f.mu.Lock()
	f.calls++
	fail := f.fail
	f.mu.Unlock()
	if fail != nil {
		return nil, fail
	}
	leaf, err := f.c.issueCSR(csr, name)
	if err != nil {
		return nil, err
	}
	return &client.Certificate{Name: name, Serial: leaf.SerialNumber.Text(16), Certificate: string(ca.EncodeCertificatesPEM(leaf)),
		Chain: string(ca.EncodeCertificatesPEM(f.c.issuing)), NotAfter: leaf.NotAfter}, nil
}

func quietLog() *logrus.Entry {
	l := logrus.New()
	l.SetOutput(new(bytes.Buffer))
	return logrus.NewEntry(l)
}

func newTestRenewer(f agentFiles, fr *fakeRotator) *renewer {
	return &renewer{keyFile: f.key, certFile: f.cert, chainFile: f.chain, dial: fr.dial, log: quietLog(), now: time.Now}
}

func TestRenewOnce(t *testing.T) {
	c := newTestCA(t, "test.local")
	ctx := context.Background()

	t.Run("new key, matching files, old certificate presented", func(t *testing.T) {
		k0, _ := generateAgentKey("p384")
		f := newAgentFiles(t, c, "bot.acme", k0)
		old := f.checkPair(t)
		fr := &fakeRotator{c: c}
		r := newTestRenewer(f, fr)
		var hooked int
		r.hooks = append(r.hooks, func(_ context.Context, leaf *x509.Certificate) error {
			hooked++
			f.checkPair(t) // the hook runs only once both files are in place
			return nil
		})
		leaf, err := r.renewOnce(ctx)
		if err != nil {
			t.Fatal(err)
		}
		got := f.checkPair(t)
		if !got.Equal(leaf) || got.Equal(old) {
			t.Error("the certificate on disk is not the renewed one")
		}
		if got.PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(old.PublicKey) {
			t.Error("renewal reused the old key")
		}
		k, _ := loadAgentKey(f.key)
		if agentKeyType(k) != "p384" {
			t.Errorf("new key type %s, want the old key's p384", agentKeyType(k))
		}
		if len(fr.seen) != 1 || !fr.seen[0].Equal(old) {
			t.Error("the old certificate was not presented for mTLS")
		}
		if hooked != 1 {
			t.Errorf("hook ran %d times, want 1", hooked)
		}
		if st, _ := os.Stat(f.key); st.Mode().Perm() != 0o600 {
			t.Errorf("key mode %04o, want 0600", st.Mode().Perm())
		}
		if left := tempFiles(t, f.dir); len(left) != 0 {
			t.Errorf("leftover files: %v", left)
		}
	})
	t.Run("refused renewal changes nothing", func(t *testing.T) {
		k0, _ := generateAgentKey("p256")
		f := newAgentFiles(t, c, "bot.acme", k0)
		keyBefore, _ := os.ReadFile(f.key)
		certBefore, _ := os.ReadFile(f.cert)
		fr := &fakeRotator{c: c, fail: &client.Error{Status: 403, Code: "forbidden", RequestID: "r1"}}
		_, err := newTestRenewer(f, fr).renewOnce(ctx)
		if err == nil || !strings.Contains(err.Error(), "r1") {
			t.Fatalf("err %v, want the refusal with its request ID", err)
		}
		if k, _ := os.ReadFile(f.key); !bytes.Equal(k, keyBefore) {
			t.Error("key changed")
		}
		if c, _ := os.ReadFile(f.cert); !bytes.Equal(c, certBefore) {
			t.Error("certificate changed")
		}
		if left := tempFiles(t, f.dir); len(left) != 0 {
			t.Errorf("leftover files: %v", left)
		}
	})
	t.Run("a certificate for another key is refused", func(t *testing.T) {
		k0, _ := generateAgentKey("p256")
		f := newAgentFiles(t, c, "bot.acme", k0)
		certBefore, _ := os.ReadFile(f.cert)
		evil := &evilRotator{c: c}
		r := newTestRenewer(f, nil)
		r.dial = func(tls.Certificate) (rotator, error) { return evil, nil }
		if _, err := r.renewOnce(ctx); err == nil || !strings.Contains(err.Error(), "another key") {
			t.Fatalf("err %v, want a refusal of the foreign certificate", err)
		}
		if c, _ := os.ReadFile(f.cert); !bytes.Equal(c, certBefore) {
			t.Error("certificate replaced by the foreign one")
		}
		f.checkPair(t)
	})
	t.Run("name mismatch is refused before any request", func(t *testing.T) {
		k0, _ := generateAgentKey("p256")
		f := newAgentFiles(t, c, "bot.acme", k0)
		fr := &fakeRotator{c: c}
		r := newTestRenewer(f, fr)
		r.name = "other.acme"
		if _, err := r.renewOnce(ctx); err == nil {
			t.Fatal("renewal of another agent's name succeeded")
		}
		if fr.calls != 0 {
			t.Error("the server was called")
		}
	})
}

// evilRotator answers with a certificate for a key the agent does not hold.
type evilRotator struct{ c *testCA }

func (e *evilRotator) Verify(context.Context, []byte, []byte) (*client.VerifyResult, error) {
	return &client.VerifyResult{Verified: true}, nil
}

func (e *evilRotator) Rotate(_ context.Context, name string, _ []byte) (*client.Certificate, error) {
	k, _ := generateAgentKey("p256")
	csr, _ := buildCSR(k)
	leaf, err := e.c.issueCSR(csr, name)
	if err != nil {
		return nil, err
	}
	return &client.Certificate{Certificate: string(ca.EncodeCertificatesPEM(leaf)), Chain: string(ca.EncodeCertificatesPEM(e.c.issuing))}, nil
}

// TestRenewRecovery replays crashes at each point of the renewal order.
func TestRenewRecovery(t *testing.T) {
	c := newTestCA(t, "test.local")
	t.Run("crash after the certificate was written: staged key moved into place", func(t *testing.T) {
		k0, _ := generateAgentKey("p256")
		f := newAgentFiles(t, c, "bot.acme", k0)
		k1, _ := generateAgentKey("p256")
		data, _ := marshalAgentKey(k1)
		writeTestFile(t, f.key+agentStagedSuffix, data, 0o600)
		writeTestFile(t, f.cert, ca.EncodeCertificatesPEM(c.issue(t, k1, "bot.acme")), 0o644)
		if err := newTestRenewer(f, &fakeRotator{c: c}).recover(); err != nil {
			t.Fatal(err)
		}
		f.checkPair(t)
		k, _ := loadAgentKey(f.key)
		if !k.Public().(*ecdsa.PublicKey).Equal(k1.Public()) {
			t.Error("the staged key is not in place")
		}
		if left := tempFiles(t, f.dir); len(left) != 0 {
			t.Errorf("leftover files: %v", left)
		}
	})
	t.Run("crash before the certificate was written: staged key discarded", func(t *testing.T) {
		k0, _ := generateAgentKey("p256")
		f := newAgentFiles(t, c, "bot.acme", k0)
		k1, _ := generateAgentKey("p256")
		data, _ := marshalAgentKey(k1)
		writeTestFile(t, f.key+agentStagedSuffix, data, 0o600)
		if err := newTestRenewer(f, &fakeRotator{c: c}).recover(); err != nil {
			t.Fatal(err)
		}
		f.checkPair(t)
		k, _ := loadAgentKey(f.key)
		if !k.Public().(*ecdsa.PublicKey).Equal(k0.Public()) {
			t.Error("the original key was replaced")
		}
		if left := tempFiles(t, f.dir); len(left) != 0 {
			t.Errorf("leftover files: %v", left)
		}
	})
	t.Run("renewOnce recovers first", func(t *testing.T) {
		k0, _ := generateAgentKey("ed25519")
		f := newAgentFiles(t, c, "bot.acme", k0)
		k1, _ := generateAgentKey("ed25519")
		data, _ := marshalAgentKey(k1)
		writeTestFile(t, f.key+agentStagedSuffix, data, 0o600)
		writeTestFile(t, f.cert, ca.EncodeCertificatesPEM(c.issue(t, k1, "bot.acme")), 0o644)
		fr := &fakeRotator{c: c}
		if _, err := newTestRenewer(f, fr).renewOnce(context.Background()); err != nil {
			t.Fatal(err)
		}
		if len(fr.seen) != 1 || !fr.seen[0].PublicKey.(ed25519.PublicKey).Equal(k1.Public()) {
			t.Error("the renewal did not authenticate with the recovered key's certificate")
		}
		f.checkPair(t)
	})
}

func TestWatch(t *testing.T) {
	c := newTestCA(t, "test.local")
	k0, _ := generateAgentKey("p256")
	f := newAgentFiles(t, c, "bot.acme", k0)
	fr := &fakeRotator{c: c}
	r := newTestRenewer(f, fr)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var renewals int
	r.hooks = append(r.hooks, func(context.Context, *x509.Certificate) error {
		renewals++
		f.checkPair(t)
		if left := tempFiles(t, f.dir); len(left) != 0 {
			t.Errorf("leftover files after a renewal: %v", left)
		}
		return nil
	})
	var delays []time.Duration
	failOnce := true
	sleep := func(ctx context.Context, d time.Duration) error {
		delays = append(delays, d)
		if renewals == 2 && failOnce {
			failOnce = false
			fr.mu.Lock()
			fr.fail = &client.Error{Status: 503, Code: "unavailable"}
			fr.mu.Unlock()
		} else {
			fr.mu.Lock()
			fr.fail = nil
			fr.mu.Unlock()
		}
		if renewals >= 4 {
			cancel()
		}
		return ctx.Err()
	}
	if err := r.watch(ctx, time.Minute, sleep); err != nil {
		t.Fatalf("watch: %v", err)
	}
	if renewals != 4 {
		t.Errorf("%d renewals, want 4", renewals)
	}
	// Lifetime 1 h + 30 s backdate: the first wait is about 2/3 of it, ±10%.
	life := time.Hour + ca.DefaultBackdate
	if d := delays[0]; d < life*17/30-time.Minute || d > life*23/30 {
		t.Errorf("first delay %v, want about 2/3 of %v", d, life)
	}
	sawRetry := false
	for _, d := range delays {
		if d == retryInitial {
			sawRetry = true
		}
	}
	if !sawRetry {
		t.Errorf("no retry after the failure; delays %v", delays)
	}

	t.Run("a refusal stops the loop", func(t *testing.T) {
		fr.mu.Lock()
		fr.fail = &client.Error{Status: 403, Code: "forbidden", RequestID: "r9"}
		fr.mu.Unlock()
		err := r.watch(context.Background(), time.Minute, func(context.Context, time.Duration) error { return nil })
		if err == nil || !strings.Contains(err.Error(), "forbidden") {
			t.Errorf("watch after a refusal: %v, want the forbidden error", err)
		}
	})
}

func TestSignalHook(t *testing.T) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGUSR1)
	defer signal.Stop(ch)
	pidFile := writeTestFile(t, filepath.Join(t.TempDir(), "self.pid"), []byte(fmt.Sprintf("%d\n", os.Getpid())), 0o644)
	st, err := parseSignalTarget(pidFile + ":USR1")
	if err != nil {
		t.Fatal(err)
	}
	if err := st.send(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ch:
	case <-time.After(5 * time.Second):
		t.Fatal("no SIGUSR1 received")
	}
}

// runAtr runs an atr command in-process and returns its exit status.
func runAtr(a *app, args []string) int { return a.run(context.Background(), args) }

// TestClientHelpHasExample: every agent, verify and log command documents an
// example and the exit statuses.
func TestClientHelpHasExample(t *testing.T) {
	for _, c := range [][]string{
		{"agent"}, {"agent", "keygen"}, {"agent", "register"}, {"agent", "renew"}, {"agent", "status"}, {"agent", "revoke"},
		{"verify"}, {"log"}, {"log", "verify"},
	} {
		name := strings.Join(c, " ")
		t.Run(name, func(t *testing.T) {
			a, out, errb := testApp(nil)
			if code := runAtr(a, append(c, "--help")); code != 0 {
				t.Fatalf("exit %d: %s", code, errb)
			}
			got := out.String()
			i := strings.Index(got, "Example:")
			if i < 0 || !strings.Contains(got[i:], "atr "+c[0]) {
				t.Fatalf("no example running 'atr %s':\n%s", c[0], got)
			}
			if len(c) > 1 && !strings.Contains(got, "Exit status: 0") {
				t.Errorf("no exit status documentation:\n%s", got)
			}
		})
	}
}
