package registry

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
)

// compareBatch stores rows with execPlan one by one into table one and as
// one collected batch (batchPlan.run) into table batch, and returns both
// tables' rows as text, ordered by k. A batch statement that fails is
// returned as err (the writer would then run the items again with lib/pq's
// parameters, except in a batch of one).
func compareBatch(t *testing.T, st *Store, cols string, rows [][]any) (one, batch []string, err error) {
	t.Helper()
	ctx := context.Background()
	suffix := fmt.Sprint(time.Now().UnixNano())
	tOne, tBatch := "cb_one_"+suffix, "cb_batch_"+suffix
	for _, table := range []string{tOne, tBatch} {
		execAll(t, st, `CREATE TABLE `+table+` (k TEXT PRIMARY KEY, `+cols+`)`)
	}
	names := []string{"k"}
	for _, c := range strings.Split(cols, ",") {
		names = append(names, strings.Fields(c)[0])
	}
	ph := strings.TrimSuffix(strings.Repeat("?, ", len(names)), ", ")
	ins := func(table string, r []any) stmt {
		return stmt{`INSERT INTO ` + table + ` (` + strings.Join(names, ", ") + `) VALUES (` + ph + `)`, r}
	}
	for _, r := range rows {
		if err := st.inOwnTx(ctx, "one", func(tx *sqlx.Tx) error { return execPlan(ctx, tx, "one", nil, []stmt{ins(tOne, r)}) }); err != nil {
			t.Fatalf("execPlan: %v", err)
		}
	}
	parts := make([]planPart, len(rows))
	for k, r := range rows {
		parts[k] = planPart{stmts: []stmt{ins(tBatch, r)}}
	}
	if _, err := collectAndRun(t, st, parts); err != nil {
		return nil, nil, err
	}
	read := func(table string) []string {
		var out []string
		if err := st.db.SelectContext(ctx, &out, `SELECT t::text FROM `+table+` t ORDER BY k`); err != nil {
			t.Fatal(err)
		}
		return out
	}
	return read(tOne), read(tBatch), nil
}

// TestBatchRefusesBytesForTextColumns: lib/pq sends a []byte bound to a
// TEXT column (json.Marshal's output passed as it is) as its text, where
// the jsonb parameter would write bytea's hex form; the batch refuses to
// write it (and the writer runs the items again with lib/pq's parameters,
// TestBatchRerunsWhatItCannotWrite) instead of storing `\x7b7d` for `{}`.
func TestBatchRefusesBytesForTextColumns(t *testing.T) {
	st := openBareStore(t, "postgres")
	if _, _, err := compareBatch(t, st, "s TEXT", [][]any{{"k0", []byte("{}")}}); !errors.Is(err, errNotExact) {
		t.Errorf("[]byte into TEXT: %v, want errNotExact", err)
	}
}

// TestBatchStoresTimesAndNamesAsExecPlan: a time whose zone offset has
// seconds (a zone's local mean time) is stored as the same instant (it was
// 21 s off, the offset's seconds dropped), and a column named with a
// capital letter gets its value (it got NULL: the parameter's keys must
// match the folded name).
func TestBatchStoresTimesAndNamesAsExecPlan(t *testing.T) {
	st := openBareStore(t, "postgres")
	at := time.Date(2026, 12, 6, 3, 4, 5, 0, time.FixedZone("lmt", 9*60+21))
	for _, c := range []struct {
		cols string
		row  []any
	}{
		{"ts TIMESTAMPTZ", []any{"k0", at}},
		{"Note TEXT", []any{"k0", "kept"}},
	} {
		one, batch, err := compareBatch(t, st, c.cols, [][]any{c.row})
		if err != nil {
			t.Errorf("%s: %v", c.cols, err)
			continue
		}
		if strings.Join(one, "\n") != strings.Join(batch, "\n") {
			t.Errorf("%s: execPlan stored %v, the batch %v", c.cols, one, batch)
		}
	}
}

// namedKind is a named string type: database/sql (and so lib/pq) stores it
// as its string; the jsonb parameter's writer does not know it.
type namedKind string

// TestBatchRerunsWhatItCannotWrite: an issuance commit whose value the
// jsonb parameter cannot carry is stored all the same — alone, with
// execPlan's statement (a batch of one is not collected), or in a batch,
// which runs again item by item with lib/pq's parameters.
func TestBatchRerunsWhatItCannotWrite(t *testing.T) {
	st := openBareStore(t, "postgres")
	execAll(t, st, `CREATE TABLE cb_kinds (k TEXT PRIMARY KEY, kind TEXT NOT NULL)`)
	ctx := context.Background()
	item := func(k string) *txItem {
		return &txItem{ctx: ctx, op: "kind", done: make(chan error, 1), rerun: true, logged: true, fn: func(tx *sqlx.Tx) error {
			return execPlan(ctx, tx, "kind", nil, []stmt{{`INSERT INTO cb_kinds (k, kind) VALUES (?, ?)`, []any{k, namedKind("register")}}})
		}}
	}
	if err := st.grouped.doItem(item("lone")); err != nil {
		t.Errorf("a lone issuance commit: %v", err)
	}
	before := st.grouped.stats()
	for i, err := range asOneBatch(st.grouped, []*txItem{item("b0"), item("b1"), item("b2")}, func() {}) {
		if err != nil {
			t.Errorf("item %d of a batch: %v", i, err)
		}
	}
	if got := st.grouped.stats().Reruns - before.Reruns; got != 1 {
		t.Errorf("%d reruns, want 1 (the batch's statement could not be written)", got)
	}
	var n int
	if err := st.db.GetContext(ctx, &n, `SELECT count(*) FROM cb_kinds WHERE kind = 'register'`); err != nil || n != 4 {
		t.Errorf("%d rows, %v; want 4", n, err)
	}
}
