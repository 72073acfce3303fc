package client_test

import (
	"context"
	"crypto/x509"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agent-trust-registry/atr/api/client"
)

// TestDefaultTransportKeepsHTTP1Connections: a Client that makes its own
// http.Client speaks HTTP/1.1 to a server that offers HTTP/2 too (ATR's
// does: api/tls.go), and keeps a connection for each request it had in
// flight, so a second burst as wide as the first opens none. Over
// http.DefaultTransport's settings it negotiated HTTP/2; over HTTP/1.1
// with them it would keep 2 connections and dial again for the rest.
func TestDefaultTransportKeepsHTTP1Connections(t *testing.T) {
	const inFlight = 16
	var (
		mu      sync.Mutex // guards protos, entered and gate
		protos  = map[string]int{}
		entered int
		// gate holds a burst's requests in the handler until all
		// inFlight of them are in, so that a burst is really that wide;
		// the request that completes a burst opens it and sets the next.
		gate  = make(chan struct{})
		dials atomic.Int64
	)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		protos[r.Proto]++
		entered++
		g := gate
		if entered%inFlight == 0 {
			close(gate)
			gate = make(chan struct{})
		}
		mu.Unlock()
		select {
		case <-g:
		case <-r.Context().Done(): // a burst that never fills: the client gave up
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"status":"ok"}`))
	}))
	srv.EnableHTTP2 = true
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			dials.Add(1)
		}
	}
	srv.StartTLS()
	defer srv.Close()
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	c, err := client.New(srv.URL, client.WithRootCAs(pool), client.WithTimeout(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	burst := func() {
		var wg sync.WaitGroup
		errs := make(chan error, inFlight)
		for range inFlight {
			wg.Go(func() { errs <- c.Health(context.Background()) })
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	burst()
	if got := dials.Load(); got != inFlight {
		t.Fatalf("first burst: %d connections for %d requests in flight, want one each (HTTP/1.1)", got, inFlight)
	}
	burst()
	if got := dials.Load(); got != inFlight {
		t.Errorf("second burst opened %d connections more; want none (the first burst's kept alive)", got-inFlight)
	}
	mu.Lock()
	defer mu.Unlock()
	if protos["HTTP/1.1"] != 2*inFlight || len(protos) != 1 {
		t.Errorf("requests by protocol %v, want all %d HTTP/1.1", protos, 2*inFlight)
	}
}
