package registry_test

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

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

	db, err := sqlx.Open("postgres", f.DatabaseURL)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	conn, err := db.Connx(ctx) // PREPARE and SET hold for one session
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// A log some weeks old: 100,000 checkpoints (sizes far above the tree's,
	// which no statement below runs against: they are only planned).
	for _, q := range []string{
		`INSERT INTO log_checkpoints (size, note, created_at)
			SELECT 1000000 + g, 'checkpoint', now() FROM generate_series(1, 100000) g`,
		`ANALYZE log_checkpoints`,
		`SET plan_cache_mode = force_generic_plan`,
	} {
		if _, err := conn.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	dollar := regexp.MustCompile(`\$(\d+)`)
	for k, q := range reads {
		n := 0
		for _, m := range dollar.FindAllStringSubmatch(q, -1) {
			i, _ := strconv.Atoi(m[1])
			n = max(n, i)
		}
		name := fmt.Sprintf("plan%d", k)
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
		p := strings.Join(plan, "\n")
		if strings.Contains(p, "Seq Scan on log_checkpoints") {
			t.Errorf("%s\nreads log_checkpoints from end to end in its generic plan:\n%s", q, p)
		} else {
			t.Logf("%s\n%s", q, p)
		}
	}
}
