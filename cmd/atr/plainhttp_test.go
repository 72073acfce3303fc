package main

import (
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"
)

// writeCounter counts the writes of the connections of the listener it
// wraps: the system calls that put an answer on the wire.
type writeCounter struct {
	net.Listener
	writes *atomic.Int64
}

func (l writeCounter) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return countedConn{Conn: c, writes: l.writes}, nil
}

type countedConn struct {
	net.Conn
	writes *atomic.Int64
}

func (c countedConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

// CloseWrite keeps the TCP connection's half-close visible through the
// counter (net/http half-closes a plain connection after an error answer).
func (c countedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// TestServePlainHTTPOneWriteAnAnswer: behind a TLS-terminating proxy
// (--insecure-http) `atr serve` sends an answer in as few writes as over
// TLS ("One write an answer", api/coalesce.go): /metrics, which the
// Prometheus handler writes a line at a time, in writes of up to 32 KiB,
// not of net/http's 4 KiB buffer, and /healthz in one. Before, plain HTTP
// took the raw listener: a write per 4 KiB of /metrics.
func TestServePlainHTTPOneWriteAnAnswer(t *testing.T) {
	d := ceremonies(t)
	var writes atomic.Int64
	addr, _ := startServeWith(t, d, func(a *app) {
		a.listen = func(address string) (net.Listener, error) {
			ln, err := net.Listen("tcp", address)
			return writeCounter{Listener: ln, writes: &writes}, err
		}
	}, "--insecure-http")
	cl := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxConnsPerHost: 1, MaxIdleConnsPerHost: 1,
		DisableCompression: true}}
	get := func(path string) (n int, w int64) {
		t.Helper()
		before := writes.Load()
		resp, err := cl.Get("http://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %d, %v: %.200s", path, resp.StatusCode, err, b)
		}
		return len(b), writes.Load() - before
	}
	for _, tc := range []struct {
		path      string
		minBytes  int
		maxWrites int64
	}{
		{"/metrics", 16 << 10, 0},
		{"/healthz", 1, 1},
	} {
		var got []int64
		for range 5 {
			n, w := get(tc.path)
			if n < tc.minBytes {
				t.Fatalf("GET %s: %d bytes, want at least %d", tc.path, n, tc.minBytes)
			}
			bound := tc.maxWrites
			if bound == 0 {
				bound = int64(n/(32<<10)) + 2 // a write per 32 KiB, and one more
			}
			t.Logf("GET %s: %d bytes in %d writes", tc.path, n, w)
			if w > bound {
				got = append(got, w)
			}
		}
		// An answer may take a write more now and then, more often
		// under load: net/http's background read may start while the
		// handler writes.
		if len(got) > 2 {
			t.Errorf("GET %s took %v writes (the ones over the bound)", tc.path, got)
		}
	}
}
