package registry_test

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	_ "github.com/lib/pq"

	"github.com/agent-trust-registry/atr/registry"
	"github.com/agent-trust-registry/atr/registry/registrytest"
)

// TestBatchFindsLargerCheckpointsByIndex (issue 14, twenty-first pass): a
// batch's seal asks whether a checkpoint of a larger tree is stored
// (storeTopCheckpoint), under the log head's lock, once per batch. Asked as
// "NOT EXISTS (… WHERE size > $4)", PostgreSQL's generic plan — the one a
// statement prepared once per connection runs after its fifth execution —
// estimated a third of the table to match and read log_checkpoints from its
// first page to its last: 278 pages, 0.77 ms per batch, at 6,000
// checkpoints, and a table that grows by a checkpoint per batch for the
// log's whole life. Every statement an issuance batch sends that reads
// log_checkpoints must find its rows by the primary key in its generic plan,
// at a size where a sequential scan would cost.
func TestBatchFindsLargerCheckpointsByIndex(t *testing.T) {
	record := statementRecorder(t)
	f := registrytest.NewFixture(t, registrytest.WithDatabase("postgres"))
	ctx := context.Background()
	owner := f.Owner("acme", "acme")
	var stmts []string
	for i := range 3 { // the second and later batches start at the tree the first sealed
		stmts = append(stmts, record(func() error {
			csr, _ := f.NewCSR()
			_, err := f.Registry.Register(ctx, owner, registry.RegisterRequest{Name: fmt.Sprintf("b%d.acme", i), CSR: csr})
			return err
		})...)
	}
	// A receipt's checkpoint, as verify and an agent's log give it.
	stmts = append(stmts, record(func() error {
		csr, _ := f.NewCSR()
		iss, err := f.Registry.Register(ctx, owner, registry.RegisterRequest{Name: "v.acme", CSR: csr})
		if err != nil {
			return err
		}
		if _, err := f.Registry.Verify(ctx, []byte(iss.CertificatePEM), nil); err != nil {
			return err
		}
		_, err = f.Registry.OpenedEntries(ctx, owner, "v.acme")
		return err
	})...)
	// The maintenance loop's prune of old checkpoints (a table that grows
	// by a checkpoint per batch: every 30 s, on a large table).
	stmts = append(stmts, record(func() error {
		f.Clock.Advance(2 * registry.CheckpointKeep)
		if n, err := f.Registry.PruneCheckpoints(ctx); err != nil || n == 0 {
			return fmt.Errorf("PruneCheckpoints = %d, %v; want the old checkpoints deleted", n, err)
		}
		return nil
	})...)
	var reads []string
	seen := map[string]bool{}
	for _, q := range stmts {
		if strings.Contains(q, "log_checkpoints") && !seen[q] {
			seen[q] = true
			reads = append(reads, q)
		}
	}
	if !slices.ContainsFunc(reads, func(q string) bool { return strings.HasPrefix(q, "INSERT INTO log_checkpoints") }) {
		t.Fatalf("no batch stored its checkpoint; statements on log_checkpoints:\n%s", strings.Join(reads, "\n"))
	}

	conn := pgSession(t, f.DatabaseURL)
	// A log some weeks old: 100,000 checkpoints, each cosigned by a witness
	// (sizes far above the tree's, which no statement below runs against:
	// they are only planned).
	for _, q := range []string{
		`INSERT INTO log_checkpoints (size, note, created_at)
			SELECT 1000000 + g, 'checkpoint', now() FROM generate_series(1, 100000) g`,
		`INSERT INTO witness_cosignatures (size, key_name, key_hash, line, created_at)
			SELECT 1000000 + g, 'witness.example', 1, 'line', now() FROM generate_series(1, 100000) g`,
		`ANALYZE log_checkpoints`,
		`ANALYZE witness_cosignatures`,
		`SET plan_cache_mode = force_generic_plan`,
	} {
		if _, err := conn.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	for k, q := range reads {
		p := genericPlan(t, conn, fmt.Sprintf("plan%d", k), q)
		if strings.Contains(p, "Seq Scan on log_checkpoints") || strings.Contains(p, "Seq Scan on witness_cosignatures") {
			t.Errorf("%s\nreads log_checkpoints or witness_cosignatures from end to end in its generic plan:\n%s", q, p)
		} else {
			t.Logf("%s\n%s", q, p)
		}
	}
}

// TestStatementsFindRowsByIndexOnPostgres (issue 14, twenty-first pass):
// every statement the registry's lifecycle sends to PostgreSQL finds the
// rows of a table that grows with issuance through an index in its generic
// plan (the plan a statement prepared once per connection runs after its
// fifth execution), when the table is large. The tables are made large for
// the planner only: their statistics say a million rows each
// (pg_class.reltuples), and autovacuum is kept from correcting them.
func TestStatementsFindRowsByIndexOnPostgres(t *testing.T) {
	record := statementRecorder(t)
	f := registrytest.NewFixture(t, registrytest.WithDatabase("postgres"))
	ctx := context.Background()
	owner := f.Owner("acme", "acme")
	var stmts []string
	var certPEM string
	stmts = append(stmts, record(func() error {
		for _, name := range []string{"a.acme", "b.acme", "c.acme"} {
			csr, _ := f.NewCSR()
			iss, err := f.Registry.Register(ctx, owner, registry.RegisterRequest{Name: name, CSR: csr})
			if err != nil {
				return err
			}
			certPEM = iss.CertificatePEM
		}
		csr, _ := f.NewCSR()
		if _, err := f.Registry.Rotate(ctx, owner, "a.acme", csr); err != nil {
			return err
		}
		if _, err := f.Registry.Revoke(ctx, owner, "b.acme", "keyCompromise"); err != nil {
			return err
		}
		if _, _, err := f.Registry.ListAgents(ctx, owner, "", 10); err != nil {
			return err
		}
		if _, err := f.Registry.GetAgent(ctx, owner, "a.acme"); err != nil {
			return err
		}
		if _, err := f.Registry.OpenedEntries(ctx, owner, "a.acme"); err != nil {
			return err
		}
		if _, err := f.Registry.Verify(ctx, []byte(certPEM), nil); err != nil {
			return err
		}
		if _, _, err := f.Registry.CRL(ctx); err != nil {
			return err
		}
		if _, err := f.Registry.Reconcile(ctx); err != nil {
			return err
		}
		if _, err := f.Registry.LogEntries(ctx, 0, 3); err != nil {
			return err
		}
		f.Clock.Advance(registry.PendingIssuedKeep + time.Minute) // the rows above are old enough to prune
		if n, err := f.Registry.PrunePendingIssuances(ctx); err != nil || n == 0 {
			return fmt.Errorf("PrunePendingIssuances = %d, %v; want some rows", n, err)
		}
		return nil
	})...)

	conn := pgSession(t, f.DatabaseURL)
	growing := []string{"agents", "certificates", "pending_issuances", "log_entries", "log_hashes", "log_openings", "log_checkpoints", "audit_events", "ocsp_responses"}
	for _, tbl := range growing {
		for _, q := range []string{
			`ALTER TABLE ` + tbl + ` SET (autovacuum_enabled = false)`,
			`UPDATE pg_class SET reltuples = 1000000, relpages = 1 WHERE relname = '` + tbl + `' AND relnamespace = current_schema()::regnamespace`,
		} {
			if _, err := conn.ExecContext(ctx, q); err != nil {
				t.Fatalf("%s: %v (the test needs a PostgreSQL superuser)", q, err)
			}
		}
	}
	if _, err := conn.ExecContext(ctx, `SET plan_cache_mode = force_generic_plan`); err != nil {
		t.Fatal(err)
	}
	seqScan := regexp.MustCompile(`Seq Scan on (\w+)`)
	seen := map[string]bool{}
	for k, q := range stmts {
		verb := strings.ToUpper(strings.SplitN(q, " ", 2)[0])
		if seen[q] || !slices.Contains([]string{"SELECT", "WITH", "UPDATE", "DELETE", "INSERT"}, verb) {
			continue
		}
		seen[q] = true
		p := genericPlan(t, conn, fmt.Sprintf("any%d", k), q)
		for _, m := range seqScan.FindAllStringSubmatch(p, -1) {
			if slices.Contains(growing, m[1]) {
				t.Errorf("%s\nreads %s from end to end in its generic plan:\n%s", q, m[1], p)
			}
		}
	}
	if len(seen) < 20 {
		t.Fatalf("only %d statements planned: the hook does not see them", len(seen))
	}
}

// pgSession opens one PostgreSQL session on url (PREPARE and SET hold for
// one session), closed when the test ends.
func pgSession(t *testing.T, url string) *sqlx.Conn {
	t.Helper()
	db, err := sqlx.Open("postgres", url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	conn, err := db.Connx(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// genericPlan prepares q as name on conn and returns the plan PostgreSQL
// runs for it once it plans it generically (conn must have
// plan_cache_mode = force_generic_plan): EXPLAIN EXECUTE with every
// parameter NULL, which a generic plan does not look at.
func genericPlan(t *testing.T, conn *sqlx.Conn, name, q string) string {
	t.Helper()
	ctx := context.Background()
	n := 0
	for _, m := range dollarParam.FindAllStringSubmatch(q, -1) {
		i, _ := strconv.Atoi(m[1])
		n = max(n, i)
	}
	if _, err := conn.ExecContext(ctx, "PREPARE "+name+" AS "+q); err != nil {
		t.Fatalf("PREPARE %s: %v", q, err)
	}
	exec := name
	if n > 0 {
		exec += "(" + strings.TrimSuffix(strings.Repeat("NULL,", n), ",") + ")"
	}
	var plan []string
	if err := conn.SelectContext(ctx, &plan, "EXPLAIN EXECUTE "+exec); err != nil {
		t.Fatalf("EXPLAIN %s: %v", q, err)
	}
	return strings.Join(plan, "\n")
}

var dollarParam = regexp.MustCompile(`\$(\d+)`)
