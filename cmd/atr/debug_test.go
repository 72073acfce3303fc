package main

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
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
		{"LOCALHOST", "/debug/pprof/", "LOCALHOST:6060", 200, nil},
		{"IPv6 loopback", "/debug/pprof/", "[::1]:6060", 200, nil},
		{"IPv6 loopback without port", "/debug/pprof/", "[::1]", 200, nil},
		{"IPv4-mapped loopback", "/debug/pprof/", "[::ffff:127.0.0.1]:6060", 200, nil},
		{"CPU profile too long", "/debug/pprof/profile?seconds=61", "", 400, nil},
		{"trace too long", "/debug/pprof/trace?seconds=3600", "", 400, nil},
		{"trace of NaN seconds", "/debug/pprof/trace?seconds=NaN", "", 400, nil},
		{"profile of infinite seconds", "/debug/pprof/profile?seconds=%2BInf", "", 400, nil},
		{"command line not served", "/debug/pprof/cmdline", "", 404, nil},
		{"unknown profile", "/debug/pprof/nothing", "", 404, nil},
		{"outside /debug/pprof/", "/v1/agents", "", 404, nil},
		{"foreign host", "/debug/pprof/", "attacker.example", 403, nil},
		{"localhost with a trailing dot", "/debug/pprof/", "localhost.", 403, nil},
		{"foreign host with port", "/debug/pprof/heap", "attacker.example:6060", 403, nil},
		{"other interface", "/debug/pprof/", "192.0.2.1:6060", 403, nil},
	}
	t.Run("POST symbol", func(t *testing.T) {
		resp, err := srv.Client().Post(srv.URL+"/debug/pprof/symbol", "text/plain", strings.NewReader("0x1"))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusMethodNotAllowed {
			t.Errorf("POST /debug/pprof/symbol: %s, want 405", resp.Status)
		}
	})
	t.Run("no Host (HTTP/1.0)", func(t *testing.T) {
		conn, err := net.Dial("tcp", srv.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := conn.Write([]byte("GET /debug/pprof/ HTTP/1.0\r\n\r\n")); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Errorf("a request without Host: %s, want 403", resp.Status)
		}
	})
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
	debugAddr, distAddr := freeAddr(t), freeAddr(t)
	addr, stop := startServe(t, d, "--debug-listen", debugAddr, "--http-listen", distAddr)
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
	// Importing net/http/pprof fills http.DefaultServeMux; neither of the
	// other listeners may serve it.
	for _, u := range []string{"https://" + addr, "http://" + distAddr} {
		for _, p := range []string{"/debug/pprof/", "/debug/pprof/heap", "/debug/pprof/cmdline"} {
			resp, err := api.Get(u + p)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusNotFound || strings.Contains(string(b), "goroutine") {
				t.Errorf("GET %s%s: %s %.200q, want 404", u, p, resp.Status, b)
			}
		}
	}

	// A profile running when the server is told to stop is cut, not waited
	// for: a 50 s profile would outlast the 30 s drain, and serve would exit
	// with "shutting down: context deadline exceeded".
	started := make(chan struct{})
	go func() {
		req, _ := http.NewRequest(http.MethodGet, "http://"+debugAddr+"/debug/pprof/profile?seconds=50", nil)
		close(started)
		if resp, err := http.DefaultClient.Do(req); err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}()
	<-started
	time.Sleep(500 * time.Millisecond) // the profile's request is in the handler
	if code := stop(); code != 0 {
		t.Errorf("serve exited with %d while a profile ran, want 0", code)
	}
}

// TestListenDebugRefusesANonLoopbackBind: the bound address is checked
// again, whatever the name resolved to.
func TestListenDebugRefusesANonLoopbackBind(t *testing.T) {
	if ln, err := listenDebug("127.0.0.1:0"); err != nil {
		t.Fatalf("listenDebug(127.0.0.1:0): %v", err)
	} else {
		ln.Close()
	}
	ln, err := listenDebug("0.0.0.0:0")
	if err == nil {
		ln.Close()
		t.Fatal("listenDebug bound every interface")
	}
	if !strings.Contains(err.Error(), "not a loopback address") {
		t.Errorf("error %q: want the reason", err)
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
