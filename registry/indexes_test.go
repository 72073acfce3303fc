package registry_test

import (
	"context"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/jmoiron/sqlx"

	"github.com/agent-trust-registry/atr/registry"
	"github.com/agent-trust-registry/atr/registry/registrytest"
)

// issuanceTables are the tables every registration or rotation writes a row
// of (or updates one in): each of their indexes is a page written per
// issuance, and on SQLite a WAL frame and part of the commit's I/O.
var issuanceTables = []string{"agents", "certificates", "pending_issuances", "log_entries", "log_hashes", "log_openings", "audit_events"}

// TestIssuanceIndexesAreRead (issue 14, tenth pass): every index an
// issuance writes is one a query of the registry reads. The registry runs
// its lifecycle — register, rotate, revoke, list, look up, its log, verify,
// the CRL, the recovery sweep — with a hook recording each statement; on
// SQLite the planner then says which index each statement uses
// (EXPLAIN QUERY PLAN), and every index created on the tables above must be
// among them, unless it is UNIQUE (a rule, not a reader). Statements run
// here with every parameter NULL, so a partial index counts as read only by
// a query that spells its predicate ("status = 'superseded'"), which is the
// registry's rule for such queries anyway: PostgreSQL's generic plans cannot
// use a partial index for a bound parameter either. Before migration 011,
// certificates_status was written by every rotation and read by nothing.
//
// A statement that asks for the first row in an order (ORDER BY … LIMIT 1:
// the CRL's next grace end, the newest opening) must find it in an index in
// that order, not sort every candidate: before 011 the next grace end sorted
// every superseded certificate of the issuer, at every CRL.
//
// It also requires the log's tables, whose key is one integer, to be keyed
// by SQLite's rowid itself: "BIGINT PRIMARY KEY" (before 011) is a second
// B-tree beside the table, written by every append.
func TestIssuanceIndexesAreRead(t *testing.T) {
	var (
		mu      sync.Mutex
		queries = map[string]bool{}
	)
	registry.SetStatementHook(t, func(q string) {
		mu.Lock()
		defer mu.Unlock()
		queries[strings.Join(strings.Fields(q), " ")] = true
	})
	f := registrytest.NewFixture(t, registrytest.WithDatabase("sqlite"))
	ctx := context.Background()
	owner := f.Owner("acme", "acme")
	var certPEM string
	for _, name := range []string{"a.acme", "b.acme"} {
		csr, _ := f.NewCSR()
		iss, err := f.Registry.Register(ctx, owner, registry.RegisterRequest{Name: name, CSR: csr})
		if err != nil {
			t.Fatal(err)
		}
		certPEM = iss.CertificatePEM
	}
	csr, _ := f.NewCSR()
	if _, err := f.Registry.Rotate(ctx, owner, "a.acme", csr); err != nil {
		t.Fatal(err)
	}
	steps := map[string]func() error{
		"revoke": func() error { _, err := f.Registry.Revoke(ctx, owner, "b.acme", "keyCompromise"); return err },
		"list agents": func() error {
			_, _, err := f.Registry.ListAgents(ctx, owner, "", 10)
			return err
		},
		"get agent":      func() error { _, err := f.Registry.GetAgent(ctx, owner, "a.acme"); return err },
		"opened entries": func() error { _, err := f.Registry.OpenedEntries(ctx, owner, "a.acme"); return err },
		"verify":         func() error { _, err := f.Registry.Verify(ctx, []byte(certPEM), nil); return err },
		"crl":            func() error { _, _, err := f.Registry.CRL(ctx); return err },
		"reconcile":      func() error { _, err := f.Registry.Reconcile(ctx); return err },
		"log entries":    func() error { _, err := f.Registry.LogEntries(ctx, 0, 3); return err },
	}
	for name, step := range steps {
		if err := step(); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}

	path := strings.TrimPrefix(f.DatabaseURL, "sqlite://")
	db, err := sqlx.Open("sqlite3", "file:"+path+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()

	// Which index each recorded statement uses.
	usesIndex := regexp.MustCompile(`USING (?:COVERING )?INDEX (\w+)`)
	dollarArg := regexp.MustCompile(`\$(\d+)`)
	firstOfOrder := regexp.MustCompile(`ORDER BY [^()]* LIMIT 1$`)
	used := map[string][]string{} // index -> statements
	mu.Lock()
	recorded := make([]string, 0, len(queries))
	for q := range queries {
		recorded = append(recorded, q)
	}
	mu.Unlock()
	sort.Strings(recorded)
	for _, q := range recorded {
		verb := strings.ToUpper(strings.SplitN(q, " ", 2)[0])
		if !slices.Contains([]string{"SELECT", "WITH", "UPDATE", "DELETE", "INSERT"}, verb) {
			continue
		}
		// '?' placeholders, and $n ones (the singleton rows' reads).
		nargs := strings.Count(q, "?")
		for _, m := range dollarArg.FindAllStringSubmatch(q, -1) {
			n, _ := strconv.Atoi(m[1])
			nargs = max(nargs, n)
		}
		args := make([]any, nargs)
		var plan []struct {
			ID      int    `db:"id"`
			Parent  int    `db:"parent"`
			NotUsed int    `db:"notused"`
			Detail  string `db:"detail"`
		}
		if err := db.SelectContext(ctx, &plan, "EXPLAIN QUERY PLAN "+q, args...); err != nil {
			t.Fatalf("EXPLAIN QUERY PLAN %s: %v", q, err)
		}
		for _, p := range plan {
			for _, m := range usesIndex.FindAllStringSubmatch(p.Detail, -1) {
				used[m[1]] = append(used[m[1]], q)
			}
			// The first row in an order (the next grace end, the newest
			// opening) is one index step; sorting every candidate for it
			// grows with the table.
			if firstOfOrder.MatchString(q) && strings.Contains(p.Detail, "TEMP B-TREE FOR ORDER BY") {
				t.Errorf("%q sorts every candidate for its first row (%s): give it an index in its order", q, p.Detail)
			}
		}
	}
	if len(used) == 0 {
		t.Fatalf("no recorded statement uses an index (%d statements): the hook or the plans are broken", len(recorded))
	}

	for _, tbl := range issuanceTables {
		var idx []struct {
			Name   string `db:"name"`
			Unique bool   `db:"unique"`
			Origin string `db:"origin"`
		}
		if err := db.SelectContext(ctx, &idx, `SELECT name, "unique", origin FROM pragma_index_list(?)`, tbl); err != nil {
			t.Fatal(err)
		}
		for _, ix := range idx {
			switch {
			case ix.Origin == "pk" && strings.HasPrefix(tbl, "log_"):
				t.Errorf("%s: primary key index %s beside the rowid: key the table by INTEGER PRIMARY KEY", tbl, ix.Name)
			case ix.Origin != "c" || ix.Unique:
				// PRIMARY KEY and UNIQUE: rules the database keeps.
			case len(used[ix.Name]) == 0:
				t.Errorf("index %s on %s is written by every issuance and read by none of the %d statements the registry ran", ix.Name, tbl, len(recorded))
			default:
				t.Logf("index %s: read by %q", ix.Name, used[ix.Name][0])
			}
		}
	}
}
