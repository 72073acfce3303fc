package registry_test

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"database/sql"
	"encoding/pem"
	"fmt"
	"net/url"
	"sync"
	"testing"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/agent-trust-registry/atr/registry"
	"github.com/agent-trust-registry/atr/registry/registrytest"
	"github.com/agent-trust-registry/atr/rp"
)

// TestFreshReceiptReadsNothingBack (issue 14): a fresh issuance's receipt is
// made from the leaf and the opening the issuance appended, against a
// checkpoint found without reading the log head again. Before, every
// register and rotate read its opening, its leaf and the head (three
// times) back from the database. The registry here runs as a PostgreSQL
// role that may write log_openings and log_entries but not read them: a
// read would fail and the answer would lack its receipt. Nor may it read
// witness_cosignatures: no witness has cosigned a checkpoint covering a leaf
// committed a moment ago, and looking for one cost a query per issuance.
// Every receipt, of a lone issuance and of concurrent ones, must verify.
// (That the known checkpoint is used without reading log_head, whose SELECT
// the issuance needs, is TestLogCovering's.)
func TestFreshReceiptReadsNothingBack(t *testing.T) {
	f := registrytest.NewFixture(t, registrytest.WithDatabase("postgres"))
	ctx := context.Background()
	var rnd [6]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		t.Fatal(err)
	}
	role := fmt.Sprintf("atr_noread_%x", rnd)
	for _, q := range []string{
		`CREATE ROLE ` + role + ` LOGIN`,
		`GRANT ALL ON ALL TABLES IN SCHEMA public TO ` + role,
		`GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO ` + role,
		`REVOKE SELECT ON log_openings, log_entries, witness_cosignatures FROM ` + role,
	} {
		if err := f.Store.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	u, err := url.Parse(f.DatabaseURL)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.User(role)
	store, err := registry.Open(ctx, u.String(), f.Log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		store.Close()
		for _, q := range []string{`DROP OWNED BY ` + role, `DROP ROLE ` + role} {
			if err := f.Store.Exec(context.Background(), q); err != nil {
				t.Errorf("%s: %v", q, err)
			}
		}
	})
	cfg := f.Config
	cfg.Store = store
	r, err := registry.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	// The role really cannot read what the receipt must not read back.
	db, err := sql.Open("postgres", u.String())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, table := range []string{"log_openings", "log_entries", "witness_cosignatures"} {
		var n int
		if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM `+table).Scan(&n); err == nil {
			t.Fatalf("the role can read %s: the test would prove nothing", table)
		}
	}

	check := receiptChecker(t, f)
	owner := f.Owner("acme", "acme")
	csr, _ := f.NewCSR()
	iss, err := r.Register(ctx, owner, registry.RegisterRequest{Name: "lone.acme", CSR: csr})
	if err != nil {
		t.Fatal(err)
	}
	check(iss)
	csr, _ = f.NewCSR()
	if iss, err = r.Rotate(ctx, owner, "lone.acme", csr); err != nil {
		t.Fatal(err)
	}
	check(iss)

	// Concurrent issuances, committed in shared batches, whose receipts may
	// share a checkpoint signed for another's leaf.
	for _, iss := range registerConcurrently(t, f, r, owner, 16) {
		check(iss)
	}
}

// receiptChecker returns a check that iss carries a receipt and its opening
// and that the receipt verifies offline (rp.ReceiptVerifier) for iss's leaf.
func receiptChecker(t *testing.T, f *registrytest.Fixture) func(iss *registry.Issued) *rp.VerifiedReceipt {
	v := rp.ReceiptVerifier{Roots: []*x509.Certificate{f.Root}, Intermediates: []*x509.Certificate{f.Intermediate},
		TrustDomain: registrytest.TrustDomain, LogVerifiers: note.VerifierList(f.NoteVerifier), VRFKey: f.VRFKey.Public()}
	return func(iss *registry.Issued) *rp.VerifiedReceipt {
		t.Helper()
		if iss.Receipt == nil || iss.Opened == nil {
			t.Fatalf("leaf %d: no receipt or opening", iss.LogIndex)
		}
		b, _ := pem.Decode([]byte(iss.CertificatePEM))
		got, err := v.Verify(b.Bytes, iss.Receipt, f.Clock.Now())
		if err != nil {
			t.Fatalf("leaf %d: receipt does not verify: %v", iss.LogIndex, err)
		}
		if got.LeafIndex != iss.LogIndex {
			t.Fatalf("receipt of leaf %d proves leaf %d", iss.LogIndex, got.LeafIndex)
		}
		return got
	}
}

// registerConcurrently registers n agents bot<i>.acme at once through r.
func registerConcurrently(t *testing.T, f *registrytest.Fixture, r *registry.Registry, owner registry.Actor, n int) []*registry.Issued {
	t.Helper()
	out := make([]*registry.Issued, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			csr, _ := f.NewCSR()
			out[i], errs[i] = r.Register(context.Background(), owner, registry.RegisterRequest{Name: fmt.Sprintf("bot%d.acme", i), CSR: csr})
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// TestReceiptRefusesProofThatDoesNotCheck (security review): a receipt's
// inclusion proof is checked against its checkpoint before it is handed
// out, so stored hashes that no longer match the signed tree (a damaged or
// restored database) give no receipt instead of one every verifier
// rejects.
func TestReceiptRefusesProofThatDoesNotCheck(t *testing.T) {
	eachDB(t, func(t *testing.T, f *registrytest.Fixture) {
		ctx := context.Background()
		owner := f.Owner("acme", "acme")
		a := register(t, f, owner, "a.acme")
		b := register(t, f, owner, "b.acme")
		if b.Receipt == nil {
			t.Fatal("no receipt before the damage")
		}
		// Leaf b's hash is in a's inclusion proof for any tree holding both.
		if err := f.Store.Exec(ctx, fmt.Sprintf(`UPDATE log_hashes SET hash = %s WHERE idx = %d`,
			map[string]string{"sqlite": "zeroblob(32)", "postgres": "decode(repeat('00', 32), 'hex')"}[f.Database],
			tlog.StoredHashIndex(0, b.LogIndex))); err != nil {
			t.Fatal(err)
		}
		// This process keeps the hashes its batches wrote and its proofs
		// read, and proves from them without reading the damaged row: its
		// receipt is correct.
		live, err := f.Registry.VerifyWithReceipt(ctx, []byte(a.CertificatePEM), nil)
		if err != nil || live.Receipt == nil {
			t.Fatalf("verify in the process that wrote the hashes: %+v, %v", live, err)
		}
		iss := *a
		iss.Receipt = live.Receipt
		receiptChecker(t, f)(&iss)
		// Another process reads the damaged row.
		f.Reopen()
		res, err := f.Registry.VerifyWithReceipt(ctx, []byte(a.CertificatePEM), nil)
		if err != nil || !res.Verified {
			t.Fatalf("verify: %+v, %v", res, err)
		}
		if res.Receipt != nil {
			t.Fatal("a receipt whose inclusion proof does not check against its checkpoint was handed out")
		}
	})
}

// TestIssuanceSealsItsCheckpoint (issue 14): the checkpoint a fresh
// issuance's receipt needs is signed and stored inside the issuance's own
// batch transaction — one commit (on SQLite one fsync) for the leaves and
// their checkpoint instead of a second transaction after it. A lone
// issuance's receipt is against exactly its batch's tree; on SQLite a lone
// issuance runs two transactions (the record-before-sign row and the
// issuance), where it ran three. Concurrent issuances' receipts all verify.
func TestIssuanceSealsItsCheckpoint(t *testing.T) {
	for _, db := range []string{"sqlite", "postgres"} {
		t.Run(db, func(t *testing.T) {
			f := registrytest.NewFixture(t, registrytest.WithDatabase(db))
			ctx := context.Background()
			check := receiptChecker(t, f)
			owner := f.Owner("acme", "acme")
			sealed := f.Registry.SealedCheckpoints()
			for i := range 3 {
				batches := f.Store.WriterBatches()
				csr, _ := f.NewCSR()
				iss, err := f.Registry.Register(ctx, owner, registry.RegisterRequest{Name: fmt.Sprintf("lone%d.acme", i), CSR: csr})
				if err != nil {
					t.Fatal(err)
				}
				if got := check(iss); got.Checkpoint.Size != iss.LogIndex+1 {
					t.Errorf("lone issuance %d: receipt against size %d, want its batch's tree %d", i, got.Checkpoint.Size, iss.LogIndex+1)
				}
				if n := f.Store.WriterBatches() - batches; db == "sqlite" && n != 2 {
					t.Errorf("lone issuance %d ran %d transactions, want 2 (pending row; issuance with its checkpoint)", i, n)
				}
			}
			if n := f.Registry.SealedCheckpoints() - sealed; n != 3 {
				t.Errorf("%d of 3 lone issuances' checkpoints were sealed with their batch", n)
			}
			for _, iss := range registerConcurrently(t, f, f.Registry, owner, 16) {
				if got := check(iss); got.Checkpoint.Size <= iss.LogIndex {
					t.Errorf("leaf %d: checkpoint of size %d does not cover it", iss.LogIndex, got.Checkpoint.Size)
				}
			}
		})
	}
}
