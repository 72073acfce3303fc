package api

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestMetricsOperatorFamilies replays issue 11 item 8: route labels carried mux regexes
// ("/v1/ocsp/{req:.+}"), and there was no atr_build_info nor any gauge for the expiry of
// CA certificates and the CRL, which is what an operator alerts on.
func TestMetricsOperatorFamilies(t *testing.T) {
	h := newHarness(t, nil)
	h.do("GET", "/v1/ocsp/MAM=", "", nil)
	h.do("GET", "/v1/log/tile/0/000.p/1", "", nil)
	r := h.do("GET", "/metrics", "", nil)
	if r.status != 200 {
		t.Fatalf("GET /metrics: %d", r.status)
	}
	body := string(r.body)
	for _, want := range []string{
		`route="/v1/ocsp/{req}"`,
		`route="/v1/log/tile/{tile}"`,
		"atr_build_info{goversion=",
		`atr_ca_certificate_not_after_timestamp_seconds{role="root"`,
		"atr_crl_next_update_timestamp_seconds ",
		`atr_ca_crl_next_update_timestamp_seconds{key_id="0a0b",kind="issuer"}`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	for _, line := range strings.Split(body, "\n") {
		if strings.Contains(line, `route="`) && strings.Contains(line, ":.") {
			t.Errorf("route label with a mux regex: %s", line)
		}
	}
}

func TestRouteLabel(t *testing.T) {
	for in, want := range map[string]string{
		"/v1/ocsp/{req:.+}":         "/v1/ocsp/{req}",
		"/v1/log/tile/{tile:.+}":    "/v1/log/tile/{tile}",
		"/v1/agents/{name}/rotate":  "/v1/agents/{name}/rotate",
		"/v1/admin/apikeys/{id:.*}": "/v1/admin/apikeys/{id}",
	} {
		if got := routeLabel(in); got != want {
			t.Errorf("routeLabel(%q) = %q, want %q", in, got, want)
		}
	}
}

// storedCRLs is a Revocation whose CRLs have a stored nextUpdate: CRL and
// CRLOf, which make a CRL when the stored one is stale, are counted.
type storedCRLs struct {
	fakeLog
	made atomic.Int64
}

func (c *storedCRLs) CRL(ctx context.Context) ([]byte, time.Time, error) {
	c.made.Add(1)
	return c.fakeLog.CRL(ctx)
}

func (c *storedCRLs) CRLOf(ctx context.Context, keyID string) ([]byte, time.Time, error) {
	c.made.Add(1)
	return c.fakeLog.CRLOf(ctx, keyID)
}

func (c *storedCRLs) CRLNextUpdate(_ context.Context, keyID string) (time.Time, error) {
	return time.Unix(1900000000, 0), nil
}

// A scrape reads the CRL gauges without making a CRL: under a rotating
// fleet every scrape regenerated the whole list, a second of CPU for 48,000
// entries (docs/performance-history.md, fifteenth pass).
func TestMetricsScrapeMakesNoCRL(t *testing.T) {
	rev := &storedCRLs{}
	h := newHarness(t, func(_ *Config, d *Deps) { d.Revocation = rev })
	r := h.do("GET", "/metrics", "", nil)
	if r.status != 200 {
		t.Fatalf("GET /metrics: %d", r.status)
	}
	for _, want := range []string{
		"atr_crl_next_update_timestamp_seconds 1.9e+09",
		`atr_ca_crl_next_update_timestamp_seconds{key_id="0a0b",kind="issuer"} 1.9e+09`,
	} {
		if !strings.Contains(string(r.body), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if n := rev.made.Load(); n != 0 {
		t.Errorf("a scrape asked for %d CRLs, want none (the stored nextUpdate)", n)
	}
}
