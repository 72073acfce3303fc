package registry

import (
	"database/sql"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

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

// Collectors are the store's metric families (atr_db_*: the connection
// pool, the group commit), to register on a Prometheus registry.
func (s *Store) Collectors() []prometheus.Collector {
	cs := []prometheus.Collector{newDBStatsCollector(s.Stats), newGroupCommitCollector(s.GroupCommitStats)}
	if b := s.pending; b != nil {
		counter := func(name, help string, v func(pendingBatcherStats) int64) prometheus.Collector {
			return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help}, func() float64 { return float64(v(b.stats())) })
		}
		cs = append(cs,
			counter("atr_db_pending_batches_total", "Statements that inserted issuances' pending rows (PostgreSQL), each holding the rows that queued meanwhile.",
				func(st pendingBatcherStats) int64 { return st.Batches }),
			counter("atr_db_pending_rows_total", "Pending rows the pending batcher inserted or refused; divided by the batches, the mean batch size.",
				func(st pendingBatcherStats) int64 { return st.Items }),
			counter("atr_db_pending_rows_alone_total", "Pending rows inserted one by one because their batch's statement failed (a row PostgreSQL refused, a lost connection).",
				func(st pendingBatcherStats) int64 { return st.Alone }))
	}
	return cs
}

// groupCommitCollector exposes the group commit's counters (registry
// writer.go): mean batch size = items / batches.
type groupCommitCollector struct {
	stats                                func() GroupCommitStats
	batches, items, reruns, busy, phases *prometheus.Desc
}

func newGroupCommitCollector(stats func() GroupCommitStats) *groupCommitCollector {
	return &groupCommitCollector{stats: stats,
		batches: prometheus.NewDesc("atr_db_group_commit_batches_total", "Transactions the group commit ran, each holding one or more queued transactions (savepoints).", nil, nil),
		items:   prometheus.NewDesc("atr_db_group_commit_items_total", "Queued transactions the group commit ran; divided by the batches, the mean batch size.", nil, nil),
		reruns:  prometheus.NewDesc("atr_db_group_commit_reruns_total", "Batches run again, each item in its own savepoint, because an item failed in their first run without savepoints.", nil, nil),
		busy:    prometheus.NewDesc("atr_db_group_commit_busy_seconds_total", "Time the group commit's writer spent running batches (begin to commit); a rate near 1 means the writer is saturated.", nil, nil),
		phases: prometheus.NewDesc("atr_db_group_commit_phase_seconds_total", "Time the group commit's writer spent in each phase of its transactions, together its busy time: begin, items (their reads and statements; on PostgreSQL the log head's lock), statements (PostgreSQL: the batch's collected statements), seal (the checkpoint's signatures and insert), commit (COMMIT and its hooks, or a failed run's ROLLBACK). Round trips and the wait for a processor after each count in their phase.",
			[]string{"phase"}, nil),
	}
}

func (c *groupCommitCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.batches
	ch <- c.items
	ch <- c.reruns
	ch <- c.busy
	ch <- c.phases
}

func (c *groupCommitCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.stats()
	ch <- prometheus.MustNewConstMetric(c.batches, prometheus.CounterValue, float64(st.Batches))
	ch <- prometheus.MustNewConstMetric(c.items, prometheus.CounterValue, float64(st.Items))
	ch <- prometheus.MustNewConstMetric(c.reruns, prometheus.CounterValue, float64(st.Reruns))
	ch <- prometheus.MustNewConstMetric(c.busy, prometheus.CounterValue, st.Busy.Seconds())
	st.Phases.Each(func(name string, d time.Duration) {
		ch <- prometheus.MustNewConstMetric(c.phases, prometheus.CounterValue, d.Seconds(), name)
	})
}

// Collectors are the registry's own metric families, to register on a
// Prometheus registry beside the store's: how often Verify and OCSP
// answered a certificate's status from memory and how often they read it
// from the database. Issue 14 asks that neither reads the database when
// nothing changed; the ratio shows what a workload gets (a revocation
// anywhere makes every cached status stale, a rotation only its
// predecessor's: supersedes.go; docs/performance.md, "Reads while a fleet
// rotates").
func (r *Registry) Collectors() []prometheus.Collector {
	lookups := func(name, help string, hits, reads *atomic.Int64) prometheus.Collector {
		return &lookupCollector{desc: prometheus.NewDesc(name, help, []string{"from"}, nil),
			counts: []labeledCount{{"cache", hits}, {"database", reads}}}
	}
	vr := &r.verifyReceipts
	cs := []prometheus.Collector{
		lookups("atr_verify_status_lookups_total", "Certificate statuses POST /v1/verify looked up, by where the answer came from: cache (no database read) or database.",
			&r.status.hits, &r.status.reads),
		&lookupCollector{desc: prometheus.NewDesc("atr_verify_receipts_total",
			"Receipts POST /v1/verify answered with, by how they were made: cache (a kept one, no proof made), proof (a kept one made again against another checkpoint: only stored hashes not kept in memory are read) or database (made from the stored opening and leaf).",
			[]string{"from"}, nil),
			counts: []labeledCount{{"cache", &vr.hits}, {"proof", &vr.proofs}, {"database", &vr.reads}}},
	}
	if rs := r.revocation; rs != nil { // nil without an issuer: no OCSP
		cs = append(cs, lookups("atr_ocsp_status_lookups_total", "OCSP requests for a certificate of a known issuer, by whether the answer needed a database read (database) or came from memory unchanged (cache).",
			&rs.ocspHits, &rs.ocspReads))
	}
	return cs
}

// lookupCollector exports counters as one family with a "from" label.
type lookupCollector struct {
	desc   *prometheus.Desc
	counts []labeledCount
}

type labeledCount struct {
	from string
	n    *atomic.Int64
}

func (c *lookupCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *lookupCollector) Collect(ch chan<- prometheus.Metric) {
	for _, l := range c.counts {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.CounterValue, float64(l.n.Load()), l.from)
	}
}
