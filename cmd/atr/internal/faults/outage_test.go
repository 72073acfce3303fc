package faults

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/agent-trust-registry/atr/api/client"
)

// requestDeadline bounds any request while a dependency is down: the API's
// handler timeout (30 s, api.Config.HandlerTimeout default; serve has no
// flag for it) plus slack. A liveness bound, not a speed goal.
const requestDeadline = 35 * time.Second

// checkUnavailable checks that err is the standard 503 error body with a
// request ID and no internals.
func checkUnavailable(err error) error {
	var ce *client.Error
	switch {
	case err == nil:
		return errors.New("succeeded while the dependency was down")
	case !errors.As(err, &ce):
		return fmt.Errorf("no error body: %v", err)
	case ce.Status != http.StatusServiceUnavailable || ce.Code != "unavailable":
		return fmt.Errorf("got %d %q, want 503 unavailable", ce.Status, ce.Code)
	case ce.RequestID == "" || ce.Message == "":
		return fmt.Errorf("error body without request ID or message: %+v", ce)
	}
	for _, leak := range []string{"postgres", "pq:", "redis", "dial", "127.0.0.1", "sql", "connection"} {
		if strings.Contains(strings.ToLower(ce.Message), leak) {
			return fmt.Errorf("error message leaks %q: %q", leak, ce.Message)
		}
	}
	return nil
}

// probe is one timed request.
type probe struct {
	name string
	call func(ctx context.Context) error
}

// runProbes calls each probe every interval for d and checks every answer
// with want; it returns how many calls were made.
func runProbes(t *testing.T, d time.Duration, probes []probe, want func(error) error) int {
	t.Helper()
	n := 0
	for end := time.Now().Add(d); time.Now().Before(end); {
		for _, p := range probes {
			ctx, cancel := context.WithTimeout(t.Context(), requestDeadline+10*time.Second)
			start := time.Now()
			err := p.call(ctx)
			took := time.Since(start)
			cancel()
			n++
			if took > requestDeadline {
				t.Errorf("%s took %s while the dependency was down (deadline %s)", p.name, took, requestDeadline)
			}
			if werr := want(err); werr != nil {
				t.Errorf("%s: %v", p.name, werr)
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return n
}

// waitFor polls f until it returns nil or d passes (liveness bound).
func waitFor(t *testing.T, what string, d time.Duration, f func(ctx context.Context) error) time.Duration {
	t.Helper()
	start := time.Now()
	var err error
	for time.Since(start) < d {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		err = f(ctx)
		cancel()
		if err == nil {
			return time.Since(start)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s: not back after %s: %v", what, d, err)
	return 0
}

// TestPostgresOutage cuts the connection between `atr serve` and PostgreSQL
// (a TCP proxy in between) under load, several times, and restores it.
func TestPostgresOutage(t *testing.T) {
	outages := 2
	if Soak() {
		outages = 8
	}
	var proxy *Proxy
	e := NewEnv(t, EnvOptions{Postgres: true, DatabaseURL: func(direct string) string {
		proxy = NewProxy(t, "127.0.0.1:5432")
		return strings.Replace(direct, "127.0.0.1:5432", proxy.Addr(), 1)
	}})
	srv := e.NewServer(t, FreeAddr(t))
	srv.Start(t)
	// Each outage is probed by a fresh client (its own API key and source
	// address): the server's per-key, per-address and register limits stay at
	// their defaults, and a soak run's many probes would otherwise meet a
	// 429 where the test asks for the outage's 503.
	const nWorkers = 4
	ips := SourceIPs(nWorkers + outages + 8)
	site := newCrashSite(t, e, srv, ips[nWorkers+outages+2:])
	admin := e.Client(t, srv.URL(), e.AdminKey, ips[nWorkers+outages])
	workers, err := NewWorkers(t.Context(), nWorkers+outages, admin, site.ledger, func(i int, key string) []*client.Client {
		return []*client.Client{e.Client(t, srv.URL(), key, ips[i])}
	})
	if err != nil {
		t.Fatal(err)
	}
	probers, workers := workers[nWorkers:], workers[:nWorkers]
	public := e.Client(t, srv.URL(), "", ips[nWorkers+outages+1])
	csr, err := NewCSR()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range probers {
		seed, err := p.Clients[0].Register(t.Context(), client.RegisterRequest{Name: "seed." + p.Namespace, CSR: string(csr)})
		if err != nil {
			t.Fatal(err)
		}
		site.ledger.Registered("seed."+p.Namespace, seed)
	}

	stop := site.load(workers)
	var recovery []time.Duration
	calls := 0
	for _, prober := range probers {
		pc := prober.Clients[0]
		probes := []probe{
			{"register", func(ctx context.Context) error {
				_, err := pc.Register(ctx, client.RegisterRequest{Name: "p" + RandomHex(4) + "." + prober.Namespace, CSR: string(csr)})
				return err
			}},
			{"get agent", func(ctx context.Context) error { _, err := pc.Get(ctx, "seed."+prober.Namespace); return err }},
			{"readyz", func(ctx context.Context) error { return public.Ready(ctx) }},
		}
		time.Sleep(randDuration(500*time.Millisecond, 1500*time.Millisecond))
		proxy.Cut()
		calls += runProbes(t, 2*time.Second, probes, checkUnavailable)
		proxy.Restore()
		recovery = append(recovery, waitFor(t, "readyz", 60*time.Second, public.Ready))
		waitFor(t, "register", 60*time.Second, func(ctx context.Context) error {
			csr, _ := NewCSR()
			c, err := pc.Register(ctx, client.RegisterRequest{Name: "r" + RandomHex(4) + "." + prober.Namespace, CSR: string(csr)})
			if err == nil {
				site.ledger.Registered(c.Name, c)
			}
			return err
		})
		if t.Failed() {
			break
		}
	}
	time.Sleep(500 * time.Millisecond)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	for _, w := range workers {
		if _, _, lat := w.Snapshot(); lat > requestDeadline {
			t.Errorf("worker %d: a request took %s (deadline %s)", w.ID, lat, requestDeadline)
		}
	}
	t.Logf("FIGURES postgres outages survived %d; probe calls while down %d (each must be 503); recovery after restore %v", outages, calls, recovery)
	site.finish(t, workers, fmt.Sprintf("postgres outage: outages %d", outages))
}

// TestRedisOutage points ATR_REDIS_URL at a proxy and cuts it: privileged
// endpoints fail closed with 503, verify keeps working on local limits, and
// service resumes when Redis is back.
func TestRedisOutage(t *testing.T) {
	if c, err := net.DialTimeout("tcp", "127.0.0.1:6379", 2*time.Second); err != nil {
		missing(t, "Redis at 127.0.0.1:6379 not reachable: %v", err)
	} else {
		c.Close()
	}
	outages := 2
	if Soak() {
		outages = 8
	}
	proxy := NewProxy(t, "127.0.0.1:6379")
	e := NewEnv(t, EnvOptions{})
	e.Extra = []string{"ATR_REDIS_URL=redis://" + proxy.Addr() + "/0"}
	srv := e.NewServer(t, FreeAddr(t))
	srv.Start(t)
	ips := SourceIPs(3)
	admin := e.Client(t, srv.URL(), e.AdminKey, ips[0])
	l := NewLedger()
	ws, err := NewWorkers(t.Context(), 1, admin, l, func(i int, key string) []*client.Client {
		return []*client.Client{e.Client(t, srv.URL(), key, ips[1])}
	})
	if err != nil {
		t.Fatal(err)
	}
	owner, ns := ws[0].Clients[0], ws[0].Namespace
	public := e.Client(t, srv.URL(), "", ips[2])
	csr, err := NewCSR()
	if err != nil {
		t.Fatal(err)
	}
	cert, err := owner.Register(t.Context(), client.RegisterRequest{Name: "seed." + ns, CSR: string(csr)})
	if err != nil {
		t.Fatal(err)
	}
	verifies := 0
	for range outages {
		proxy.Cut()
		runProbes(t, 1500*time.Millisecond, []probe{
			{"register", func(ctx context.Context) error {
				_, err := owner.Register(ctx, client.RegisterRequest{Name: "p" + RandomHex(4) + "." + ns, CSR: string(csr)})
				return err
			}},
			{"get agent", func(ctx context.Context) error { _, err := owner.Get(ctx, "seed."+ns); return err }},
		}, checkUnavailable)
		verifies += runProbes(t, 500*time.Millisecond, []probe{{"verify", func(ctx context.Context) error {
			res, err := public.Verify(ctx, []byte(cert.Certificate), []byte(cert.Chain))
			if err == nil && !res.Verified {
				return fmt.Errorf("not verified: %s", res.Reason)
			}
			return err
		}}}, func(err error) error { return err })
		proxy.Restore()
		waitFor(t, "register after Redis returned", 60*time.Second, func(ctx context.Context) error {
			_, err := owner.Register(ctx, client.RegisterRequest{Name: "r" + RandomHex(4) + "." + ns, CSR: string(csr)})
			return err
		})
	}
	t.Logf("FIGURES redis outages survived %d; verify answered while Redis was down %d times", outages, verifies)
}
