// Package hsmtest creates real SoftHSM2 tokens for tests of hsm and of the
// packages built on it (registry, api, cmd).
//
// SoftHSM2 reads SOFTHSM2_CONF and scans its token directory once per
// process, when the module is initialized. So a test binary makes ONE
// SoftHSM2 directory, in TestMain, before anything loads the module:
//
//	func TestMain(m *testing.M) {
//		cleanup, err := hsmtest.Setup()
//		if err != nil {
//			fmt.Fprintln(os.Stderr, err)
//			os.Exit(1)
//		}
//		code := m.Run()
//		cleanup()
//		os.Exit(code)
//	}
//
// and each test asks for fresh tokens:
//
//	cfg := hsmtest.NewToken(t, "atr-issuing") // hsm.Config with module, label and PIN
//	tok := hsmtest.Open(t, cfg)               // opened, closed by t.Cleanup
//	s, err := tok.GenerateKey(ctx, "issuing-2026", hsm.ECDSAP256)
//
// The label of the new token is the requested label plus a unique suffix
// (for example "atr-issuing-3fa91c"), so tests may ask for the same label
// many times and may run in parallel; always use cfg.TokenLabel (or
// Signer.URI()) rather than the literal label when building URIs.
//
// When SoftHSM2 (softhsm2-util or libsofthsm2.so) is not installed, NewToken
// skips the test with a message saying so — unless the environment has
// CI=true, where it fails the test (and Setup returns an error), because CI
// must never silently skip token tests. The module path is taken from
// ATR_PKCS11_MODULE when set, else the usual Debian, Fedora and Homebrew
// locations are tried.
package hsmtest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/agent-trust-registry/atr/hsm"
	"github.com/miekg/pkcs11"
	"github.com/sirupsen/logrus"
)

const (
	markerFile = ".atr-hsmtest"
	lockFile   = ".lock"
	maxLabel   = 32 // CK_TOKEN_INFO label field
	suffixLen  = 6  // hex characters appended to labels
)

// Module returns the path of the SoftHSM2 PKCS#11 module, or "" when it is
// not installed.
func Module() string {
	cands := []string{
		os.Getenv("ATR_PKCS11_MODULE"),
		"/usr/lib/softhsm/libsofthsm2.so",
		"/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
		"/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
		"/usr/lib64/pkcs11/libsofthsm2.so",
		"/usr/local/lib/softhsm/libsofthsm2.so",
		"/opt/homebrew/lib/softhsm/libsofthsm2.so",
	}
	for _, c := range cands {
		if c == "" {
			continue
		}
		if fi, err := os.Stat(c); err == nil && fi.Mode().IsRegular() {
			return c
		}
	}
	return ""
}

// available reports why SoftHSM2 cannot be used ("" when it can).
func available() string {
	if _, err := exec.LookPath("softhsm2-util"); err != nil {
		return "softhsm2-util not found in PATH (install softhsm2)"
	}
	if Module() == "" {
		return "libsofthsm2.so not found (install softhsm2 or set ATR_PKCS11_MODULE)"
	}
	return ""
}

func inCI() bool { return os.Getenv("CI") == "true" }

// Setup creates one temporary SoftHSM2 directory (softhsm2.conf and tokens/,
// mode 0700) and points SOFTHSM2_CONF at it for the whole process. Call it
// from TestMain before any test opens a token, and call cleanup after
// m.Run: it closes what Setup opened, restores SOFTHSM2_CONF and removes the
// directory. When SoftHSM2 is missing Setup does nothing (tests then skip in
// NewToken), except under CI=true, where it returns an error.
//
// Setup also creates one keeper token with softhsm2-util and keeps it open
// for the life of the process, so that the module stays initialized and
// NewToken can add tokens the running module sees.
func Setup() (cleanup func(), err error) {
	noop := func() {}
	if why := available(); why != "" {
		if inCI() {
			return noop, fmt.Errorf("hsmtest: CI=true but SoftHSM2 is unavailable: %s", why)
		}
		return noop, nil
	}
	dir, err := os.MkdirTemp("", "atr-softhsm-")
	if err != nil {
		return noop, fmt.Errorf("hsmtest: creating SoftHSM2 directory: %w", err)
	}
	removeDir := func() { _ = os.RemoveAll(dir) }
	tokens := filepath.Join(dir, "tokens")
	if err := os.Chmod(dir, 0o700); err != nil {
		removeDir()
		return noop, fmt.Errorf("hsmtest: %w", err)
	}
	if err := os.Mkdir(tokens, 0o700); err != nil {
		removeDir()
		return noop, fmt.Errorf("hsmtest: creating token directory: %w", err)
	}
	conf := filepath.Join(dir, "softhsm2.conf")
	body := fmt.Sprintf("# written by hsmtest.Setup\ndirectories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n", tokens)
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		removeDir()
		return noop, fmt.Errorf("hsmtest: writing softhsm2.conf: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, markerFile), nil, 0o600); err != nil {
		removeDir()
		return noop, fmt.Errorf("hsmtest: %w", err)
	}
	oldConf, hadConf := os.LookupEnv("SOFTHSM2_CONF")
	restore := func() {
		if hadConf {
			_ = os.Setenv("SOFTHSM2_CONF", oldConf)
		} else {
			_ = os.Unsetenv("SOFTHSM2_CONF")
		}
		removeDir()
	}
	if err := os.Setenv("SOFTHSM2_CONF", conf); err != nil {
		removeDir()
		return noop, fmt.Errorf("hsmtest: setting SOFTHSM2_CONF: %w", err)
	}

	// The keeper token: made by softhsm2-util while the module is not yet
	// loaded in this process, then opened and held until cleanup.
	label := uniqueLabel("hsmtest-keeper")
	pin, soPIN := randomHex(8), randomHex(8)
	cmd := exec.Command("softhsm2-util", "--init-token", "--free", "--label", label, "--so-pin", soPIN, "--pin", pin)
	cmd.Env = os.Environ()
	if out, err := cmd.CombinedOutput(); err != nil {
		restore()
		return noop, fmt.Errorf("hsmtest: softhsm2-util --init-token: %w: %s", err, redact(out, pin, soPIN))
	}
	log := logrus.New()
	log.SetOutput(io.Discard)
	keeper, err := hsm.Open(context.Background(), hsm.Config{Module: Module(), TokenLabel: label, PIN: pin}, logrus.NewEntry(log))
	if err != nil {
		restore()
		return noop, fmt.Errorf("hsmtest: opening keeper token: %w", err)
	}
	return func() {
		_ = keeper.Close()
		restore()
	}, nil
}

// NewToken initializes a fresh token in the Setup directory and returns an
// hsm.Config for it (module, unique label derived from label, random user
// PIN). The SO PIN is random and forgotten. See the package comment for
// skipping rules. NewToken is safe to call from parallel tests.
//
// The token is initialized inside the test process (C_InitToken, C_InitPIN
// on the free slot), not by running softhsm2-util: a running SoftHSM2 module
// does not see tokens another process adds to its directory.
func NewToken(tb testing.TB, label string) hsm.Config {
	tb.Helper()
	if why := available(); why != "" {
		if inCI() {
			tb.Fatalf("hsmtest: CI=true but SoftHSM2 is unavailable: %s", why)
		}
		tb.Skipf("hsmtest: skipping, SoftHSM2 is unavailable: %s", why)
	}
	dir, err := setupDir()
	if err != nil {
		tb.Fatal(err)
	}
	unlock, err := lock(dir)
	if err != nil {
		tb.Fatal(err)
	}
	defer unlock()

	cfg := hsm.Config{Module: Module(), TokenLabel: uniqueLabel(label), PIN: randomHex(8)}
	if err := initToken(cfg, randomHex(8)); err != nil {
		tb.Fatalf("hsmtest: creating token %q: %v", cfg.TokenLabel, err)
	}
	return cfg
}

// Open opens cfg with a logger that writes to tb.Log, and closes the token
// when the test ends.
func Open(tb testing.TB, cfg hsm.Config) *hsm.Token {
	tb.Helper()
	tok, err := hsm.Open(tb.Context(), cfg, Logger(tb))
	if err != nil {
		tb.Fatalf("hsmtest: opening %s: %v", cfg.TokenLabel, err)
	}
	tb.Cleanup(func() { _ = tok.Close() })
	return tok
}

// Logger returns a JSON logrus entry that writes to tb.Log.
func Logger(tb testing.TB) *logrus.Entry {
	l := logrus.New()
	l.SetFormatter(&logrus.JSONFormatter{})
	l.SetOutput(tbWriter{tb})
	l.SetLevel(logrus.DebugLevel)
	return logrus.NewEntry(l)
}

type tbWriter struct{ tb testing.TB }

func (w tbWriter) Write(p []byte) (int, error) {
	w.tb.Helper()
	w.tb.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// setupDir returns the directory Setup made, from SOFTHSM2_CONF.
func setupDir() (string, error) {
	conf := os.Getenv("SOFTHSM2_CONF")
	dir := filepath.Dir(conf)
	if conf == "" {
		return "", errors.New("hsmtest: SOFTHSM2_CONF is not set: call hsmtest.Setup from TestMain")
	}
	if _, err := os.Stat(filepath.Join(dir, markerFile)); err != nil {
		return "", fmt.Errorf("hsmtest: SOFTHSM2_CONF=%s was not made by hsmtest.Setup: call hsmtest.Setup from TestMain", conf)
	}
	return dir, nil
}

// lock takes an exclusive flock on the Setup directory's lock file, so that
// two NewToken calls never initialize the same free slot.
func lock(dir string) (func(), error) {
	f, err := os.OpenFile(filepath.Join(dir, lockFile), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("hsmtest: opening lock file: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("hsmtest: locking: %w", err)
	}
	return func() {
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}

// initToken initializes the free slot's token in this process. The module
// is shared with hsm (and crypto11), so it is never finalized here.
func initToken(cfg hsm.Config, soPIN string) error {
	p := pkcs11.New(cfg.Module)
	if p == nil {
		return fmt.Errorf("loading %s", cfg.Module)
	}
	defer p.Destroy()
	if err := p.Initialize(); err != nil && !errors.Is(err, pkcs11.Error(pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED)) {
		return fmt.Errorf("initializing module: %w", err)
	}
	free, err := findSlot(p, func(ti pkcs11.TokenInfo) bool { return ti.Flags&pkcs11.CKF_TOKEN_INITIALIZED == 0 })
	if err != nil {
		return fmt.Errorf("finding the free slot: %w", err)
	}
	if err := p.InitToken(free, soPIN, cfg.TokenLabel); err != nil {
		return fmt.Errorf("C_InitToken: %w", err)
	}
	slot, err := findSlot(p, func(ti pkcs11.TokenInfo) bool { return ti.Label == cfg.TokenLabel })
	if err != nil {
		return fmt.Errorf("finding the new token: %w", err)
	}
	sh, err := p.OpenSession(slot, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
	if err != nil {
		return fmt.Errorf("C_OpenSession: %w", err)
	}
	defer func() { _ = p.CloseSession(sh) }()
	if err := p.Login(sh, pkcs11.CKU_SO, soPIN); err != nil {
		return fmt.Errorf("C_Login(SO): %w", err)
	}
	if err := p.InitPIN(sh, cfg.PIN); err != nil {
		return fmt.Errorf("C_InitPIN: %w", err)
	}
	if err := p.Logout(sh); err != nil {
		return fmt.Errorf("C_Logout: %w", err)
	}
	return nil
}

func findSlot(p *pkcs11.Ctx, match func(pkcs11.TokenInfo) bool) (uint, error) {
	slots, err := p.GetSlotList(true)
	if err != nil {
		return 0, err
	}
	for _, s := range slots {
		ti, err := p.GetTokenInfo(s)
		if err != nil {
			return 0, err
		}
		if match(ti) {
			return s, nil
		}
	}
	return 0, errors.New("no matching slot")
}

func uniqueLabel(label string) string {
	if max := maxLabel - suffixLen - 1; len(label) > max {
		label = label[:max]
	}
	return label + "-" + randomHex(suffixLen/2)
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func redact(out []byte, secrets ...string) string {
	s := string(out)
	for _, x := range secrets {
		if x != "" {
			s = strings.ReplaceAll(s, x, "[REDACTED]")
		}
	}
	return s
}

// Saboteur breaks a token under the feet of the code being tested, the way
// a real HSM fails: it holds a second PKCS#11 handle to the same module in
// this process (SoftHSM2 sessions and logins are per process), so packages
// other than hsm can replay token trouble without importing PKCS#11.
type Saboteur struct {
	p    *pkcs11.Ctx
	slot uint
}

// NewSaboteur opens the module and finds the token labelled label.
func NewSaboteur(tb testing.TB, label string) *Saboteur {
	tb.Helper()
	p := pkcs11.New(Module())
	if p == nil {
		tb.Fatalf("hsmtest: loading %s failed", Module())
	}
	if err := p.Initialize(); err != nil && !errors.Is(err, pkcs11.Error(pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED)) {
		tb.Fatalf("hsmtest: C_Initialize: %v", err)
	}
	tb.Cleanup(p.Destroy)
	slot, err := findSlot(p, func(ti pkcs11.TokenInfo) bool { return ti.Label == label })
	if err != nil {
		tb.Fatalf("hsmtest: token %q: %v", label, err)
	}
	return &Saboteur{p: p, slot: slot}
}

// CloseAllSessions closes every session of this process on the token,
// including the logged-in ones: the token forgets the login.
func (s *Saboteur) CloseAllSessions(tb testing.TB) {
	tb.Helper()
	if err := s.p.CloseAllSessions(s.slot); err != nil {
		tb.Fatalf("hsmtest: C_CloseAllSessions: %v", err)
	}
}

// Finalize finalizes the module for the whole process (C_Finalize), as a
// crashed or restarted HSM client library would.
func (s *Saboteur) Finalize(tb testing.TB) {
	tb.Helper()
	if err := s.p.Finalize(); err != nil {
		tb.Fatalf("hsmtest: C_Finalize: %v", err)
	}
}

// Main is the body of a TestMain for packages whose tests use tokens: it
// sets SoftHSM2 up once for the test binary, runs the tests and cleans up.
// It returns the exit code, for `func TestMain(m *testing.M) { os.Exit(hsmtest.Main(m)) }`.
func Main(m *testing.M) int {
	cleanup, err := Setup()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer cleanup()
	return m.Run()
}
