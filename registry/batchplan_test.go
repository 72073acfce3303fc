package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/jmoiron/sqlx"
)

// TestMergeForms: which statements a batch merges over a jsonb parameter
// (single-row INSERTs of placeholders), and the column each value goes to.
// UPDATEs are written as they are: merged, one would be a join whose plan
// depends on the table's statistics.
func TestMergeForms(t *testing.T) {
	for _, c := range []struct {
		query string
		want  string // "": not merged
		cols  string
	}{
		{`INSERT INTO t (a, b) VALUES (?, ?)`,
			`INSERT INTO t (a, b) SELECT atr_r.a, atr_r.b FROM jsonb_populate_recordset(NULL::t, $?::jsonb) AS atr_r`, "a b"},
		{"INSERT INTO certificates\n\t\t(serial, der)\n\t\tVALUES (?, ?)",
			`INSERT INTO certificates (serial, der) SELECT atr_r.serial, atr_r.der FROM jsonb_populate_recordset(NULL::certificates, $?::jsonb) AS atr_r`, "serial der"},
		{`UPDATE p SET state = ?, updated_at = ? WHERE serial = ? AND state = ?`, "", ""},
		{headGuardQuery, "", ""},
		{`INSERT INTO t (a, a) VALUES (?, ?)`, "", ""},                  // a column twice
		{`INSERT INTO t (a, b) VALUES (?, 1)`, "", ""},                  // a literal among the values
		{`INSERT INTO t (a) VALUES (?), (?)`, "", ""},                   // several rows (splitRows splits them first)
		{`INSERT INTO t (a) SELECT x FROM u WHERE y = ?`, "", ""},       // not VALUES
		{`INSERT INTO t (a) VALUES (?) ON CONFLICT DO NOTHING`, "", ""}, // a clause after VALUES
		{`INSERT INTO t (a) VALUES (?) RETURNING a`, "", ""},
		{`DELETE FROM t WHERE a = ?`, "", ""},
	} {
		f := newMergeForm(c.query)
		if c.want == "" {
			if f != nil {
				t.Errorf("%q merged as %q; want it written as it is", c.query, f.sql)
			}
			continue
		}
		if f == nil {
			t.Errorf("%q: not merged; want %q", c.query, c.want)
			continue
		}
		if f.sql != c.want {
			t.Errorf("%q merged as\n%q, want\n%q", c.query, f.sql, c.want)
		}
		if got := strings.Join(f.cols, " "); got != c.cols {
			t.Errorf("%q: columns %s, want %s", c.query, got, c.cols)
		}
	}
}

// TestSplitRows: a multi-row INSERT is merged row by row, under the text
// of its one-row form (a batch's statement text does not depend on how
// many hashes an append stores).
func TestSplitRows(t *testing.T) {
	st := stmt{`INSERT INTO log_hashes (idx, hash) VALUES (?, ?), (?, ?), (?, ?)`, []any{int64(1), []byte{1}, int64(2), []byte{2}, int64(3), []byte{3}}}
	units := splitRows(4, st)
	if len(units) != 3 {
		t.Fatalf("%d units, want 3", len(units))
	}
	for k, u := range units {
		if u.query != `INSERT INTO log_hashes (idx, hash) VALUES (?, ?)` || u.item != 4 || len(u.args) != 2 || u.args[0] != int64(k+1) {
			t.Errorf("unit %d: %+v", k, u)
		}
	}
	for _, q := range []string{`INSERT INTO t (a) VALUES (?), (1)`, `UPDATE t SET a = ? WHERE b = ?`} {
		if units := splitRows(0, stmt{q, []any{1, 2}}); len(units) != 1 || units[0].query != q {
			t.Errorf("%q split into %+v; want it whole", q, units)
		}
	}
}

// TestJSONValuesRefuseWhatTheyWouldChange: a value JSON would change (bad
// UTF-8 is replaced), or PostgreSQL's JSON refuses (NUL), or of a type
// without an exact form, is refused, and the batch is then run again item
// by item (writer.execBatch), each with lib/pq's parameters.
func TestJSONValuesRefuseWhatTheyWouldChange(t *testing.T) {
	for _, v := range []any{"a\xffb", "a\x00b", 1.5, []string{"x"}, struct{}{}} {
		var buf bytes.Buffer
		if err := writeJSONValue(&buf, v); !errors.Is(err, errNotExact) {
			t.Errorf("%#v: %v (%s), want errNotExact", v, err, buf.String())
		}
	}
}

// TestBatchPlanStoresWhatExecPlanStores (PostgreSQL): the same plans,
// one set run one by one with execPlan and one collected and run as the
// batch's one statement, leave equal rows, value for value — every column
// type the issuance writes, NULLs, bytes that are not text, the edges of
// bigint, characters JSON escapes — and the batch's guards match the rows
// they name.
func TestBatchPlanStoresWhatExecPlanStores(t *testing.T) {
	st := openBareStore(t, "postgres")
	ctx := context.Background()
	for _, table := range []string{"bp_one", "bp_batch"} {
		execAll(t, st, `CREATE TABLE `+table+` (k TEXT PRIMARY KEY, b BYTEA, n BIGINT, i INTEGER, ts TIMESTAMPTZ, s TEXT, state TEXT NOT NULL)`)
	}
	at := time.Date(2026, 12, 6, 3, 4, 5, 123456000, time.FixedZone("x", 3600))
	n64 := int64(math.MinInt64)
	str := "pointed"
	rows := [][]any{
		{"k0", []byte{0, 1, 0xfe, 0xff, '\\', 'x'}, int64(math.MaxInt64), 7, at, `quotes ' " \ and \n, <tags> & é — 𝄞 \u2028`, "new"},
		{"k1", nil, nil, nil, nil, nil, "new"},
		{"k2", []byte{}, &n64, int64(-1), dbTime(at), &str, "new"},
		{"k3", []byte("x"), (*int64)(nil), 0, (*time.Time)(nil), (*string)(nil), "new"},
	}
	plans := func(table string) [][2]any { // per row: guards, stmts
		var out [][2]any
		for _, r := range rows {
			ins := stmt{`INSERT INTO ` + table + ` (k, b, n, i, ts, s, state) VALUES (?, ?, ?, ?, ?, ?, ?)`, r}
			out = append(out, [2]any{[]guard(nil), []stmt{ins}})
		}
		for _, r := range rows {
			g := guard{stmt: stmt{`UPDATE ` + table + ` SET state = ?, s = ? WHERE k = ? AND state = ?`, []any{"done", r[5], r[0], "new"}},
				miss: func() error { return fmt.Errorf("row %v moved", r[0]) }}
			out = append(out, [2]any{[]guard{g}, []stmt(nil)})
		}
		return out
	}
	// One by one.
	for _, p := range plans("bp_one") {
		if err := st.inOwnTx(ctx, "one", func(tx *sqlx.Tx) error {
			return execPlan(ctx, tx, "one", p[0].([]guard), p[1].([]stmt))
		}); err != nil {
			t.Fatal(err)
		}
	}
	// As one batch: the inserts are items 0–3, the guards 4–7 (run in
	// separate batches: a guard does not see an insert of its own
	// statement).
	runBatch := func(ps [][2]any) []error {
		t.Helper()
		parts := make([]planPart, len(ps))
		for k, p := range ps {
			parts[k] = planPart{guards: p[0].([]guard), stmts: p[1].([]stmt)}
		}
		missed, err := collectAndRun(t, st, parts)
		if err != nil {
			t.Fatal(err)
		}
		return missed
	}
	ps := plans("bp_batch")
	for k, e := range runBatch(ps[:len(rows)]) {
		if e != nil {
			t.Errorf("insert %d: %v", k, e)
		}
	}
	for k, e := range runBatch(ps[len(rows):]) {
		if e != nil {
			t.Errorf("guard %d missed: %v", k, e)
		}
	}
	read := func(table string) []string {
		var out []string
		if err := st.db.SelectContext(ctx, &out, `SELECT t::text FROM `+table+` t ORDER BY k`); err != nil {
			t.Fatal(err)
		}
		return out
	}
	one, batch := read("bp_one"), read("bp_batch")
	if len(one) != len(rows) || strings.Join(one, "\n") != strings.Join(batch, "\n") {
		t.Errorf("one by one:\n%s\nas a batch:\n%s", strings.Join(one, "\n"), strings.Join(batch, "\n"))
	}
	// Guards that name rows no longer "new" miss, each for its own item.
	missed := runBatch(plans("bp_batch")[len(rows):])
	for k, e := range missed {
		if e == nil || !strings.Contains(e.Error(), fmt.Sprint(rows[k][0])) {
			t.Errorf("guard %d on a settled row: %v, want its own miss", k, e)
		}
	}
}

// collectAndRun runs parts, item k's plan each, as the writer runs a batch:
// collected in a transaction of st, then run (batchPlan.run), and
// committed when that succeeded. It returns run's outcome.
func collectAndRun(t *testing.T, st *Store, parts []planPart) ([]error, error) {
	t.Helper()
	ctx := context.Background()
	tx, err := st.db.BeginTxx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	bp, undefer := deferPlans(tx)
	for k, p := range parts {
		bp.item = k
		if err := execPlan(ctx, tx, "batch", p.guards, p.stmts); err != nil {
			t.Fatal(err)
		}
	}
	undefer()
	missed, err := bp.run(ctx, tx, len(parts))
	if err != nil {
		_ = tx.Rollback()
		return nil, err
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	return missed, nil
}

// TestBatchOfIssuanceCommitsIsOneStatement (PostgreSQL): items of a batch
// that store themselves with execPlan run as one statement between BEGIN
// and COMMIT; a guard that misses fails its item alone, and a statement
// that fails (a duplicate key) fails the item whose row it was, the others
// committing after the batch ran again with savepoints.
func TestBatchOfIssuanceCommitsIsOneStatement(t *testing.T) {
	st := openBareStore(t, "postgres")
	execAll(t, st,
		`CREATE TABLE bi_head (id INTEGER PRIMARY KEY, size BIGINT NOT NULL)`,
		`CREATE TABLE bi_rows (k TEXT PRIMARY KEY, idx BIGINT NOT NULL)`,
		`CREATE TABLE bi_pending (serial TEXT PRIMARY KEY, state TEXT NOT NULL)`,
		`INSERT INTO bi_head (id, size) VALUES (1, 0)`)
	ctx := context.Background()
	w := st.grouped
	var (
		mu    sync.Mutex
		stmts []string
	)
	see := func(q string) {
		mu.Lock()
		defer mu.Unlock()
		stmts = append(stmts, q)
	}
	statementHook.Store(&see)
	t.Cleanup(func() { statementHook.Store(nil) })
	errSettled := errors.New("settled")
	// batch runs n items queued behind a holder, item i storing row
	// prefix+i (key, when set, gives item i another key) and settling its
	// pending row, and returns their outcomes and the statements the
	// batch sent.
	batch := func(prefix string, n int, key map[int]string) ([]error, []string) {
		items := make([]*txItem, n)
		for i := range n {
			serial := fmt.Sprintf("%s%d", prefix, i)
			k := serial
			if key[i] != "" {
				k = key[i]
			}
			items[i] = &txItem{ctx: ctx, op: "bi", done: make(chan error, 1), rerun: true, fn: func(tx *sqlx.Tx) error {
				pending := guard{stmt: stmt{`UPDATE bi_pending SET state = ? WHERE serial = ? AND state = ?`, []any{"issued", serial, "pending"}},
					miss: func() error { return fmt.Errorf("%s: %w", serial, errSettled) }}
				return execPlan(ctx, tx, "bi", []guard{pending}, []stmt{{`INSERT INTO bi_rows (k, idx) VALUES (?, ?)`, []any{k, int64(i)}}})
			}}
		}
		errs := asOneBatch(w, items, func() {
			mu.Lock()
			stmts = nil
			mu.Unlock()
		})
		mu.Lock()
		defer mu.Unlock()
		return errs, stmts
	}
	pend := func(prefix string, n int, settled ...int) {
		for i := range n {
			state := "pending"
			for _, s := range settled {
				if s == i {
					state = "abandoned"
				}
			}
			execAll(t, st, fmt.Sprintf(`INSERT INTO bi_pending (serial, state) VALUES ('%s%d', '%s')`, prefix, i, state))
		}
	}
	count := func(prefix string) int {
		var n int
		if err := st.db.GetContext(ctx, &n, `SELECT count(*) FROM bi_rows WHERE k LIKE $1`, prefix+"%"); err != nil {
			t.Fatal(err)
		}
		return n
	}

	pend("a", 6)
	before := w.stats()
	errs, sent := batch("a", 6, nil)
	for i, err := range errs {
		if err != nil {
			t.Errorf("item %d: %v", i, err)
		}
	}
	if got := w.stats().Batches - before.Batches; got != 2 { // the holder's, then the six
		t.Errorf("%d batches, want 2", got)
	}
	var stores int
	for _, q := range sent {
		if strings.Contains(q, "bi_rows") {
			stores++
		}
	}
	if stores != 1 || count("a") != 6 {
		t.Errorf("six items stored by %d statements, %d rows; want 1 statement, 6 rows; sent:\n%s", stores, count("a"), strings.Join(sent, "\n"))
	}

	pend("b", 5, 2) // b2's pending row was settled meanwhile
	errs, _ = batch("b", 5, nil)
	for i, err := range errs {
		if (i == 2) != errors.Is(err, errSettled) {
			t.Errorf("item %d, its pending row settled: %t: %v", i, i == 2, err)
		}
	}
	if count("b") != 4 {
		t.Errorf("%d rows, want the 4 whose guard matched", count("b"))
	}

	pend("c", 5)
	errs, _ = batch("c", 5, map[int]string{3: "a1"}) // c3 stores a key that exists
	for i, err := range errs {
		if (i == 3) != errors.Is(err, ErrConflict) {
			t.Errorf("item %d, a duplicate key: %t: %v", i, i == 3, err)
		}
	}
	if count("c") != 4 {
		t.Errorf("%d rows, want the 4 without a duplicate key", count("c"))
	}
	var settled int
	if err := st.db.GetContext(ctx, &settled, `SELECT count(*) FROM bi_pending WHERE serial LIKE 'c%' AND state = 'issued'`); err != nil || settled != 4 {
		t.Errorf("%d pending rows settled, %v; want 4 (the failed item's rolled back)", settled, err)
	}
}

// FuzzWriteJSONString: every string a batch's parameter may carry (valid
// UTF-8 without NUL) reads back from its JSON form unchanged.
func FuzzWriteJSONString(f *testing.F) {
	for _, s := range []string{"", `"\`, "a\nb\tc\rd\x01\x1f\x7f", "é — 𝄞 \u2028\u2029", `{"opened":"x"}`, "<&>"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if !utf8.ValidString(s) || strings.IndexByte(s, 0) >= 0 {
			t.Skip()
		}
		var b bytes.Buffer
		writeJSONString(&b, s)
		var got string
		if err := json.Unmarshal(b.Bytes(), &got); err != nil || got != s {
			t.Fatalf("%q written as %s, read back as %q, %v", s, b.String(), got, err)
		}
	})
}

// TestBatchTextIgnoresItemOrder: batches holding the same kinds of items in
// another order send the same text (one prepared statement, not one per
// order), and each guard's count still answers for its own item.
func TestBatchTextIgnoresItemOrder(t *testing.T) {
	register := func(k int64) planPart {
		return planPart{guards: []guard{{stmt: stmt{`UPDATE p SET state = ? WHERE serial = ?`, []any{"issued", fmt.Sprint("r", k)}}}},
			stmts: []stmt{{`INSERT INTO bt_agents (name) VALUES (?)`, []any{fmt.Sprint("r", k)}}, {`INSERT INTO bt_certs (serial) VALUES (?)`, []any{fmt.Sprint("r", k)}}}}
	}
	rotate := func(k int64) planPart {
		return planPart{guards: []guard{{stmt: stmt{`UPDATE p SET state = ? WHERE serial = ?`, []any{"issued", fmt.Sprint("o", k)}}},
			{stmt: stmt{`UPDATE bt_agents SET serial = ? WHERE name = ?`, []any{fmt.Sprint("o", k), "x"}}}},
			stmts: []stmt{{`INSERT INTO bt_certs (serial) VALUES (?)`, []any{fmt.Sprint("o", k)}}}}
	}
	// The tables are the test's own: their columns' types as loadTypes
	// would read them.
	columnTypes.Store("bt_agents", map[string]string{"name": "text", "serial": "text"})
	columnTypes.Store("bt_certs", map[string]string{"serial": "text"})
	text := func(parts ...planPart) (string, []planUnit) {
		t.Helper()
		bp := &batchPlan{}
		for k, p := range parts {
			p.item = k
			bp.parts = append(bp.parts, p)
		}
		head, byItem, err := bp.units(len(parts))
		if err != nil || head != nil {
			t.Fatal(head, err)
		}
		stmts := statementsOf(byItem)
		var units []planUnit
		for _, st := range stmts {
			units = append(units, st...)
		}
		q, _, guards, err := writeBatch(cteGroups(units))
		if err != nil {
			t.Fatal(err)
		}
		return q, guards
	}
	a, ga := text(register(0), rotate(1), rotate(2))
	b, gb := text(rotate(0), rotate(1), register(2))
	if a != b {
		t.Errorf("one kind of batch, two texts:\n%s\n%s", a, b)
	}
	for _, gs := range [][]planUnit{ga, gb} {
		for _, g := range gs {
			if want := fmt.Sprint(g.args[len(g.args)-1]); !strings.HasSuffix(want, fmt.Sprint(g.item)) && !strings.Contains(g.query, "bt_agents") {
				t.Errorf("guard %q of item %d names %s", g.query, g.item, want)
			}
		}
	}
	if c, _ := text(rotate(0), rotate(1)); c == a {
		t.Error("a batch of other kinds sent the same text")
	}
}

// TestStatementsOfAKindAndBounded: a batch's items are stored by kind, at
// most maxPerStatement to a statement, each item once, in the items'
// order within its kind.
func TestStatementsOfAKindAndBounded(t *testing.T) {
	var byItem [][]planUnit
	kindOf := map[int]string{}
	for k := range 23 {
		kind := "UPDATE rot SET a = ? WHERE b = ?"
		if k%7 == 3 {
			kind = "UPDATE reg SET a = ? WHERE b = ?"
		}
		kindOf[k] = kind
		byItem = append(byItem, []planUnit{{item: k, query: kind}, {item: k, query: "INSERT INTO c (a) VALUES (?)"}})
	}
	seen := map[int]int{}
	for _, units := range statementsOf(byItem) {
		items := map[int]bool{}
		last := -1
		for _, u := range units {
			if u.query != "INSERT INTO c (a) VALUES (?)" && u.query != kindOf[units[0].item] {
				t.Errorf("a statement mixes kinds: %q", u.query)
			}
			if !items[u.item] {
				if u.item < last {
					t.Errorf("item %d after item %d", u.item, last)
				}
				last = u.item
			}
			items[u.item] = true
			seen[u.item]++
		}
		if len(items) > maxPerStatement {
			t.Errorf("a statement of %d items, want at most %d", len(items), maxPerStatement)
		}
	}
	for k := range byItem {
		if seen[k] != 2 {
			t.Errorf("item %d: %d units stored, want 2", k, seen[k])
		}
	}
}
