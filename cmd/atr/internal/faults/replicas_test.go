package faults

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"

	"github.com/agent-trust-registry/atr/api/client"
)

// TestReplicas runs three `atr serve` processes on one PostgreSQL database,
// one token directory and one Redis, drives load through all of them, and
// checks one gap-free log, one global rate limit and prompt revocation.
func TestReplicas(t *testing.T) {
	if c, err := net.DialTimeout("tcp", "127.0.0.1:6379", 2*time.Second); err != nil {
		missing(t, "Redis at 127.0.0.1:6379 not reachable: %v", err)
	} else {
		c.Close()
	}
	loadFor := 4 * time.Second
	if Soak() {
		loadFor = 60 * time.Second
	}
	const nReplicas, nWorkers = 3, 6
	e := NewEnv(t, EnvOptions{Postgres: true})
	e.Extra = []string{"ATR_REDIS_URL=redis://127.0.0.1:6379/0"}
	srvs := make([]*Server, nReplicas)
	for i := range srvs {
		srvs[i] = e.NewServer(t, FreeAddr(t))
		if err := srvs[i].StartNoWait(); err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range srvs {
		if err := s.WaitReady(t.Context(), 60*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	ips := SourceIPs(nWorkers + 8)
	site := newCrashSite(t, e, srvs[0], ips[nWorkers+2:])
	admin := e.Client(t, srvs[0].URL(), e.AdminKey, ips[nWorkers])
	workers, err := NewWorkers(t.Context(), nWorkers+1, admin, site.ledger, func(i int, key string) []*client.Client {
		var cs []*client.Client
		for _, s := range srvs {
			cs = append(cs, e.Client(t, s.URL(), key, ips[i]))
		}
		return cs
	})
	if err != nil {
		t.Fatal(err)
	}
	special, workers := workers[nWorkers], workers[:nWorkers]

	stop := site.load(workers)
	time.Sleep(loadFor)
	if err := stop(); err != nil {
		t.Fatal(err)
	}

	// One log: the same tree head on every replica, entries 0..n-1 stored
	// exactly once, and everything acknowledged in it once.
	// Each process signs at most one checkpoint per second
	// (registry checkpointInterval), so the heads agree a second after the
	// last write; poll a little beyond that.
	var heads []string
	for end := time.Now().Add(5 * time.Second); ; {
		time.Sleep(1100 * time.Millisecond)
		heads = heads[:0]
		for i, s := range srvs {
			cp, err := site.watcher.Fetch(t.Context(), e.Client(t, s.URL(), "", ips[nWorkers+1]))
			if err != nil {
				t.Fatalf("replica %d checkpoint: %v", i, err)
			}
			heads = append(heads, fmt.Sprintf("%d/%x", cp.Size, cp.Hash[:8]))
		}
		if heads[1] == heads[0] && heads[2] == heads[0] {
			break
		}
		if time.Now().After(end) {
			t.Errorf("tree heads differ between replicas: %v", heads)
			break
		}
	}
	db := e.OpenDB(t)
	var idx struct {
		N, Min, Max, Distinct int64
	}
	if err := db.QueryRowContext(t.Context(), `SELECT COUNT(*), COALESCE(MIN(idx),0), COALESCE(MAX(idx),-1), COUNT(DISTINCT idx) FROM log_entries`).Scan(&idx.N, &idx.Min, &idx.Max, &idx.Distinct); err != nil {
		t.Fatal(err)
	}
	var head int64
	if err := db.QueryRowContext(t.Context(), `SELECT size FROM log_head WHERE id = 1`).Scan(&head); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if idx.Min != 0 || idx.Max != idx.N-1 || idx.Distinct != idx.N || head != idx.N {
		t.Errorf("log_entries: count %d, min %d, max %d, distinct %d, head size %d; want 0..n-1 each once and head n", idx.N, idx.Min, idx.Max, idx.Distinct, head)
	}
	site.check(t, false) // duplicates, statuses, consistency, exactly-once events

	// A global rate limit: the rotate budget of one agent is shared by all
	// replicas (PerHour(10), burst 10).
	sc := special.Clients
	name := "limited." + special.Namespace
	csr, err := NewCSR()
	if err != nil {
		t.Fatal(err)
	}
	reg, err := sc[0].Register(t.Context(), client.RegisterRequest{Name: name, CSR: string(csr)})
	if err != nil {
		t.Fatal(err)
	}
	site.ledger.Registered(name, reg)
	const rotateBurst, attempts = 10, 16
	allowed, limited := 0, 0
	for i := range attempts {
		csr, _ := NewCSR()
		c, err := sc[i%nReplicas].Rotate(t.Context(), name, csr)
		switch {
		case err == nil:
			allowed++
			site.ledger.Rotated(name, c)
		case client.IsCode(err, "rate_limited"):
			limited++
		default:
			t.Fatalf("rotate %d via replica %d: %v", i, i%nReplicas, err)
		}
	}
	if allowed != rotateBurst || limited != attempts-rotateBurst {
		t.Errorf("rotations of one agent through %d replicas: %d allowed, %d limited; want %d and %d (one global limit)", nReplicas, allowed, limited, rotateBurst, attempts-rotateBurst)
	}

	// Revocation on replica 0 is seen by verify (and OCSP, when served) on
	// the others within one second.
	name2 := "revoked." + special.Namespace
	csr, _ = NewCSR()
	cert, err := sc[1].Register(t.Context(), client.RegisterRequest{Name: name2, CSR: string(csr)})
	if err != nil {
		t.Fatal(err)
	}
	site.ledger.Registered(name2, cert)
	leaf, issuer := parseLeafAndIssuer(t, cert)
	if _, err := sc[0].Revoke(t.Context(), name2, "keyCompromise"); err != nil {
		t.Fatal(err)
	}
	revokedAt := time.Now()
	site.ledger.RevokedAck(name2)
	ocspServed := 0
	for i := 1; i < nReplicas; i++ {
		pub := e.Client(t, srvs[i].URL(), "", ips[nWorkers+1])
		var seen time.Duration = -1
		for time.Since(revokedAt) < 5*time.Second {
			res, err := pub.Verify(t.Context(), []byte(cert.Certificate), []byte(cert.Chain))
			if err != nil {
				t.Fatalf("verify on replica %d: %v", i, err)
			}
			if !res.Verified && res.Reason == "revoked" {
				seen = time.Since(revokedAt)
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if seen < 0 || seen > time.Second {
			t.Errorf("replica %d: verify saw the revocation after %v; want within 1s", i, seen)
		}
		status, err := ocspStatus(t.Context(), e, srvs[i].URL(), leaf, issuer)
		switch {
		case err == errOCSPNotServed:
			t.Logf("replica %d: /v1/ocsp answers 501; OCSP not checked", i)
		case err != nil:
			t.Errorf("replica %d: OCSP: %v", i, err)
		case status != ocsp.Revoked:
			t.Errorf("replica %d: OCSP status %d, want revoked", i, status)
		default:
			ocspServed++
		}
	}
	site.check(t, true)
	certs, revokes, doubts := site.ledger.Stats()
	errs := map[int]int{}
	for _, w := range workers {
		_, es, _ := w.Snapshot()
		for k, v := range es {
			errs[k] += v
		}
	}
	t.Logf("worker errors by status (0: transport): %v", errs)
	t.Logf("FIGURES replicas %d on one PostgreSQL + Redis + token dir; acknowledged certificates %d, revocations %d, lost %d; tree head %s on all; rotate limit %d/%d allowed across replicas; OCSP checked on %d replicas",
		nReplicas, certs, revokes, doubts, heads[0], allowed, attempts, ocspServed)
}

func parseLeafAndIssuer(t *testing.T, c *client.Certificate) (leaf, issuer *x509.Certificate) {
	t.Helper()
	parse := func(p string) *x509.Certificate {
		b, _ := pem.Decode([]byte(p))
		if b == nil {
			t.Fatal("not PEM")
		}
		x, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		return x
	}
	return parse(c.Certificate), parse(c.Chain)
}

var errOCSPNotServed = fmt.Errorf("faults: OCSP not served (501)")

// ocspStatus asks POST /v1/ocsp of baseURL about leaf.
func ocspStatus(ctx context.Context, e *Env, baseURL string, leaf, issuer *x509.Certificate) (int, error) {
	req, err := ocsp.CreateRequest(leaf, issuer, nil)
	if err != nil {
		return 0, err
	}
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, baseURL+"/v1/ocsp", bytes.NewReader(req))
	if err != nil {
		return 0, err
	}
	hr.Header.Set("Content-Type", "application/ocsp-request")
	hc := e.httpClient()
	defer hc.CloseIdleConnections()
	resp, err := hc.Do(hr)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return 0, err
	}
	if resp.StatusCode == http.StatusNotImplemented {
		return 0, errOCSPNotServed
	}
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("status %d", resp.StatusCode)
	}
	r, err := ocsp.ParseResponseForCert(body, leaf, issuer)
	if err != nil {
		return 0, err
	}
	return r.Status, nil
}
