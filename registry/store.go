package registry

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jmoiron/sqlx"
	_ "github.com/lib/pq"           // PostgreSQL driver "postgres"
	_ "github.com/mattn/go-sqlite3" // SQLite driver "sqlite3"
	"github.com/sirupsen/logrus"
)

// Dialect names the SQL dialect of a Store.
type Dialect string

// The supported dialects.
const (
	SQLite   Dialect = "sqlite"
	Postgres Dialect = "postgres"
)

// DefaultSQLitePath is the database used when Open is given an empty URL. It
// matches the default data directory (ATR_DATA_DIR=./var).
const DefaultSQLitePath = "var/atr.db"

// sqliteParams are appended to every SQLite DSN: write-ahead logging, fully
// synchronous commits (a committed pending row survives power loss), foreign
// keys enforced, a busy timeout instead of immediate SQLITE_BUSY, and
// BEGIN IMMEDIATE so that a transaction takes the write lock up front (no
// lock-upgrade deadlocks between concurrent writers), and a cache of
// prepared statements per connection (the driver's: a statement that ran
// once is not parsed and compiled again; ATR's statements are fixed texts
// with '?' parameters, a few dozen in all).
const sqliteParams = "_journal_mode=WAL&_synchronous=FULL&_foreign_keys=on&_busy_timeout=5000&_txlock=immediate&_stmt_cache_size=128"

// Store is durable state over sqlx: one code path for SQLite and PostgreSQL.
// Queries are written with '?' placeholders and rebound for the driver.
// A Store is safe for concurrent use.
type Store struct {
	db      *sqlx.DB
	dialect Dialect
	log     *logrus.Entry
	// url is the PostgreSQL connection URL, for the notifier's LISTEN
	// connection (notify.go); empty on SQLite.
	url string
	// onCommit, when set, runs after every committed transaction (the
	// SQLite notifier's in-process wake-up, notify.go).
	onCommit atomic.Pointer[func()]
	// rootCRLHooks run before (true) and after (false) PublishRootCRL's
	// transaction, in the order they were added: the publishingRootCRL of
	// every notifier started on this Store, so that its revocation and root
	// CRL revisions are not live from before the commit until a read after
	// it.
	rootCRLHooks struct {
		sync.Mutex
		hooks []*func(begin bool)
	}
	// sealLog, when set, begins the seal of a batch of issuance commits
	// once its items ran (the checkpoint of the batch's tree,
	// transparencyLog.sealBatch; writer.go); nil: nothing to seal. early:
	// the items' statements are not sent yet.
	sealLog atomic.Pointer[func(ctx context.Context, tx *sqlx.Tx, early bool) batchSeal]
	// rollbacks counts the batch items whose savepoint was rolled back
	// (writer.runItems): the log trusts the head its transaction's last
	// append left only while none was (transparencyLog.txHead).
	rollbacks atomic.Int64
	// ckpt checkpoints SQLite's WAL after the writer's commits
	// (checkpointer.go); nil on PostgreSQL.
	ckpt *walCheckpointer
	// w is the writer queue every transaction goes through (SQLite);
	// grouped the one the issuance commits share (PostgreSQL). See
	// writer.go.
	w, grouped *writer
	// pending batches the pending rows' inserts (PostgreSQL; on SQLite
	// they go through w). See pendingbatch.go.
	pending *pendingBatcher
}

// Open connects to the database named by databaseURL and checks that it
// answers. It does not migrate; call Migrate.
//
//   - "" → SQLite at DefaultSQLitePath
//   - "sqlite:///abs/path", "sqlite://rel/path", "file:path?…", or a plain path → SQLite
//   - "postgres://…" or "postgresql://…" → PostgreSQL (lib/pq)
//
// The connection pool is bounded (SetMaxOpenConns) and connections are
// recycled. A database that does not answer yields ErrUnavailable.
func Open(ctx context.Context, databaseURL string, log *logrus.Entry) (*Store, error) {
	if log == nil {
		return nil, errors.New("registry: open: nil logger")
	}
	s := &Store{log: log.WithField("component", "store")}
	switch {
	case strings.HasPrefix(databaseURL, "postgres://"), strings.HasPrefix(databaseURL, "postgresql://"):
		s.dialect, s.url = Postgres, databaseURL
		connector, err := newPQConnector(withBinaryParameters(databaseURL))
		if err != nil {
			return nil, fmt.Errorf("registry: open postgres: %w", invalid("database url", nil))
		}
		s.db = sqlx.NewDb(sql.OpenDB(connector), "postgres")
		// As many idle as open: a smaller idle cap closes, at every burst,
		// the connections the burst just opened, and each new one forks a
		// PostgreSQL backend (TestPoolKeepsConnections; at 16 concurrent
		// issuances that cost more than the issuances).
		s.db.SetMaxOpenConns(16)
		s.db.SetMaxIdleConns(16)
		s.db.SetConnMaxLifetime(30 * time.Minute)
		s.db.SetConnMaxIdleTime(5 * time.Minute)
		s.grouped = newWriter(s)
		s.pending = newPendingBatcher(s)
	default:
		dsn, err := sqliteDSN(databaseURL)
		if err != nil {
			return nil, err
		}
		s.dialect = SQLite
		s.db = sqlx.NewDb(sql.OpenDB(newSQLiteConnector(dsn)), "sqlite3")
		// WAL allows concurrent readers; writers are serialized by
		// BEGIN IMMEDIATE and wait up to the busy timeout.
		s.db.SetMaxOpenConns(8)
		s.db.SetMaxIdleConns(8)
		s.db.SetConnMaxLifetime(time.Hour)
		s.db.SetConnMaxIdleTime(10 * time.Minute)
		s.ckpt = newWALCheckpointer(s)
		s.w = newWriter(s)
	}
	if err := s.ping(ctx); err != nil {
		s.Close()
		return nil, dbErr("open: ping", withUnavailable(err))
	}
	return s, nil
}

// openBusyWait bounds how long Open waits for a fresh SQLite file that
// another process or Store is initializing.
const openBusyWait = 5 * time.Second

// ping checks that the database answers. The first connection to a fresh
// SQLite file switches it to WAL, which needs the file's exclusive lock and
// answers "database is locked" at once, without the busy timeout, when
// several processes (replicas, a ceremony, migrations) open it at the same
// moment: that is retried for up to openBusyWait.
func (s *Store) ping(ctx context.Context) error {
	deadline := time.Now().Add(openBusyWait)
	for {
		err := s.db.PingContext(ctx)
		if err == nil || s.dialect != SQLite || !strings.Contains(err.Error(), "database is locked") || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// withBinaryParameters adds lib/pq's binary_parameters=yes to a PostgreSQL
// URL that does not set it: each statement with parameters is then one
// round trip (Parse/Bind/Execute in one go) instead of two (an unnamed
// prepare first), which is what the issuance transaction is made of.
func withBinaryParameters(databaseURL string) string {
	u, err := url.Parse(databaseURL)
	if err != nil {
		return databaseURL // sqlx.Open reports it
	}
	q := u.Query()
	if q.Has("binary_parameters") {
		return databaseURL
	}
	q.Set("binary_parameters", "yes")
	u.RawQuery = q.Encode()
	return u.String()
}

// withUnavailable marks connection-time failures as ErrUnavailable unless they
// are already classified.
func withUnavailable(err error) error {
	e := dbErr("", err)
	if errors.Is(e, ErrUnavailable) || errors.Is(e, context.Canceled) || errors.Is(e, context.DeadlineExceeded) {
		return err
	}
	return fmt.Errorf("%w: %v", ErrUnavailable, err)
}

// sqliteDSN turns the accepted SQLite spellings into a mattn/go-sqlite3 DSN
// with our parameters. The database file is created 0600 and its directory
// 0700 if they do not exist.
func sqliteDSN(databaseURL string) (string, error) {
	var path, query string
	switch {
	case databaseURL == "":
		path = DefaultSQLitePath
	case strings.HasPrefix(databaseURL, "sqlite://"):
		path = strings.TrimPrefix(databaseURL, "sqlite://")
	case strings.HasPrefix(databaseURL, "sqlite:"):
		path = strings.TrimPrefix(databaseURL, "sqlite:")
	case strings.HasPrefix(databaseURL, "file:"):
		path = strings.TrimPrefix(databaseURL, "file:")
	case strings.Contains(databaseURL, "://"):
		return "", fmt.Errorf("registry: open: unsupported database url scheme: %w", invalid("database url", nil))
	default:
		path = databaseURL
	}
	if i := strings.IndexByte(path, '?'); i >= 0 {
		path, query = path[:i], path[i+1:]
	}
	if path == "" || path == ":memory:" || strings.HasPrefix(path, ":memory:") {
		return "", fmt.Errorf("registry: open: in-memory SQLite is not durable: %w", invalid("database url", nil))
	}
	if query != "" {
		if _, err := url.ParseQuery(query); err != nil {
			return "", fmt.Errorf("registry: open: %w", invalid("database url query", nil))
		}
		query += "&"
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", fmt.Errorf("registry: open: creating database directory: %w", ErrUnavailable)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return "", fmt.Errorf("registry: open: creating database file: %w", ErrUnavailable)
	}
	f.Close()
	return "file:" + path + "?" + query + sqliteParams, nil
}

// Dialect reports which database the Store talks to.
func (s *Store) Dialect() Dialect { return s.dialect }

// Stats reports the connection pool's statistics (for metrics).
func (s *Store) Stats() sql.DBStats { return s.db.Stats() }

// GroupCommitStats is what the group commit (writer.go) did: the batches
// it committed or tried to, the transactions they held (Items/Batches is the
// mean batch size) and the time its goroutine spent on them. Busy growing
// by nearly a second per second means the one writer is never idle: with
// idle CPU beside it, it limits the commit rate; with the cores busy, its
// time stretches with theirs (docs/performance-history.md, seventh pass).
type GroupCommitStats struct {
	Batches, Items int64
	// Reruns counts the batches run again, with savepoints, around an item
	// that failed in their first run (writer.execBatch).
	Reruns int64
	Busy   time.Duration
	// Phases splits Busy by what the writer's transactions spent their
	// time on: where a busy writer's time goes.
	Phases GroupCommitPhases
}

// GroupCommitPhases is the group commit writer's time by phase of its
// transactions, each round trip's wait for the database and then for a
// processor included.
type GroupCommitPhases struct {
	Begin      time.Duration // BEGIN (SQLite: the write lock)
	Items      time.Duration // the items' reads and statements (PostgreSQL: the log head's lock; the statements collected)
	Statements time.Duration // PostgreSQL: a batch's collected statements, run together
	Seal       time.Duration // the checkpoint's token signatures and its insert
	Commit     time.Duration // COMMIT and the hooks after it, or a failed run's ROLLBACK
}

// Each calls fn with each phase's name (as in the metric's label) and
// time, in order.
func (p GroupCommitPhases) Each(fn func(name string, d time.Duration)) {
	fn("begin", p.Begin)
	fn("items", p.Items)
	fn("statements", p.Statements)
	fn("seal", p.Seal)
	fn("commit", p.Commit)
}

func (p GroupCommitPhases) plus(q GroupCommitPhases) GroupCommitPhases {
	return GroupCommitPhases{Begin: p.Begin + q.Begin, Items: p.Items + q.Items, Statements: p.Statements + q.Statements,
		Seal: p.Seal + q.Seal, Commit: p.Commit + q.Commit}
}

// GroupCommitStats reports what the group commit did since the store opened.
func (s *Store) GroupCommitStats() GroupCommitStats {
	var sum GroupCommitStats
	for _, w := range []*writer{s.w, s.grouped} {
		if w != nil {
			st := w.stats()
			sum.Batches, sum.Items, sum.Reruns, sum.Busy = sum.Batches+st.Batches, sum.Items+st.Items, sum.Reruns+st.Reruns, sum.Busy+st.Busy
			sum.Phases = sum.Phases.plus(st.Phases)
		}
	}
	return sum
}

// Close closes the connection pool.
func (s *Store) Close() error {
	for _, w := range []*writer{s.w, s.grouped} {
		if w != nil {
			w.stop()
		}
	}
	if s.pending != nil {
		s.pending.stop()
	}
	if s.ckpt != nil {
		s.ckpt.stop()
	}
	if err := s.db.Close(); err != nil {
		return dbErr("close", err)
	}
	return nil
}

// Ping checks that the database answers.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.db.PingContext(ctx); err != nil {
		return dbErr("ping", withUnavailable(err))
	}
	return nil
}

// inTx runs fn in a transaction (BEGIN IMMEDIATE on SQLite) and commits if fn
// returns nil. Errors from fn are returned as they are (fn converts driver
// errors with dbErr); begin/commit errors are converted here. On SQLite it
// goes through the process's writer queue and may share its transaction
// with others, each in its own savepoint (writer.go): fn must not call
// inTx itself, and its changes are durable when inTx returns nil.
func (s *Store) inTx(ctx context.Context, op string, fn func(tx *sqlx.Tx) error) error {
	if s.w != nil {
		return s.w.do(ctx, op, fn)
	}
	return s.inOwnTx(ctx, op, fn)
}

// inTxLogged is inTx for the issuance commits, which append to the
// transparency log and return a receipt: on PostgreSQL they share batches
// (on SQLite every transaction does), and a batch holding one is sealed with
// the checkpoint of its tree before it commits (writer.go). fn may lock only
// its own issuance's rows besides log_head.
func (s *Store) inTxLogged(ctx context.Context, op string, fn func(tx *sqlx.Tx) error) error {
	w := s.grouped
	if w == nil {
		w = s.w
	}
	if w == nil {
		return s.inOwnTx(ctx, op, fn)
	}
	return w.doItem(&txItem{ctx: ctx, op: op, fn: fn, done: make(chan error, 1), logged: true, rerun: true})
}

// inStatement runs fn, a single statement (or a statement and a read of
// what it found), durably: on SQLite through the writer, in a transaction of
// its batch; on PostgreSQL on the pool, in autocommit — one round trip
// instead of BEGIN, statement and COMMIT, and as durable when it returns.
// fn must stay correct when run outside a transaction. Never call it inside
// another Store transaction's fn: on SQLite the writer would wait for itself,
// on PostgreSQL the statement would run outside the enclosing transaction.
func (s *Store) inStatement(ctx context.Context, op string, fn func(q sqlx.ExtContext) error) error {
	if s.dialect != Postgres {
		return s.inTx(ctx, op, func(tx *sqlx.Tx) error { return fn(tx) })
	}
	if err := fn(s.db); err != nil {
		return err
	}
	if f := s.onCommit.Load(); f != nil {
		(*f)()
	}
	return nil
}

// insertPending records an issuance's pending row durably (InsertPending):
// on SQLite through the writer, on PostgreSQL in a batch of the pending
// rows that queued meanwhile (pendingbatch.go). Errors are InsertPending's,
// or op's when the store is closed or ctx ends first.
func (s *Store) insertPending(ctx context.Context, op string, row pendingRow) error {
	if s.pending != nil {
		return s.pending.insert(ctx, op, row)
	}
	return s.inStatement(ctx, op, func(q sqlx.ExtContext) error { return certs(q).InsertPending(ctx, row) })
}

// execStatement runs one statement (query with '?' placeholders) durably,
// as inStatement does: on SQLite through the writer, on PostgreSQL on the
// pool in autocommit. Errors are dbErr(op, …).
func (s *Store) execStatement(ctx context.Context, op, query string, args ...any) error {
	return s.inStatement(ctx, op, func(q sqlx.ExtContext) error {
		_, err := q.ExecContext(ctx, q.Rebind(query), args...)
		return dbErr(op, err)
	})
}

// stmt is one statement with '?' placeholders and its arguments.
type stmt struct {
	query string
	args  []any
}

// guard is an UPDATE that must change exactly one row, and the error of
// the transaction when it changes none (a row settled or moved meanwhile).
type guard struct {
	stmt
	miss func() error
	// matched, when set, is set by execPlan once the guard changed its
	// row (the issuance checks that its commit ran its pending guard).
	matched *bool
}

// execPlan runs guards, then stmts, in tx, and returns the miss error of
// the first guard that changed no row. On PostgreSQL all of them are one
// statement, one round trip: each guard a data-modifying CTE with
// RETURNING, counted by the statement's SELECT, each statement a
// data-modifying CTE; on SQLite one after another, stopping at the first
// guard that misses. Each guard must be an UPDATE (without RETURNING or
// quoted literals) of a row by its key; each statement an INSERT, UPDATE or
// DELETE (without RETURNING or quoted literals) whose rows affected do not
// matter; none may need to see another's changes (one snapshot on
// PostgreSQL: foreign keys, checked at the statement's end, see them all).
// On PostgreSQL every part runs even when a guard misses: the caller's
// transaction (or savepoint) is then rolled back. Errors are dbErr(op, …)
// or a guard's miss error; when both happen, PostgreSQL reports the
// statement's error (its statement failed as a whole), SQLite the guard's
// (it stopped there). Either way nothing of the plan stays once the caller
// rolls back.
func execPlan(ctx context.Context, tx *sqlx.Tx, op string, guards []guard, stmts []stmt) error {
	checked := make([]stmt, 0, len(guards)+len(stmts))
	for i, g := range guards {
		if g.miss == nil {
			return fmt.Errorf("registry: %s: guard %d has no error for a miss", op, i)
		}
		checked = append(checked, g.stmt)
	}
	if err := checkStmts(op, append(checked, stmts...)); err != nil {
		return err
	}
	if bp := deferredPlan(tx); bp != nil {
		bp.add(guards, stmts) // run with the batch's others (batchplan.go)
		return nil
	}
	changed := make([]int64, len(guards))
	if tx.DriverName() != "postgres" {
		for i, g := range guards {
			res, err := tx.ExecContext(ctx, tx.Rebind(g.query), g.args...)
			if err == nil {
				changed[i], err = res.RowsAffected()
			}
			if err != nil {
				return dbErr(op, err)
			}
			if changed[i] != 1 {
				return guards[i].miss()
			}
		}
		for _, st := range stmts {
			if _, err := tx.ExecContext(ctx, tx.Rebind(st.query), st.args...); err != nil {
				return dbErr(op, err)
			}
		}
	} else {
		var (
			b    strings.Builder
			args []any
		)
		for i, g := range guards {
			if i == 0 {
				b.WriteString("WITH ")
			} else {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "g%d AS (", i)
			args = writeNumbered(&b, g.stmt, args)
			b.WriteString(" RETURNING 1)")
		}
		for i, st := range stmts {
			if i == 0 && len(guards) == 0 {
				b.WriteString("WITH ")
			} else {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "s%d AS (", i)
			args = writeNumbered(&b, st, args)
			b.WriteString(")")
		}
		if len(guards) == 0 {
			b.WriteString(" SELECT 1")
		} else {
			b.WriteString(" SELECT ")
			for i := range guards {
				if i > 0 {
					b.WriteString(", ")
				}
				fmt.Fprintf(&b, "(SELECT count(*) FROM g%d)", i)
			}
		}
		dest := make([]any, max(len(changed), 1))
		var one int64
		dest[0] = &one
		for i := range changed {
			dest[i] = &changed[i]
		}
		if err := tx.QueryRowxContext(ctx, b.String(), args...).Scan(dest...); err != nil {
			return dbErr(op, err)
		}
	}
	for i, n := range changed {
		if n != 1 {
			return guards[i].miss()
		}
	}
	for _, g := range guards {
		if g.matched != nil {
			*g.matched = true
		}
	}
	return nil
}

// checkStmts refuses an empty list, and a statement with a quoted literal
// (every '?' is taken for a placeholder) or whose placeholders do not match
// its arguments, before anything runs.
func checkStmts(op string, stmts []stmt) error {
	if len(stmts) == 0 {
		return fmt.Errorf("registry: %s: no statements", op)
	}
	for i, st := range stmts {
		if strings.ContainsAny(st.query, `'"`) {
			return fmt.Errorf("registry: %s: statement %d has a quoted literal", op, i)
		}
		if n := strings.Count(st.query, "?"); n != len(st.args) {
			return fmt.Errorf("registry: %s: statement %d has %d placeholders for %d arguments", op, i, n, len(st.args))
		}
	}
	return nil
}

// writeNumbered writes st's query to b with its '?' placeholders numbered
// after args ($n, PostgreSQL) and returns args with st's arguments added.
func writeNumbered(b *strings.Builder, st stmt, args []any) []any {
	k := 0
	for _, r := range st.query {
		if r != '?' {
			b.WriteRune(r)
			continue
		}
		args = append(args, st.args[k])
		k++
		fmt.Fprintf(b, "$%d", len(args))
	}
	return args
}

// inOwnTx runs fn in a transaction of its own.
func (s *Store) inOwnTx(ctx context.Context, op string, fn func(tx *sqlx.Tx) error) error {
	tx, err := s.db.BeginTxx(ctx, nil)
	if err != nil {
		return dbErr(op+": begin", err)
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return dbErr(op+": commit", err)
	}
	if f := s.onCommit.Load(); f != nil {
		(*f)()
	}
	return nil
}

// singletonID is the id of the one row of log_head, revocation_state and
// crl_state. The hot reads of those rows name it as a parameter ($1, which
// SQLite reads as the first parameter too), not as a literal: on
// PostgreSQL a statement with parameters is prepared once per connection
// (pgstmt.go), one without is parsed, analyzed and planned at every
// execution — for the log head's lock, once per batch under that lock.
const singletonID = 1

// dbTime normalizes a time for storage: UTC, microsecond precision (what
// PostgreSQL keeps), so that values read back compare equal on both drivers.
func dbTime(t time.Time) time.Time { return t.UTC().Truncate(time.Microsecond) }

// dbTimePtr is dbTime for optional values.
func dbTimePtr(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := dbTime(*t)
	return &u
}

// addRootCRLHook adds f to the hooks PublishRootCRL runs; remove takes it
// away.
func (s *Store) addRootCRLHook(f func(begin bool)) (remove func()) {
	h := &f
	s.rootCRLHooks.Lock()
	defer s.rootCRLHooks.Unlock()
	s.rootCRLHooks.hooks = append(s.rootCRLHooks.hooks, h)
	return func() {
		s.rootCRLHooks.Lock()
		defer s.rootCRLHooks.Unlock()
		s.rootCRLHooks.hooks = slices.DeleteFunc(s.rootCRLHooks.hooks, func(x *func(bool)) bool { return x == h })
	}
}

// runRootCRLHooks runs every hook addRootCRLHook added, outside the lock.
func (s *Store) runRootCRLHooks(begin bool) {
	s.rootCRLHooks.Lock()
	hooks := slices.Clone(s.rootCRLHooks.hooks)
	s.rootCRLHooks.Unlock()
	for _, h := range hooks {
		(*h)(begin)
	}
}
