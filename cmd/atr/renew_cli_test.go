package main

import (
	"crypto/rand"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/agent-trust-registry/atr/agent"
	"github.com/agent-trust-registry/atr/api/client"
	"github.com/agent-trust-registry/atr/ca"
)

// fakeTLSRegistry is an HTTPS server answering rotate with 401 and verify
// with the given reason, as a registry does for a revoked certificate.
func fakeTLSRegistry(t *testing.T, reason string) (url, bundle string) {
	t.Helper()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Request-ID", "req-42")
		switch {
		case r.Method == "POST" && strings.HasSuffix(r.URL.Path, "/rotate"):
			w.WriteHeader(http.StatusUnauthorized)
			json.NewEncoder(w).Encode(client.ErrorBody{Error: client.ErrorDetail{Code: "unauthenticated", Message: "authentication required", RequestID: "req-42"}})
		case r.Method == "POST" && r.URL.Path == "/v1/verify":
			json.NewEncoder(w).Encode(client.VerifyResult{Verified: false, Reason: reason})
		default:
			http.NotFound(w, r)
		}
	}))
	srv.StartTLS()
	t.Cleanup(srv.Close)
	bundle = writeTestFile(t, filepath.Join(t.TempDir(), "bundle.pem"), ca.EncodeCertificatesPEM(srv.Certificate()), 0o644)
	return srv.URL, bundle
}

// TestRenewRevokedCLI replays issue 11 item 12 through the command: the
// message says the certificate is revoked, and stderr never mixes human text
// with JSON log lines (a stale staged key makes the renewal log a warning
// before it fails).
func TestRenewRevokedCLI(t *testing.T) {
	c := newTestCA(t, "test.local")
	url, bundle := fakeTLSRegistry(t, "revoked")
	tests := []struct {
		name     string
		args     []string
		wantJSON bool
	}{
		{"default: human text only", nil, false},
		{"--log-format json: JSON lines only", []string{"--log-format", "json"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k0, _ := generateAgentKey("p256")
			f := newAgentFiles(t, c, "bot.acme", k0)
			stale, _ := generateAgentKey("p256")
			data, _ := agent.MarshalKey(stale)
			writeTestFile(t, f.key+agent.StagedSuffix, data, 0o600)
			a, _, errb := testApp(nil)
			args := append([]string{"agent", "renew", "--server", url, "--ca-bundle", bundle, "--key", f.key, "--cert", f.cert}, tt.args...)
			if code := runAtr(a, args); code != 1 {
				t.Fatalf("exit %d, want 1; stderr:\n%s", code, errb)
			}
			got := errb.String()
			if !strings.Contains(got, "is revoked") || strings.Contains(got, "HTTP 401") {
				t.Errorf("stderr does not say the certificate is revoked (or still says HTTP 401):\n%s", got)
			}
			if !strings.Contains(got, "staged key") {
				t.Errorf("stderr lacks the warning about the staged key:\n%s", got)
			}
			checkStderrLines(t, got, tt.wantJSON)
		})
	}
}

// checkStderrLines asserts that every line of stderr is a JSON object
// (wantJSON) or that none is.
func checkStderrLines(t *testing.T, stderr string, wantJSON bool) {
	t.Helper()
	lines := strings.Split(strings.TrimRight(stderr, "\n"), "\n")
	if len(lines) < 2 {
		t.Fatalf("want at least two lines on stderr, got:\n%s", stderr)
	}
	for _, l := range lines {
		var v map[string]any
		isJSON := json.Unmarshal([]byte(l), &v) == nil
		if isJSON != wantJSON {
			t.Errorf("stderr mixes human text and JSON log lines (want JSON %v), line %q in:\n%s", wantJSON, l, stderr)
		}
	}
}

// TestAPIKeyFormatCheckedLocally replays issue 11 item 11: a malformed key
// ("null" from a failed jq) was sent and counted toward the IP lockout. The
// CLI refuses it, naming where it came from, and the server sees nothing.
func TestAPIKeyFormatCheckedLocally(t *testing.T) {
	var requests atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		w.WriteHeader(http.StatusUnauthorized)
	}))
	defer srv.Close()
	dir := t.TempDir()
	nullFile := writeTestFile(t, filepath.Join(dir, "team.apikey"), []byte("null\n"), 0o600)
	tests := []struct {
		name       string
		env        map[string]string
		args       []string
		wantSource string
	}{
		{"file holding null", nil, []string{"agents", "list", "--api-key-file", nullFile}, nullFile},
		{"ATR_API_KEY holding null", map[string]string{"ATR_API_KEY": "null"}, []string{"agents", "list"}, "ATR_API_KEY"},
		{"agent status with a bad file", nil, []string{"agent", "status", "--name", "bot.acme", "--api-key-file", nullFile}, nullFile},
		{"agent revoke with a bad env key", map[string]string{"ATR_API_KEY": "atr_admin_0123"}, []string{"agent", "revoke", "--name", "bot.acme", "--reason", "keyCompromise"}, "ATR_API_KEY"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := map[string]string{"ATR_SERVER": srv.URL}
			for k, v := range tt.env {
				env[k] = v
			}
			a, _, errb := testApp(env)
			if code := runAtr(a, tt.args); code != 1 {
				t.Fatalf("exit %d, want 1; stderr: %s", code, errb)
			}
			if !strings.Contains(errb.String(), tt.wantSource) || !strings.Contains(errb.String(), "not sent") {
				t.Errorf("stderr %q does not name the key's source %q", errb, tt.wantSource)
			}
			if n := requests.Load(); n != 0 {
				t.Errorf("%d requests reached the server; want none", n)
			}
		})
	}
}

// TestSerialSpelling: the CLI prints serials as ca.FormatSerial does (an even
// number of lowercase hex digits, as openssl), also when the first octet is
// below 0x10 — big.Int.Text(16) dropped that leading zero.
func TestSerialSpelling(t *testing.T) {
	c := newTestCA(t, "test.local")
	k, _ := generateAgentKey("p256")
	csrPEM, err := agent.NewCSR(k)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := ca.ParseCSR(csrPEM)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := ca.NewSerial(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	b := serial.Bytes()
	b[0] = 0x0a
	serial.SetBytes(b)
	p, err := c.Issuer.Prepare(csr, "bot.acme", serial, c.Root.NotBefore.Add(ca.DefaultBackdate))
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := c.Issuer.Sign(p)
	if err != nil {
		t.Fatal(err)
	}
	cert := writeTestFile(t, filepath.Join(t.TempDir(), "agent.pem"), ca.EncodeCertificatesPEM(leaf), 0o644)
	a, out, _ := testApp(nil)
	a.printLocalCert(cert, "")
	want := "serial: " + ca.FormatSerial(leaf.SerialNumber) + "\n"
	if !strings.HasPrefix(ca.FormatSerial(leaf.SerialNumber), "0a") || !strings.Contains(out.String(), want) {
		t.Errorf("output lacks %q:\n%s", want, out)
	}
	for _, tt := range []struct{ in, want string }{
		{"a1b2", "a1b2"}, {"A1B2", "a1b2"}, {"a1b", "0a1b"}, {"not-a-serial", "not-a-serial"},
	} {
		if got := showSerial(tt.in); got != tt.want {
			t.Errorf("showSerial(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
