package main

import (
	"context"
	"crypto/x509"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"
)

// connCounter counts a test server's open connections.
type connCounter struct {
	mu   sync.Mutex
	open map[net.Conn]bool
	max  int
}

func (c *connCounter) track(conn net.Conn, s http.ConnState) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch s {
	case http.StateNew:
		c.open[conn] = true
		c.max = max(c.max, len(c.open))
	case http.StateClosed, http.StateHijacked:
		delete(c.open, conn)
	}
}

func (c *connCounter) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.open)
}

// TestPhaseClientsCloseTheirConnections: a phase's clients, each sending
// registerPerClient requests at once, hold many keep-alive connections.
// They are open before the phase's clock starts, so the phase's requests
// open none (a TLS handshake in a timed window is the bench's cost, not the
// server's issuance); and when the phase ends the server sees every one of
// them closed, instead of keeping them idle (and their memory) into the
// next phases until its idle timeout. The clients of the next phase are
// others.
func TestPhaseClientsCloseTheirConnections(t *testing.T) {
	cc := &connCounter{open: map[net.Conn]bool{}}
	release := make(chan struct{})
	var arrived sync.WaitGroup
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" {
			w.Write([]byte("ok")) // the warm-up
			return
		}
		arrived.Done()
		<-release // every request of the phase in flight at once: one connection each
		w.Write([]byte("ok"))
	}))
	srv.Config.ConnState = cc.track
	srv.Config.IdleTimeout = time.Hour // the server would keep idle connections
	srv.StartTLS()
	defer srv.Close()
	roots := x509.NewCertPool()
	roots.AddCert(srv.Certificate())
	cf, err := newClientFactory(srv.URL, roots)
	if err != nil {
		t.Fatal(err)
	}
	all, err := cf.clients(4)
	if err != nil {
		t.Fatal(err)
	}
	phases := &phaseClients{f: cf, all: all}

	ctx := context.Background()
	n := 2 * registerPerClient // two clients
	var atStart int
	opened, err := phases.run(ctx, n, n, func(cs []*benchClient) error {
		atStart = cc.count()
		if len(cs) != 2 || cs[0] != all[0] || cs[1] != all[1] {
			t.Errorf("the phase got clients %p; want the first two of %p", cs, all)
		}
		arrived.Add(n)
		errs := make(chan error, n)
		for i := range n {
			go func() {
				_, err := cs[i/registerPerClient].do(ctx, "GET", srv.URL, "", nil)
				errs <- err
			}()
		}
		arrived.Wait()
		close(release)
		for range n {
			if err := <-errs; err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if opened != 0 {
		t.Errorf("the phase reports %d connections opened while it ran; want 0", opened)
	}
	if atStart != n {
		t.Errorf("%d connections open when the phase started; want %d (registerPerClient a client)", atStart, n)
	}
	if cc.max != n {
		t.Fatalf("the server saw at most %d connections at once; want %d (one per request in flight, all opened before the phase)", cc.max, n)
	}
	deadline := time.Now().Add(10 * time.Second)
	for cc.count() > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if left := cc.count(); left != 0 {
		t.Errorf("%d of the phase's %d connections still open at the server after the phase", left, cc.max)
	}

	// Below registerPerClient, a client opens one connection per request
	// the phase may have in flight.
	const conc = 8
	_, err = phases.run(ctx, registerPerClient, conc, func(cs []*benchClient) error {
		if len(cs) != 1 || cs[0] != all[2] {
			t.Errorf("the next phase got %p; want the third client %p", cs, all[2])
		}
		atStart = cc.count()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if atStart != conc {
		t.Errorf("%d connections open when a phase at concurrency %d started; want %d", atStart, conc, conc)
	}

	// A phase whose client must open a connection while timed reports it.
	opened, err = phases.run(ctx, registerPerClient, 1, func(cs []*benchClient) error {
		if len(cs) != 1 || cs[0] != all[3] {
			t.Errorf("the next phase got %p; want the fourth client %p", cs, all[3])
		}
		cs[0].hc.CloseIdleConnections()
		arrived.Add(1)
		_, err := cs[0].do(ctx, "GET", srv.URL, "", nil)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if opened != 1 {
		t.Errorf("a phase that opened one connection while timed reports %d", opened)
	}
	wantErr := errors.New("not called")
	if _, err := phases.run(ctx, 1, 1, func([]*benchClient) error { return wantErr }); err == nil || errors.Is(err, wantErr) {
		t.Errorf("a phase beyond the planned clients: %v; want an error before it runs", err)
	}
}

// TestOpenFiles: openFiles counts this process's descriptors, one more
// for a file opened; settledOpenFiles gives the same count when nothing
// closes.
func TestOpenFiles(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("openFiles reads Linux's /proc")
	}
	before, err := openFiles(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	after, err := openFiles(os.Getpid())
	if err != nil || after != before+1 {
		t.Errorf("openFiles = %d, %v after opening a file; want %d", after, err, before+1)
	}
	if settled, err := settledOpenFiles(os.Getpid()); err != nil || settled != after {
		t.Errorf("settledOpenFiles = %d, %v with nothing closing; want %d", settled, err, after)
	}
	if _, err := openFiles(-1); err == nil {
		t.Error("openFiles(-1) succeeded")
	}
	if _, err := settledOpenFiles(-1); err == nil {
		t.Error("settledOpenFiles(-1) succeeded")
	}
}
