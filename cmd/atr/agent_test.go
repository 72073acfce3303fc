package main

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/agent-trust-registry/atr/agent"
	"github.com/agent-trust-registry/atr/api/client"
	"github.com/agent-trust-registry/atr/ca"
	"github.com/agent-trust-registry/atr/ca/catest"
)

// testCA is catest's software CA.
type testCA = catest.CA

func newTestCA(t *testing.T, trustDomain string) *testCA { return catest.New(t, trustDomain) }

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
		if strings.Contains(e.Name(), ".tmp-") || strings.HasSuffix(e.Name(), agent.StagedSuffix) {
			out = append(out, e.Name())
		}
	}
	return out
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
			k, err := agent.LoadKey(p)
			if err != nil {
				t.Fatal(err)
			}
			if got := agent.KeyType(k); got != tt.want {
				t.Errorf("type %s, want %s", got, tt.want)
			}
			if !strings.Contains(out.String(), publicKeyFingerprint(k)) {
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
	f.chain = agent.ChainPath(f.cert, "")
	data, err := agent.MarshalKey(k)
	if err != nil {
		t.Fatal(err)
	}
	writeTestFile(t, f.key, data, 0o600)
	writeTestFile(t, f.cert, ca.EncodeCertificatesPEM(c.Issue(t, k, name)), 0o644)
	writeTestFile(t, f.chain, ca.EncodeCertificatesPEM(c.Issuing), 0o644)
	return f
}

// checkPair asserts that the key and certificate on disk match.
func (f agentFiles) checkPair(t *testing.T) *x509.Certificate {
	t.Helper()
	k, err := agent.LoadKey(f.key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, chain, err := agent.LoadCertificate(f.cert, f.chain)
	if err != nil {
		t.Fatal(err)
	}
	if !agent.KeyMatches(k, leaf) {
		t.Fatal("the certificate on disk does not certify the key on disk")
	}
	if len(chain) == 0 || leaf.CheckSignatureFrom(chain[0]) != nil {
		t.Fatal("the chain on disk does not sign the certificate")
	}
	return leaf
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
