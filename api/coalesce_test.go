package api

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// countingListener counts the writes its connections make: the system
// calls that put bytes on the wire.
type countingListener struct {
	net.Listener
	writes atomic.Int64
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &countingConn{Conn: c, writes: &l.writes}, nil
}

type countingConn struct {
	net.Conn
	writes *atomic.Int64
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

// coalesceServer serves h over TLS with TLSConfig, through a
// coalescingListener whose timer waits delay (none with coalesce false),
// over a listener that counts writes. It returns the counter and a client
// pool trusting the server.
func coalesceServer(t *testing.T, h http.Handler, coalesce bool, delay time.Duration) (url string, writes *atomic.Int64, roots *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "atr.test"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	roots = x509.NewCertPool()
	roots.AddCert(cert)
	pair := &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	counting := &countingListener{Listener: raw}
	var ln net.Listener = counting
	if coalesce {
		ln = coalescingListener{Listener: counting, delay: delay}
	}
	srv := &http.Server{Handler: h, TLSConfig: TLSConfig(func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return pair, nil }, nil),
		ReadHeaderTimeout: 10 * time.Second, WriteTimeout: 30 * time.Second, IdleTimeout: time.Minute}
	done := make(chan error, 1)
	go func() { done <- srv.ServeTLS(ln, "", "") }()
	t.Cleanup(func() {
		if err := srv.Close(); err != nil {
			t.Error(err)
		}
		if err := <-done; err != http.ErrServerClosed {
			t.Errorf("ServeTLS: %v", err)
		}
	})
	return "https://" + raw.Addr().String(), &counting.writes, roots
}

// http1Client speaks HTTP/1.1 over one kept connection.
func http1Client(roots *x509.CertPool) *http.Client {
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: roots}, MaxConnsPerHost: 1, MaxIdleConnsPerHost: 1,
		TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{}}}
}

// sized answers with ?n= bytes.
var sized = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	n, _ := strconv.Atoi(r.URL.Query().Get("n"))
	w.Header().Set("Content-Length", strconv.Itoa(n))
	w.Write(bytes.Repeat([]byte{'a'}, n))
})

// TestCoalescingListenerOneWriteAnAnswer: over HTTP/1.1 an answer up to
// coalesceMax leaves the server in one write, however net/http's 4 KiB
// buffer cuts it (net/http alone: two writes from ~4 KiB, as many as the
// buffer fills beyond); larger answers go out in writes of coalesceMax or
// more; every answer arrives whole, on one kept connection.
func TestCoalescingListenerOneWriteAnAnswer(t *testing.T) {
	for _, tc := range []struct {
		n         int
		maxWrites int64 // a request's writes, the connection already open
	}{
		{0, 1},
		{300, 1},
		{4_200, 1}, // past net/http's 4 KiB with its header, as a verify with its receipt is with ATR's
		{7_648, 1}, // a registration's answer
		{20_000, 1},
		{100_000, 100_000/coalesceMax + 1},
		{1 << 20, 1<<20/coalesceMax + 1},
	} {
		t.Run(strconv.Itoa(tc.n), func(t *testing.T) {
			url, writes, roots := coalesceServer(t, sized, true, time.Hour)
			cl := http1Client(roots)
			for i := range 3 {
				before := writes.Load()
				resp, err := cl.Get(url + "/?n=" + strconv.Itoa(tc.n))
				if err != nil {
					t.Fatal(err)
				}
				b, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil || len(b) != tc.n || resp.ProtoMajor != 1 {
					t.Fatalf("request %d: %d bytes over HTTP/%d, %v; want %d over HTTP/1", i, len(b), resp.ProtoMajor, err, tc.n)
				}
				// The first request's writes include the session
				// tickets TLS 1.3 sends after the handshake.
				if got := writes.Load() - before; i > 0 && got > tc.maxWrites {
					t.Errorf("request %d: %d writes for %d bytes; want at most %d", i, got, tc.n, tc.maxWrites)
				}
			}
		})
	}
}

// TestCoalescingListenerNetHTTPAlone is the yardstick of the test above:
// without the listener the same 4,200 and 7,648-byte answers take two
// writes each.
func TestCoalescingListenerNetHTTPAlone(t *testing.T) {
	url, writes, roots := coalesceServer(t, sized, false, 0)
	cl := http1Client(roots)
	for _, n := range []string{"4200", "7648"} {
		var last int64
		for range 2 {
			before := writes.Load()
			resp, err := cl.Get(url + "/?n=" + n)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			last = writes.Load() - before
		}
		if last != 2 {
			t.Errorf("net/http alone: %d writes for a %s-byte answer; the coalescing test's premise is 2", last, n)
		}
	}
}

// streaming writes an event, flushes, and waits until the client says it
// read it; it fails the request if that takes over a minute.
func streaming(read <-chan struct{}) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "event 1\n")
		http.NewResponseController(w).Flush()
		select {
		case <-read:
		case <-time.After(time.Minute):
			return
		}
		io.WriteString(w, "event 2\n")
	})
}

// readStream reads the first event, tells the handler, and reads the rest.
func readStream(t *testing.T, cl *http.Client, url string, read chan<- struct{}) (proto int) {
	t.Helper()
	resp, err := cl.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	buf := make([]byte, len("event 1\n"))
	if _, err := io.ReadFull(resp.Body, buf); err != nil || string(buf) != "event 1\n" {
		t.Fatalf("first event: %q, %v", buf, err)
	}
	close(read)
	rest, err := io.ReadAll(resp.Body)
	if err != nil || string(rest) != "event 2\n" {
		t.Fatalf("second event: %q, %v", rest, err)
	}
	return resp.ProtoMajor
}

// TestCoalescingListenerStreams: an answer written in parts, the handler
// waiting for the client between them, still arrives. Over HTTP/1.1 the
// timer sends what net/http flushed; HTTP/2 connections hold nothing (the
// timer is an hour there: the event could not arrive otherwise).
func TestCoalescingListenerStreams(t *testing.T) {
	t.Run("http1 timer", func(t *testing.T) {
		read := make(chan struct{})
		url, _, roots := coalesceServer(t, streaming(read), true, 5*time.Millisecond)
		if p := readStream(t, http1Client(roots), url, read); p != 1 {
			t.Errorf("HTTP/%d; want 1", p)
		}
	})
	t.Run("http2 through", func(t *testing.T) {
		read := make(chan struct{})
		url, _, roots := coalesceServer(t, streaming(read), true, time.Hour)
		cl := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: roots}, ForceAttemptHTTP2: true}}
		if p := readStream(t, cl, url, read); p != 2 {
			t.Errorf("HTTP/%d; want 2", p)
		}
	})
}

// TestCoalescingListenerBeforeReading: what the server writes before it
// reads goes out first, however long the timer — net/http's "100 Continue"
// before the body it asks for, and an answer on a connection it then
// closes.
func TestCoalescingListenerBeforeReading(t *testing.T) {
	echo := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Has("close") {
			w.Header().Set("Connection", "close")
		}
		io.Copy(w, r.Body)
	})
	url, _, roots := coalesceServer(t, echo, true, time.Hour)
	cl := http1Client(roots)
	// The client sends its body after "100 Continue", or after an hour.
	cl.Transport.(*http.Transport).ExpectContinueTimeout = time.Hour
	for _, q := range []string{"", "?close"} {
		req, _ := http.NewRequest(http.MethodPost, url+"/"+q, strings.NewReader("the body"))
		req.Header.Set("Expect", "100-continue")
		resp, err := cl.Do(req)
		if err != nil {
			t.Fatalf("%q: %v", q, err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || string(b) != "the body" {
			t.Errorf("%q: %q, %v", q, b, err)
		}
	}
}

// TestCoalescingConnKeepsOrder: writes, the timer's sends and the deadline
// setters' sends from other goroutines leave every byte once, in order.
func TestCoalescingConnKeepsOrder(t *testing.T) {
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	ln := coalescingListener{Listener: raw, delay: 20 * time.Microsecond}
	got := make(chan []byte, 1)
	go func() {
		c, err := net.Dial("tcp", raw.Addr().String())
		if err != nil {
			got <- nil
			return
		}
		defer c.Close()
		b, _ := io.ReadAll(c)
		got <- b
	}()
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	var want bytes.Buffer
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { // the deadline setters, as net/http's other goroutines
		for {
			select {
			case <-stop:
				return
			default:
				c.SetReadDeadline(time.Time{})
			}
		}
	})
	for i := range 5_000 {
		chunk := fmt.Appendf(nil, "%d,", i)
		if i%500 == 499 {
			chunk = append(chunk, bytes.Repeat([]byte{'x'}, coalesceMax)...) // past coalesceMax
		}
		want.Write(chunk)
		if _, err := c.Write(chunk); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if b := <-got; !bytes.Equal(b, want.Bytes()) {
		t.Fatalf("the peer read %d bytes, not the %d written in order", len(b), want.Len())
	}
}
