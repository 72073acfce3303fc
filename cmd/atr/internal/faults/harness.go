package faults

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	_ "github.com/lib/pq"           // PostgreSQL driver for direct checks
	_ "github.com/mattn/go-sqlite3" // SQLite driver for direct checks
	"github.com/sirupsen/logrus"

	"github.com/agent-trust-registry/atr/api/client"
)

// BinaryEnv names the environment variable holding the path of the atr
// binary under test (set by TestMain after building it, or by the caller).
const BinaryEnv = "ATR_FAULTS_BIN"

// Soak reports whether the long soak mode is on (ATR_SOAK=1).
func Soak() bool { return os.Getenv("ATR_SOAK") == "1" }

// inCI reports whether missing dependencies must fail rather than skip.
func inCI() bool { return os.Getenv("CI") == "true" }

// missing skips the test, or fails it under CI=true.
func missing(t testing.TB, format string, args ...any) {
	t.Helper()
	if inCI() {
		t.Fatalf("faults: "+format+" (required under CI=true)", args...)
	}
	t.Skipf("faults: "+format, args...)
}

// RepoRoot returns the module root (the directory holding go.mod) above the
// working directory.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("faults: working directory: %w", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("faults: go.mod not found above the working directory")
		}
		dir = parent
	}
}

// BuildBinary builds ./cmd/atr into dir and returns the binary's path.
func BuildBinary(ctx context.Context, dir string) (string, error) {
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	out := filepath.Join(dir, "atr")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "./cmd/atr")
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("faults: go build ./cmd/atr: %w\n%s", err, b)
	}
	return out, nil
}

// Env is one ATR installation laid out like scripts/dev-up.sh: a data dir
// with softhsm2.conf, tokens/, pin, ca/*.pem, and a database holding the
// admin key.
type Env struct {
	Bin string
	Dir string
	// DatabaseURL is what the servers use (possibly through a Proxy);
	// DirectURL is the same database without any proxy, for checks.
	DatabaseURL, DirectURL string
	Dialect                string // "sqlite" or "postgres"
	AdminKey               string
	Roots                  *x509.CertPool
	TrustDomain            string
	// Extra is appended to every server's environment (ATR_REDIS_URL=...).
	Extra []string
}

// EnvOptions configures NewEnv.
type EnvOptions struct {
	// Postgres selects a fresh PostgreSQL database instead of SQLite.
	Postgres bool
	// DatabaseURL, when set, is what servers use instead of the direct URL
	// (a Proxy in front of PostgreSQL).
	DatabaseURL func(direct string) string
}

// NewEnv creates the data dir, tokens, ceremonies and admin key.
func NewEnv(t testing.TB, o EnvOptions) *Env {
	t.Helper()
	bin := os.Getenv(BinaryEnv)
	if bin == "" {
		t.Fatalf("faults: %s is not set (TestMain builds the binary)", BinaryEnv)
	}
	if _, err := exec.LookPath("softhsm2-util"); err != nil {
		missing(t, "softhsm2-util not installed")
	}
	if _, err := os.Stat("/usr/lib/softhsm/libsofthsm2.so"); err != nil {
		missing(t, "libsofthsm2.so not installed")
	}
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	e := &Env{Bin: bin, Dir: dir, Dialect: "sqlite", TrustDomain: "atr.local"}
	e.DirectURL = "sqlite:" + filepath.Join(dir, "atr.db")
	if o.Postgres {
		e.Dialect = "postgres"
		e.DirectURL = NewPostgresDB(t)
	}
	e.DatabaseURL = e.DirectURL
	if o.DatabaseURL != nil {
		e.DatabaseURL = o.DatabaseURL(e.DirectURL)
	}
	init := exec.Command(filepath.Join(root, "softhsm", "init-tokens.sh"), dir, filepath.Join(dir, "pin"))
	init.Env = e.baseEnv()
	if b, err := init.CombinedOutput(); err != nil {
		t.Fatalf("faults: init-tokens.sh: %v\n%s", err, b)
	}
	for _, c := range []string{"root", "intermediate", "log-key", "log-key-ed25519", "vrf-key"} {
		e.Atr(t, "ceremony", c, "--operator", "faults")
	}
	keyFile := filepath.Join(dir, "admin.apikey")
	e.Atr(t, "apikey", "create", "--owner", "admin", "--namespace", "admin", "--scopes", "admin", "--expires-in", "24h", "--out", keyFile)
	k, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	e.AdminKey = strings.TrimSpace(string(k))
	bundle, err := os.ReadFile(filepath.Join(dir, "ca", "bundle.pem"))
	if err != nil {
		t.Fatal(err)
	}
	e.Roots = x509.NewCertPool()
	if !e.Roots.AppendCertsFromPEM(bundle) {
		t.Fatal("faults: ca/bundle.pem holds no certificate")
	}
	return e
}

// baseEnv is the environment of every atr process: nothing inherited but
// PATH and HOME, so that the caller's ATR_* settings never leak in.
func (e *Env) baseEnv() []string {
	return []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + e.Dir,
		"SOFTHSM2_CONF=" + filepath.Join(e.Dir, "softhsm2.conf"),
		"ATR_DATA_DIR=" + e.Dir,
		"ATR_PKCS11_PIN_FILE=" + filepath.Join(e.Dir, "pin"),
		"ATR_PKCS11_ROOT_PIN_FILE=" + filepath.Join(e.Dir, "pin"),
		"ATR_LOG_LEVEL=warn",
		// The checkers expect a superseded certificate to keep verifying
		// (CheckVerify): a soak run (ATR_SOAK=1) outlasts the default 5-minute
		// grace period.
		"ATR_ROTATION_GRACE=2h",
	}
}

// Atr runs one atr command to completion and returns its stdout.
func (e *Env) Atr(t testing.TB, args ...string) string {
	t.Helper()
	cmd := exec.Command(e.Bin, args...)
	cmd.Env = append(e.baseEnv(), "ATR_DATABASE_URL="+e.DatabaseURL)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("faults: atr %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String()
}

// OpenDB opens the database directly (never through a proxy), for checks.
func (e *Env) OpenDB(t testing.TB) *sqlx.DB {
	t.Helper()
	var db *sqlx.DB
	var err error
	if e.Dialect == "postgres" {
		db, err = sqlx.Open("postgres", e.DirectURL)
	} else {
		db, err = sqlx.Open("sqlite3", "file:"+strings.TrimPrefix(e.DirectURL, "sqlite:")+"?_busy_timeout=10000")
	}
	if err != nil {
		t.Fatalf("faults: opening the database: %v", err)
	}
	db.SetMaxOpenConns(2)
	return db
}

// FreeAddr returns a 127.0.0.1 address with a port that was free a moment
// ago.
func FreeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// SourceIPs returns n distinct loopback addresses 127.a.b.c (never
// 127.0.0.1), random per call so that rate-limit buckets in a shared Redis
// never carry over between runs.
func SourceIPs(n int) []net.IP {
	b := make([]byte, 2)
	_, _ = rand.Read(b)
	out := make([]net.IP, n)
	for i := range out {
		out[i] = net.IPv4(127, 1+b[0]%250, b[1], byte(1+i%250)).To4()
		if i >= 250 {
			out[i][2] += byte(i / 250)
		}
	}
	return out
}

// RandomHex returns n random bytes in hex.
func RandomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Client returns an api client for baseURL that trusts the env's CA bundle
// and dials from src (nil: the default source address).
func (e *Env) Client(t testing.TB, baseURL, apiKey string, src net.IP) *client.Client {
	t.Helper()
	d := &net.Dialer{Timeout: 5 * time.Second}
	if src != nil {
		d.LocalAddr = &net.TCPAddr{IP: src}
	}
	tr := &http.Transport{
		DialContext:         d.DialContext,
		MaxIdleConnsPerHost: 16,
		IdleConnTimeout:     30 * time.Second,
		TLSHandshakeTimeout: 10 * time.Second,
	}
	t.Cleanup(tr.CloseIdleConnections)
	opts := []client.Option{
		client.WithHTTPClient(&http.Client{Transport: tr, Timeout: 45 * time.Second}),
		client.WithRootCAs(e.Roots),
	}
	if apiKey != "" {
		opts = append(opts, client.WithAPIKey(apiKey))
	}
	c, err := client.New(baseURL, opts...)
	if err != nil {
		t.Fatalf("faults: client: %v", err)
	}
	return c
}

// Server is one `atr serve` process that can be killed and restarted on the
// same address.
type Server struct {
	env   *Env
	Addr  string
	Extra []string

	mu      sync.Mutex
	cmd     *exec.Cmd
	done    chan struct{}
	logPath string
	starts  int
	Started time.Time // when the current process was started
	probe   *client.Client
}

// NewServer prepares a server on addr (not started). The process is killed
// when the test ends.
func (e *Env) NewServer(t testing.TB, addr string, extra ...string) *Server {
	t.Helper()
	s := &Server{env: e, Addr: addr, Extra: extra}
	s.probe = e.Client(t, s.URL(), "", SourceIPs(1)[0])
	t.Cleanup(func() {
		s.Kill(t)
		if t.Failed() {
			for i := 1; i <= s.starts; i++ {
				p := s.logFile(i)
				t.Logf("server log %s (errors, last lines):\n%s", p, errorLines(p, 3000))
			}
		}
	})
	return s
}

func (s *Server) logFile(n int) string {
	return filepath.Join(s.env.Dir, fmt.Sprintf("serve-%s-%d.log", strings.ReplaceAll(s.Addr, ":", "_"), n))
}

// errorLines returns the last n bytes of the error-level lines of a log.
func errorLines(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, `"level":"error"`) || strings.Contains(l, `"level":"fatal"`) || (l != "" && !strings.HasPrefix(l, "{")) {
			out = append(out, l)
		}
	}
	res := strings.Join(out, "\n")
	if len(res) > n {
		res = res[len(res)-n:]
	}
	return res
}

// URL is the server's base URL.
func (s *Server) URL() string { return "https://" + s.Addr }

// Start starts the process and waits until /readyz answers 200.
func (s *Server) Start(t testing.TB) {
	t.Helper()
	if err := s.StartNoWait(); err != nil {
		t.Fatal(err)
	}
	if err := s.WaitReady(t.Context(), 60*time.Second); err != nil {
		t.Fatalf("%v\n%s", err, tail(s.logPath, 4000))
	}
}

// StartNoWait starts the process without waiting for it to be ready.
func (s *Server) StartNoWait() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return errors.New("faults: server already running")
	}
	s.starts++
	s.logPath = s.logFile(s.starts)
	f, err := os.Create(s.logPath)
	if err != nil {
		return fmt.Errorf("faults: server log: %w", err)
	}
	cmd := exec.Command(s.env.Bin, "serve")
	cmd.Env = append(append(s.env.baseEnv(), "ATR_LISTEN="+s.Addr, "ATR_DATABASE_URL="+s.env.DatabaseURL), append(s.env.Extra, s.Extra...)...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	s.Started = time.Now()
	if err := cmd.Start(); err != nil {
		f.Close()
		return fmt.Errorf("faults: starting atr serve: %w", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); f.Close(); close(done) }()
	s.cmd, s.done = cmd, done
	return nil
}

// WaitReady polls /readyz until it answers 200, the process exits or d
// passes (a liveness guard, not a speed goal).
func (s *Server) WaitReady(ctx context.Context, d time.Duration) error {
	s.mu.Lock()
	done := s.done
	s.mu.Unlock()
	deadline := time.Now().Add(d)
	var last error
	for time.Now().Before(deadline) {
		if done != nil {
			select {
			case <-done:
				return fmt.Errorf("faults: atr serve on %s exited before it was ready", s.Addr)
			default:
			}
		}
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		last = s.probe.Ready(rctx)
		cancel()
		if last == nil {
			return nil
		}
		time.Sleep(25 * time.Millisecond)
	}
	return fmt.Errorf("faults: atr serve on %s not ready after %s: %v", s.Addr, d, last)
}

// Kill sends SIGKILL and waits for the process to be gone. A stopped server
// is left alone.
func (s *Server) Kill(t testing.TB) {
	t.Helper()
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.cmd, s.done = nil, nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	<-done
	s.probe = s.env.Client(t, s.URL(), "", SourceIPs(1)[0])
}

// LogPath is the current process's log file.
func (s *Server) LogPath() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.logPath
}

func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// PostgresAdminURL is the maintenance connection used to create and drop
// test databases.
const PostgresAdminURL = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"

// NewPostgresDB creates a fresh database and returns its URL; it is dropped
// (connections forced off) when the test ends.
func NewPostgresDB(t testing.TB) string {
	t.Helper()
	admin, err := sqlx.Open("postgres", PostgresAdminURL)
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err = admin.PingContext(ctx)
		cancel()
	}
	if err != nil {
		missing(t, "PostgreSQL at 127.0.0.1:5432 not reachable: %v", err)
	}
	name := "atr_faults_" + RandomHex(6)
	if _, err := admin.Exec("CREATE DATABASE " + name); err != nil {
		admin.Close()
		t.Fatalf("faults: creating database %s: %v", name, err)
	}
	t.Cleanup(func() {
		defer admin.Close()
		if _, err := admin.Exec("DROP DATABASE IF EXISTS " + name + " WITH (FORCE)"); err != nil {
			t.Errorf("faults: dropping database %s: %v", name, err)
		}
	})
	return "postgres://postgres@127.0.0.1:5432/" + name + "?sslmode=disable"
}

// randIntn returns a uniform random int in [0, n).
func randIntn(n int) int {
	v, err := rand.Int(rand.Reader, big.NewInt(int64(n)))
	if err != nil {
		return 0
	}
	return int(v.Int64())
}

// randDuration returns a random duration in [lo, hi).
func randDuration(lo, hi time.Duration) time.Duration {
	return lo + time.Duration(randIntn(int(hi-lo)))
}

// Get fetches a public URL of a server (trusting the env's CA bundle) and
// returns the body of a 200 answer.
func (e *Env) Get(ctx context.Context, url string) ([]byte, error) {
	hc := e.httpClient()
	defer hc.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("faults: GET %s: %w", url, err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("faults: GET %s: %w", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("faults: GET %s: %w", url, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("faults: GET %s: status %d: %s", url, resp.StatusCode, b)
	}
	return b, nil
}

// quietLogger returns a logger that drops everything below error level
// (in-process registry code run by checks).
func quietLogger() *logrus.Entry {
	l := logrus.New()
	l.SetOutput(io.Discard)
	l.SetLevel(logrus.ErrorLevel)
	return logrus.NewEntry(l)
}

// httpClient is a plain HTTP client trusting the env's CA bundle.
func (e *Env) httpClient() *http.Client {
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: e.Roots, MinVersion: tls.VersionTLS12}}}
}
