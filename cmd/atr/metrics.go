package main

import (
	"context"
	"crypto"
	"database/sql"
	"io"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// The operational metrics that only the wiring can see: token health, HSM
// operation latency and errors, and the database pool. They join the api
// server's own families on its /metrics registry.

// hsmMetrics counts and times operations on the token.
type hsmMetrics struct {
	latency *prometheus.HistogramVec // key, op
	errors  *prometheus.CounterVec   // key, op
}

func newHSMMetrics() *hsmMetrics {
	return &hsmMetrics{
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "atr_hsm_operation_duration_seconds",
			Help:    "Latency of operations on the PKCS#11 token, by key and operation.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, 1},
		}, []string{"key", "op"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "atr_hsm_errors_total",
			Help: "Failed operations on the PKCS#11 token, by key and operation.",
		}, []string{"key", "op"}),
	}
}

func (m *hsmMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.latency, m.errors}
}

// signer wraps a token signer so that each signature is timed and each
// failure counted under the key's role ("issuing", "log").
func (m *hsmMetrics) signer(role string, s crypto.Signer) crypto.Signer {
	return &instrumentedSigner{Signer: s, latency: m.latency.WithLabelValues(role, "sign"), errors: m.errors.WithLabelValues(role, "sign")}
}

type instrumentedSigner struct {
	crypto.Signer
	latency prometheus.Observer
	errors  prometheus.Counter
}

func (s *instrumentedSigner) Sign(r io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	start := time.Now()
	sig, err := s.Signer.Sign(r, digest, opts)
	s.latency.Observe(time.Since(start).Seconds())
	if err != nil {
		s.errors.Inc()
	}
	return sig, err
}

// tokenHealthGauge is 1 while the token answers and 0 while it is being
// recovered (the signer fails closed meanwhile).
func tokenHealthGauge(healthy func(ctx context.Context) error) prometheus.Collector {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "atr_token_healthy",
		Help: "1 when the online PKCS#11 token is usable, 0 while it is unavailable.",
	}, func() float64 {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if healthy(ctx) != nil {
			return 0
		}
		return 1
	})
}

// dbStatsCollector exports the connection pool's statistics.
type dbStatsCollector struct {
	stats                               func() sql.DBStats
	open, inUse, idle, max, waits, wdur *prometheus.Desc
}

func newDBStatsCollector(stats func() sql.DBStats) *dbStatsCollector {
	d := func(name, help string) *prometheus.Desc {
		return prometheus.NewDesc("atr_db_"+name, help, nil, nil)
	}
	return &dbStatsCollector{
		stats: stats,
		open:  d("open_connections", "Open connections in the database pool."),
		inUse: d("in_use_connections", "Connections in use."),
		idle:  d("idle_connections", "Idle connections."),
		max:   d("max_open_connections", "The pool's bound on open connections."),
		waits: d("wait_count_total", "Times a request waited for a free connection."),
		wdur:  d("wait_duration_seconds_total", "Total time spent waiting for a free connection."),
	}
}

func (c *dbStatsCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.open, c.inUse, c.idle, c.max, c.waits, c.wdur} {
		ch <- d
	}
}

func (c *dbStatsCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.stats()
	ch <- prometheus.MustNewConstMetric(c.open, prometheus.GaugeValue, float64(s.OpenConnections))
	ch <- prometheus.MustNewConstMetric(c.inUse, prometheus.GaugeValue, float64(s.InUse))
	ch <- prometheus.MustNewConstMetric(c.idle, prometheus.GaugeValue, float64(s.Idle))
	ch <- prometheus.MustNewConstMetric(c.max, prometheus.GaugeValue, float64(s.MaxOpenConnections))
	ch <- prometheus.MustNewConstMetric(c.waits, prometheus.CounterValue, float64(s.WaitCount))
	ch <- prometheus.MustNewConstMetric(c.wdur, prometheus.CounterValue, s.WaitDuration.Seconds())
}

// groupCommitCollector exposes the group commit's counters (registry
// writer.go): mean batch size = items / batches.
type groupCommitCollector struct {
	stats          func() (batches, items int64)
	batches, items *prometheus.Desc
}

func newGroupCommitCollector(stats func() (batches, items int64)) *groupCommitCollector {
	return &groupCommitCollector{stats: stats,
		batches: prometheus.NewDesc("atr_db_group_commit_batches_total", "Transactions the group commit ran, each holding one or more queued transactions (savepoints).", nil, nil),
		items:   prometheus.NewDesc("atr_db_group_commit_items_total", "Queued transactions the group commit ran; divided by the batches, the mean batch size.", nil, nil),
	}
}

func (c *groupCommitCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.batches; ch <- c.items }

func (c *groupCommitCollector) Collect(ch chan<- prometheus.Metric) {
	b, i := c.stats()
	ch <- prometheus.MustNewConstMetric(c.batches, prometheus.CounterValue, float64(b))
	ch <- prometheus.MustNewConstMetric(c.items, prometheus.CounterValue, float64(i))
}
