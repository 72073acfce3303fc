package registry

import (
	"context"
	"fmt"
	"testing"

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
	old := stmtCacheSize
	stmtCacheSize = 4
	t.Cleanup(func() { stmtCacheSize = old })
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
