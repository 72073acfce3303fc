package api

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestRequestSmugglingClosesConnection replays issue 11 item 2: a request carrying both
// Content-Length and Transfer-Encoding (RFC 9112 §6.1) was served and its connection kept
// open, so a front end that framed it by Content-Length and ATR (which frames it by
// Transfer-Encoding) disagreed on where the next request starts. ATR processes such a
// request by Transfer-Encoding and then closes the connection: the smuggled second request
// is never served. Go's server removes Content-Length before a handler runs, so every
// request with a Transfer-Encoding is answered with "Connection: close".
func TestRequestSmugglingClosesConnection(t *testing.T) {
	h := newHarness(t, nil)
	addr := strings.TrimPrefix(h.srv.URL, "http://")
	tests := []struct {
		name, head string
	}{
		{"content-length and chunked", "POST /v1/verify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"},
		{"chunked alone", "POST /v1/verify HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"},
	}
	smuggled := "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
			if _, err := io.WriteString(conn, tt.head+smuggled); err != nil {
				t.Fatal(err)
			}
			br := bufio.NewReader(conn)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("first response: %v", err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 400 {
				t.Errorf("first response: got %d, want 400 (empty body)", resp.StatusCode)
			}
			if !resp.Close {
				t.Errorf("first response: no Connection: close (headers %v)", resp.Header)
			}
			if second, err := http.ReadResponse(br, nil); err == nil {
				second.Body.Close()
				t.Fatalf("the smuggled request was served: %d", second.StatusCode)
			}
		})
	}
	t.Run("content-length alone keeps the connection", func(t *testing.T) {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
		if _, err := io.WriteString(conn, smuggled+smuggled); err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(conn)
		for i := range 2 {
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("response %d: %v", i, err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Errorf("response %d: got %d, want 200", i, resp.StatusCode)
			}
		}
	})
}
