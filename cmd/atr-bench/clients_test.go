package main

import (
	"context"
	"crypto/x509"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agent-trust-registry/atr/cmd/internal/procstat"
	"github.com/agent-trust-registry/atr/registry/registrytest"
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

// testClients returns a client factory for the TLS test server srv and n
// of its clients.
func testClients(t *testing.T, srv *httptest.Server, n int) (*clientFactory, []*benchClient) {
	t.Helper()
	roots := x509.NewCertPool()
	roots.AddCert(srv.Certificate())
	cf, err := newClientFactory(srv.URL, roots)
	if err != nil {
		t.Fatal(err)
	}
	all, err := cf.clients(n)
	if err != nil {
		t.Fatal(err)
	}
	return cf, all
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
	cf, all := testClients(t, srv, 4)
	phases := &phaseClients{f: cf, all: all, pid: os.Getpid()} // the test server is this process

	ctx := context.Background()
	n := 2 * registerPerClient // two clients
	var atStart int
	use, err := phases.run(ctx, n, n, func(cs []*benchClient) error {
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
	if use.opened != 0 {
		t.Errorf("the phase reports %d connections opened while it ran; want 0", use.opened)
	}
	if !use.cpu.serverOK {
		t.Error("the phase did not read the server's CPU")
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
	use, err = phases.run(ctx, registerPerClient, 1, func(cs []*benchClient) error {
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
	if use.opened != 1 {
		t.Errorf("a phase that opened one connection while timed reports %d", use.opened)
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

// TestWarmFailsPromptly: a warm-up request that fails — refused by the
// server after it got its connection, or before it had one — fails the
// warm-up at once: the requests holding their connections for it are let
// go, none waits for a connection that will never come.
func TestWarmFailsPromptly(t *testing.T) {
	var n atomic.Int64
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1)%3 == 0 {
			http.Error(w, "slow down", http.StatusTooManyRequests)
			return
		}
		w.Write([]byte("ok"))
	}))
	defer srv.Close()
	roots := x509.NewCertPool()
	roots.AddCert(srv.Certificate())

	// A server that drops every third connection it accepts: that
	// request fails before it has a connection while the others of its
	// round hold theirs.
	flaky := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) }))
	flaky.Listener = &droppingListener{Listener: flaky.Listener}
	flaky.StartTLS()
	defer flaky.Close()
	flakyRoots := x509.NewCertPool()
	flakyRoots.AddCert(flaky.Certificate())

	closed := httptest.NewTLSServer(http.NotFoundHandler())
	closedURL := closed.URL
	closed.Close() // nothing listens there now: every dial is refused

	for _, tc := range []struct {
		name, url string
		roots     *x509.CertPool
	}{
		{"refused by the server", srv.URL, roots},
		{"one connection dropped", flaky.URL, flakyRoots},
		{"no connection", closedURL, roots},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cf, err := newClientFactory(tc.url, tc.roots)
			if err != nil {
				t.Fatal(err)
			}
			cs, err := cf.clients(2)
			if err != nil {
				t.Fatal(err)
			}
			defer closeAll(cs)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			start := time.Now()
			err = cf.warm(ctx, cs, 6)
			if err == nil {
				t.Fatal("warm succeeded; want the failed request's error")
			}
			if ctx.Err() != nil {
				t.Fatalf("warm returned only when its context ended (%v): %v", time.Since(start), err)
			}
		})
	}
}

// droppingListener closes every third connection it accepts.
type droppingListener struct {
	net.Listener
	n atomic.Int64
}

func (l *droppingListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil || l.n.Add(1)%3 != 0 {
			return c, err
		}
		c.Close()
	}
}

// TestPhaseReportsPostgresBackends: a phase against a server on PostgreSQL
// reports the CPU its database's backends used in the timed window (the
// issue's "≤ 3 ms including the database backends"), from a real
// PostgreSQL on this machine. Before, the notes gave atr serve's CPU only.
func TestPhaseReportsPostgresBackends(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the backends' CPU is read from Linux's /proc")
	}
	f := registrytest.NewFixture(t, registrytest.WithDatabase("postgres"))
	ctx := context.Background()
	db, pg, err := openDB(ctx, f.DatabaseURL)
	if err != nil || !pg {
		t.Fatalf("openDB(%s) = postgres %v, %v", f.DatabaseURL, pg, err)
	}
	defer db.Close()
	u, err := url.Parse(f.DatabaseURL)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) }))
	defer srv.Close()
	cf, all := testClients(t, srv, 1)
	phases := &phaseClients{f: cf, all: all, pid: os.Getpid(), pgDB: strings.TrimPrefix(u.Path, "/")}
	use, err := phases.run(ctx, 1, 1, func([]*benchClient) error {
		// Work for the database's backend until /proc has counted some.
		var n int64
		return db.GetContext(ctx, &n, `SELECT count(*) FROM generate_series(1, 3000000) AS g WHERE md5(g::text) LIKE 'a%'`)
	})
	if err != nil {
		t.Fatal(err)
	}
	if !use.db.watched || use.db.NBackends < 1 || procstat.Duration(use.db.Backends) < 10*time.Millisecond {
		t.Fatalf("the phase reports the database's backends as %+v; want at least one seen, with the query's CPU", use.db)
	}
	note := Row{N: 1}.withUse(use).Note
	if !strings.Contains(note, "PostgreSQL backends ") || !strings.Contains(note, "together ") {
		t.Errorf("note %q does not give the backends' CPU", note)
	}
}
