package registry_test

import (
	"context"
	"fmt"
	"math/bits"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/agent-trust-registry/atr/registry"
	"github.com/agent-trust-registry/atr/registry/registrytest"
)

// TestIssuanceStatements (issue 14): what a lone registration and a lone
// rotation ask of the database — on PostgreSQL each statement is a round
// trip, most of them under the log_head lock. Counted with a hook on the
// connections (BEGIN and COMMIT are not statements here). A rotation's
// agent row is read once, to authorize, and locked by the UPDATE that moves
// it to the new serial (before: also SELECT … FOR UPDATE in the
// transaction); the tree's stored hashes are read once, by the append —
// the batch's seal and the receipt's inclusion proof use what it read
// (before: again by the seal and by the receipt). On PostgreSQL an append
// is one statement (before: entry, hashes, head, opening), and so are the
// certificate's rows and the audit event (before: one each). Before this
// change a rotation ran 21–22 statements on both databases and a
// registration 18–19; then a rotation 18 on SQLite and 13 on PostgreSQL, a
// registration 16 and 11. The batch's seal now takes the log head its
// append left instead of reading it again (transparencyLog.txHead), and on
// PostgreSQL a rotation's pending row and agent row move in one statement
// (then execGuards): a rotation 17 and 11, a registration 15 and 10. On
// PostgreSQL an issuance's guards, append, certificate rows and audit event
// are now one statement (execPlan): a rotation 9, a registration 8. A
// rotation reads the fingerprint of the certificate it replaces (for its
// log entry) with the agent row, in one statement (before: a second read
// of certificates): a rotation 16 on SQLite and 8 on PostgreSQL. A batch
// that starts at the tree this process's last batch sealed takes that
// checkpoint as the latest and its frontier hashes from memory
// (transparencyLog.seedMemo) instead of reading both: a rotation 14 and 6.
// On PostgreSQL every statement has parameters, so each is prepared once
// per connection; the reads of log_head and revocation_state named their one
// row by a literal and were parsed and planned at every execution.
func TestIssuanceStatements(t *testing.T) {
	for _, db := range []string{"sqlite", "postgres"} {
		t.Run(db, func(t *testing.T) {
			record := statementRecorder(t)
			f := registrytest.NewFixture(t, registrytest.WithDatabase(db))
			f.Registry.SetLogClock(f.Clock.Now) // no batch reads the frontier again because a second passed
			ctx := context.Background()
			owner := f.Owner("acme", "acme")
			type limit struct {
				what  string
				reads string // SELECTs from this table; "" for every statement
				max   int
			}
			check := func(kind string, got []string, limits []limit) {
				t.Helper()
				if len(got) < 5 { // an issuance writes at least its pending row, log entry, certificate, audit event, checkpoint
					t.Fatalf("%s: %d statements seen: the hook does not see them", kind, len(got))
				}
				for _, l := range limits {
					n := 0
					for _, s := range got {
						// A read's table follows its last FROM (a scalar
						// subquery in the column list comes before it).
						if l.reads == "" || strings.HasPrefix(s, "SELECT ") && strings.HasPrefix(s[strings.LastIndex(s, " FROM ")+1:], "FROM "+l.reads+" ") {
							n++
						}
					}
					if n > l.max {
						t.Errorf("%s: %d %s, want at most %d; the statements:\n%s", kind, n, l.what, l.max, strings.Join(got, "\n"))
					}
				}
			}
			all := map[string][2]int{"sqlite": {14, 13}, "postgres": {6, 6}} // rotation, registration
			for i := range 8 {                                               // a tree whose frontier is more than one hash
				got := record(func() error {
					csr, _ := f.NewCSR()
					_, err := f.Registry.Register(ctx, owner, registry.RegisterRequest{Name: fmt.Sprintf("a%d.acme", i), CSR: csr})
					return err
				})
				if i > 0 { // the first also reads what the fixture left
					check("registration", got, []limit{{"statements in all", "", all[db][1]},
						{"reads of the tree's stored hashes", "log_hashes", 0}, {"reads of checkpoints", "log_checkpoints", 0}})
				}
			}
			for range 3 {
				got := record(func() error {
					csr, _ := f.NewCSR()
					_, err := f.Registry.Rotate(ctx, owner, "a3.acme", csr)
					return err
				})
				if db == "postgres" {
					// A statement without parameters is parsed, analyzed and
					// planned at every execution (pgstmt.go prepares only
					// those with parameters).
					for _, s := range got {
						if !strings.Contains(s, "$1") {
							t.Errorf("rotation: a statement without parameters: %s", s)
						}
					}
				}
				check("rotation", got, []limit{
					{"statements in all", "", all[db][0]},
					{"reads of the agent", "agents", 1},
					{"reads of certificates", "certificates", 0},
					{"reads of the tree's stored hashes", "log_hashes", 0},
					{"reads of checkpoints", "log_checkpoints", 0},
				})
			}
		})
	}
}

// deleteCount is how many of stmts are DELETE statements.
func deleteCount(stmts []string) (n int) {
	for _, q := range stmts {
		if strings.HasPrefix(strings.ToUpper(q), "DELETE") {
			n++
		}
	}
	return n
}

// statementRecorder hooks the registry's database connections (before the
// fixture opens them) and returns record, which runs do and returns the
// statements do sent, white space folded; a failing do fails the test.
func statementRecorder(t *testing.T) (record func(do func() error) []string) {
	var (
		mu    sync.Mutex
		on    bool
		stmts []string
	)
	registry.SetStatementHook(t, func(q string) {
		mu.Lock()
		defer mu.Unlock()
		if on {
			stmts = append(stmts, strings.Join(strings.Fields(q), " "))
		}
	})
	return func(do func() error) []string {
		t.Helper()
		mu.Lock()
		on, stmts = true, nil
		mu.Unlock()
		err := do()
		mu.Lock()
		on = false
		got := stmts
		mu.Unlock()
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
}

// TestBatchesReadNoStoredHashes: issuances that the group commit batches
// (16 at once, after two alone) read neither the tree's stored hashes nor
// the latest checkpoint — each batch starts at the tree the previous one
// sealed, whose frontier and checkpoint this process holds (seedMemo,
// latestBefore) — and every receipt still verifies offline. On PostgreSQL
// a batch stores its issuances with fewer statements than issuances.
func TestBatchesReadNoStoredHashes(t *testing.T) {
	for _, db := range []string{"sqlite", "postgres"} {
		t.Run(db, func(t *testing.T) {
			record := statementRecorder(t)
			f, _, _ := seededFixture(t, db, 2) // the first reads what the fixture left
			check := receiptChecker(t, f)
			const n = 16
			before := f.Store.GroupCommitStats()
			var issued []*registry.Issued
			got := record(func() error {
				issued = registerConcurrently(t, f, f.Registry, f.Owner("acme", "acme"), n)
				return nil
			})
			after := f.Store.GroupCommitStats()
			t.Logf("%d issuances in %d batches (%d items, %d reruns)", n, after.Batches-before.Batches, after.Items-before.Items, after.Reruns-before.Reruns)
			stores := 0
			for _, s := range got {
				if strings.Contains(s, "FROM log_hashes") || strings.Contains(s, "FROM log_checkpoints ORDER BY") {
					t.Errorf("a batch read: %s", s)
				}
				if strings.Contains(s, "INSERT INTO certificates") {
					stores++
				}
			}
			// On PostgreSQL a batch stores its issuances with a statement
			// per kind and per 8 of them (batchplan.go); on SQLite each is
			// its own.
			batches := int(after.Batches - before.Batches)
			if db == "postgres" && (stores < batches || stores >= n) || db == "sqlite" && stores != n {
				t.Errorf("%d issuances in %d batches stored by %d statements", n, batches, stores)
			}
			for _, iss := range issued {
				check(iss)
			}
			checkPhases(t, db, before, after)
		})
	}
}

// checkPhases checks the writer's phases between two GroupCommitStats of
// a run of sealed issuances: each phase the batches went through took
// time — on PostgreSQL the batch's collected statements too, on SQLite
// nothing runs there — and together they are no more than the writer's
// busy time, which they split.
func checkPhases(t *testing.T, db string, before, after registry.GroupCommitStats) {
	t.Helper()
	var sum time.Duration
	prev := map[string]time.Duration{}
	before.Phases.Each(func(name string, d time.Duration) { prev[name] = d })
	after.Phases.Each(func(name string, d time.Duration) {
		d -= prev[name]
		sum += d
		if want := name != "statements" || db == "postgres"; (d > 0) != want {
			t.Errorf("%s: the writer's %q phase took %v; want time spent: %t", db, name, d, want)
		}
	})
	if len(prev) != 5 {
		t.Errorf("%d phases, want 5", len(prev))
	}
	if busy := after.Busy - before.Busy; sum > busy {
		t.Errorf("%s: the phases took %v, more than the writer's busy %v", db, sum, busy)
	}
}

// TestLogRefusesDamagedFrontierWhileSeeding (review): batches that take the
// tree's frontier from memory (seedMemo) still read it from the database
// at least every second, so a damaged stored hash at the tree's edge — an
// attacker with write access to the database — is found and the log
// refuses to extend the tree, as when every batch read it.
func TestLogRefusesDamagedFrontierWhileSeeding(t *testing.T) {
	for _, db := range []string{"sqlite", "postgres"} {
		t.Run(db, func(t *testing.T) {
			f, register, last := seededFixture(t, db, 5)
			ctx := context.Background()
			size := last.LogIndex + 1
			// The largest complete subtree of the tree: part of its frontier,
			// which the next append reads.
			idx := tlog.StoredHashIndex(bits.Len64(uint64(size))-1, 0)
			if err := f.Store.Exec(ctx, fmt.Sprintf(`UPDATE log_hashes SET hash = (SELECT hash FROM log_hashes WHERE idx = 0) WHERE idx = %d`, idx)); err != nil {
				t.Fatal(err)
			}
			f.Clock.Advance(2 * time.Second)
			if iss, err := register("after.acme"); err == nil {
				t.Fatalf("the log extended a tree whose stored frontier was damaged (leaf %d)", iss.LogIndex)
			}
		})
	}
}

// TestSealRefusedBelowALargerCheckpoint (review): a batch that takes the
// checkpoint it knows for the latest stored one, without reading
// (latestBefore), stores its own only while no checkpoint of a larger tree
// is stored — as the read would have found — so a database whose head was
// rewound to the known tree, with larger checkpoints left in place, gets
// no second, forked checkpoint from the batch's seal.
func TestSealRefusedBelowALargerCheckpoint(t *testing.T) {
	for _, db := range []string{"sqlite", "postgres"} {
		t.Run(db, func(t *testing.T) {
			f, register, _ := seededFixture(t, db, 3)
			ctx := context.Background()
			sealed := f.Registry.SealedCheckpoints()
			if err := f.Store.Exec(ctx, `INSERT INTO log_checkpoints (size, note, created_at) VALUES (1000000, 'left by a restore', CURRENT_TIMESTAMP)`); err != nil {
				t.Fatal(err)
			}
			iss, err := register("after.acme")
			if err != nil {
				t.Fatal(err)
			}
			if got := f.Registry.SealedCheckpoints(); got != sealed {
				t.Errorf("the batch of leaf %d sealed a checkpoint below the stored one of a larger tree", iss.LogIndex)
			}
		})
	}
}

// seededFixture returns a fixture on db whose log runs on the fixture's
// clock, a register function, and the last of n registrations made with it:
// the batches after the first take the tree's frontier and checkpoint from
// memory (seedMemo), until the clock moves a second.
func seededFixture(t *testing.T, db string, n int) (*registrytest.Fixture, func(name string) (*registry.Issued, error), *registry.Issued) {
	t.Helper()
	f := registrytest.NewFixture(t, registrytest.WithDatabase(db))
	f.Registry.SetLogClock(f.Clock.Now)
	owner := f.Owner("acme", "acme")
	register := func(name string) (*registry.Issued, error) {
		csr, _ := f.NewCSR()
		return f.Registry.Register(context.Background(), owner, registry.RegisterRequest{Name: name, CSR: csr})
	}
	var last *registry.Issued
	for i := range n {
		var err error
		if last, err = register(fmt.Sprintf("seed%d.acme", i)); err != nil {
			t.Fatal(err)
		}
	}
	return f, register, last
}

// TestPendingRowsShareStatements: on PostgreSQL the pending rows of
// concurrent issuances share statements (pendingbatch.go) — fewer INSERTs
// into pending_issuances than issuances, where each had its own round trip
// and commit before — and every issuance completes.
func TestPendingRowsShareStatements(t *testing.T) {
	record := statementRecorder(t)
	f := registrytest.NewFixture(t, registrytest.WithDatabase("postgres"))
	const n = 32
	got := record(func() error {
		registerConcurrently(t, f, f.Registry, f.Owner("acme", "acme"), n)
		return nil
	})
	inserts := 0
	for _, s := range got {
		if strings.HasPrefix(s, "INSERT INTO pending_issuances ") {
			inserts++
		}
	}
	t.Logf("%d issuances, %d statements inserting pending rows", n, inserts)
	if inserts == 0 || inserts >= n {
		t.Errorf("%d statements inserted the pending rows of %d concurrent issuances, want fewer than one each", inserts, n)
	}
}
