package api

import (
	"fmt"
	"net/http"
	"regexp"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics are the Server's Prometheus families, on a registry owned by the Server.
type metrics struct {
	reg          *prometheus.Registry
	handler      http.Handler
	requests     *prometheus.CounterVec   // route, method, status
	latency      *prometheus.HistogramVec // route, method
	issuance     *prometheus.CounterVec   // operation (register|rotate), outcome
	revocations  *prometheus.CounterVec   // outcome
	verify       *prometheus.CounterVec   // result (verified or the reason), outcome
	rateLimited  *prometheus.CounterVec   // class (ATR_RATE_LIMITS names, or lockout)
	tableFull    *prometheus.CounterVec   // table (client|principal|action|auth-failure|lockout)
	authFailures *prometheus.CounterVec   // method (apikey|mtls), reason
}

func newMetrics(extra []prometheus.Collector) (*metrics, error) {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "atr_http_requests_total", Help: "HTTP requests by route template, method and status.",
		}, []string{"route", "method", "status"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "atr_http_request_duration_seconds", Help: "HTTP request latency by route template and method.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"route", "method"}),
		issuance: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "atr_issuance_total", Help: "Certificate issuance attempts by operation and outcome (ok or error code).",
		}, []string{"operation", "outcome"}),
		revocations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "atr_revocations_total", Help: "Revocation requests by outcome (ok or error code).",
		}, []string{"outcome"}),
		verify: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "atr_verify_total", Help: "Verify requests by result (verified, a refusal reason, or error).",
		}, []string{"result"}),
		rateLimited: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "atr_ratelimit_rejections_total", Help: "Requests refused by a rate limit, by limit class (the class names of ATR_RATE_LIMITS, or lockout).",
		}, []string{"class"}),
		tableFull: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "atr_ratelimit_table_full_total", Help: "Rate-limit decisions that found an in-process table full of live entries, by table (client, action and auth-failure: another entry was evicted; principal: the request got 503; lockout: the address was not locked out).",
		}, []string{"table"}),
		authFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "atr_auth_failures_total", Help: "Failed authentications by method and reason.",
		}, []string{"method", "reason"}),
	}
	cs := []prometheus.Collector{
		m.requests, m.latency, m.issuance, m.revocations, m.verify, m.rateLimited, m.tableFull, m.authFailures,
		// go_sched_latencies_seconds besides the defaults: how long
		// goroutines wait for a processor once runnable. On a busy
		// machine it is part of every round trip the group commit's
		// writer makes (docs/performance-history.md, twenty-third pass).
		collectors.NewGoCollector(collectors.WithGoCollectorRuntimeMetrics(
			collectors.GoRuntimeMetricsRule{Matcher: regexp.MustCompile(`^/sched/latencies:seconds$`)})),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	}
	for _, c := range append(cs, extra...) {
		if err := m.reg.Register(c); err != nil {
			return nil, fmt.Errorf("api: registering metrics: %w", err)
		}
	}
	m.handler = promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
	return m, nil
}

// outcome is the metric label for err: "ok" or the error code.
func outcome(err error) string {
	if err == nil {
		return "ok"
	}
	_, code, _ := classify(err)
	return code
}
