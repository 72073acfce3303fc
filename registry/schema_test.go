package registry

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/sirupsen/logrus"

	"github.com/agent-trust-registry/atr/registry/internal/testdb"
)

// schemaItem is one fact about a migrated schema, comparable across the two
// dialects: "table certificates", "column certificates.serial bytes not
// null", "index certificates.idx_certificates_agent (agent_id)", "trigger
// certificates.trg_…".
type schemaItem string

// columnType maps a dialect's declared type to a class both dialects share.
func columnType(dialect Dialect, declared string) string {
	t := strings.ToLower(strings.TrimSpace(declared))
	switch {
	case strings.Contains(t, "int"), t == "serial", t == "bigserial":
		return "integer"
	case t == "bytea", t == "blob":
		return "bytes"
	case strings.Contains(t, "timestamp"), t == "datetime":
		return "time"
	case t == "boolean", t == "bool":
		return "bool"
	case t == "text", strings.Contains(t, "char"):
		return "text"
	case t == "real", t == "double precision", strings.HasPrefix(t, "numeric"):
		return "number"
	}
	return string(dialect) + ":" + t
}

// schemaOf lists the tables, columns (type class and nullability), indexes
// (with their columns, in order) and triggers of s's database.
func schemaOf(ctx context.Context, t *testing.T, s *Store) []schemaItem {
	t.Helper()
	var items []schemaItem
	add := func(format string, args ...any) { items = append(items, schemaItem(fmt.Sprintf(format, args...))) }
	switch s.dialect {
	case SQLite:
		var tables []string
		if err := s.db.SelectContext(ctx, &tables, `SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'`); err != nil {
			t.Fatal(err)
		}
		for _, tbl := range tables {
			add("table %s", tbl)
			var cols []struct {
				CID     int     `db:"cid"`
				Name    string  `db:"name"`
				Type    string  `db:"type"`
				NotNull bool    `db:"notnull"`
				Default *string `db:"dflt_value"`
				PK      int     `db:"pk"`
			}
			if err := s.db.SelectContext(ctx, &cols, `SELECT * FROM pragma_table_info(?)`, tbl); err != nil {
				t.Fatal(err)
			}
			for _, c := range cols {
				// SQLite lets a non-INTEGER primary key be NULL; the schema's
				// intent (and PostgreSQL's rule) is NOT NULL.
				add("column %s.%s %s notnull=%v", tbl, c.Name, columnType(SQLite, c.Type), c.NotNull || c.PK > 0)
			}
			var idx []struct {
				Name   string `db:"name"`
				Origin string `db:"origin"`
			}
			if err := s.db.SelectContext(ctx, &idx, `SELECT name, origin FROM pragma_index_list(?)`, tbl); err != nil {
				t.Fatal(err)
			}
			for _, ix := range idx {
				if ix.Origin != "c" { // primary key and UNIQUE constraints: compared as columns' keys below
					continue
				}
				var cols []string
				if err := s.db.SelectContext(ctx, &cols, `SELECT name FROM pragma_index_info(?) ORDER BY seqno`, ix.Name); err != nil {
					t.Fatal(err)
				}
				add("index %s.%s (%s)", tbl, ix.Name, strings.Join(cols, ", "))
			}
		}
		var trg []struct {
			Name  string `db:"name"`
			Table string `db:"tbl_name"`
		}
		if err := s.db.SelectContext(ctx, &trg, `SELECT name, tbl_name FROM sqlite_master WHERE type = 'trigger'`); err != nil {
			t.Fatal(err)
		}
		for _, tr := range trg {
			add("trigger %s.%s", tr.Table, tr.Name)
		}
	case Postgres:
		var cols []struct {
			Table    string `db:"table_name"`
			Name     string `db:"column_name"`
			Type     string `db:"data_type"`
			Nullable string `db:"is_nullable"`
		}
		if err := s.db.SelectContext(ctx, &cols, `SELECT table_name, column_name, data_type, is_nullable
			FROM information_schema.columns WHERE table_schema = current_schema()`); err != nil {
			t.Fatal(err)
		}
		tables := map[string]bool{}
		for _, c := range cols {
			if !tables[c.Table] {
				tables[c.Table] = true
				add("table %s", c.Table)
			}
			add("column %s.%s %s notnull=%v", c.Table, c.Name, columnType(Postgres, c.Type), c.Nullable == "NO")
		}
		var idx []struct {
			Table string `db:"tbl"`
			Name  string `db:"idx"`
			Cols  string `db:"cols"`
		}
		// Indexes created by CREATE INDEX, not by PRIMARY KEY or UNIQUE
		// constraints (SQLite's origin 'c').
		if err := s.db.SelectContext(ctx, &idx, `
			SELECT t.relname AS tbl, i.relname AS idx,
			       string_agg(a.attname, ', ' ORDER BY k.ord) AS cols
			FROM pg_index x
			JOIN pg_class i ON i.oid = x.indexrelid
			JOIN pg_class t ON t.oid = x.indrelid
			JOIN pg_namespace n ON n.oid = t.relnamespace AND n.nspname = current_schema()
			CROSS JOIN LATERAL unnest(x.indkey) WITH ORDINALITY AS k(attnum, ord)
			JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum
			WHERE NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = x.indexrelid)
			GROUP BY t.relname, i.relname`); err != nil {
			t.Fatal(err)
		}
		for _, ix := range idx {
			add("index %s.%s (%s)", ix.Table, ix.Name, ix.Cols)
		}
		var trg []struct {
			Name  string `db:"tgname"`
			Table string `db:"relname"`
		}
		if err := s.db.SelectContext(ctx, &trg, `SELECT DISTINCT tg.tgname, c.relname FROM pg_trigger tg
			JOIN pg_class c ON c.oid = tg.tgrelid
			JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = current_schema()
			WHERE NOT tg.tgisinternal`); err != nil {
			t.Fatal(err)
		}
		for _, tr := range trg {
			add("trigger %s.%s", tr.Table, tr.Name)
		}
	default:
		t.Fatalf("unknown dialect %v", s.dialect)
	}
	slices.Sort(items)
	return items
}

// schemaDifferences are the reviewed places where the two migrated schemas
// may differ, each with its reason. Everything else must be identical.
var schemaDifferences = map[schemaItem]string{
	"trigger log_head.log_head_notify":                          "PostgreSQL wakes other replicas with NOTIFY; SQLite has one process and a commit hook (notify.go)",
	"trigger revocation_state.revocation_state_notify":          "as log_head_notify",
	"trigger revocation_state.revocation_state_root_crl_notify": "as log_head_notify (atr_root_crls, migration 014)",
	"trigger api_keys.api_keys_seq_truncate":                    "SQLite has no TRUNCATE",
}

// TestSchemaSameOnBothDatabases migrates a fresh SQLite and a fresh
// PostgreSQL database and requires the same tables, columns (type class and
// nullability), indexes and triggers, so a migration added to one dialect
// only, or with a different column, fails here instead of in production.
func TestSchemaSameOnBothDatabases(t *testing.T) {
	ctx := context.Background()
	log := logrus.NewEntry(logrus.New())
	log.Logger.SetLevel(logrus.WarnLevel)
	schemas := map[string][]schemaItem{}
	for _, name := range testdb.Names() {
		s, err := Open(ctx, testdb.URL(t, name), log)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if _, err := s.Migrate(ctx); err != nil {
			t.Fatalf("%s: migrate: %v", name, err)
		}
		schemas[name] = schemaOf(ctx, t, s)
		s.Close()
		if len(schemas[name]) < 20 {
			t.Fatalf("%s: only %d schema items; the introspection is broken: %v", name, len(schemas[name]), schemas[name])
		}
	}
	lite, pg := schemas["sqlite"], schemas["postgres"]
	t.Logf("%d schema items on SQLite, %d on PostgreSQL", len(lite), len(pg))
	for _, it := range lite {
		if !slices.Contains(pg, it) && schemaDifferences[it] == "" {
			t.Errorf("only on SQLite: %s", it)
		}
	}
	for _, it := range pg {
		if !slices.Contains(lite, it) && schemaDifferences[it] == "" {
			t.Errorf("only on PostgreSQL: %s", it)
		}
	}
}
