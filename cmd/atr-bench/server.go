package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jmoiron/sqlx"
	_ "github.com/lib/pq" // PostgreSQL driver "postgres"

	"github.com/agent-trust-registry/atr/ca"
	"github.com/agent-trust-registry/atr/cmd/internal/procstat"
)

const benchTokenLabel = "atr-bench"

// benchEnv is the system under test and the bench's own token directory.
type benchEnv struct {
	dataDir  string // temp dir: softhsm2.conf, tokens/, pin, server data
	ownDir   bool   // dataDir was created here (removed at the end unless --keep)
	bin      string // the atr binary (start mode)
	baseURL  string // https://host:port of the server
	dbURL    string // the server's database (empty: unknown, target mode without --database-url)
	pgAdmin  string // PostgreSQL URL used to create/drop pgDBName
	pgDBName string // fresh database created for this run
	server   *exec.Cmd
	logFile  *os.File
	bundle   []byte
	roots    []*x509.Certificate
	inters   []*x509.Certificate
	adminKey string
}

func (e *benchEnv) pinFile() string  { return filepath.Join(e.dataDir, "pin") }
func (e *benchEnv) confFile() string { return filepath.Join(e.dataDir, "softhsm2.conf") }
func (e *benchEnv) isStarted() bool  { return e.server != nil }
func (e *benchEnv) serverPID() int   { return e.server.Process.Pid }
func (e *benchEnv) keyFile(i int) string {
	return filepath.Join(e.dataDir, "keys", fmt.Sprintf("k%04d.apikey", i))
}

// childEnv is the environment of every atr command the bench runs.
func (e *benchEnv) childEnv(listen string) []string {
	env := append(os.Environ(),
		"SOFTHSM2_CONF="+e.confFile(),
		"ATR_DATA_DIR="+e.dataDir,
		"ATR_PKCS11_PIN_FILE="+e.pinFile(),
		"ATR_PKCS11_ROOT_PIN_FILE="+e.pinFile(),
		"ATR_DATABASE_URL="+e.dbURL,
	)
	if listen != "" {
		env = append(env, "ATR_LISTEN="+listen)
	}
	return env
}

func randHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	return hex.EncodeToString(b)
}

// moduleRoot is the directory of the atr module (for go build and
// softhsm/init-tokens.sh): go.mod's, or without a go command the working
// directory; an error that says where to run atr-bench when it does not
// hold softhsm/init-tokens.sh (outside any module, or in another).
func moduleRoot(ctx context.Context) (string, error) {
	root, err := os.Getwd()
	if err != nil {
		return "", err
	}
	if out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output(); err == nil {
		if gomod := strings.TrimSpace(string(out)); gomod != "" && gomod != os.DevNull {
			root = filepath.Dir(gomod)
		}
	}
	if _, err := os.Stat(filepath.Join(root, "softhsm", "init-tokens.sh")); err != nil {
		return "", errors.New("not inside the atr module: run atr-bench from the repository (it makes the server's tokens with softhsm/init-tokens.sh and, without --atr-binary, builds ./cmd/atr), or pass --target")
	}
	return root, nil
}

// prepareTokens creates dataDir with softhsm2.conf, tokens/ and pin, the two
// server tokens (when server is true, through softhsm/init-tokens.sh like
// dev-up.sh) and the bench's own token.
func (e *benchEnv) prepareTokens(ctx context.Context, repo string, server bool) error {
	if err := os.MkdirAll(filepath.Join(e.dataDir, "tokens"), 0o700); err != nil {
		return err
	}
	if server {
		cmd := exec.CommandContext(ctx, filepath.Join(repo, "softhsm", "init-tokens.sh"), e.dataDir, e.pinFile())
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("init-tokens.sh: %w: %s", err, out)
		}
	} else {
		conf := fmt.Sprintf("directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n",
			filepath.Join(e.dataDir, "tokens"))
		if err := os.WriteFile(e.confFile(), []byte(conf), 0o600); err != nil {
			return err
		}
		if err := os.WriteFile(e.pinFile(), []byte(randHex(16)), 0o600); err != nil {
			return err
		}
	}
	pin, err := os.ReadFile(e.pinFile())
	if err != nil {
		return err
	}
	// Development token: softhsm2-util takes PINs only as arguments.
	cmd := exec.CommandContext(ctx, "softhsm2-util", "--init-token", "--free", "--label", benchTokenLabel,
		"--so-pin", randHex(16), "--pin", strings.TrimSpace(string(pin)))
	cmd.Env = append(os.Environ(), "SOFTHSM2_CONF="+e.confFile())
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("creating the bench token: %w: %s", err, out)
	}
	return nil
}

// build compiles cmd/atr into the data dir.
func (e *benchEnv) build(ctx context.Context, repo string) error {
	e.bin = filepath.Join(e.dataDir, "bin", "atr")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", e.bin, "./cmd/atr")
	cmd.Dir = repo
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./cmd/atr: %w: %s", err, out)
	}
	return nil
}

// createPostgres creates a fresh database on the server named by adminURL
// and points e.dbURL at it; cleanup drops it.
func (e *benchEnv) createPostgres(ctx context.Context, adminURL string) error {
	db, err := sqlx.ConnectContext(ctx, "postgres", adminURL)
	if err != nil {
		return fmt.Errorf("connecting to PostgreSQL: %w", err)
	}
	defer db.Close()
	name := "atr_bench_" + randHex(6)
	if _, err := db.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
		return fmt.Errorf("creating database %s: %w", name, err)
	}
	u, err := url.Parse(adminURL)
	if err != nil {
		return err
	}
	u.Path = "/" + name
	e.pgAdmin, e.pgDBName, e.dbURL = adminURL, name, u.String()
	return nil
}

func (e *benchEnv) atr(ctx context.Context, args ...string) error {
	cmd := exec.CommandContext(ctx, e.bin, args...)
	cmd.Env = e.childEnv("")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("atr %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// ceremonies runs the ceremonies dev-up.sh runs.
func (e *benchEnv) ceremonies(ctx context.Context) error {
	for _, c := range []string{"root", "intermediate", "log-key", "log-key-ed25519", "vrf-key"} {
		if err := e.atr(ctx, "ceremony", c, "--if-missing", "--operator", "atr-bench", "--log-level", "error"); err != nil {
			return err
		}
	}
	return nil
}

// keySpec is one API key to create before the server starts.
type keySpec struct{ owner, namespace, scopes string }

// createKeys creates the API keys with `atr apikey create` (the bootstrap
// path, which writes straight to the database) and returns their secrets in
// order.
func (e *benchEnv) createKeys(ctx context.Context, specs []keySpec) ([]string, error) {
	if err := os.MkdirAll(filepath.Join(e.dataDir, "keys"), 0o700); err != nil {
		return nil, err
	}
	keys := make([]string, len(specs))
	errs := make([]error, len(specs))
	sem := make(chan struct{}, 4)
	var wg sync.WaitGroup
	for i, s := range specs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			f := e.keyFile(i)
			if errs[i] = e.atr(ctx, "apikey", "create", "--owner", s.owner, "--namespace", s.namespace,
				"--scopes", s.scopes, "--expires-in", "24h", "--out", f, "--log-level", "error"); errs[i] != nil {
				return
			}
			b, err := os.ReadFile(f)
			keys[i], errs[i] = strings.TrimSpace(string(b)), err
		}()
	}
	wg.Wait()
	return keys, errors.Join(errs...)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// startServer runs `atr serve` on a free loopback port, logging to
// dataDir/serve.log.
func (e *benchEnv) startServer(ctx context.Context) error {
	port, err := freePort()
	if err != nil {
		return err
	}
	listen := "127.0.0.1:" + strconv.Itoa(port)
	e.logFile, err = os.Create(filepath.Join(e.dataDir, "serve.log"))
	if err != nil {
		return err
	}
	e.server = exec.Command(e.bin, "serve")
	e.server.Env = e.childEnv(listen)
	e.server.Stdout, e.server.Stderr = e.logFile, e.logFile
	if err := e.server.Start(); err != nil {
		return fmt.Errorf("starting atr serve: %w", err)
	}
	e.baseURL = "https://" + listen
	return nil
}

// loadBundle reads the CA bundle (roots and intermediates).
func (e *benchEnv) loadBundle(pemData []byte) error {
	certs, err := ca.ParseCertificatesPEM(pemData, 64)
	if err != nil {
		return fmt.Errorf("CA bundle: %w", err)
	}
	e.bundle = pemData
	for _, c := range certs {
		if bytes.Equal(c.RawIssuer, c.RawSubject) && c.CheckSignatureFrom(c) == nil {
			e.roots = append(e.roots, c)
		} else {
			e.inters = append(e.inters, c)
		}
	}
	if len(e.roots) == 0 {
		return errors.New("CA bundle holds no root")
	}
	return nil
}

func (e *benchEnv) pool() *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range e.roots {
		p.AddCert(c)
	}
	return p
}

// rss reads VmRSS and VmHWM (peak) of pid from /proc, in KiB.
func rss(pid int) (cur, peak int64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	return parseProcStatus(string(b))
}

// openFiles counts the file descriptors process pid holds open: mostly,
// for atr serve, its client connections.
func openFiles(pid int) (int, error) {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	return len(ents), err
}

// settledOpenFiles is openFiles once the count stops falling: the server
// closes the connections a phase just closed a moment later. It waits at
// most a second.
func settledOpenFiles(pid int) (int, error) {
	n, err := openFiles(pid)
	for i := 0; err == nil && i < 10; i++ {
		time.Sleep(100 * time.Millisecond)
		m, err := openFiles(pid)
		if err != nil || m >= n {
			return min(m, n), err
		}
		n = m
	}
	return n, err
}

// parseProcStatus extracts VmRSS and VmHWM (KiB) from /proc/<pid>/status text.
func parseProcStatus(s string) (cur, peak int64, err error) {
	for _, line := range strings.Split(s, "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		switch f[0] {
		case "VmRSS:":
			cur, err = strconv.ParseInt(f[1], 10, 64)
		case "VmHWM:":
			peak, err = strconv.ParseInt(f[1], 10, 64)
		}
		if err != nil {
			return 0, 0, fmt.Errorf("parsing %q: %w", line, err)
		}
	}
	if cur == 0 {
		return 0, 0, errors.New("no VmRSS line")
	}
	return cur, peak, nil
}

// stop ends the server (SIGTERM, then kill after 10 s) and removes what
// this run created unless keep is set.
func (e *benchEnv) stop(keep bool) {
	if e.server != nil && e.server.Process != nil {
		_ = e.server.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { _ = e.server.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = e.server.Process.Kill()
			<-done
		}
	}
	if e.logFile != nil {
		e.logFile.Close()
	}
	if keep {
		fmt.Fprintf(os.Stderr, "atr-bench: kept %s (database %s)\n", e.dataDir, e.dbURL)
		return
	}
	if e.pgDBName != "" {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if db, err := sqlx.ConnectContext(ctx, "postgres", e.pgAdmin); err == nil {
			_, _ = db.ExecContext(ctx, "DROP DATABASE IF EXISTS "+e.pgDBName+" WITH (FORCE)")
			db.Close()
		}
	}
	if e.ownDir {
		_ = os.RemoveAll(e.dataDir)
	}
}

// procCPU is the CPU time (user + system) pid has used so far, from
// /proc/<pid>/stat.
func procCPU(pid int) (time.Duration, error) {
	st, err := procstat.Proc.Stat(pid)
	if err != nil {
		return 0, err
	}
	return procstat.Duration(st.Ticks()), nil
}
