package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/agent-trust-registry/atr/api/client"
	"github.com/agent-trust-registry/atr/cmd/internal/procstat"
)

// Per-client budgets under the server's built-in rate limits (api.DefaultRateLimits):
// each simulated client (one API key, one source address) stays inside the
// burst of every bucket it touches, so no request is refused and no limit is
// switched off. atr-bench runs atr serve with its default limits (it does not
// set ATR_RATE_LIMITS, and cannot against --target), so load is spread over
// many clients instead.
const (
	registerPerClient = 15  // Register: burst 20 per key; PerIP: burst 60
	publicPerClient   = 150 // Public (verify, OCSP, CRL): burst 200 per IP
	publicBurst       = 200 // api.DefaultRateLimits().Public.Burst
	listPerClient     = 8   // List: 10/min, burst 10 per key
)

// addrs hands out loopback source addresses 127.0.0.2, 127.0.0.3, ... so that
// each simulated client has its own per-IP rate-limit buckets. Off loopback
// (target mode against another host) it hands out nil: the system chooses.
type addrs struct {
	mu       sync.Mutex
	n        int
	loopback bool
}

func (a *addrs) next() net.IP {
	if !a.loopback {
		return nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	for {
		a.n++
		ip := net.IPv4(127, byte(a.n>>16), byte(a.n>>8), byte(a.n))
		if last := byte(a.n); last != 0 && last != 255 && a.n > 1 {
			return ip
		}
	}
}

// benchClient is one simulated client: a source address, an HTTP client
// with keep-alive connections and, for owner calls, an API key.
type benchClient struct {
	hc  *http.Client
	api *client.Client
}

type clientFactory struct {
	base  string
	roots *x509.CertPool
	addrs *addrs
	// dials counts the connections the clients opened: a phase reports
	// how many it opened while its clock ran.
	dials atomic.Int64
}

func newClientFactory(base string, roots *x509.CertPool) (*clientFactory, error) {
	u, err := url.Parse(base)
	if err != nil {
		return nil, err
	}
	ip := net.ParseIP(u.Hostname())
	return &clientFactory{base: base, roots: roots, addrs: &addrs{loopback: ip != nil && ip.IsLoopback()}}, nil
}

// client returns a new simulated client with the given API key ("" for
// public calls only).
func (f *clientFactory) client(key string) (*benchClient, error) {
	d := &net.Dialer{Timeout: 10 * time.Second}
	if ip := f.addrs.next(); ip != nil {
		d.LocalAddr = &net.TCPAddr{IP: ip}
	}
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		conn, err := d.DialContext(ctx, network, addr)
		if err == nil {
			f.dials.Add(1)
		}
		return conn, err
	}
	hc := &http.Client{Timeout: 120 * time.Second, Transport: &http.Transport{
		DialContext:         dial,
		TLSClientConfig:     &tls.Config{RootCAs: f.roots, MinVersion: tls.VersionTLS12},
		TLSHandshakeTimeout: 10 * time.Second,
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     60 * time.Second,
	}}
	opts := []client.Option{client.WithHTTPClient(hc), client.WithUserAgent("atr-bench")}
	if key != "" {
		opts = append(opts, client.WithAPIKey(key))
	}
	c, err := client.New(f.base, opts...)
	if err != nil {
		return nil, err
	}
	return &benchClient{hc: hc, api: c}, nil
}

// clients returns n public clients.
func (f *clientFactory) clients(n int) ([]*benchClient, error) {
	out := make([]*benchClient, n)
	for i := range out {
		c, err := f.client("")
		if err != nil {
			return nil, err
		}
		out[i] = c
	}
	return out, nil
}

func (c *benchClient) close() { c.hc.CloseIdleConnections() }

// statusError is a non-2xx answer to a raw request.
type statusError struct {
	status int
	body   string
}

func (e *statusError) Error() string { return fmt.Sprintf("HTTP %d: %s", e.status, e.body) }

// do sends a raw request and returns the body of a 2xx answer.
func (c *benchClient) do(ctx context.Context, method, u, ctype string, body []byte) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, u, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	req.Header.Set("User-Agent", "atr-bench")
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode/100 != 2 {
		if len(b) > 200 {
			b = b[:200]
		}
		return nil, &statusError{status: resp.StatusCode, body: string(bytes.TrimSpace(b))}
	}
	return b, nil
}

// warmClients returns enough public clients for n requests
// (publicPerClient each), each with about conc keep-alive connections
// already open: conc GET /healthz sent at once per client. A TLS handshake
// costs the server many requests' worth of CPU, and a client made inside a
// timed window opens up to conc connections in it — which, in a window of
// a few hundred requests, moved a rate by more than the differences it was
// meant to show. The warm-up requests stay inside the per-IP budget: at
// most publicBurst - publicPerClient of them per client.
func (f *clientFactory) warmClients(ctx context.Context, n, conc int) ([]*benchClient, error) {
	cs, err := f.clients((n + publicPerClient - 1) / publicPerClient)
	if err != nil {
		return nil, err
	}
	if err := f.warm(ctx, cs, min(conc, publicBurst-publicPerClient)); err != nil {
		closeAll(cs)
		return nil, err
	}
	return cs, nil
}

// warm opens conc keep-alive connections in each client of cs: conc GET
// /healthz sent at once per client, each holding the connection it got
// until all conc have one, so that none is served on another's connection
// while its own is still being opened (and would then be missing from the
// pool when the phase starts). /healthz is a public request: it takes from
// a client's public per-IP budget (publicBurst), not from its API key's or
// its per-IP budget for owner calls.
func (f *clientFactory) warm(ctx context.Context, cs []*benchClient, conc int) error {
	for _, c := range cs {
		var got sync.WaitGroup
		got.Add(conc)
		all := make(chan struct{})
		go func() { got.Wait(); close(all) }()
		errs := make(chan error, conc)
		for range conc {
			go func() {
				var once sync.Once
				trace := &httptrace.ClientTrace{GotConn: func(httptrace.GotConnInfo) {
					once.Do(got.Done)
					select {
					case <-all:
					case <-ctx.Done():
					}
				}}
				_, err := c.do(httptrace.WithClientTrace(ctx, trace), "GET", f.base+"/healthz", "", nil)
				once.Do(got.Done) // failed before it had a connection
				errs <- err
			}()
		}
		var err error
		for range conc {
			if e := <-errs; e != nil && err == nil {
				err = fmt.Errorf("warming a client's connections: %w", e)
			}
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// phaseClients hands the registration clients out to the phases that
// issue, each phase clients of its own (registerPerClient requests per
// client), with their connections opened before the phase's clock starts,
// and closes a phase's connections when it ends, as a client that is done
// does.
//
// A client sends up to registerPerClient requests at once, so it holds as
// many keep-alive connections. Opened inside the timed window, they made
// nearly every request of a phase at concurrency 32 a new TLS handshake:
// the phase timed the handshakes as much as the issuances
// (docs/performance.md, "Cold connections"). Each connection costs the
// server about 40 KB of buffers and a goroutine while it stays open. Left
// open (until the client's 60 s idle timeout), the ~2,200 connections of a
// full run's issuance phases stayed into its verify, OCSP, floor and CRL
// phases: ~100 MiB of the server's RSS that were the bench's, not the
// server's (docs/performance.md, "Memory").
type phaseClients struct {
	f    *clientFactory
	all  []*benchClient
	next int
	// pid is the server's process (0: not this bench's), whose CPU a
	// phase reports.
	pid int
	// pgDB is the PostgreSQL database of the server ("": none, or not
	// this bench's), whose backends' CPU a phase reports.
	pgDB string
}

// phaseUse is what a phase's timed window used: the connections its
// clients opened, the CPU of the server and of this process, and that of
// the PostgreSQL backends serving the server's database.
type phaseUse struct {
	opened int64
	cpu    cpuUse
	db     dbUse
}

// dbUse is what the server's PostgreSQL database's client backends and
// autovacuum workers used, read from this machine's /proc: none seen when
// PostgreSQL runs elsewhere.
type dbUse struct {
	watched bool
	procstat.PGUse
}

// run calls fn with the clients of a phase of n requests at concurrency
// conc, each client holding min(conc, registerPerClient) open connections,
// and returns what fn's window used.
func (p *phaseClients) run(ctx context.Context, n, conc int, fn func(cs []*benchClient) error) (phaseUse, error) {
	k := (n + registerPerClient - 1) / registerPerClient
	if p.next+k > len(p.all) {
		return phaseUse{}, fmt.Errorf("atr-bench: a phase needs %d registration clients, only %d of the %d planned are left", k, len(p.all)-p.next, len(p.all))
	}
	cs := p.all[p.next : p.next+k]
	p.next += k
	defer closeAll(cs)
	if err := p.f.warm(ctx, cs, max(1, min(conc, registerPerClient))); err != nil {
		return phaseUse{}, err
	}
	var w *procstat.PGWatch
	if p.pgDB != "" {
		w = procstat.Proc.WatchPGBackends(p.pgDB, 100*time.Millisecond)
	}
	d0, u0 := p.f.dials.Load(), readCPU(p.pid)
	err := fn(cs)
	use := phaseUse{opened: p.f.dials.Load() - d0, cpu: readCPU(p.pid).since(u0)}
	if w != nil {
		use.db = dbUse{watched: true, PGUse: w.Stop()}
	}
	return use, err
}

func closeAll(cs []*benchClient) {
	for _, c := range cs {
		c.close()
	}
}
