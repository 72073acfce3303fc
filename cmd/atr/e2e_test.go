package main

// End-to-end tests of the real binary: a development registry set up the way
// scripts/dev-up.sh does it (softhsm/init-tokens.sh, the ceremonies, an API
// key, `atr serve`), driven by `atr agent …`, `atr verify` and
// `atr log verify` as separate processes. Skipped with -short; in CI
// (CI=true) a missing SoftHSM2 is a failure.

import (
	"bufio"
	"bytes"
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	_ "github.com/mattn/go-sqlite3" // the dev server's database, tampered with in e2eTamperedLog

	"github.com/agent-trust-registry/atr/agent"
	"github.com/agent-trust-registry/atr/api/client"
	"github.com/agent-trust-registry/atr/ca"
)

// e2eEnv is a running development registry.
type e2eEnv struct {
	bin, dataDir, addr string
	env                []string
}

// syncBuffer is a bytes.Buffer safe for a process writing while a test reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

func requireSoftHSM(t *testing.T) {
	t.Helper()
	_, errUtil := exec.LookPath("softhsm2-util")
	_, errMod := os.Stat(defaultModule)
	if errUtil == nil && errMod == nil {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("SoftHSM2 is required in CI (softhsm2-util: %v, module: %v)", errUtil, errMod)
	}
	t.Skipf("SoftHSM2 not installed (softhsm2-util: %v, module: %v)", errUtil, errMod)
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// newE2E builds the binary, creates the dev tokens and ceremonies, an owner
// API key for namespace "acme", and starts `atr serve`.
func newE2E(t *testing.T) *e2eEnv {
	t.Helper()
	e := setupE2E(t)
	e.serve(t)
	return e
}

// setupE2E is newE2E without starting the server; env entries (KEY=value)
// are added to the environment of every command.
func setupE2E(t *testing.T, env ...string) *e2eEnv {
	t.Helper()
	requireSoftHSM(t)
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	e := &e2eEnv{bin: filepath.Join(tmp, "atr"), dataDir: filepath.Join(tmp, "var"), addr: freeAddr(t)}
	build := exec.Command("go", "build", "-o", e.bin, "./cmd/atr")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	if out, err := exec.Command(filepath.Join(root, "softhsm", "init-tokens.sh"), e.dataDir, filepath.Join(e.dataDir, "pin")).CombinedOutput(); err != nil {
		t.Fatalf("init-tokens.sh: %v\n%s", err, out)
	}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "ATR_") && !strings.HasPrefix(kv, "SOFTHSM2_CONF=") {
			e.env = append(e.env, kv)
		}
	}
	e.env = append(e.env,
		"SOFTHSM2_CONF="+filepath.Join(e.dataDir, "softhsm2.conf"),
		"ATR_DATA_DIR="+e.dataDir,
		"ATR_LISTEN="+e.addr,
		"ATR_PKCS11_PIN_FILE="+filepath.Join(e.dataDir, "pin"),
		"ATR_PKCS11_ROOT_PIN_FILE="+filepath.Join(e.dataDir, "pin"),
		"ATR_LOG_LEVEL=warn",
	)
	e.env = append(e.env, env...)
	// Short-lived leaves, when the server offers them: the watch test's
	// renewals then run against certificates a minute from expiry.
	if _, help, _ := e.atr(t, "serve", "--help"); strings.Contains(help, "ATR_LEAF_LIFETIME") {
		e.env = append(e.env, "ATR_LEAF_LIFETIME=1m")
	}
	for _, c := range []string{"root", "intermediate", "log-key", "log-key-ed25519", "vrf-key", "jwt-key", "card-key"} {
		e.must(t, "ceremony", c, "--if-missing", "--operator", "e2e")
	}
	e.must(t, "apikey", "create", "--owner", "billing-team", "--namespace", "acme", "--scopes", "agents:read,agents:write",
		"--expires-in", "24h", "--out", filepath.Join(e.dataDir, "team.apikey"))
	e.env = append(e.env, "ATR_SERVER=https://"+e.addr, "ATR_CA_BUNDLE="+e.bundle())
	return e
}

func (e *e2eEnv) bundle() string { return filepath.Join(e.dataDir, "ca", "bundle.pem") }
func (e *e2eEnv) apiKey() string { return filepath.Join(e.dataDir, "team.apikey") }

// serve starts `atr serve` and waits until /healthz answers. The returned
// func stops it (SIGTERM; it also runs at the end of the test).
func (e *e2eEnv) serve(t *testing.T) (stop func()) {
	t.Helper()
	cmd := exec.Command(e.bin, "serve")
	cmd.Env = e.env
	var logs syncBuffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-done:
			case <-time.After(30 * time.Second):
				cmd.Process.Kill()
				<-done
			}
			if t.Failed() {
				t.Logf("atr serve logs:\n%s", logs.String())
			}
		})
	}
	t.Cleanup(stop)
	deadline := time.Now().Add(90 * time.Second)
	for {
		select {
		case err := <-done:
			t.Fatalf("atr serve exited early: %v\n%s", err, logs.String())
		default:
		}
		if code, _, _ := e.atr(t, "healthcheck", "--listen", e.addr, "--timeout", "2s"); code == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("atr serve not healthy after 90s:\n%s", logs.String())
		}
		time.Sleep(300 * time.Millisecond)
	}
}

// atr runs the binary and returns its exit status, stdout and stderr.
func (e *e2eEnv) atr(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, e.bin, args...)
	cmd.Env = e.env
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, out.String(), errb.String()
	case errors.As(err, &ee):
		return ee.ExitCode(), out.String(), errb.String()
	}
	t.Fatalf("running atr %s: %v", strings.Join(args, " "), err)
	return -1, "", ""
}

func (e *e2eEnv) must(t *testing.T, args ...string) string {
	t.Helper()
	code, out, errb := e.atr(t, args...)
	if code != 0 {
		t.Fatalf("atr %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, out, errb)
	}
	return out
}

func (e *e2eEnv) expectFail(t *testing.T, want int, args ...string) string {
	t.Helper()
	code, out, errb := e.atr(t, args...)
	if code != want {
		t.Fatalf("atr %s: exit %d, want %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, want, out, errb)
	}
	return out + errb
}

// apiClient is a Go client trusting the dev CA bundle.
func (e *e2eEnv) apiClient(t *testing.T) *client.Client {
	t.Helper()
	pool, err := loadCertPool(e.bundle())
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New("https://"+e.addr, client.WithRootCAs(pool))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// fetchCRL writes the current CRL to path, or reports false when the server
// does not serve one.
func (e *e2eEnv) fetchCRL(t *testing.T, path string) bool {
	t.Helper()
	der, err := e.apiClient(t).CRL(context.Background())
	if err != nil {
		t.Logf("no CRL from the server (%v): skipping the offline checks", err)
		return false
	}
	writeTestFile(t, path, der, 0o644)
	return true
}

func TestE2E(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test of the real binary; skipped with -short")
	}
	e := newE2E(t)
	t.Run("lifecycle", func(t *testing.T) { e2eLifecycle(t, e) })
	t.Run("watch", func(t *testing.T) { e2eWatch(t, e) })
	// Last: it corrupts the log.
	t.Run("tampered log row", func(t *testing.T) { e2eTamperedLog(t, e) })
}

// e2eTamperedLog replays an insider with write access to the database: one
// stored log entry is rewritten behind the registry's back (a revocation
// turned into something else, say). `atr log verify --full` recomputes the
// tree from the served entries and must refuse it against the signed
// checkpoint, even for an auditor with no earlier state.
func e2eTamperedLog(t *testing.T, e *e2eEnv) {
	logKey := filepath.Join(e.dataDir, "ca", "log-key.pem")
	e.must(t, "log", "verify", "--log-key", logKey, "--state", filepath.Join(t.TempDir(), "before.state"), "--full")

	db, err := sql.Open("sqlite3", "file:"+filepath.Join(e.dataDir, "atr.db")+"?_busy_timeout=5000")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	// The first revocation entry gets an earlier date: still a canonical
	// entry, so only the Merkle root can tell.
	var idx int64
	var data []byte
	if err := db.QueryRow(`SELECT idx, data FROM log_entries WHERE CAST(data AS TEXT) LIKE '%"type":"revoke"%' ORDER BY idx LIMIT 1`).Scan(&idx, &data); err != nil {
		t.Fatalf("finding a revoke entry: %v", err)
	}
	// Tamper only with an entry a signed checkpoint already covers (the log
	// signs at most one new checkpoint a second).
	deadline := time.Now().Add(30 * time.Second)
	for {
		raw, err := e.apiClient(t).Checkpoint(t.Context())
		if err != nil {
			t.Fatalf("fetching the checkpoint: %v", err)
		}
		if lines := strings.SplitN(string(raw), "\n", 3); len(lines) == 3 {
			if size, err := strconv.ParseInt(lines[1], 10, 64); err == nil && size > idx {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no checkpoint covers entry %d: %s", idx, raw)
		}
		time.Sleep(250 * time.Millisecond)
	}
	forged := bytes.Replace(data, []byte(`"time":"2`), []byte(`"time":"1`), 1)
	if bytes.Equal(forged, data) {
		t.Fatalf("entry %d has no time to forge: %s", idx, data)
	}
	if _, err := db.Exec(`UPDATE log_entries SET data = ? WHERE idx = ?`, forged, idx); err != nil {
		t.Fatalf("tampering with log entry %d: %v", idx, err)
	}
	t.Logf("forged log entry %d: %s", idx, forged)
	out := e.expectFail(t, 1, "log", "verify", "--log-key", logKey, "--state", filepath.Join(t.TempDir(), "after.state"), "--full")
	t.Logf("log verify on the tampered log: %s", strings.TrimSpace(out))
}

func e2eLifecycle(t *testing.T, e *e2eEnv) {
	dir := t.TempDir()
	f := agentFiles{dir: dir, key: filepath.Join(dir, "agent.key"), cert: filepath.Join(dir, "agent.pem")}
	f.chain = agent.ChainPath(f.cert, "")
	const name = "billing-bot.acme"

	e.must(t, "agent", "keygen", "--key", f.key)
	if st, err := os.Stat(f.key); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v, mode %v", err, st.Mode())
	}
	out := e.must(t, "agent", "register", "--name", name, "--api-key-file", e.apiKey(), "--key", f.key, "--cert", f.cert,
		"--capability", "invoices:read", "--metadata", "team=billing")
	if !strings.Contains(out, "log index:") || !strings.Contains(out, "serial:") {
		t.Errorf("register output lacks the log index and serial:\n%s", out)
	}
	first := f.checkPair(t)
	e.expectFail(t, 1, "agent", "register", "--name", name, "--api-key-file", e.apiKey(), "--key", f.key, "--cert", f.cert)

	t.Run("register without an API key is a usage error", func(t *testing.T) {
		e.expectFail(t, 2, "agent", "register", "--name", "x.acme", "--key", f.key, "--cert", filepath.Join(dir, "x.pem"))
	})
	t.Run("register outside the key's namespace is refused with code and request ID", func(t *testing.T) {
		k := filepath.Join(dir, "evil.key")
		e.must(t, "agent", "keygen", "--key", k)
		msg := e.expectFail(t, 1, "agent", "register", "--name", "bot.evil", "--api-key-file", e.apiKey(), "--key", k, "--cert", filepath.Join(dir, "evil.pem"))
		if !strings.Contains(msg, "request ID") {
			t.Errorf("refusal does not show the request ID: %s", msg)
		}
	})

	e.must(t, "verify", f.cert, "--chain", f.chain)

	out = e.must(t, "agent", "renew", "--key", f.key, "--cert", f.cert)
	renewed := f.checkPair(t)
	if renewed.Equal(first) {
		t.Fatal("renew did not replace the certificate")
	}
	if keyOf(t, renewed).Equal(first.PublicKey) {
		t.Error("renew kept the old key")
	}
	if left := tempFiles(t, dir); len(left) != 0 {
		t.Errorf("leftover files after renew: %v", left)
	}
	t.Logf("renew: %s", strings.TrimSpace(out))

	e.must(t, "verify", f.cert, "--chain", f.chain)
	t.Run("the receipt kept beside the certificate verifies offline; an altered one does not", func(t *testing.T) {
		receipt := agent.ReceiptPath(f.cert)
		e.must(t, "verify", f.cert, "--receipt", receipt)
		data, err := os.ReadFile(receipt)
		if err != nil {
			t.Fatal(err)
		}
		i := bytes.Index(data, []byte(`"leaf":"`)) + len(`"leaf":"`) + 10
		altered := append([]byte(nil), data...)
		altered[i] ^= 0x01 // a base64 character of the leaf
		bad := filepath.Join(dir, "altered.receipt.json")
		if err := os.WriteFile(bad, altered, 0o600); err != nil {
			t.Fatal(err)
		}
		e.expectFail(t, 1, "verify", f.cert, "--receipt", bad)
	})
	if out := e.must(t, "agent", "status", "--api-key-file", e.apiKey(), "--cert", f.cert); !strings.Contains(out, "status: active") {
		t.Errorf("status output:\n%s", out)
	}
	e.must(t, "agent", "status", "--cert", f.cert)

	state := filepath.Join(dir, "log.state")
	logKey := filepath.Join(e.dataDir, "ca", "log-key.pem")
	out = e.must(t, "log", "verify", "--log-key", logKey, "--state", state, "--cert", f.cert, "--full")
	if !strings.Contains(out, "issuance included") {
		t.Errorf("log verify output:\n%s", out)
	}

	crl := filepath.Join(dir, "atr.crl")
	offline := e.fetchCRL(t, crl)
	if offline {
		e.must(t, "verify", f.cert, "--chain", f.chain, "--offline", "--bundle", e.bundle(), "--crl", crl)
		t.Log("offline verify against the served CRL: verified")
	}

	keyBefore, _ := os.ReadFile(f.key)
	certBefore, _ := os.ReadFile(f.cert)
	e.must(t, "agent", "revoke", "--cert", f.cert, "--reason", "keyCompromise", "--api-key-file", e.apiKey())

	msg := e.expectFail(t, 1, "verify", f.cert, "--chain", f.chain)
	if !strings.Contains(msg, "NOT VERIFIED") {
		t.Errorf("verify of a revoked certificate:\n%s", msg)
	}
	if offline && e.fetchCRL(t, crl) {
		e.expectFail(t, 1, "verify", f.cert, "--chain", f.chain, "--offline", "--bundle", e.bundle(), "--crl", crl)
	}
	msg = e.expectFail(t, 1, "agent", "renew", "--key", f.key, "--cert", f.cert)
	if !strings.Contains(msg, "refused") {
		t.Errorf("renew of a revoked agent: %s", msg)
	}
	if k, _ := os.ReadFile(f.key); !bytes.Equal(k, keyBefore) {
		t.Error("refused renew changed the key")
	}
	if c, _ := os.ReadFile(f.cert); !bytes.Equal(c, certBefore) {
		t.Error("refused renew changed the certificate")
	}
	if left := tempFiles(t, dir); len(left) != 0 {
		t.Errorf("leftover files after a refused renew: %v", left)
	}
	e.expectFail(t, 1, "agent", "status", "--api-key-file", e.apiKey(), "--cert", f.cert)

	// The log grew (rotation, revocation) and is still consistent with the
	// state saved before.
	out = e.must(t, "log", "verify", "--log-key", logKey, "--state", state)
	if !strings.Contains(out, "consistent with the checkpoint seen before") {
		t.Errorf("second log verify:\n%s", out)
	}
}

func keyOf(t *testing.T, c *x509.Certificate) interface{ Equal(crypto.PublicKey) bool } {
	t.Helper()
	k, ok := c.PublicKey.(interface{ Equal(crypto.PublicKey) bool })
	if !ok {
		t.Fatalf("public key %T has no Equal", c.PublicKey)
	}
	return k
}

// e2eWatch runs `atr agent renew --watch` and samples the files while it
// renews several times.
func e2eWatch(t *testing.T, e *e2eEnv) {
	const renewals = 3
	dir := t.TempDir()
	f := agentFiles{dir: dir, key: filepath.Join(dir, "watch.key"), cert: filepath.Join(dir, "watch.pem")}
	f.chain = agent.ChainPath(f.cert, "")
	e.must(t, "agent", "keygen", "--key", f.key, "--type", "ed25519")
	e.must(t, "agent", "register", "--name", "watch-bot.acme", "--api-key-file", e.apiKey(), "--key", f.key, "--cert", f.cert)
	f.checkPair(t)

	hookLog := filepath.Join(t.TempDir(), "hook.log")
	// The hook checks, at the moment it runs, that key and certificate match
	// (openssl) and that no staged key or temporary file is left.
	hook := fmt.Sprintf(`if [ "$(openssl pkey -in "$ATR_AGENT_KEY" -pubout)" = "$(openssl x509 -in "$ATR_AGENT_CERT" -pubkey -noout)" ] `+
		`&& [ ! -e "$ATR_AGENT_KEY.next" ] && [ -z "$(find %s -name '.*.tmp-*')" ]; then echo "ok $ATR_AGENT_SERIAL"; else echo "BAD $ATR_AGENT_SERIAL"; fi >> %s`, dir, hookLog)
	// Renew about 8 s after each issuance (±10 % of the time to the renewal
	// point: at least ~3 s, so a renewal never starts in the moment between
	// the third hook and the SIGTERM below). The default schedule (2/3 of the
	// lifetime, jittered) would take ~30 s a renewal even with the server's
	// 1-minute leaves; it is tested in agent/renew_test.go.
	life := first(t, f).NotAfter.Sub(first(t, f).NotBefore)
	args := []string{"agent", "renew", "--watch", "--key", f.key, "--cert", f.cert, "--exec", hook, "--max-backoff", "5s",
		"--renew-before", (life - ca.DefaultBackdate - 8*time.Second).String()}
	cmd := exec.Command(e.bin, args...)
	cmd.Env = e.env
	var logs syncBuffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	stopped := false
	defer func() {
		if !stopped {
			cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("renew --watch logs:\n%s", logs.String())
		}
	}()

	// Sample key and certificate at random moments. The two renames of a
	// renewal are microseconds apart; a sample that straddles them must see
	// a matching pair when it looks again a moment later.
	var stopSampling atomic.Bool
	var samples, straddled atomic.Int64
	sampleErr := make(chan error, 1)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for !stopSampling.Load() {
			time.Sleep(time.Duration(rand.IntN(40)) * time.Millisecond)
			if pairMatches(f) == nil {
				samples.Add(1)
				continue
			}
			straddled.Add(1)
			time.Sleep(200 * time.Millisecond)
			if err := pairMatches(f); err != nil {
				select {
				case sampleErr <- err:
				default:
				}
				return
			}
		}
	}()

	deadline := time.Now().Add(5 * time.Minute)
	var lines []string
	for len(lines) < renewals {
		select {
		case err := <-done:
			stopped = true
			t.Fatalf("renew --watch exited: %v", err)
		case err := <-sampleErr:
			t.Fatalf("key and certificate on disk do not match: %v", err)
		case <-time.After(500 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d renewals in 5 minutes", len(lines))
		}
		lines = readLines(t, hookLog)
	}
	stopSampling.Store(true)
	wg.Wait()
	select {
	case err := <-sampleErr:
		t.Fatalf("key and certificate on disk do not match: %v", err)
	default:
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-done:
		stopped = true
		if err != nil {
			t.Errorf("renew --watch after SIGTERM: %v, want exit 0", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("renew --watch did not stop on SIGTERM")
	}
	for _, l := range lines {
		if !strings.HasPrefix(l, "ok ") {
			t.Errorf("hook saw a bad state: %q", l)
		}
	}
	last := f.checkPair(t)
	if got := readLines(t, hookLog); !strings.HasSuffix(got[len(got)-1], " "+ca.FormatSerial(last.SerialNumber)) {
		t.Errorf("the last hook ran for %q, the certificate on disk is %s", got[len(got)-1], ca.FormatSerial(last.SerialNumber))
	}
	if left := tempFiles(t, dir); len(left) != 0 {
		t.Errorf("leftover files: %v", left)
	}
	e.must(t, "verify", f.cert, "--chain", f.chain)
	t.Logf("%d renewals; %d samples matched, %d straddled a renewal and matched on a second look", len(lines), samples.Load(), straddled.Load())
}

func first(t *testing.T, f agentFiles) *x509.Certificate {
	t.Helper()
	leaf, _, err := agent.LoadCertificate(f.cert, "")
	if err != nil {
		t.Fatal(err)
	}
	return leaf
}

// pairMatches reads key and certificate and reports whether they match, the
// way a program loading them would (tls.LoadX509KeyPair).
func pairMatches(f agentFiles) error {
	_, err := tls.LoadX509KeyPair(f.cert, f.key)
	return err
}

func readLines(t *testing.T, path string) []string {
	t.Helper()
	fh, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	var out []string
	sc := bufio.NewScanner(fh)
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); l != "" {
			out = append(out, l)
		}
	}
	return out
}
