package witness_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/agent-trust-registry/atr/registry/registrytest"
	"github.com/agent-trust-registry/atr/registry/witness"
	"github.com/agent-trust-registry/atr/rp"
)

// litewitnessTools finds litewitness and witnessctl (scripts/install-litewitness.sh
// puts them in $ATR_LITEWITNESS_DIR/bin, default the user cache dir's
// atr/litewitness/bin; else $PATH) and ssh-agent, ssh-add and ssh-keygen.
// Missing tools skip the test, except under CI=true where they fail it.
func litewitnessTools(t *testing.T) map[string]string {
	t.Helper()
	dir := os.Getenv("ATR_LITEWITNESS_DIR")
	if dir == "" {
		if cache, err := os.UserCacheDir(); err == nil {
			dir = filepath.Join(cache, "atr", "litewitness")
		}
	}
	tools := map[string]string{}
	var missing []string
	for _, name := range []string{"litewitness", "witnessctl", "ssh-agent", "ssh-add", "ssh-keygen"} {
		p := filepath.Join(dir, "bin", name)
		if fi, err := os.Stat(p); err != nil || fi.IsDir() || dir == "" {
			if p, err = exec.LookPath(name); err != nil {
				missing = append(missing, name)
				continue
			}
		}
		tools[name] = p
	}
	if len(missing) > 0 {
		msg := "litewitness interop test needs " + strings.Join(missing, ", ") + " (run scripts/install-litewitness.sh)"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return tools
}

// startLitewitness runs a fresh litewitness on 127.0.0.1 that knows the log
// origin and its Ed25519 verifier key, and returns its URL, its cosigner
// verifier key and a func that stops it. Everything it starts dies with ctx
// and is stopped by t.Cleanup.
func startLitewitness(t *testing.T, ctx context.Context, origin, logVKey string) (url, vkey string, stop func()) {
	t.Helper()
	tools := litewitnessTools(t)
	// A short directory: a unix socket path is limited to ~100 bytes.
	dir, err := os.MkdirTemp("", "atr-lw-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	run := func(env []string, name string, args ...string) {
		t.Helper()
		cmd := exec.CommandContext(ctx, tools[name], args...)
		cmd.Env = append(os.Environ(), env...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
		}
	}

	// The witness key, in an ssh-agent of its own.
	key := filepath.Join(dir, "witness")
	run(nil, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "atr-test-witness", "-f", key)
	pub := readSSHEd25519(t, key+".pub")
	sock := filepath.Join(dir, "agent.sock")
	agent := exec.CommandContext(ctx, tools["ssh-agent"], "-D", "-a", sock)
	var agentOut bytes.Buffer
	agent.Stdout, agent.Stderr = &agentOut, &agentOut
	if err := agent.Start(); err != nil {
		t.Fatalf("ssh-agent: %v", err)
	}
	t.Cleanup(func() { _ = agent.Process.Kill(); _ = agent.Wait() })
	waitFor(t, "ssh-agent socket", func() bool { _, err := os.Stat(sock); return err == nil })
	env := []string{"SSH_AUTH_SOCK=" + sock}
	run(env, "ssh-add", "-q", key)

	// The witness database: ATR's log and its Ed25519 key (witnesses verify
	// signed-note type 0x01 only).
	db := filepath.Join(dir, "litewitness.db")
	run(nil, "witnessctl", "add-log", "-db", db, "-origin", origin)
	run(nil, "witnessctl", "add-key", "-db", db, "-origin", origin, "-key", logVKey)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	const name = "witness.atr.test/litewitness"
	sum := sha256.Sum256(pub)
	lw := exec.CommandContext(ctx, tools["litewitness"], "-db", db, "-name", name,
		"-key", hex.EncodeToString(sum[:]), "-ssh-agent", sock, "-listen", addr)
	var lwOut syncBuf
	lw.Stdout, lw.Stderr = &lwOut, &lwOut
	lw.Cancel = func() error { return lw.Process.Signal(os.Interrupt) }
	lw.WaitDelay = 10 * time.Second
	if err := lw.Start(); err != nil {
		t.Fatalf("litewitness: %v", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- lw.Wait() }()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		_ = lw.Process.Signal(os.Interrupt)
		if err := <-exited; err != nil && !isInterrupt(err) {
			t.Logf("litewitness exited: %v", err)
		}
		t.Logf("litewitness output:\n%s", lwOut.String())
	}
	t.Cleanup(stop)
	waitFor(t, "litewitness listening on "+addr, func() bool {
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("litewitness exited early: %v\n%s\nssh-agent: %s", err, lwOut.String(), agentOut.String())
		default:
		}
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	// Its cosigner key, computed from the public key (type 0x01 form; the
	// cosignature/v1 verifier derives the 0x04 key ID from it).
	vkey, err = note.NewEd25519VerifierKey(name, pub)
	if err != nil {
		t.Fatal(err)
	}
	return "http://" + addr, vkey, stop
}

func isInterrupt(err error) bool {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() == syscall.SIGINT {
			return true
		}
	}
	return false
}

// readSSHEd25519 reads the raw key of an OpenSSH "ssh-ed25519 <base64>" file.
func readSSHEd25519(t *testing.T, path string) ed25519.PublicKey {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(string(b))
	if len(f) < 2 || f[0] != "ssh-ed25519" {
		t.Fatalf("%s: not an ssh-ed25519 key", path)
	}
	blob, err := base64.StdEncoding.DecodeString(f[1])
	if err != nil {
		t.Fatal(err)
	}
	// string "ssh-ed25519", string key
	var fields [][]byte
	for len(blob) >= 4 {
		n := binary.BigEndian.Uint32(blob)
		if uint32(len(blob)-4) < n {
			break
		}
		fields = append(fields, blob[4:4+n])
		blob = blob[4+n:]
	}
	if len(fields) != 2 || string(fields[0]) != "ssh-ed25519" || len(fields[1]) != ed25519.PublicKeySize {
		t.Fatalf("%s: malformed ssh-ed25519 key blob", path)
	}
	return ed25519.PublicKey(fields[1])
}

// waitFor polls cond. The bound is a liveness guard against a hang, not a
// speed goal.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestLitewitnessCosigns submits ATR checkpoints to torchwood's litewitness,
// a C2SP tlog-witness nobody here wrote: the witness verifies the log's
// Ed25519 signature and the consistency proofs and cosigns; the served
// checkpoint carries the cosignature, rp.VerifyCheckpoint with a 1-of-1
// policy accepts it and refuses it without the cosignature line. A
// restarted submitter learns the witness's size from a 409. With the
// witness down, issuance works and the checkpoint is served uncosigned.
func TestLitewitnessCosigns(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	f := registrytest.NewFixture(t)
	vkeys := strings.Split(f.Registry.LogVerifierKey(), "\n")
	if len(vkeys) != 2 {
		t.Fatalf("log vkeys %q: want ECDSA and Ed25519", vkeys)
	}
	url, wvkey, stop := startLitewitness(t, ctx, f.LogOrigin, vkeys[1])
	logVs, err := rp.ParseLogVerifiers(f.Registry.LogVerifierKey())
	if err != nil {
		t.Fatal(err)
	}
	policy := rp.WitnessPolicy{Keys: []string{wvkey}, Threshold: 1}
	const name = "witness.atr.test/litewitness"
	cfg := witness.Config{Witnesses: []witness.Witness{{Name: "litewitness", URL: url, VKey: wvkey}}, Log: f.Log}
	owner := f.Owner("acme", "acme")

	// Rounds: the first from size 0, the next with a consistency proof, the
	// third by a new Submitter (a restart) that starts from "old 0" and
	// must follow the witness's 409.
	s, err := witness.New(f.Registry, cfg)
	if err != nil {
		t.Fatal(err)
	}
	for round, n := range []int{3, 2, 2} {
		if round == 2 {
			if s, err = witness.New(f.Registry, cfg); err != nil {
				t.Fatal(err)
			}
		}
		size := issue(t, f, owner, "bot"+string(rune('a'+round)), n)
		if err := s.SubmitOnce(ctx); err != nil {
			t.Fatalf("round %d (size %d): SubmitOnce: %v", round, size, err)
		}
		cp, ok := cosignedBy(t, f, size, name)
		if !ok {
			t.Fatalf("round %d: checkpoint of size %d is not cosigned by litewitness:\n%s", round, size, cp)
		}
		c, err := rp.VerifyCheckpoint(cp, logVs, policy)
		if err != nil {
			t.Fatalf("round %d: 1-of-1 policy refuses the cosigned checkpoint: %v\n%s", round, err, cp)
		}
		if c.Size != size {
			t.Errorf("round %d: verified size %d, want %d", round, c.Size, size)
		}
		// The same checkpoint without the witness's line is refused.
		var stripped []string
		for _, l := range strings.SplitAfter(string(cp), "\n") {
			if !strings.HasPrefix(l, "— "+name+" ") {
				stripped = append(stripped, l)
			}
		}
		if _, err := rp.VerifyCheckpoint([]byte(strings.Join(stripped, "")), logVs, policy); !errors.Is(err, rp.ErrWitnessPolicy) {
			t.Errorf("round %d: checkpoint without the cosignature: %v; want ErrWitnessPolicy", round, err)
		}
	}
	if got := submissions(t, s, "litewitness", witness.OutcomeConflict); got != 1 {
		t.Errorf("restarted submitter: %v 409 answers, want 1", got)
	}
	// The latest served checkpoint (GET /v1/log/checkpoint) carries it too.
	served, err := f.Registry.Checkpoint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rp.VerifyCheckpoint(served, logVs, policy); err != nil {
		t.Errorf("served checkpoint: %v\n%s", err, served)
	}

	// The witness goes down: issuance goes on, the checkpoint stays
	// uncosigned, the submission fails and is counted.
	stop()
	size := issue(t, f, owner, "down", 1)
	if err := s.SubmitOnce(ctx); err == nil {
		t.Errorf("SubmitOnce with the witness down = nil; want an error")
	}
	if got := submissions(t, s, "litewitness", witness.OutcomeError); got != 1 {
		t.Errorf("errors counted with the witness down: %v, want 1", got)
	}
	cp, ok := cosignedBy(t, f, size, name)
	if ok {
		t.Errorf("checkpoint %d served cosigned although the witness is down:\n%s", size, cp)
	}
	if _, err := rp.VerifyCheckpoint(cp, logVs, policy); !errors.Is(err, rp.ErrWitnessPolicy) {
		t.Errorf("uncosigned checkpoint under a 1-of-1 policy: %v; want ErrWitnessPolicy", err)
	}
	if _, err := rp.VerifyCheckpoint(cp, logVs, rp.WitnessPolicy{}); err != nil {
		t.Errorf("uncosigned checkpoint under a 0-of-0 policy: %v", err)
	}
}

// syncBuf is a goroutine-safe buffer for a child's output.
type syncBuf struct {
	mu chan struct{}
	b  bytes.Buffer
}

func (s *syncBuf) lock() {
	if s.mu == nil {
		s.mu = make(chan struct{}, 1)
	}
	s.mu <- struct{}{}
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.lock()
	defer func() { <-s.mu }()
	return s.b.Write(p)
}
func (s *syncBuf) String() string { s.lock(); defer func() { <-s.mu }(); return s.b.String() }
