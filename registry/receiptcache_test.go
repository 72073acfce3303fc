package registry_test

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/agent-trust-registry/atr/registry"
	"github.com/agent-trust-registry/atr/registry/registrytest"
	"github.com/agent-trust-registry/atr/registry/translog"
	"github.com/agent-trust-registry/atr/rp"
)

// TestVerifyReceiptCached: while the log does not grow, a repeated verify
// answers with the same receipt without reading the log tables (they are
// renamed away meanwhile: a read would fail and the receipt would be
// missing); once the log grows, the kept receipt is answered for a second
// (the registry's clock), and then made against the newer checkpoint.
func TestVerifyReceiptCached(t *testing.T) {
	eachDB(t, func(t *testing.T, f *registrytest.Fixture) {
		ctx, owner := context.Background(), startedOwner(t, f)
		iss := register(t, f, owner, "bot.acme")
		verify := func() []byte {
			t.Helper()
			res, err := f.Registry.VerifyWithReceipt(ctx, []byte(iss.CertificatePEM), nil)
			if err != nil || !res.Verified {
				t.Fatalf("VerifyWithReceipt: %+v, %v", res, err)
			}
			return res.Receipt
		}
		first := verify()
		if first == nil {
			t.Fatal("no receipt")
		}
		if err := f.Store.Exec(ctx, `ALTER TABLE log_openings RENAME TO log_openings_hidden`); err != nil {
			t.Fatal(err)
		}
		for range 50 {
			if got := verify(); !bytes.Equal(got, first) {
				t.Fatal("the receipt changed (or was read again) while the log did not grow")
			}
		}
		if err := f.Store.Exec(ctx, `ALTER TABLE log_openings_hidden RENAME TO log_openings`); err != nil {
			t.Fatal(err)
		}
		register(t, f, owner, "other.acme") // the log grows
		if got := verify(); !bytes.Equal(got, first) {
			t.Fatal("within a second of being made, the kept receipt was not answered as it was")
		}
		f.Clock.Advance(2 * time.Second)
		if got := verify(); bytes.Equal(got, first) {
			t.Fatal("a second later, the receipt did not follow the log's growth")
		}
		if c, p, d := f.Registry.VerifyReceiptCounts(); p != 1 || d != 1 || c != 51 {
			t.Fatalf("counts cache %d, proof %d, database %d; want 51, 1, 1", c, p, d)
		}
	})
}

// TestReceiptRefusesMisplacedOpening (security review): the receipt takes
// the leaf index from the stored opening, so a damaged or moved
// log_openings row would have answered for one leaf with another leaf's —
// possibly another agent's — opening and receipt. A row whose opening names
// another leaf, or another agent, is refused.
func TestReceiptRefusesMisplacedOpening(t *testing.T) {
	f := registrytest.NewFixture(t)
	ctx := context.Background()
	owner := f.Owner("acme", "acme")
	var idx []int64
	for _, name := range []string{"a.acme", "b.acme"} {
		csr, _ := f.NewCSR()
		iss, err := f.Registry.Register(ctx, owner, registry.RegisterRequest{Name: name, CSR: csr})
		if err != nil {
			t.Fatal(err)
		}
		idx = append(idx, iss.LogIndex)
	}
	a, b := idx[0], idx[1]
	if _, err := f.Registry.OpenedEntries(ctx, owner, "a.acme"); err != nil {
		t.Fatalf("untampered: %v", err)
	}
	// b's opening listed under a (the name column moved).
	if err := f.Store.Exec(ctx, fmt.Sprintf(`UPDATE log_openings SET agent_name = 'a.acme' WHERE idx = %d`, b)); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Registry.OpenedEntries(ctx, owner, "a.acme"); err == nil {
		t.Error("OpenedEntries(a) answered with b's opening")
	}
	if err := f.Store.Exec(ctx, fmt.Sprintf(`UPDATE log_openings SET agent_name = 'b.acme' WHERE idx = %d`, b)); err != nil {
		t.Fatal(err)
	}
	// a's row holding b's opening (the opening column copied).
	if err := f.Store.Exec(ctx, fmt.Sprintf(`UPDATE log_openings SET opened = (SELECT o.opened FROM log_openings o WHERE o.idx = %d) WHERE idx = %d`, b, a)); err != nil {
		t.Fatal(err)
	}
	if entries, err := f.Registry.OpenedEntries(ctx, owner, "a.acme"); err == nil {
		t.Errorf("OpenedEntries(a) answered with a row holding leaf %d's opening: %d entries", b, len(entries))
	}
}

// TestVerifyReceiptFollowsTheLogFromMemory (issue 14, cheap reads): once a
// verify has answered with a leaf's receipt, a verify after the log grew
// answers with the receipt against the newer checkpoint without reading
// the leaf or its opening again (log_entries and log_openings are renamed
// away meanwhile), and the receipt verifies offline. Before, a growing
// log — any issuance — made every receipt read opening, leaf, checkpoint and
// hashes from the database again.
func TestVerifyReceiptFollowsTheLogFromMemory(t *testing.T) {
	eachDB(t, func(t *testing.T, f *registrytest.Fixture) {
		ctx, owner := context.Background(), startedOwner(t, f)
		f.Registry.SetVerifyReceiptMaxAge(0) // look at the checkpoint on every verify
		a := register(t, f, owner, "a.acme")
		check := receiptChecker(t, f)
		verify := func() (*registry.Issued, *rp.VerifiedReceipt) {
			t.Helper()
			res, err := f.Registry.VerifyWithReceipt(ctx, []byte(a.CertificatePEM), nil)
			if err != nil || !res.Verified {
				t.Fatalf("VerifyWithReceipt: %+v, %v", res, err)
			}
			iss := *a
			iss.Receipt = res.Receipt
			return &iss, check(&iss)
		}
		_, first := verify()
		if c, p, d := f.Registry.VerifyReceiptCounts(); c != 0 || p != 0 || d != 1 {
			t.Fatalf("first verify: counts cache %d, proof %d, database %d; want 0, 0, 1", c, p, d)
		}
		register(t, f, owner, "b.acme") // the log grows
		hide := func(from, to string) {
			t.Helper()
			for _, table := range []string{"log_entries", "log_openings"} {
				if err := f.Store.Exec(ctx, fmt.Sprintf(`ALTER TABLE %s%s RENAME TO %s%s`, table, from, table, to)); err != nil {
					t.Fatal(err)
				}
			}
		}
		hide("", "_hidden")
		defer hide("_hidden", "")
		iss, second := verify()
		if second.Checkpoint.Size <= first.Checkpoint.Size {
			t.Fatalf("the receipt after the log grew is against size %d, the first against %d", second.Checkpoint.Size, first.Checkpoint.Size)
		}
		if c, p, d := f.Registry.VerifyReceiptCounts(); c != 0 || p != 1 || d != 1 {
			t.Fatalf("after growth: counts cache %d, proof %d, database %d; want 0, 1, 1", c, p, d)
		}
		again, _ := verify()
		if !bytes.Equal(again.Receipt, iss.Receipt) {
			t.Fatal("the receipt changed though the log did not grow")
		}
		if c, p, d := f.Registry.VerifyReceiptCounts(); c != 1 || p != 1 || d != 1 {
			t.Fatalf("unchanged log: counts cache %d, proof %d, database %d; want 1, 1, 1", c, p, d)
		}
	})
}

// TestVerifyReceiptAfterRestore (review of the receipt cache): a replica
// keeps a verify's receipt by leaf index. After a restore from a backup
// the log grows again and an index names another leaf; a verify of the new
// leaf's certificate on that replica never gets the receipt it kept for
// the old one (another agent's opening, which would not verify), and gets
// its own once the replica has found its checkpoint stale.
func TestVerifyReceiptAfterRestore(t *testing.T) {
	eachDB(t, func(t *testing.T, f *registrytest.Fixture) {
		ctx, owner := context.Background(), startedOwner(t, f)
		a := register(t, f, owner, "a.acme")
		b := register(t, f, owner, "b.acme")
		ra, err := translog.ParseReceipt(a.Receipt)
		if err != nil {
			t.Fatal(err)
		}
		cpa, err := translog.OpenCheckpoint(ra.Checkpoint, f.NoteVerifier)
		if err != nil || cpa.Size != b.LogIndex {
			t.Fatalf("a's checkpoint: size %d, %v; want %d", cpa.Size, err, b.LogIndex)
		}
		r2, err := registry.New(f.Config)
		if err != nil {
			t.Fatal(err)
		}
		if err := r2.Start(ctx); err != nil {
			t.Fatal(err)
		}
		defer r2.Close()
		if res, err := r2.VerifyWithReceipt(ctx, []byte(b.CertificatePEM), nil); err != nil || res.Receipt == nil {
			t.Fatalf("verify b on the second replica: %+v, %v", res, err)
		}

		// The backup: the log before b.
		n := b.LogIndex
		root := map[string]string{"sqlite": "X'%x'", "postgres": `'\x%x'::bytea`}[f.Database]
		for _, q := range []string{
			fmt.Sprintf(`DELETE FROM log_openings WHERE idx >= %d`, n),
			fmt.Sprintf(`DELETE FROM log_entries WHERE idx >= %d`, n),
			fmt.Sprintf(`DELETE FROM log_hashes WHERE idx >= %d`, tlog.StoredHashCount(n)),
			fmt.Sprintf(`DELETE FROM witness_cosignatures WHERE size > %d`, n),
			fmt.Sprintf(`DELETE FROM log_checkpoints WHERE size > %d`, n),
			fmt.Sprintf(`UPDATE log_head SET size = %d, root = `+root+` WHERE id = 1`, n, cpa.Hash[:]),
		} {
			if err := f.Store.Exec(ctx, q); err != nil {
				t.Fatalf("%s: %v", q, err)
			}
		}
		c := register(t, f, owner, "c.acme")
		if c.LogIndex != n {
			t.Fatalf("c is leaf %d, want b's former %d", c.LogIndex, n)
		}
		f.Clock.Advance(2 * time.Second) // past the kept receipt's second
		check := receiptChecker(t, f)
		for try := 0; ; try++ {
			res, err := r2.VerifyWithReceipt(ctx, []byte(c.CertificatePEM), nil)
			if err != nil || !res.Verified {
				t.Fatalf("verify c: %+v, %v", res, err)
			}
			if res.Receipt != nil {
				iss := *c
				iss.Receipt = res.Receipt
				check(&iss) // fails for b's receipt
				return
			}
			if try == 1 {
				t.Fatal("no receipt for c on the second replica after two verifies")
			}
		}
	})
}

// startedOwner starts f's registry until the test ends and returns the
// owner of the acme namespace.
func startedOwner(t *testing.T, f *registrytest.Fixture) registry.Actor {
	t.Helper()
	if err := f.Registry.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Registry.Close() })
	return f.Owner("acme", "acme")
}
