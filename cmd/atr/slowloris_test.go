package main

import (
	"crypto/tls"
	"errors"
	"net"
	"os"
	"testing"
	"time"
)

// TestSlowlorisCutOff replays a slow-loris client: it completes the TLS
// handshake, then trickles header bytes and never ends the header block. The
// server must close the connection once its header timeout passes instead of
// holding it (and a goroutine, and a file descriptor) for as long as the
// client likes.
func TestSlowlorisCutOff(t *testing.T) {
	d := ceremonies(t)
	const headerTimeout = time.Second
	addr, _ := startServeWith(t, d, func(a *app) { a.readHeaderTimeout = headerTimeout })

	conn, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true}) // the peer's identity is not under test
	if err != nil {
		t.Fatalf("TLS dial: %v", err)
	}
	defer conn.Close()
	// Five header timeouts, yet under serve's 10 s default: reaching it means
	// the server kept the connection open (no or the wrong header timeout).
	if err := conn.SetDeadline(time.Now().Add(5 * headerTimeout)); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Write([]byte("GET /healthz HTTP/1.1\r\nHost: localhost\r\n")); err != nil {
		t.Fatalf("writing the request line: %v", err)
	}
	closed := make(chan error, 1)
	go func() {
		buf := make([]byte, 512)
		for {
			if _, err := conn.Read(buf); err != nil {
				closed <- err
				return
			}
		}
	}()
	tick := time.NewTicker(headerTimeout / 5)
	defer tick.Stop()
	for {
		select {
		case err := <-closed:
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("the server kept a slow-loris connection open past %v", 5*headerTimeout)
			}
			return // closed by the server: refused
		case <-tick.C:
			// One more header byte; the header block never ends. A write
			// error means the server already hung up.
			if _, err := conn.Write([]byte("X")); err != nil {
				return
			}
		}
	}
}
