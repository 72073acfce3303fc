package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestDebugHandler: the debug listener serves Go's profiles to loopback
// names, refuses a foreign Host (DNS rebinding), and does not serve the
// process's command line.
func TestDebugHandler(t *testing.T) {
	srv := httptest.NewServer(debugHandler())
	defer srv.Close()
	get := func(t *testing.T, path, host string) (int, []byte) {
		t.Helper()
		req, err := http.NewRequest(http.MethodGet, srv.URL+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		if host != "" {
			req.Host = host
		}
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode == http.StatusOK && resp.Header.Get("Cache-Control") != "no-store" {
			t.Errorf("GET %s: Cache-Control %q, want no-store", path, resp.Header.Get("Cache-Control"))
		}
		return resp.StatusCode, b
	}
	tests := []struct {
		name, path, host string
		want             int
		body             func([]byte) bool
	}{
		{"index", "/debug/pprof/", "", 200, func(b []byte) bool { return bytes.Contains(b, []byte("goroutine")) }},
		{"heap", "/debug/pprof/heap?debug=1", "", 200, func(b []byte) bool { return bytes.Contains(b, []byte("heap profile")) }},
		{"goroutines", "/debug/pprof/goroutine?debug=1", "", 200, func(b []byte) bool { return bytes.Contains(b, []byte("TestDebugHandler")) }},
		// A CPU profile is gzip-compressed protobuf.
		{"CPU profile", "/debug/pprof/profile?seconds=1", "", 200, func(b []byte) bool { return bytes.HasPrefix(b, []byte{0x1f, 0x8b}) }},
		{"execution trace", "/debug/pprof/trace?seconds=0.2", "", 200, func(b []byte) bool { return bytes.HasPrefix(b, []byte("go 1.")) }},
		{"localhost", "/debug/pprof/", "localhost", 200, nil},
		{"IPv6 loopback", "/debug/pprof/", "[::1]:6060", 200, nil},
		{"command line not served", "/debug/pprof/cmdline", "", 404, nil},
		{"unknown profile", "/debug/pprof/nothing", "", 404, nil},
		{"outside /debug/pprof/", "/v1/agents", "", 404, nil},
		{"foreign host", "/debug/pprof/", "attacker.example", 403, nil},
		{"foreign host with port", "/debug/pprof/heap", "attacker.example:6060", 403, nil},
		{"other interface", "/debug/pprof/", "192.0.2.1:6060", 403, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, b := get(t, tt.path, tt.host)
			if code != tt.want {
				t.Fatalf("GET %s (Host %q): %d, want %d: %.200s", tt.path, tt.host, code, tt.want, b)
			}
			if tt.body != nil && !tt.body(b) {
				t.Errorf("GET %s: unexpected body %.200q", tt.path, b)
			}
		})
	}
}

// TestServeDebugListen runs serve with --debug-listen: the debug listener
// serves the running server's goroutines, and the API listener does not
// serve /debug/pprof/.
func TestServeDebugListen(t *testing.T) {
	d := ceremonies(t)
	debugAddr := freeAddr(t)
	addr, stop := startServe(t, d, "--debug-listen", debugAddr)
	c := &http.Client{Timeout: 30 * time.Second}
	resp, err := c.Get("http://" + debugAddr + "/debug/pprof/goroutine?debug=1")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !bytes.Contains(b, []byte("runServe")) {
		t.Errorf("debug listener: %s, goroutines %.300q (want the serve goroutine)", resp.Status, b)
	}

	root, err := os.ReadFile(filepath.Join(d.dir, "ca", "root.pem"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(root)
	api := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	for _, p := range []string{"/debug/pprof/", "/debug/pprof/heap"} {
		resp, err := api.Get("https://" + addr + p)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound || strings.Contains(string(b), "goroutine") {
			t.Errorf("API listener GET %s: %s %.200q, want 404", p, resp.Status, b)
		}
	}
	if code := stop(); code != 0 {
		t.Errorf("serve exited with %d, want 0", code)
	}
}

// TestServeDebugListenRefused: serve refuses a debug address that is not
// loopback before it opens anything.
func TestServeDebugListenRefused(t *testing.T) {
	a, _, errb := testApp(map[string]string{"ATR_DATA_DIR": t.TempDir()})
	if code := a.run(t.Context(), []string{"serve", "--debug-listen", "0.0.0.0:6060"}); code == 0 {
		t.Fatal("serve with a debug listener on every interface exited 0")
	}
	if !strings.Contains(errb.String(), "ATR_DEBUG_LISTEN") || !strings.Contains(errb.String(), "loopback") {
		t.Errorf("stderr %q: want the reason, naming ATR_DEBUG_LISTEN", errb)
	}
}
