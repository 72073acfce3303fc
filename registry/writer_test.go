package registry

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/agent-trust-registry/atr/registry/internal/testdb"
)

// TestGroupCommit: concurrent transactions through the writer share
// batches; an item that fails (its own error, or a constraint) is rolled
// back alone and its error goes to its caller only; every other item
// commits, exactly once.
func TestGroupCommit(t *testing.T) {
	for _, db := range testdb.Names() {
		// rerun: items that may run again (as issuance commits may): their
		// batches run without savepoints first (writer.execBatch), with
		// the same outcome for every item.
		for _, rerun := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/rerun=%t", db, rerun), func(t *testing.T) {
				ctx := context.Background()
				st := openBareStore(t, db)
				if _, err := st.db.ExecContext(ctx, `CREATE TABLE gc_items (k TEXT PRIMARY KEY, v INTEGER NOT NULL)`); err != nil {
					t.Fatal(err)
				}
				w := st.w
				if w == nil {
					w = st.grouped
				}
				const n = 200
				errs := make([]error, n)
				var wg sync.WaitGroup
				for i := range n {
					wg.Add(1)
					go func() {
						defer wg.Done()
						errs[i] = w.doItem(&txItem{ctx: ctx, op: "gc", done: make(chan error, 1), rerun: rerun, fn: func(tx *sqlx.Tx) error {
							k := fmt.Sprintf("k%03d", i)
							if i%10 == 3 {
								k = "dup" // every tenth-and-third races on one key: one wins
							}
							if _, err := tx.ExecContext(ctx, tx.Rebind(`INSERT INTO gc_items (k, v) VALUES (?, ?)`), k, i); err != nil {
								return dbErr("gc: insert", err)
							}
							if i%10 == 7 {
								return errors.New("item refused after writing") // its insert must not survive
							}
							return nil
						}})
					}()
				}
				wg.Wait()
				dupWins := 0
				for i, err := range errs {
					switch {
					case i%10 == 7:
						if err == nil || err.Error() != "item refused after writing" {
							t.Errorf("item %d: %v, want its own error", i, err)
						}
					case i%10 == 3:
						if err == nil {
							dupWins++
						} else if !errors.Is(err, ErrConflict) {
							t.Errorf("item %d (duplicate key): %v, want ErrConflict", i, err)
						}
					case err != nil:
						t.Errorf("item %d: %v", i, err)
					}
				}
				if dupWins != 1 {
					t.Errorf("%d inserts of the duplicate key committed, want 1", dupWins)
				}
				var rows []string
				if err := st.db.SelectContext(ctx, &rows, `SELECT k FROM gc_items ORDER BY k`); err != nil {
					t.Fatal(err)
				}
				want := n - n/10 /* refused */ - n/10 /* dup */ + 1
				if len(rows) != want {
					t.Errorf("%d rows committed, want %d", len(rows), want)
				}
				for _, k := range rows {
					var i int
					if _, err := fmt.Sscanf(k, "k%03d", &i); err == nil && i%10 == 7 {
						t.Errorf("the refused item %d left its row", i)
					}
				}
				ws := w.stats()
				batches, items := ws.Batches, ws.Items
				t.Logf("%s: %d items in %d batches", db, items, batches)
				if items != n || batches >= n {
					t.Errorf("%d items in %d batches: want %d items and fewer batches than items (group commit)", items, batches, n)
				}
				if ws.Reruns > 0 != rerun {
					t.Errorf("%d batches ran again; want some only when items may rerun (%t)", ws.Reruns, rerun)
				}
				// The phases split the busy time, failed runs and their
				// rollbacks included: only the writer's own bookkeeping
				// between them is left out.
				var phases time.Duration
				ws.Phases.Each(func(_ string, d time.Duration) { phases += d })
				t.Logf("%s: the phases took %v of the writer's busy %v", db, phases, ws.Busy)
				if phases > ws.Busy || phases < ws.Busy/2 {
					t.Errorf("the phases took %v of the writer's busy %v; want most of it, never more", phases, ws.Busy)
				}
			})
		}
	}
}

// TestWriterRerunsAroundAFailedItem: a batch of items that may run again
// runs without savepoints (on PostgreSQL each is a round trip under the log
// head's lock); when one fails, it keeps its error, nothing of the first
// run stays, and the others commit in a second run, each in a savepoint.
func TestWriterRerunsAroundAFailedItem(t *testing.T) {
	eachBareStore(t, []string{
		`CREATE TABLE rr_items (k TEXT PRIMARY KEY)`,
	}, func(t *testing.T, db string, st *Store) {
		ctx := context.Background()
		w := st.grouped
		if w == nil {
			w = st.w
		}
		var savepoints atomic.Int64
		see := func(q string) {
			if strings.Contains(q, "SAVEPOINT") {
				savepoints.Add(1)
			}
		}
		statementHook.Store(&see)
		t.Cleanup(func() { statementHook.Store(nil) })
		refused := errors.New("refused after writing")
		// batch queues n items behind a holder, so that they run as one
		// batch, and returns their outcomes and how often each ran.
		batch := func(prefix string, n, fail int) ([]error, []int64) {
			runs := make([]int64, n)
			items := make([]*txItem, n)
			for i := range n {
				items[i] = &txItem{ctx: ctx, op: "rr", done: make(chan error, 1), rerun: true, fn: func(tx *sqlx.Tx) error {
					atomic.AddInt64(&runs[i], 1)
					if _, err := tx.ExecContext(ctx, tx.Rebind(`INSERT INTO rr_items (k) VALUES (?)`), fmt.Sprintf("%s%d", prefix, i)); err != nil {
						return dbErr("rr", err)
					}
					if i == fail {
						return refused
					}
					return nil
				}}
			}
			return asOneBatch(w, items, func() { savepoints.Store(0) }), runs
		}

		before := w.stats()
		errs, runs := batch("a", 6, -1)
		for i, err := range errs {
			if err != nil || runs[i] != 1 {
				t.Errorf("item %d of a batch without failures: %v, ran %d times; want nil, once", i, err, runs[i])
			}
		}
		if n := savepoints.Load(); n != 0 {
			t.Errorf("a batch without failures ran %d savepoint statements, want none", n)
		}

		errs, runs = batch("b", 6, 3)
		for i, err := range errs {
			wantRuns := int64(2) // ran before the failure, and again
			switch {
			case i == 3:
				wantRuns = 1
				if !errors.Is(err, refused) {
					t.Errorf("the failed item: %v, want its own error", err)
				}
			case i > 3:
				wantRuns = 1 // not reached by the first run
				fallthrough
			default:
				if err != nil {
					t.Errorf("item %d: %v", i, err)
				}
			}
			if runs[i] != wantRuns {
				t.Errorf("item %d ran %d times, want %d", i, runs[i], wantRuns)
			}
		}
		if n := savepoints.Load(); n == 0 {
			t.Error("the batch's second run used no savepoints")
		}
		var rows []string
		if err := st.db.SelectContext(ctx, &rows, `SELECT k FROM rr_items ORDER BY k`); err != nil {
			t.Fatal(err)
		}
		if want := []string{"a0", "a1", "a2", "a3", "a4", "a5", "b0", "b1", "b2", "b4", "b5"}; !slices.Equal(rows, want) {
			t.Errorf("rows %v, want %v", rows, want)
		}
		after := w.stats()
		if got := after.Reruns - before.Reruns; got != 1 {
			t.Errorf("%d batches ran again, want 1", got)
		}
		if got := after.Batches - before.Batches; got != 4 {
			t.Errorf("%d batches, want 4 (two holders, two batches)", got)
		}
	})
}

// TestGroupCommitCancelledBeforeRun: an item whose context ended while it
// was queued never runs.
func TestGroupCommitCancelledBeforeRun(t *testing.T) {
	st, err := Open(context.Background(), testdb.URL(t, "sqlite"), testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	ran := false
	err = st.w.do(ctx, "cancelled", func(*sqlx.Tx) error { ran = true; return nil })
	if err == nil || ran {
		t.Fatalf("a cancelled item: err %v, ran %v; want an error and no run", err, ran)
	}
	st.Close()
	if err := st.inTx(context.Background(), "after close", func(*sqlx.Tx) error { return nil }); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("inTx after Close: %v, want ErrUnavailable", err)
	}
}

// TestSealRunsOnlyAfterCommit: a batch holding an issuance commit
// (inTxLogged) is sealed before it commits, and what the seal returns — on
// the log, keeping the new checkpoint — runs only once the commit
// succeeded: a batch whose COMMIT fails (a deferred constraint) drops it, so
// a checkpoint signed over a tree that never committed is never kept. A
// batch without an issuance commit is not sealed.
func TestSealRunsOnlyAfterCommit(t *testing.T) {
	eachBareStore(t, []string{
		`CREATE TABLE seal_parent (id INTEGER PRIMARY KEY)`,
		`CREATE TABLE seal_child (p INTEGER REFERENCES seal_parent (id) DEFERRABLE INITIALLY DEFERRED)`,
	}, func(t *testing.T, db string, st *Store) {
		ctx := context.Background()
		var sealed, kept int
		seal := func(context.Context, *sqlx.Tx, bool) batchSeal {
			sealed++ // the writer's goroutine only
			return func(store bool) func() {
				if !store {
					return nil
				}
				return func() { kept++ }
			}
		}
		st.sealLog.Store(&seal)
		insert := func(q string, id int) func(tx *sqlx.Tx) error {
			return func(tx *sqlx.Tx) error {
				_, err := tx.ExecContext(ctx, tx.Rebind(q), id)
				return dbErr("seal test", err)
			}
		}
		if err := st.inTxLogged(ctx, "ok", insert(`INSERT INTO seal_parent (id) VALUES (?)`, 1)); err != nil {
			t.Fatal(err)
		}
		if sealed != 1 || kept != 1 {
			t.Fatalf("a committed issuance batch: sealed %d, kept %d; want 1, 1", sealed, kept)
		}
		// The child's parent does not exist: COMMIT fails.
		if err := st.inTxLogged(ctx, "bad", insert(`INSERT INTO seal_child (p) VALUES (?)`, 99)); err == nil {
			t.Fatal("a batch violating a deferred constraint committed")
		}
		if sealed != 2 || kept != 1 {
			t.Fatalf("a batch whose commit failed: sealed %d, kept %d; want 2, 1 (the seal dropped)", sealed, kept)
		}
		if err := st.inTx(ctx, "plain", insert(`INSERT INTO seal_parent (id) VALUES (?)`, 2)); err != nil {
			t.Fatal(err)
		}
		if sealed != 2 || kept != 1 {
			t.Fatalf("a batch without an issuance commit: sealed %d, kept %d; want it not sealed", sealed, kept)
		}
	})
}

// openBareStore opens a Store on a fresh database of db, not migrated,
// closed when the test ends.
func openBareStore(t *testing.T, db string) *Store {
	t.Helper()
	st, err := Open(context.Background(), testdb.URL(t, db), testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// TestWriterKeepsItsConnection: on SQLite every batch runs on the writer's
// own connection — SQLite drops a connection's page cache whenever another
// one wrote, so a writer on any pooled connection read back at every batch
// the pages the last batch wrote. A TEMP table lives on one connection only:
// the second batch sees the first one's although a reader holds a pooled
// connection meanwhile (on the code before it held the one the first batch
// had used). A connection that is gone is replaced, and the batch runs.
func TestWriterKeepsItsConnection(t *testing.T) {
	ctx := context.Background()
	st := openBareStore(t, "sqlite")
	if err := st.inTx(ctx, "probe", func(tx *sqlx.Tx) error {
		_, err := tx.ExecContext(ctx, `CREATE TEMP TABLE writer_probe (x INTEGER)`)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	reader, err := st.db.Connx(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	for i := range 3 {
		if err := st.inTx(ctx, "probe", func(tx *sqlx.Tx) error {
			_, err := tx.ExecContext(ctx, `INSERT INTO temp.writer_probe (x) VALUES (?)`, i)
			return err
		}); err != nil {
			t.Fatalf("batch %d did not run on the first batch's connection: %v", i, err)
		}
	}
	// The writer's connection is gone (given back, as database/sql does
	// with a broken one): the next batch begins on a fresh connection.
	if err := st.w.conn.Close(); err != nil { // the writer is idle: its last batch returned
		t.Fatal(err)
	}
	if err := st.inTx(ctx, "after", func(tx *sqlx.Tx) error {
		_, err := tx.ExecContext(ctx, `CREATE TABLE writer_probe_main (x INTEGER)`)
		return err
	}); err != nil {
		t.Fatalf("no batch after the writer's connection went away: %v", err)
	}
	// The writer's connection is stuck inside a transaction holding the
	// write lock (as after a failed ROLLBACK): it is discarded, not given
	// back to the pool, and the batch runs on a fresh connection.
	if _, err := st.w.conn.ExecContext(ctx, `BEGIN IMMEDIATE`); err != nil {
		t.Fatal(err)
	}
	if err := st.inTx(ctx, "stuck", func(tx *sqlx.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO writer_probe_main (x) VALUES (1)`)
		return err
	}); err != nil {
		t.Fatalf("no batch after the writer's connection was left in a transaction: %v", err)
	}
	reader.Close()
	for range 8 { // every pooled connection answers and sees the row
		var n int
		if err := st.db.GetContext(ctx, &n, `SELECT COUNT(*) FROM writer_probe_main`); err != nil || n != 1 {
			t.Fatalf("a pooled connection: %d rows, %v; want 1", n, err)
		}
	}
}

// TestGroupCommitCountsBeforeReturning: a caller that got its outcome sees
// its batch in the writer's counters (they used to be updated after the
// outcomes were handed out, so a test or a scrape right after could miss
// the batch).
func TestGroupCommitCountsBeforeReturning(t *testing.T) {
	st := openMigratedStore(t, "sqlite")
	ctx := context.Background()
	for i := range 2000 {
		before := st.w.stats()
		if err := st.w.do(ctx, "count", func(tx *sqlx.Tx) error {
			_, err := tx.ExecContext(ctx, `SELECT 1`)
			return err
		}); err != nil {
			t.Fatal(err)
		}
		after := st.w.stats()
		if after.Batches != before.Batches+1 || after.Items != before.Items+1 || after.Busy <= before.Busy {
			t.Fatalf("call %d: counters went from %+v to %+v; want one batch and one item more, and more busy time", i, before, after)
		}
	}
}

// TestExecPlanStatements: the statements of a plan without guards all take
// effect — on
// PostgreSQL in one statement, so a child row may name a parent inserted
// by the same group (the foreign key is checked at the statement's end) —
// a constraint violation is ErrConflict for the whole group, and a
// statement whose placeholders do not match its arguments is refused
// before anything runs (as is a quoted literal, where a '?' would be taken
// for one, and an empty group).
func TestExecPlanStatements(t *testing.T) {
	eachBareStore(t, []string{
		`CREATE TABLE g_parent (id INTEGER PRIMARY KEY, note TEXT)`,
		`CREATE TABLE g_child (id INTEGER PRIMARY KEY, parent INTEGER NOT NULL REFERENCES g_parent (id))`,
		`INSERT INTO g_parent (id, note) VALUES (1, 'old')`,
	}, func(t *testing.T, db string, st *Store) {
		ctx := context.Background()
		group := func(stmts ...stmt) error {
			return st.inOwnTx(ctx, "group", func(tx *sqlx.Tx) error { return execPlan(ctx, tx, "group", nil, stmts) })
		}
		if err := group(
			stmt{`INSERT INTO g_parent (id, note) VALUES (?, ?)`, []any{2, "new"}},
			stmt{`UPDATE g_parent SET note = ? WHERE id = ?`, []any{"changed", 1}},
			stmt{`INSERT INTO g_child (id, parent) VALUES (?, ?)`, []any{10, 2}},
		); err != nil {
			t.Fatal(err)
		}
		var notes []string
		if err := st.db.SelectContext(ctx, &notes, `SELECT note FROM g_parent ORDER BY id`); err != nil || !slices.Equal(notes, []string{"changed", "new"}) {
			t.Fatalf("parents %v, %v; want [changed new]", notes, err)
		}
		var children int
		if err := st.db.GetContext(ctx, &children, `SELECT COUNT(*) FROM g_child WHERE parent = 2`); err != nil || children != 1 {
			t.Fatalf("%d children, %v; want 1", children, err)
		}
		// A duplicate key fails the group; nothing of it stays.
		err := group(
			stmt{`UPDATE g_parent SET note = ? WHERE id = ?`, []any{"lost", 1}},
			stmt{`INSERT INTO g_child (id, parent) VALUES (?, ?)`, []any{10, 1}},
		)
		if !errors.Is(err, ErrConflict) {
			t.Fatalf("duplicate key: %v, want ErrConflict", err)
		}
		var note string
		if err := st.db.GetContext(ctx, &note, `SELECT note FROM g_parent WHERE id = 1`); err != nil || note != "changed" {
			t.Fatalf("note %q, %v: the failed group changed it", note, err)
		}
		for _, bad := range [][]stmt{
			{{`UPDATE g_parent SET note = ? WHERE id = ?`, []any{"x"}}, {`DELETE FROM g_child`, nil}},
			{{`DELETE FROM g_child`, []any{1}}, {`UPDATE g_parent SET note = ?`, []any{"x"}}},
			{{`UPDATE g_parent SET note = 'a?b' WHERE id = ?`, []any{1}}, {`DELETE FROM g_child`, nil}},
			{},
		} {
			if err := group(bad...); err == nil {
				t.Errorf("placeholders that do not match the arguments were run")
			}
		}
		if err := st.db.GetContext(ctx, &children, `SELECT COUNT(*) FROM g_child`); err != nil || children != 1 {
			t.Fatalf("%d children, %v: a refused group ran", children, err)
		}
	})
}

// eachBareStore runs fn on a bare store of each test database (the
// writer's own tests), once setup ran on it (execAll).
func eachBareStore(t *testing.T, setup []string, fn func(t *testing.T, db string, st *Store)) {
	for _, db := range testdb.Names() {
		t.Run(db, func(t *testing.T) {
			st := openBareStore(t, db)
			execAll(t, st, setup...)
			fn(t, db, st)
		})
	}
}

// asOneBatch queues items, in order, behind an item that holds the writer,
// so that they run as one batch; queued runs once they all wait, before
// they run. It returns their outcomes.
func asOneBatch(w *writer, items []*txItem, queued func()) []error {
	errs := make([]error, len(items))
	started, release := make(chan struct{}), make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		_ = w.doItem(&txItem{ctx: context.Background(), op: "hold", done: make(chan error, 1), fn: func(*sqlx.Tx) error {
			close(started)
			<-release
			return nil
		}})
	})
	<-started
	for i, it := range items {
		wg.Go(func() { errs[i] = w.doItem(it) })
		for len(w.q.ch) < i+1 { // queued in order
			time.Sleep(time.Millisecond)
		}
	}
	queued()
	close(release)
	wg.Wait()
	return errs
}

// execAll runs each query on st's pool in turn (a test's own tables and
// rows), failing the test at the first error.
func execAll(t *testing.T, st *Store, queries ...string) {
	t.Helper()
	for _, q := range queries {
		if _, err := st.db.ExecContext(context.Background(), q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
}

// TestExecPlan: guards and the statements that go with them run as one
// statement on PostgreSQL (one round trip: an issuance's guards, log append,
// certificate rows and audit event) and one after another on SQLite; a guard
// that changed no row gives its own error, a failing statement its database
// error, and the caller's rollback undoes all of it.
func TestExecPlan(t *testing.T) {
	eachBareStore(t, []string{
		`CREATE TABLE p_head (id INTEGER PRIMARY KEY, size INTEGER NOT NULL)`,
		`CREATE TABLE p_entry (idx INTEGER PRIMARY KEY, data TEXT NOT NULL)`,
		`CREATE TABLE p_cert (serial TEXT PRIMARY KEY, idx INTEGER NOT NULL REFERENCES p_entry (idx))`,
		`INSERT INTO p_head (id, size) VALUES (1, 0)`,
	}, func(t *testing.T, db string, st *Store) {
		ctx := context.Background()
		errMoved := errors.New("head moved")
		var statements atomic.Int64
		see := func(string) { statements.Add(1) }
		statementHook.Store(&see)
		t.Cleanup(func() { statementHook.Store(nil) })
		appendAt := func(size int64, serial string) (guard, []stmt) {
			return guard{stmt: stmt{`UPDATE p_head SET size = ? WHERE id = 1 AND size = ?`, []any{size + 1, size}}, miss: func() error { return errMoved }},
				[]stmt{{`INSERT INTO p_entry (idx, data) VALUES (?, ?)`, []any{size, "leaf " + serial}},
					{`INSERT INTO p_cert (serial, idx) VALUES (?, ?)`, []any{serial, size}}}
		}
		run := func(guards []guard, stmts []stmt) error {
			statements.Store(0)
			return st.inOwnTx(ctx, "plan", func(tx *sqlx.Tx) error { return execPlan(ctx, tx, "plan", guards, stmts) })
		}
		g, stmts := appendAt(0, "c0")
		if err := run([]guard{g}, stmts); err != nil {
			t.Fatal(err)
		}
		checkPlanStatements(t, db, statements.Load(), 3, "a guard and two inserts")
		g, stmts = appendAt(5, "c5") // the head is at 1
		if err := run([]guard{g}, stmts); !errors.Is(err, errMoved) {
			t.Errorf("a stale head: %v, want its guard's error", err)
		}
		g, stmts = appendAt(1, "c0") // c0 exists: the statement fails
		if err := run([]guard{g}, stmts); !errors.Is(err, ErrConflict) {
			t.Errorf("a duplicate certificate: %v, want ErrConflict", err)
		}
		var size, entries, certs int
		if err := st.db.GetContext(ctx, &size, `SELECT size FROM p_head WHERE id = 1`); err != nil || size != 1 {
			t.Errorf("head at %d, %v; want 1 (failed plans roll back)", size, err)
		}
		if err := st.db.GetContext(ctx, &entries, `SELECT COUNT(*) FROM p_entry`); err != nil || entries != 1 {
			t.Errorf("%d entries, %v; want 1 (failed plans roll back)", entries, err)
		}
		// Without guards a plan is a group of statements.
		if err := run(nil, []stmt{{`INSERT INTO p_entry (idx, data) VALUES (?, ?)`, []any{1, "leaf c1"}},
			{`INSERT INTO p_cert (serial, idx) VALUES (?, ?)`, []any{"c1", 1}}}); err != nil {
			t.Fatal(err)
		}
		if err := st.db.GetContext(ctx, &certs, `SELECT COUNT(*) FROM p_cert`); err != nil || certs != 2 {
			t.Errorf("%d certificates, %v; want 2", certs, err)
		}
		if err := run(nil, nil); err == nil {
			t.Error("an empty plan ran; want it refused")
		}
	})
}

// TestExecPlanGuards: guarded UPDATEs that must each change one row run as one
// statement on PostgreSQL (one round trip) and one after another on
// SQLite; the first guard that changed no row gives its own error.
func TestExecPlanGuards(t *testing.T) {
	eachBareStore(t, []string{
		`CREATE TABLE x_pending (serial TEXT PRIMARY KEY, state TEXT NOT NULL)`,
		`CREATE TABLE x_agent (name TEXT PRIMARY KEY, serial TEXT NOT NULL)`,
		`INSERT INTO x_pending (serial, state) VALUES ('s1', 'pending'), ('s2', 'pending')`,
		`INSERT INTO x_agent (name, serial) VALUES ('a', 's0')`,
	}, func(t *testing.T, db string, st *Store) {
		ctx := context.Background()
		errPending, errAgent := errors.New("pending settled"), errors.New("agent moved")
		pending := func(serial string) guard {
			return guard{stmt: stmt{`UPDATE x_pending SET state = ? WHERE serial = ? AND state = ?`, []any{"issued", serial, "pending"}},
				miss: func() error { return errPending }}
		}
		agent := func(from, to string) guard {
			return guard{stmt: stmt{`UPDATE x_agent SET serial = ? WHERE name = ? AND serial = ?`, []any{to, "a", from}},
				miss: func() error { return errAgent }}
		}
		var statements atomic.Int64
		see := func(string) { statements.Add(1) }
		statementHook.Store(&see)
		t.Cleanup(func() { statementHook.Store(nil) })
		run := func(guards ...guard) error {
			statements.Store(0)
			return st.inOwnTx(ctx, "guards", func(tx *sqlx.Tx) error { return execPlan(ctx, tx, "guards", guards, nil) })
		}
		if err := run(pending("s1"), agent("s0", "s1")); err != nil {
			t.Fatal(err)
		}
		checkPlanStatements(t, db, statements.Load(), 2, "two guards")
		for _, c := range []struct {
			guards []guard
			want   error
		}{
			{[]guard{pending("s1"), agent("s1", "s2")}, errPending}, // s1 is issued already
			{[]guard{pending("s2"), agent("s0", "s2")}, errAgent},   // the agent moved to s1
			{[]guard{pending("s9"), agent("s0", "s2")}, errPending}, // both miss: the first one's error
		} {
			if err := run(c.guards...); !errors.Is(err, c.want) {
				t.Errorf("%v, want %v", err, c.want)
			}
		}
		var serial, state string
		if err := st.db.GetContext(ctx, &serial, `SELECT serial FROM x_agent WHERE name = 'a'`); err != nil || serial != "s1" {
			t.Errorf("agent at %q, %v; want s1 (failed guards roll back)", serial, err)
		}
		if err := st.db.GetContext(ctx, &state, `SELECT state FROM x_pending WHERE serial = 's2'`); err != nil || state != "pending" {
			t.Errorf("s2 %q, %v; want pending (failed guards roll back)", state, err)
		}
		// matched tells the caller its guard ran and changed its row; a
		// miss of another guard leaves it unset.
		var hit, missed bool
		g1, g2 := pending("s2"), pending("s2")
		g1.matched, g2.matched = &missed, &hit
		if err := run(g1, agent("s0", "s3")); !errors.Is(err, errAgent) || missed {
			t.Errorf("a guard beside a miss: %v, matched %t; want errAgent, unset", err, missed)
		}
		if err := run(g2, agent("s1", "s2")); err != nil || !hit {
			t.Errorf("guards that matched: %v, matched %t; want nil, set", err, hit)
		}
		for _, bad := range [][]guard{
			{{stmt: stmt{`UPDATE x_agent SET serial = ?`, nil}, miss: func() error { return errAgent }}},
			{{stmt: stmt{`UPDATE x_agent SET serial = 'x' WHERE name = ?`, []any{"a"}}, miss: func() error { return errAgent }}},
			{{stmt: stmt{`UPDATE x_agent SET serial = ? WHERE name = ?`, []any{"x", "a"}}}},
			{},
		} {
			if err := run(bad...); err == nil || errors.Is(err, errAgent) {
				t.Errorf("a malformed guard: %v, want refused before running", err)
			}
		}
	})
}

// checkPlanStatements checks that a plan of what ran got statements: one on
// PostgreSQL, onSQLite on SQLite (one per guard and insert).
func checkPlanStatements(t *testing.T, db string, got, onSQLite int64, what string) {
	t.Helper()
	want := onSQLite
	if db == "postgres" {
		want = 1
	}
	if got != want {
		t.Errorf("%s ran %d statements, want %d", what, got, want)
	}
}

// TestWriterStopClosesItsConnection: on SQLite the writer's own connection
// is given back to the pool before stop returns, so that Store.Close, which
// closes the pool next, closes it too (and SQLite's last checkpoint of the
// WAL runs before Close returns).
func TestWriterStopClosesItsConnection(t *testing.T) {
	ctx := context.Background()
	st := openBareStore(t, "sqlite")
	if err := st.inTx(ctx, "probe", func(tx *sqlx.Tx) error {
		_, err := tx.ExecContext(ctx, `CREATE TABLE probe (k INTEGER)`)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if st.w.conn == nil {
		t.Fatal("the writer holds no connection after a batch")
	}
	st.ckpt.stop() // the WAL checkpointer, which borrows a pooled connection after commits
	st.w.stop()
	if n := st.db.Stats().InUse; n != 0 {
		t.Errorf("%d connections in use after the writer stopped, want 0 (its own given back)", n)
	}
}
