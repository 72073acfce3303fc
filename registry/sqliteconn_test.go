package registry

import (
	"context"
	"errors"
	"runtime/metrics"
	"testing"
)

// goroutinesCreated is the number of goroutines the process has created.
func goroutinesCreated(t *testing.T) uint64 {
	t.Helper()
	s := []metrics.Sample{{Name: "/sched/goroutines-created:goroutines"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		t.Fatalf("runtime/metrics has no %s", s[0].Name)
	}
	return s[0].Value.Uint64()
}

// TestSQLiteExecOnCallersGoroutine: a statement under a context that can
// end (a request's) runs on the caller's goroutine — mattn/go-sqlite3 on
// its own starts a goroutine for every such Exec and BEGIN, which the
// group commit's writer then waits for behind the request goroutines — and
// a context that ended before the statement still refuses it.
func TestSQLiteExecOnCallersGoroutine(t *testing.T) {
	s := openMigratedStore(t, "sqlite")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	conn, err := s.db.Connx(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	const n = 200
	before := goroutinesCreated(t)
	for range n / 2 {
		tx, err := conn.BeginTxx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.ExecContext(ctx, `SAVEPOINT x`); err != nil {
			t.Fatal(err)
		}
		if err := tx.Rollback(); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := conn.ExecContext(ctx, `CREATE TEMP TABLE t (i INTEGER)`); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if _, err := conn.ExecContext(ctx, `INSERT INTO t VALUES (?)`, i); err != nil {
			t.Fatal(err)
		}
	}
	// database/sql itself watches each transaction's context (one
	// goroutine per BEGIN): n/2 of them.
	if created := goroutinesCreated(t) - before; created > n/2+n/8 {
		t.Errorf("%d BEGINs and %d Execs created %d goroutines; want at most %d (one per transaction, none per statement)", n/2, n+n/2, created, n/2+n/8)
	}

	ended, end := context.WithCancel(ctx)
	end()
	if _, err := conn.ExecContext(ended, `INSERT INTO t VALUES (-1)`); !errors.Is(err, context.Canceled) {
		t.Errorf("Exec under an ended context: %v; want context.Canceled", err)
	}
	if _, err := conn.BeginTxx(ended, nil); !errors.Is(err, context.Canceled) {
		t.Errorf("Begin under an ended context: %v; want context.Canceled", err)
	}
	var rows, neg int
	if err := conn.GetContext(ctx, &rows, `SELECT count(*) FROM t`); err != nil || rows != n {
		t.Errorf("rows = %d, %v; want %d", rows, err, n)
	}
	if err := conn.GetContext(ctx, &neg, `SELECT count(*) FROM t WHERE i < 0`); err != nil || neg != 0 {
		t.Errorf("rows the ended context wrote = %d, %v; want 0", neg, err)
	}
}
