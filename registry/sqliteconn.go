package registry

import (
	"context"
	"database/sql/driver"
	"fmt"
	"strconv"
	"sync/atomic"

	sqlite3 "github.com/mattn/go-sqlite3"
)

// SQLite statements run on the caller's goroutine. mattn/go-sqlite3 runs
// every Exec whose context can end (every request's context can) on a new
// goroutine and waits for it on a channel, so that it can interrupt the
// statement if the context ends meanwhile. Each INSERT or UPDATE then costs
// a goroutine, two goroutine switches and, on a busy server, a wait behind
// the runnable request goroutines before the new goroutine gets a processor:
// the group commit's one writer, which runs every write of the process,
// spent most of its time waiting so (docs/performance-history.md, sixth pass).
//
// ATR's Execs write a handful of rows by key and take microseconds, so here
// they run on the caller's goroutine: a context that ended before the
// statement still refuses it, one that ends while it runs lets it finish
// (its transaction is then rolled back by database/sql, or by the writer,
// as before). BEGIN IMMEDIATE waits for the write lock at most the busy
// timeout (sqliteParams). Queries keep mattn's cancellation: it watches a
// query's context with context.AfterFunc, without a goroutine per statement.

// sqliteConnector opens mattn/go-sqlite3 connections wrapped in
// syncExecConn.
type sqliteConnector struct {
	dsn string
	drv *sqlite3.SQLiteDriver
}

func newSQLiteConnector(dsn string) sqliteConnector {
	return sqliteConnector{dsn: dsn, drv: &sqlite3.SQLiteDriver{ConnectHook: setConnPragmas}}
}

// connPragmas are set on every SQLite connection (setConnPragmas):
//
//   - temp_store = MEMORY keeps a connection's temporary data — notably the
//     journals of its savepoints and statements — in memory. By default
//     SQLite spills a journal past 64 KiB to an unlinked file under
//     /var/tmp, two write(2)s per page: under load that was twice the WAL's
//     writes, every one of them on the group commit's one writer
//     (TestSQLiteTempStoreInMemory; docs/performance-history.md, thirteenth pass).
//     The journals last one transaction, and ATR's are a batch's pages.
//   - wal_autocheckpoint = walAutoCheckpointPages: the Store's
//     checkpointer copies the WAL back, off the writer, and a commit
//     checkpoints only as the backstop that lets the WAL start over
//     (checkpointer.go; TestSQLiteWALCheckpointedOffTheWriter,
//     TestSQLiteWALBoundedUnderSustainedCommits).
var connPragmas = []string{"PRAGMA temp_store = MEMORY", "PRAGMA wal_autocheckpoint = " + strconv.Itoa(walAutoCheckpointPages)}

func setConnPragmas(c *sqlite3.SQLiteConn) error {
	for _, p := range connPragmas {
		if _, err := c.Exec(p, nil); err != nil {
			return err
		}
	}
	return nil
}

func (c sqliteConnector) Driver() driver.Driver { return c.drv }

func (c sqliteConnector) Connect(ctx context.Context) (driver.Conn, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	conn, err := c.drv.Open(c.dsn)
	if err != nil {
		return nil, err
	}
	sc, ok := conn.(*sqlite3.SQLiteConn)
	if !ok {
		conn.Close()
		return nil, fmt.Errorf("registry: sqlite connection is a %T, not a *sqlite3.SQLiteConn", conn)
	}
	if h := connectHook.Load(); h != nil {
		(*h)(c.dsn, sc)
	}
	return &syncExecConn{sc}, nil
}

// connectHook, when set, sees every new SQLite connection and its DSN
// (tests: TestSQLiteWritesRunOnTheWriter).
var connectHook atomic.Pointer[func(dsn string, conn *sqlite3.SQLiteConn)]

// statementHook, when set, sees the text of every statement run through
// database/sql, Exec or Query, before it runs: on an SQLite connection, and
// on a PostgreSQL one of the statement cache (pgstmt.go), where each is a
// round trip (tests: TestIssuanceStatements counts an issuance's). It does
// not see the WAL checkpointer's statement, which runs beside the
// transactions, on a connection of its own, after any commit
// (checkpointer.go).
var statementHook atomic.Pointer[func(query string)]

func seeStatement(query string) {
	if h := statementHook.Load(); h != nil && query != walCheckpointStatement {
		(*h)(query)
	}
}

// What database/sql uses of a mattn/go-sqlite3 connection, kept by the
// wrapper (a mattn release that changed its method set fails to build here).
var (
	_ driver.ExecerContext      = (*syncExecConn)(nil)
	_ driver.ConnBeginTx        = (*syncExecConn)(nil)
	_ driver.QueryerContext     = (*syncExecConn)(nil)
	_ driver.ConnPrepareContext = (*syncExecConn)(nil)
	_ driver.Pinger             = (*syncExecConn)(nil)
)

// syncExecConn is a mattn/go-sqlite3 connection (every method of which it
// keeps) whose Exec and Begin run on the caller's goroutine.
type syncExecConn struct{ *sqlite3.SQLiteConn }

func (c *syncExecConn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	seeStatement(query)
	return c.SQLiteConn.ExecContext(context.WithoutCancel(ctx), query, args)
}

func (c *syncExecConn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	seeStatement(query)
	return c.SQLiteConn.QueryContext(ctx, query, args)
}

func (c *syncExecConn) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return c.SQLiteConn.BeginTx(context.WithoutCancel(ctx), opts)
}
