package registry

import (
	"bytes"
	"context"
	"database/sql/driver"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
)

// One statement for a batch of issuance commits on PostgreSQL (issue 14).
//
// Each issuance commit stores itself with one execPlan: its guards and
// statements as one statement, one round trip. A batch of eight ran eight
// such statements one after another while it held the log head's lock,
// each a round trip and an executor's start of some ten CTEs, and each
// moved log_head (its row, its trigger, its notification) once.
//
// While the writer runs a batch of issuance commits on PostgreSQL, execPlan
// only collects each item's plan (batchPlan.add); the writer then runs them
// all as one statement (batchPlan.run) before the seal and the commit:
//
//   - the items' log_head guards, a chain (each extends the head the one
//     before it left), become one guard from the first item's head to the
//     last item's;
//   - the single-row INSERTs of the same text (a multi-row one split into
//     its rows) become one CTE over a jsonb parameter of their rows
//     (jsonb_populate_recordset), whatever their number;
//   - every other guard and statement — the UPDATEs of a row by its key —
//     is a CTE of its own with numbered parameters, as in execPlan. Merged
//     over a parameter, an UPDATE becomes a join whose plan depends on the
//     table's statistics: on a table never analyzed (autovacuum off) the
//     generic plan chosen while it was small read the whole table at every
//     batch after it grew. An UPDATE of a key given as a parameter is an
//     index scan whatever the statistics.
//
// So a batch's text depends on how many items of each kind it holds (its
// CTEs are in the order of their texts, not of its items): for a fleet's
// batches, mostly of rotations, a few dozen texts, each prepared once per
// connection (pgstmt.go).
//
// The values reach each column through the column type's input function,
// as lib/pq's text parameters do. Every column these INSERTs write is
// text, bytea, an integer or a timestamp; a json or jsonb column would take
// a JSON string as a JSON value, not as its text, and must not be written
// through here (TestBatchPlanStoresWhatExecPlanStores compares the rows
// with execPlan's). A value JSON cannot carry exactly (invalid UTF-8, a
// NUL) fails the statement, and the batch runs again item by item.
//
// What an item may rely on is what execPlan promises: no part of a plan
// sees another's changes. Items of one batch touch distinct rows (one
// issuance in flight per name, distinct serials and log indexes) except
// log_head, whose guards are merged. A guard that misses fails its item;
// the writer rolls the batch back and runs the others again with
// savepoints, each plan then executed on its own (writer.execBatch), as
// after any failed item. A statement that fails cannot be blamed on one
// item: the writer then runs every item again that way.

// deferredPlans maps a transaction whose execPlans are collected to its
// batchPlan (the writer's batch on PostgreSQL).
var deferredPlans sync.Map // *sqlx.Tx → *batchPlan

// batchPlan is the plans of a batch's items, collected in order.
type batchPlan struct {
	item  int // the item whose fn runs now
	parts []planPart
}

// planPart is one execPlan of one item.
type planPart struct {
	item   int
	guards []guard
	stmts  []stmt
}

// deferPlans makes execPlan in tx collect into a new batchPlan until the
// returned function is called.
func deferPlans(tx *sqlx.Tx) (*batchPlan, func()) {
	bp := &batchPlan{}
	deferredPlans.Store(tx, bp)
	return bp, func() { deferredPlans.Delete(tx) }
}

// deferredPlan returns the batchPlan collecting tx's plans, if any.
func deferredPlan(tx *sqlx.Tx) *batchPlan {
	v, ok := deferredPlans.Load(tx)
	if !ok {
		return nil
	}
	return v.(*batchPlan)
}

// add collects a checked plan of the running item. Its guards count as
// matched from here: the item commits only if every guard of the batch's
// statement matched (run), so a commitFunc's check that it ran its pending
// guard (Registry.issue) holds as with execPlan.
func (bp *batchPlan) add(guards []guard, stmts []stmt) {
	for _, g := range guards {
		if g.matched != nil {
			*g.matched = true
		}
	}
	bp.parts = append(bp.parts, planPart{item: bp.item, guards: guards, stmts: stmts})
}

// headGuardQuery is appendWrite.headGuard's UPDATE: new size and root,
// then the size and root it extends.
const headGuardQuery = `UPDATE log_head SET size = ?, root = ? WHERE id = 1 AND size = ? AND root = ?`

// planUnit is one row of one statement or guard: a single-row INSERT (a
// multi-row one split into its rows), or an UPDATE.
type planUnit struct {
	item  int
	guard *guard // nil: a statement
	query string
	args  []any
}

// batchCTE is one CTE of the batch's statement: the merged INSERTs of one
// text, or a unit written as it is.
type batchCTE struct {
	form  *mergeForm // nil: units[0] written as it is
	units []planUnit
}

// maxPerStatement bounds the items one statement stores. A batch's items
// are grouped by their kind (the texts of their statements: a registration
// or a rotation) and each group is stored by statements of at most this
// many items, so that a statement's text depends on its kind and number of
// items alone: a few dozen texts in all, each prepared once per connection
// (pgstmt.go), each a few hundred KiB of PostgreSQL's plan cache at most —
// not one per mix of kinds, up to the writer's 64 items.
const maxPerStatement = 8

// run executes the collected plans in tx: the chain of log head guards as
// one guard, then every item's other guards and statements, by kind and in
// statements of at most maxPerStatement items (the head guard in the
// first). It returns, per item, the miss error of a guard of it that
// changed no row (nil: every guard matched) or, as err, a failure of a
// statement as a whole, or of one that could not be written (a value or a
// column the jsonb parameter cannot carry exactly): the writer then runs
// every item again with execPlan's parameters (failedUnknown).
func (bp *batchPlan) run(ctx context.Context, tx *sqlx.Tx, items int) (missed []error, err error) {
	head, byItem, err := bp.units(items)
	if err != nil {
		return nil, err
	}
	missed = make([]error, items)
	for k, units := range statementsOf(byItem) {
		if k == 0 && head != nil {
			units = append([]planUnit{*head}, units...)
		}
		ctes := cteGroups(units)
		for _, c := range ctes {
			if c.form != nil {
				if err := c.form.loadTypes(ctx, tx); err != nil {
					return nil, err
				}
			}
		}
		query, args, guards, err := writeBatch(ctes)
		if err != nil {
			return nil, err
		}
		var changed pq.Int64Array
		if err := tx.QueryRowxContext(ctx, query, args...).Scan(&changed); err != nil {
			return nil, dbErr("storing a batch of issuances", err)
		}
		if len(changed) != len(guards) {
			return nil, fmt.Errorf("registry: storing a batch of issuances: %d counts for %d guards", len(changed), len(guards))
		}
		miss := false
		for i, u := range guards {
			if changed[i] != 1 && missed[u.item] == nil {
				missed[u.item], miss = u.guard.miss(), true
			}
		}
		if miss {
			return missed, nil // the batch rolls back: the rest need not run
		}
	}
	return missed, nil
}

// units returns the collected plans as units: the chain of log head
// guards as one guard (nil: none), and every other unit by item.
func (bp *batchPlan) units(items int) (head *planUnit, byItem [][]planUnit, err error) {
	byItem = make([][]planUnit, items)
	add := func(u planUnit) error {
		if u.guard != nil && u.query == headGuardQuery {
			if head == nil {
				h := u
				head = &h
				return nil
			}
			return extendHead(head, u)
		}
		byItem[u.item] = append(byItem[u.item], u)
		return nil
	}
	for _, p := range bp.parts {
		if p.item < 0 || p.item >= items {
			return nil, nil, fmt.Errorf("registry: storing a batch of issuances: a plan of item %d of %d", p.item, items)
		}
		for i := range p.guards {
			g := &p.guards[i]
			if err := add(planUnit{item: p.item, guard: g, query: g.query, args: g.args}); err != nil {
				return nil, nil, err
			}
		}
		for _, st := range p.stmts {
			for _, u := range splitRows(p.item, st) {
				if err := add(u); err != nil {
					return nil, nil, err
				}
			}
		}
	}
	return head, byItem, nil
}

// statementsOf groups items' units by the items' kind — the sorted texts of
// an item's units — in the order of the kinds' texts, and splits each
// kind's items into statements of at most maxPerStatement items, in the
// items' order. It returns each statement's units.
func statementsOf(byItem [][]planUnit) [][]planUnit {
	kinds := map[string][]int{}
	for k, units := range byItem {
		if len(units) == 0 {
			continue
		}
		texts := make([]string, len(units))
		for i, u := range units {
			texts[i] = u.query
		}
		slices.Sort(texts)
		key := strings.Join(slices.Compact(texts), "\x00")
		kinds[key] = append(kinds[key], k)
	}
	var out [][]planUnit
	for _, key := range slices.Sorted(maps.Keys(kinds)) {
		for chunk := range slices.Chunk(kinds[key], maxPerStatement) {
			var units []planUnit
			for _, k := range chunk {
				units = append(units, byItem[k]...)
			}
			out = append(out, units)
		}
	}
	return out
}

// cteGroups makes the CTEs of one statement: the INSERTs of one text as one
// CTE each, every other unit as it is, in the order of their texts (units
// of one text in the items' order), so that the statement's text does not
// depend on the order of its items. No CTE sees another's changes, so
// their order changes nothing else.
func cteGroups(units []planUnit) []batchCTE {
	var (
		out    []batchCTE
		byText = map[string]int{}
	)
	for _, u := range units {
		var f *mergeForm
		if u.guard == nil {
			f = mergeFormOf(u.query)
		}
		if f == nil {
			out = append(out, batchCTE{units: []planUnit{u}})
			continue
		}
		if k, ok := byText[u.query]; ok {
			out[k].units = append(out[k].units, u)
			continue
		}
		byText[u.query] = len(out)
		out = append(out, batchCTE{form: f, units: []planUnit{u}})
	}
	slices.SortStableFunc(out, func(a, b batchCTE) int { return strings.Compare(a.units[0].query, b.units[0].query) })
	return out
}

// extendHead makes first, a log head guard, end where next ends; next
// must start where first ends (the appends of one batch form a chain).
func extendHead(first *planUnit, next planUnit) error {
	if len(first.args) != 4 || len(next.args) != 4 {
		return errors.New("registry: storing a batch of issuances: a log head guard without its four values")
	}
	size, sok := first.args[0].(int64)
	from, fok := next.args[2].(int64)
	root, rok := first.args[1].([]byte)
	prev, pok := next.args[3].([]byte)
	if !sok || !fok || !rok || !pok || size != from || !bytes.Equal(root, prev) {
		return errors.New("registry: storing a batch of issuances: the batch's appends do not form a chain")
	}
	first.args = []any{next.args[0], next.args[1], first.args[2], first.args[3]}
	return nil
}

// splitRows returns st as units: one per row of a multi-row INSERT … VALUES,
// else st itself.
func splitRows(item int, st stmt) []planUnit {
	sp := rowSplitOf(st.query)
	if sp.one == "" || len(st.args)%sp.per != 0 {
		return []planUnit{{item: item, query: st.query, args: st.args}}
	}
	out := make([]planUnit, 0, len(st.args)/sp.per)
	for k := 0; k < len(st.args); k += sp.per {
		out = append(out, planUnit{item: item, query: sp.one, args: st.args[k : k+sp.per]})
	}
	return out
}

// rowSplit is how a multi-row INSERT splits: its one-row text and the
// placeholders of a row ("": it does not split).
type rowSplit struct {
	one string
	per int
}

var rowSplits sync.Map // query text → rowSplit

func rowSplitOf(query string) rowSplit {
	if v, ok := rowSplits.Load(query); ok {
		return v.(rowSplit)
	}
	var sp rowSplit
	if m := multiInsertRE.FindStringSubmatch(query); m != nil {
		if per := strings.Count(m[2], "?"); per > 0 && strings.Count(query, "?")%per == 0 {
			sp = rowSplit{one: m[1] + m[2], per: per}
		}
	}
	rowSplits.Store(query, sp)
	return sp
}

var (
	// multiInsertRE matches INSERT INTO t (cols) VALUES (?, …)[, (?, …)]…:
	// the part before the first row, the first row.
	multiInsertRE = regexp.MustCompile(`^(\s*INSERT INTO \w+\s*\([\w\s,]+\)\s*VALUES\s*)(\(\s*\?(?:\s*,\s*\?)*\s*\))(?:\s*,\s*\(\s*\?(?:\s*,\s*\?)*\s*\))*\s*$`)
	// insertRE matches a single-row INSERT INTO t (cols) VALUES (?, …).
	insertRE = regexp.MustCompile(`^\s*INSERT INTO (\w+)\s*\(([\w\s,]+)\)\s*VALUES\s*\(\s*\?(?:\s*,\s*\?)*\s*\)\s*$`)
)

// mergeForm is how the single-row INSERTs of one text become one CTE: the
// statement rewritten over a jsonb parameter of their rows, by column.
type mergeForm struct {
	// sql is the rewritten statement; "$?" stands for the parameter.
	sql   string
	table string
	cols  []string // the column each argument is given as, in lower case
}

// columnTypes holds, per table, its columns' types (format_type), read
// once per process (loadTypes).
var columnTypes sync.Map // table → map[string]string

// loadTypes reads the types of f's table's columns in tx, once per
// process, and refuses a form with a column it cannot write: one unknown
// to the table, or of type json or jsonb (which would take a JSON string
// as a JSON value, not as its text).
func (f *mergeForm) loadTypes(ctx context.Context, tx *sqlx.Tx) error {
	types, ok := columnTypes.Load(f.table)
	if !ok {
		var rows []struct {
			Name string `db:"name"`
			Type string `db:"type"`
		}
		if err := tx.SelectContext(ctx, &rows, `SELECT attname AS name, format_type(atttypid, NULL) AS type FROM pg_attribute
			WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped`, f.table); err != nil {
			return dbErr("storing a batch of issuances: reading the columns of "+f.table, err)
		}
		m := make(map[string]string, len(rows))
		for _, r := range rows {
			m[r.Name] = r.Type
		}
		types, _ = columnTypes.LoadOrStore(f.table, m)
	}
	m := types.(map[string]string)
	for _, col := range f.cols {
		switch m[col] {
		case "":
			return fmt.Errorf("registry: storing a batch of issuances: %s has no column %s", f.table, col)
		case "json", "jsonb":
			return fmt.Errorf("registry: storing a batch of issuances: column %s.%s is %s: %w", f.table, col, m[col], errNotExact)
		}
	}
	return nil
}

var mergeForms sync.Map // query text → *mergeForm, or nil: not mergeable

// mergeFormOf returns the merged form of query, or nil.
func mergeFormOf(query string) *mergeForm {
	if v, ok := mergeForms.Load(query); ok {
		return v.(*mergeForm)
	}
	f := newMergeForm(query)
	mergeForms.Store(query, f)
	return f
}

// newMergeForm rewrites query, an INSERT INTO t (columns) VALUES of one row
// of placeholders, each column named once, or returns nil.
func newMergeForm(query string) *mergeForm {
	m := insertRE.FindStringSubmatch(query)
	if m == nil {
		return nil
	}
	// Unquoted names (checkStmts refuses quotes) fold to lower case, as
	// the INSERT's own column list does; the parameter's keys must match
	// the row type's names exactly.
	table, cols := strings.ToLower(m[1]), strings.Split(strings.ToLower(m[2]), ",")
	for i := range cols {
		cols[i] = strings.TrimSpace(cols[i])
	}
	if len(cols) != strings.Count(query, "?") || hasDuplicate(cols) {
		return nil
	}
	return &mergeForm{table: table, cols: cols,
		sql: fmt.Sprintf("INSERT INTO %s (%s) SELECT atr_r.%s FROM jsonb_populate_recordset(NULL::%s, $?::jsonb) AS atr_r",
			table, strings.Join(cols, ", "), strings.Join(cols, ", atr_r."), table)}
}

func hasDuplicate(s []string) bool {
	seen := map[string]bool{}
	for _, v := range s {
		if seen[v] {
			return true
		}
		seen[v] = true
	}
	return false
}

// writeBatch writes the batch's statement: one CTE per batchCTE, then a
// SELECT of one array holding, per guard, how many rows it changed. It
// returns the guards in the array's order.
func writeBatch(ctes []batchCTE) (query string, args []any, guards []planUnit, err error) {
	var b strings.Builder
	for i, c := range ctes {
		if i == 0 {
			b.WriteString("WITH ")
		} else {
			b.WriteString(", ")
		}
		u := c.units[0]
		if u.guard != nil {
			fmt.Fprintf(&b, "g%d AS (", len(guards))
			guards = append(guards, u)
		} else {
			fmt.Fprintf(&b, "s%d AS (", i)
		}
		if c.form == nil {
			args = writeNumbered(&b, stmt{u.query, u.args}, args)
			if u.guard != nil {
				b.WriteString(" RETURNING 1")
			}
		} else {
			param, perr := c.form.param(c.units)
			if perr != nil {
				return "", nil, nil, perr
			}
			args = append(args, param)
			b.WriteString(strings.Replace(c.form.sql, "$?", "$"+strconv.Itoa(len(args)), 1))
		}
		b.WriteString(")")
	}
	b.WriteString(" SELECT ARRAY[")
	for i := range guards {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "(SELECT count(*) FROM g%d)", i)
	}
	b.WriteString("]::bigint[]")
	return b.String(), args, guards, nil
}

// param encodes units' rows as the form's jsonb parameter: an array of
// objects by column.
func (f *mergeForm) param(units []planUnit) (string, error) {
	v, ok := columnTypes.Load(f.table)
	if !ok {
		return "", fmt.Errorf("registry: storing a batch of issuances: the columns of %s were not read", f.table)
	}
	types := v.(map[string]string)
	var b bytes.Buffer
	b.WriteByte('[')
	for i, u := range units {
		if len(u.args) != len(f.cols) {
			return "", fmt.Errorf("registry: storing a batch of issuances: %d values for %d columns", len(u.args), len(f.cols))
		}
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteByte('{')
		for k, col := range f.cols {
			if k > 0 {
				b.WriteByte(',')
			}
			writeJSONString(&b, col)
			b.WriteByte(':')
			v := u.args[k]
			if _, isBytes := v.([]byte); isBytes && types[col] != "bytea" {
				// lib/pq sends bytes for another type as their text.
				return "", fmt.Errorf("registry: storing a batch of issuances: column %s: bytes for a %s column: %w", col, types[col], errNotExact)
			}
			if err := writeJSONValue(&b, v); err != nil {
				return "", fmt.Errorf("registry: storing a batch of issuances: column %s: %w", col, err)
			}
		}
		b.WriteByte('}')
	}
	b.WriteByte(']')
	return b.String(), nil
}

// errNotExact is a value a JSON parameter cannot carry as lib/pq would
// send it.
var errNotExact = errors.New("value has no exact JSON form")

// writeJSONValue writes v as the JSON value whose text the column's input
// function reads as lib/pq's text parameter would be read: bytes as
// bytea's hex form, times in RFC 3339 with the offset.
func writeJSONValue(b *bytes.Buffer, v any) error {
	if dv, ok := v.(driver.Valuer); ok {
		if rv := reflect.ValueOf(v); rv.Kind() == reflect.Pointer && rv.IsNil() {
			b.WriteString("null") // as database/sql: a nil pointer is NULL
			return nil
		}
		x, err := dv.Value()
		if err != nil {
			return err
		}
		v = x
	}
	switch x := v.(type) {
	case nil:
		b.WriteString("null")
	case string:
		// Invalid UTF-8 or a NUL would be changed by JSON or refused by
		// PostgreSQL's JSON; lib/pq's text parameter would be refused.
		if !utf8.ValidString(x) || strings.IndexByte(x, 0) >= 0 {
			return errNotExact
		}
		writeJSONString(b, x)
	case []byte:
		if x == nil {
			b.WriteString("null")
			return nil
		}
		b.WriteString(`"\\x`)
		b.Write(hex.AppendEncode(b.AvailableBuffer(), x))
		b.WriteByte('"')
	case int64:
		b.WriteString(strconv.FormatInt(x, 10))
	case int:
		b.WriteString(strconv.Itoa(x))
	case int32:
		b.WriteString(strconv.FormatInt(int64(x), 10))
	case bool:
		b.WriteString(strconv.FormatBool(x))
	case time.Time:
		// In UTC: an offset with seconds (a zone's local mean time) has
		// no RFC 3339 form. PostgreSQL reads years 1 to 9999 this way.
		x = x.UTC()
		if x.Year() < 1 || x.Year() > 9999 {
			return fmt.Errorf("%w: year %d", errNotExact, x.Year())
		}
		b.WriteByte('"')
		b.WriteString(x.Format("2006-01-02T15:04:05.999999999Z"))
		b.WriteByte('"')
	case *int64:
		if x == nil {
			b.WriteString("null")
		} else {
			b.WriteString(strconv.FormatInt(*x, 10))
		}
	case *string:
		if x == nil {
			b.WriteString("null")
			return nil
		}
		return writeJSONValue(b, *x)
	case *time.Time:
		if x == nil {
			b.WriteString("null")
			return nil
		}
		return writeJSONValue(b, *x)
	default:
		return fmt.Errorf("%w: %T", errNotExact, v)
	}
	return nil
}

// writeJSONString writes s, valid UTF-8 without NUL, as a JSON string:
// quotes, backslashes and control characters escaped, the rest as it is
// (RFC 8259, section 7).
func writeJSONString(b *bytes.Buffer, s string) {
	const hexDigits = "0123456789abcdef"
	b.WriteByte('"')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' {
			continue
		}
		b.WriteString(s[start:i])
		switch c {
		case '"', '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case '\n':
			b.WriteString(`\n`)
		case '\t':
			b.WriteString(`\t`)
		case '\r':
			b.WriteString(`\r`)
		default:
			b.WriteString(`\u00`)
			b.WriteByte(hexDigits[c>>4])
			b.WriteByte(hexDigits[c&0xf])
		}
		start = i + 1
	}
	b.WriteString(s[start:])
	b.WriteByte('"')
}
