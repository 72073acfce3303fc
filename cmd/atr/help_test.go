package main

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agent-trust-registry/atr/ca"
)

func testApp(env map[string]string) (*app, *bytes.Buffer, *bytes.Buffer) {
	var out, errb bytes.Buffer
	return &app{stdout: &out, stderr: &errb, lookupEnv: envFrom(env), now: time.Now, argv: []string{"atr"}}, &out, &errb
}

func TestHelpHasExample(t *testing.T) {
	cmds := [][]string{
		{"serve"}, {"ceremony"}, {"ceremony", "root"}, {"ceremony", "intermediate"},
		{"ceremony", "rotate-intermediate"}, {"ceremony", "log-key"}, {"ceremony", "vrf-key"}, {"ceremony", "show"},
		{"ceremony", "log-key-ed25519"},
		{"apikey"}, {"apikey", "create"}, {"apikey", "list"}, {"apikey", "revoke"}, {"migrate"}, {"healthcheck"}, {"version"},
		{"agents"}, {"agents", "list"}, {"audit"},
	}
	for _, c := range cmds {
		name := strings.Join(c, " ")
		t.Run(name, func(t *testing.T) {
			a, out, errb := testApp(nil)
			if code := a.run(context.Background(), append(c, "--help")); code != 0 {
				t.Fatalf("atr %s --help: exit %d, want 0; stderr: %s", name, code, errb)
			}
			got := out.String()
			if !strings.Contains(got, "Example:") {
				t.Fatalf("atr %s --help has no Example section:\n%s", name, got)
			}
			example := got[strings.Index(got, "Example:"):]
			if !strings.Contains(example, "atr "+c[0]) {
				t.Errorf("atr %s --help: the example does not run 'atr %s':\n%s", name, c[0], example)
			}
		})
	}
	t.Run("top level", func(t *testing.T) {
		a, out, _ := testApp(nil)
		if code := a.run(context.Background(), []string{"--help"}); code != 0 {
			t.Fatalf("exit %d", code)
		}
		if !strings.Contains(out.String(), "Example:") {
			t.Errorf("atr --help has no example:\n%s", out)
		}
	})
}

func TestUsageErrors(t *testing.T) {
	tests := []struct {
		args []string
		code int
	}{
		{nil, 2},
		{[]string{"nonsense"}, 2},
		{[]string{"ceremony"}, 2},
		{[]string{"ceremony", "nonsense"}, 2},
		{[]string{"serve", "--no-such-flag"}, 2},
		{[]string{"serve", "stray"}, 2},
		{[]string{"version"}, 0},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			a, _, errb := testApp(nil)
			if got := a.run(context.Background(), tt.args); got != tt.code {
				t.Errorf("exit %d, want %d; stderr: %s", got, tt.code, errb)
			}
		})
	}
}

func TestInvalidConfigFailsAtStartup(t *testing.T) {
	a, _, errb := testApp(map[string]string{"ATR_LISTEN": "nonsense", "ATR_TRUST_DOMAIN": "UPPER"})
	if got := a.run(context.Background(), []string{"serve"}); got != 1 {
		t.Fatalf("exit %d, want 1", got)
	}
	for _, want := range []string{"ATR_LISTEN", "ATR_TRUST_DOMAIN"} {
		if !strings.Contains(errb.String(), want) {
			t.Errorf("stderr %q does not mention %s", errb, want)
		}
	}
}

// TestAdminCommandsHaveJSON (issue 11 item 13): every new API command offers
// --json.
func TestAdminCommandsHaveJSON(t *testing.T) {
	for _, c := range [][]string{{"agents", "list"}, {"audit"}, {"apikey", "list"}, {"apikey", "revoke"}} {
		t.Run(strings.Join(c, " "), func(t *testing.T) {
			a, out, _ := testApp(nil)
			if code := a.run(context.Background(), append(c, "--help")); code != 0 {
				t.Fatalf("exit %d", code)
			}
			if !strings.Contains(out.String(), "-json") {
				t.Errorf("no --json flag:\n%s", out)
			}
		})
	}
}

// TestRevokeHelpListsEveryReason replays issue 11 item 14: agent revoke
// --help omitted cACompromise and aACompromise, which the server accepts.
func TestRevokeHelpListsEveryReason(t *testing.T) {
	a, out, _ := testApp(nil)
	if code := a.run(context.Background(), []string{"agent", "revoke", "--help"}); code != 0 {
		t.Fatalf("exit %d", code)
	}
	help := strings.Join(strings.Fields(out.String()), " ")
	for code := 0; code <= 10; code++ {
		name := ca.ReasonName(code)
		if name == "" {
			continue
		}
		_, err := ca.ReasonCode(name)
		if accepted, listed := err == nil, strings.Contains(help, name); accepted != listed {
			t.Errorf("reason %s: accepted %v, listed in --help %v", name, accepted, listed)
		}
	}
}

// TestHealthcheckHelpDescribesClientFlags replays issue 11 item 14:
// healthcheck --help described --listen and --insecure-http as server flags.
func TestHealthcheckHelpDescribesClientFlags(t *testing.T) {
	a, out, _ := testApp(nil)
	if code := a.run(context.Background(), []string{"healthcheck", "--help"}); code != 0 {
		t.Fatalf("exit %d", code)
	}
	got := out.String()
	for _, bad := range []string{"to listen on", "serve plain HTTP"} {
		if strings.Contains(got, bad) {
			t.Errorf("healthcheck --help describes a server flag (%q):\n%s", bad, got)
		}
	}
	for _, want := range []string{"-server", "ATR_SERVER", "ATR_LISTEN", "ATR_CA_BUNDLE"} {
		if !strings.Contains(got, want) {
			t.Errorf("healthcheck --help lacks %q:\n%s", want, got)
		}
	}
}

// TestUsageErrorNamesSubcommand replays issue 11 item 14: usage errors of
// "atr agent register" named "atr agent".
func TestUsageErrorNamesSubcommand(t *testing.T) {
	tests := []struct {
		args []string
		want string // the command the message must name
		code int
	}{
		{[]string{"agent", "register"}, "agent register", 2},
		{[]string{"agent", "renew", "--no-such-flag"}, "agent renew", 2},
		{[]string{"apikey", "revoke"}, "apikey revoke", 2},
		{[]string{"agents", "list", "--limit", "-1"}, "agents list", 2},
		{[]string{"agent", "status", "--cert", "/nonexistent/agent.pem"}, "agent status", 1},
		{[]string{"agent", "nonsense"}, "agent", 2},
		{[]string{"ceremony"}, "ceremony", 2},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			a, _, errb := testApp(map[string]string{"ATR_SERVER": "https://127.0.0.1:1", "ATR_API_KEY": "atr_0123456789abcdef_" + strings.Repeat("ab", 32)})
			if code := a.run(context.Background(), tt.args); code != tt.code {
				t.Fatalf("exit %d, want %d; stderr: %s", code, tt.code, errb)
			}
			got := errb.String()
			if !strings.Contains(got, "atr "+tt.want+": ") {
				t.Errorf("stderr does not name 'atr %s':\n%s", tt.want, got)
			}
			if tt.code == 2 && !strings.Contains(got, "Run 'atr "+tt.want+" --help'") {
				t.Errorf("stderr does not point to 'atr %s --help':\n%s", tt.want, got)
			}
		})
	}
}

// TestHealthcheckServer replays issue 11 item 14: healthcheck ignored
// ATR_SERVER. The server is --server / ATR_SERVER when set, else --listen /
// ATR_LISTEN; a flag on the command line wins over the environment.
func TestHealthcheckServer(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" {
			http.NotFound(w, r)
			return
		}
		w.Write([]byte(`{"status":"ok"}`))
	}))
	defer srv.Close()
	dir := t.TempDir()
	bundle := writeTestFile(t, filepath.Join(dir, "bundle.pem"), ca.EncodeCertificatesPEM(srv.Certificate()), 0o644)
	dead := "127.0.0.1:1"
	tests := []struct {
		name string
		env  map[string]string
		args []string
		code int
	}{
		{"ATR_SERVER", map[string]string{"ATR_SERVER": srv.URL, "ATR_CA_BUNDLE": bundle, "ATR_LISTEN": dead}, nil, 0},
		{"--server", map[string]string{"ATR_LISTEN": dead}, []string{"--server", srv.URL, "--ca-bundle", bundle}, 0},
		{"--listen on the command line wins over ATR_SERVER", map[string]string{"ATR_SERVER": srv.URL, "ATR_CA_BUNDLE": bundle}, []string{"--listen", dead}, 1},
		{"--server wins over --listen", nil, []string{"--listen", dead, "--server", srv.URL, "--ca-bundle", bundle}, 0},
		{"untrusted server", map[string]string{"ATR_SERVER": srv.URL, "ATR_DATA_DIR": dir}, nil, 1},
		{"without ATR_SERVER: the local listen address", map[string]string{"ATR_LISTEN": dead, "ATR_CA_BUNDLE": bundle}, nil, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, out, errb := testApp(tt.env)
			if code := a.run(context.Background(), append([]string{"healthcheck", "--timeout", "5s"}, tt.args...)); code != tt.code {
				t.Fatalf("exit %d, want %d; stdout %q stderr %q", code, tt.code, out, errb)
			}
		})
	}
}
