package registry

import (
	"container/list"
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"net/url"
	"sync/atomic"

	"github.com/lib/pq"
)

// PostgreSQL statement cache. lib/pq sends every statement with parameters
// unnamed, so PostgreSQL parses, analyzes and plans it at every execution:
// about 0.1 ms of the server's CPU per statement, three times what the
// issuance's statements took to run (docs/performance-history.md). Each connection
// here keeps its statements prepared (named, per connection, as pgx does):
// the first execution of a query text prepares it, later ones only bind and
// execute. Statements without parameters go through unchanged (the simple
// protocol: migrations hold several statements in one string).
//
// Behind PgBouncer use session pooling, or transaction pooling with
// max_prepared_statements (PgBouncer ≥ 1.21), as for any client that
// prepares statements; behind a pooler that moves sessions between server
// connections without tracking prepared statements, turn the cache off with
// atr_statement_cache=off in the database URL (lib/pq names statements
// "1", "2", … on every connection, so a moved session could bind another
// session's statement).

// stmtCacheSize bounds the prepared statements of one connection; the least
// recently used is closed past it. ATR's queries number well under it, but
// "IN (…)" lists of every length are distinct texts.
var stmtCacheSize atomic.Int64

func init() { stmtCacheSize.Store(256) }

// statementCacheParam in a PostgreSQL URL turns the cache off ("off"); it is
// ATR's, removed before lib/pq sees the URL.
const statementCacheParam = "atr_statement_cache"

// pqConnector wraps lib/pq's connector so that its connections cache
// statements.
type pqConnector struct{ c *pq.Connector }

func newPQConnector(dsn string) (driver.Connector, error) {
	u, err := url.Parse(dsn)
	if err != nil {
		return nil, err
	}
	q := u.Query()
	cache := q.Get(statementCacheParam)
	if cache != "" && cache != "on" && cache != "off" {
		return nil, fmt.Errorf("%s=%q: want on or off", statementCacheParam, cache)
	}
	q.Del(statementCacheParam)
	u.RawQuery = q.Encode()
	c, err := pq.NewConnector(u.String())
	if err != nil {
		return nil, err
	}
	if cache == "off" {
		return c, nil
	}
	return pqConnector{c}, nil
}

func (c pqConnector) Driver() driver.Driver { return c.c.Driver() }

func (c pqConnector) Connect(ctx context.Context) (driver.Conn, error) {
	conn, err := c.c.Connect(ctx)
	if err != nil {
		return nil, err
	}
	pc, ok := conn.(pqConn)
	if !ok {
		conn.Close()
		return nil, fmt.Errorf("registry: lib/pq connection %T lacks a method the statement cache needs", conn)
	}
	return &cachingConn{pqConn: pc, lru: list.New(), stmts: make(map[string]*list.Element)}, nil
}

// pqConn is what lib/pq's connection implements and database/sql uses.
type pqConn interface {
	driver.Conn
	driver.ConnBeginTx
	driver.ConnPrepareContext
	driver.ExecerContext
	driver.QueryerContext
	driver.Pinger
	driver.SessionResetter
	driver.Validator
	driver.NamedValueChecker
}

// cachingConn is a lib/pq connection with its prepared statements. A
// driver.Conn is used by one goroutine at a time (database/sql), so it needs
// no lock.
type cachingConn struct {
	pqConn
	lru   *list.List // of *cachedStmt, most recently used first
	stmts map[string]*list.Element
	// cancelled: a statement ran under a context that ended. lib/pq's
	// prepared statements (unlike its unnamed ones) do not retire the
	// connection then, and a late cancel request could hit the next
	// statement; database/sql discards the connection instead.
	cancelled bool
}

type cachedStmt struct {
	query string
	stmt  driver.Stmt
}

// stmt returns the prepared statement of query, preparing it on first use.
func (c *cachingConn) stmt(ctx context.Context, query string) (driver.Stmt, error) {
	if e, ok := c.stmts[query]; ok {
		c.lru.MoveToFront(e)
		return e.Value.(*cachedStmt).stmt, nil
	}
	st, err := c.pqConn.PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	if _, ok := st.(driver.StmtExecContext); !ok {
		st.Close()
		return nil, fmt.Errorf("registry: lib/pq statement %T cannot execute with a context", st)
	}
	if _, ok := st.(driver.StmtQueryContext); !ok {
		st.Close()
		return nil, fmt.Errorf("registry: lib/pq statement %T cannot query with a context", st)
	}
	c.stmts[query] = c.lru.PushFront(&cachedStmt{query: query, stmt: st})
	for c.lru.Len() > int(stmtCacheSize.Load()) {
		c.drop(c.lru.Back())
	}
	return st, nil
}

func (c *cachingConn) drop(e *list.Element) {
	cs := c.lru.Remove(e).(*cachedStmt)
	delete(c.stmts, cs.query)
	cs.stmt.Close() // DEALLOCATE on the server; an error leaves only a leak on this connection
}

// forgetOnError drops query's statement when the server no longer has it or
// its plan no longer fits the table (a DEALLOCATE by a pooler, a migration
// by a newer replica): the next execution prepares it again.
func (c *cachingConn) forgetOnError(query string, err error) {
	var pqErr *pq.Error
	if !errors.As(err, &pqErr) {
		return
	}
	switch pqErr.Code {
	case "26000", // invalid_sql_statement_name
		"0A000": // feature_not_supported: "cached plan must not change result type"
		if e, ok := c.stmts[query]; ok {
			c.drop(e)
		}
	}
}

func (c *cachingConn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	seeStatement(query)
	if len(args) == 0 {
		return c.pqConn.ExecContext(ctx, query, args)
	}
	st, err := c.stmt(ctx, query)
	if err != nil {
		return nil, err
	}
	res, err := st.(driver.StmtExecContext).ExecContext(ctx, args)
	c.after(ctx, query, err)
	return res, err
}

// after notes what a statement's execution means for the connection.
func (c *cachingConn) after(ctx context.Context, query string, err error) {
	if ctx.Err() != nil {
		c.cancelled = true
	}
	if err != nil {
		c.forgetOnError(query, err)
	}
}

// ResetSession refuses a connection whose statement was cancelled, so that
// database/sql opens a new one.
func (c *cachingConn) ResetSession(ctx context.Context) error {
	if c.cancelled {
		return driver.ErrBadConn
	}
	return c.pqConn.ResetSession(ctx)
}

// IsValid is false for a connection whose statement was cancelled.
func (c *cachingConn) IsValid() bool { return !c.cancelled && c.pqConn.IsValid() }

func (c *cachingConn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	seeStatement(query)
	if len(args) == 0 {
		return c.pqConn.QueryContext(ctx, query, args)
	}
	st, err := c.stmt(ctx, query)
	if err != nil {
		return nil, err
	}
	rows, err := st.(driver.StmtQueryContext).QueryContext(ctx, args)
	c.after(ctx, query, err)
	return rows, err
}
