package registry

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/agent-trust-registry/atr/registry/internal/testdb"
	"github.com/jmoiron/sqlx"
)

// postgresConn opens a fresh, migrated PostgreSQL Store and returns one of
// its connections (prepared statements are per connection), closed in
// t.Cleanup.
func postgresConn(t *testing.T) *sqlx.Conn {
	t.Helper()
	s := openMigratedStore(t, "postgres")
	conn, err := s.db.Connx(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// TestPostgresStatementsPreparedOnce: every statement with parameters was
// parsed and planned by PostgreSQL anew at each execution (lib/pq sends
// unnamed statements), about 0.1 ms of the server's CPU per statement and
// ~33 statements per issuance — more PostgreSQL CPU per certificate than
// the statements themselves took to run. Each connection now prepares a
// statement once and executes the prepared statement after that.
func TestPostgresStatementsPreparedOnce(t *testing.T) {
	ctx := context.Background()
	conn := postgresConn(t)
	const q = `SELECT COUNT(*) FROM agents WHERE name = $1`
	for i := range 5 {
		var n int
		if err := conn.GetContext(ctx, &n, q, fmt.Sprintf("a%d.acme", i)); err != nil {
			t.Fatal(err)
		}
	}
	// Statements without parameters use the simple protocol (migrations
	// hold several statements in one string), never prepared.
	var prepared int
	if err := conn.GetContext(ctx, &prepared, `SELECT COUNT(*) FROM pg_prepared_statements WHERE statement = '`+q+`'`); err != nil {
		t.Fatal(err)
	}
	if prepared != 1 {
		t.Errorf("%q prepared %d times on the connection, want once", q, prepared)
	}
}

// TestPostgresStatementCacheBounded: past stmtCacheSize distinct texts the
// least recently used statement is deallocated on the server.
func TestPostgresStatementCacheBounded(t *testing.T) {
	old := stmtCacheSize.Swap(4)
	t.Cleanup(func() { stmtCacheSize.Store(old) })
	ctx := context.Background()
	conn := postgresConn(t)
	for i := range 10 {
		var n int
		if err := conn.GetContext(ctx, &n, fmt.Sprintf(`SELECT %d + $1::int`, i), 1); err != nil || n != i+1 {
			t.Fatalf("query %d: %d, %v", i, n, err)
		}
	}
	var prepared int
	if err := conn.GetContext(ctx, &prepared, `SELECT COUNT(*) FROM pg_prepared_statements`); err != nil {
		t.Fatal(err)
	}
	if prepared != 4 {
		t.Errorf("%d statements prepared on the connection, want the cache's 4", prepared)
	}
}

// TestPostgresStatementCacheRecovers: when the server loses a connection's
// prepared statements (DEALLOCATE ALL, as a pooler may send), the failed
// execution drops the cached statement and the next one prepares it again;
// the same when a migration changes what a cached SELECT returns.
func TestPostgresStatementCacheRecovers(t *testing.T) {
	ctx := context.Background()
	conn := postgresConn(t)
	if _, err := conn.ExecContext(ctx, `CREATE TEMP TABLE t (a int)`); err != nil {
		t.Fatal(err)
	}
	const q = `SELECT * FROM t WHERE a <> $1`
	query := func() error {
		rows, err := conn.QueryContext(ctx, q, -1)
		if err != nil {
			return err
		}
		return rows.Close()
	}
	for _, tc := range []struct {
		desc, break_ string
	}{
		{"statements deallocated", `DEALLOCATE ALL`},
		{"result type changed", `ALTER TABLE t ADD COLUMN b int`},
	} {
		if err := query(); err != nil {
			t.Fatalf("%s: first query: %v", tc.desc, err)
		}
		if _, err := conn.ExecContext(ctx, tc.break_); err != nil {
			t.Fatal(err)
		}
		if err := query(); err == nil {
			t.Logf("%s: the server re-planned without an error", tc.desc)
		}
		if err := query(); err != nil {
			t.Errorf("%s: the query after the failed one: %v, want it prepared again", tc.desc, err)
		}
	}
}

// TestPostgresStatementCacheOff: atr_statement_cache=off (for poolers that
// move sessions between server connections) prepares nothing and never
// reaches the server as a parameter; any other value is refused.
func TestPostgresStatementCacheOff(t *testing.T) {
	ctx := context.Background()
	base := testdb.URL(t, "postgres")
	sep := "?"
	if strings.Contains(base, "?") {
		sep = "&"
	}
	s, err := Open(ctx, base+sep+statementCacheParam+"=off", testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	conn, err := s.db.Connx(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var n, prepared int
	for range 3 {
		if err := conn.GetContext(ctx, &n, `SELECT $1::int`, 7); err != nil || n != 7 {
			t.Fatalf("query: %d, %v", n, err)
		}
	}
	if err := conn.GetContext(ctx, &prepared, `SELECT COUNT(*) FROM pg_prepared_statements`); err != nil {
		t.Fatal(err)
	}
	if prepared != 0 {
		t.Errorf("%d statements prepared with the cache off", prepared)
	}
	if _, err := Open(ctx, base+sep+statementCacheParam+"=maybe", testLogger(t)); !errors.Is(err, ErrInvalid) {
		t.Errorf("%s=maybe: %v, want ErrInvalid", statementCacheParam, err)
	}
}

// TestPostgresCancelledStatementRetiresConnection: a cancelled prepared
// statement leaves a cancel request in flight, which lib/pq does not account
// for on prepared statements; the connection must not serve another query.
func TestPostgresCancelledStatementRetiresConnection(t *testing.T) {
	s := openMigratedStore(t, "postgres")
	ctx := context.Background()
	conn, err := s.db.Connx(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var pid int
	if err := conn.GetContext(ctx, &pid, `SELECT pg_backend_pid() + $1`, 0); err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, err := conn.ExecContext(cctx, `SELECT pg_sleep($1)`, 2); err == nil {
		t.Fatal("pg_sleep(2) finished under a 50 ms deadline")
	}
	conn.Close() // back to the pool: database/sql must discard it
	deadline := time.Now().Add(5 * time.Second)
	for {
		var alive int
		if err := s.db.GetContext(ctx, &alive, `SELECT COUNT(*) FROM pg_stat_activity WHERE pid = $1`, pid); err != nil {
			t.Fatal(err)
		}
		if alive == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("backend %d of the cancelled statement is still connected", pid)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
