package registry

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"

	"github.com/agent-trust-registry/atr/registry/internal/testdb"
)

// TestStoreCollectors: the store's metric families gather, with the group
// commit's counters following its work.
func TestStoreCollectors(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, testdb.SQLiteURL(t), logrus.NewEntry(logrus.New()))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	got := gather(t, s)
	for _, name := range []string{"atr_db_open_connections", "atr_db_in_use_connections", "atr_db_idle_connections",
		"atr_db_max_open_connections", "atr_db_wait_count_total", "atr_db_wait_duration_seconds_total",
		"atr_db_group_commit_batches_total", "atr_db_group_commit_items_total", "atr_db_group_commit_busy_seconds_total",
		"atr_db_group_commit_phase_seconds_total"} {
		if _, ok := got[name]; !ok {
			t.Errorf("%s missing (gathered %v)", name, got)
		}
	}
	if got["atr_db_group_commit_batches_total"] < 1 || got["atr_db_group_commit_items_total"] < got["atr_db_group_commit_batches_total"] {
		t.Errorf("group commit counters after migrating = %v batches, %v items; want ≥ 1 batch, items ≥ batches",
			got["atr_db_group_commit_batches_total"], got["atr_db_group_commit_items_total"])
	}
	if got["atr_db_group_commit_busy_seconds_total"] <= 0 {
		t.Errorf("atr_db_group_commit_busy_seconds_total = %v after migrating, want > 0", got["atr_db_group_commit_busy_seconds_total"])
	}
}

// TestPendingBatchCollectors: on PostgreSQL the store also exposes the
// pending rows' batcher (pendingbatch.go), following its work; SQLite has
// none (its pending rows go through the group commit).
func TestPendingBatchCollectors(t *testing.T) {
	for _, db := range testdb.Names() {
		t.Run(db, func(t *testing.T) {
			st := openMigratedStore(t, db)
			now := time.Now().UTC()
			if err := st.insertPending(context.Background(), opInsertPending, pendingRow{Serial: "0a", Agent: "a.acme", Owner: "acme",
				Kind: "register", TBS: []byte{1}, CreatedAt: now, UpdatedAt: now}); err != nil {
				t.Fatal(err)
			}
			got := gather(t, st)
			names := []string{"atr_db_pending_batches_total", "atr_db_pending_rows_total", "atr_db_pending_rows_alone_total"}
			for _, name := range names {
				if _, ok := got[name]; ok != (db == "postgres") {
					t.Errorf("%s: %s exposed %t, want %t", db, name, ok, db == "postgres")
				}
			}
			if db == "postgres" && (got[names[0]] != 1 || got[names[1]] != 1 || got[names[2]] != 0) {
				t.Errorf("after one pending row: %v batches, %v rows, %v alone; want 1, 1, 0", got[names[0]], got[names[1]], got[names[2]])
			}
		})
	}
}

// gather returns the value of each of s's metrics (the first of a family).
func gather(t *testing.T, s *Store) map[string]float64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(s.Collectors()...)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		m := mf.GetMetric()[0]
		if c := m.GetCounter(); c != nil {
			got[mf.GetName()] = c.GetValue()
		} else {
			got[mf.GetName()] = m.GetGauge().GetValue()
		}
	}
	return got
}
