package client

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
)

// TestReadsAnswers: the client reads an answer whole whether its length is
// declared or not, up to maxResponse; a body longer than that, declared or
// not, and a body cut short of its declared length are errors, never a
// short answer taken as whole.
func TestReadsAnswers(t *testing.T) {
	big := bytes.Repeat([]byte("a"), maxResponse+1)
	tests := []struct {
		name    string
		serve   func(w http.ResponseWriter)
		want    []byte
		wantErr string
	}{
		{name: "declared", want: []byte(`{"ok":true}`), serve: func(w http.ResponseWriter) {
			w.Header().Set("Content-Length", "11")
			_, _ = w.Write([]byte(`{"ok":true}`))
		}},
		{name: "declared empty", want: []byte{}, serve: func(w http.ResponseWriter) {
			w.Header().Set("Content-Length", "0")
		}},
		{name: "chunked", want: []byte("abcdef"), serve: func(w http.ResponseWriter) {
			_, _ = w.Write([]byte("abc"))
			w.(http.Flusher).Flush()
			_, _ = w.Write([]byte("def"))
		}},
		{name: "at the cap", want: big[:maxResponse], serve: func(w http.ResponseWriter) {
			w.Header().Set("Content-Length", strconv.Itoa(maxResponse))
			_, _ = w.Write(big[:maxResponse])
		}},
		{name: "declared past the cap", wantErr: "larger than", serve: func(w http.ResponseWriter) {
			w.Header().Set("Content-Length", strconv.Itoa(len(big)))
			_, _ = w.Write(big)
		}},
		{name: "chunked past the cap", wantErr: "larger than", serve: func(w http.ResponseWriter) {
			w.(http.Flusher).Flush()
			_, _ = w.Write(big)
		}},
		{name: "cut short", wantErr: "reading response", serve: func(w http.ResponseWriter) {
			conn, rw, err := w.(http.Hijacker).Hijack()
			if err != nil {
				panic(err)
			}
			defer conn.Close()
			_, _ = rw.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc")
			_ = rw.Flush()
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var conns atomic.Int32
			srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { tt.serve(w) }))
			srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
				if s == http.StateNew {
					conns.Add(1)
				}
			}
			srv.Start()
			defer srv.Close()
			c, err := New(srv.URL)
			if err != nil {
				t.Fatal(err)
			}
			for range 3 {
				got, err := c.doBytes(context.Background(), http.MethodGet, "/x", nil)
				if tt.wantErr != "" {
					if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
						t.Fatalf("doBytes = %d bytes, %v; want an error with %q", len(got), err, tt.wantErr)
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, tt.want) {
					t.Fatalf("doBytes = %.40q (%d bytes), want %.40q (%d bytes)", got, len(got), tt.want, len(tt.want))
				}
			}
			if n := conns.Load(); n != 1 {
				t.Errorf("3 requests opened %d connections, want 1", n)
			}
		})
	}
}

// staleLength is a RoundTripper that doubles the body and leaves its
// declared length as the wire's (a rewriting middleware that forgets it).
type staleLength struct{ http.RoundTripper }

func (s staleLength) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := s.RoundTripper.RoundTrip(r)
	if err != nil {
		return nil, err
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	resp.Body = io.NopCloser(bytes.NewReader(append(b, b...)))
	return resp, nil
}

// TestReadsAnswersToTheirEnd: the client reads a body to its end, not to
// its declared length — a body a RoundTripper changed is not cut short
// (and an HTTP/2 stream is not cancelled before its end) — and a server
// that declares a large body and sends a few bytes does not make the
// client reserve it all.
func TestReadsAnswersToTheirEnd(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/declares-more" {
			conn, rw, err := w.(http.Hijacker).Hijack()
			if err != nil {
				panic(err)
			}
			defer conn.Close()
			_, _ = rw.WriteString("HTTP/1.1 200 OK\r\nContent-Length: " + strconv.Itoa(maxResponse) + "\r\n\r\n0123456789")
			_ = rw.Flush()
			return
		}
		_, _ = w.Write([]byte("0123456789"))
	}))
	defer srv.Close()

	c, err := New(srv.URL, WithHTTPClient(&http.Client{Transport: staleLength{http.DefaultTransport}}))
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.doBytes(context.Background(), http.MethodGet, "/", nil)
	if err != nil || string(got) != "01234567890123456789" {
		t.Errorf("doBytes through a rewriting RoundTripper = %q, %v; want all 20 bytes", got, err)
	}

	c, err = New(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	_, err = c.doBytes(context.Background(), http.MethodGet, "/declares-more", nil)
	runtime.ReadMemStats(&after)
	if err == nil {
		t.Error("a body cut short of its declared length was taken whole")
	}
	if n := after.TotalAlloc - before.TotalAlloc; n > 1<<20 {
		t.Errorf("a body that declared %d bytes and sent 10 made the client allocate %d", maxResponse, n)
	}
}
