package registry

import (
	"context"
	"crypto"
	"sync/atomic"
	"testing"
	"time"

	sqlite3 "github.com/mattn/go-sqlite3"

	"github.com/agent-trust-registry/atr/registry/translog"
)

// Exported for the tests of package registry_test (this binary only).

// NotifyState reports what the change notifier knows: the tree size, the
// revocation seq and whether the seq is live.
func (r *Registry) NotifyState() (size, seq int64, live bool) {
	seq, live = r.notify.revocationSeq()
	return r.notify.logSize(), seq, live
}

// WaitLogSize is notifier.waitLogSize.
func (r *Registry) WaitLogSize(ctx context.Context, have int64) (int64, error) {
	return r.notify.waitLogSize(ctx, have)
}

// WaitRevocationSeq is notifier.waitRevocationSeq.
func (r *Registry) WaitRevocationSeq(ctx context.Context, have int64) (int64, error) {
	return r.notify.waitRevocationSeq(ctx, have)
}

// SetNotifyPoll sets the notifier's periodic read interval; before Start.
func (r *Registry) SetNotifyPoll(d time.Duration) { r.notify.poll = d }

// NotifyApplicationName is the application_name of the LISTEN connection.
const NotifyApplicationName = notifyApplicationName

// Exec runs a statement on the Store's database (tests that hide a table
// to prove a path reads nothing).
func (s *Store) Exec(ctx context.Context, query string) error {
	_, err := s.db.ExecContext(ctx, query)
	return err
}

// SealedCheckpoints is how many checkpoints r's log stored inside their
// batch of issuance commits (transparencyLog.sealBatch).
func (r *Registry) SealedCheckpoints() int64 { return r.tlog.sealed.Load() }

// WriterBatches is how many batches s's writers ran.
func (s *Store) WriterBatches() (n int64) {
	for _, w := range []*writer{s.w, s.grouped} {
		if w != nil {
			b := w.stats().Batches
			n += b
		}
	}
	return n
}

// SetSQLiteConnectHook installs h to see every new SQLite connection of the
// test binary, with its DSN, until the test ends.
func SetSQLiteConnectHook(t testing.TB, h func(dsn string, conn *sqlite3.SQLiteConn)) {
	if !connectHook.CompareAndSwap(nil, &h) {
		t.Fatal("another test holds the SQLite connect hook")
	}
	t.Cleanup(func() { connectHook.Store(nil) })
}

// SetStatementHook has h see the text of every statement run on an SQLite
// connection or a PostgreSQL one of the statement cache until the test
// ends.
func SetStatementHook(t testing.TB, h func(query string)) {
	if !statementHook.CompareAndSwap(nil, &h) {
		t.Fatal("another test holds the SQLite statement hook")
	}
	t.Cleanup(func() { statementHook.Store(nil) })
}

// SetLogClock makes the transparency log read the time from now (its
// checkpoints' timestamps, and when a batch reads the tree's frontier again:
// seedMemo) instead of time.Now.
func (r *Registry) SetLogClock(now func() time.Time) { r.tlog.now = now }

// CountProofVerifications counts, from now on, the RSA verifications of VRF
// proofs r recalls from stored openings; before r is used concurrently.
func (r *Registry) CountProofVerifications() *atomic.Int32 {
	var n atomic.Int32
	verify := r.verifyProof
	r.verifyProof = func(pub crypto.PublicKey, trustDomain, name string, proof []byte) ([32]byte, error) {
		n.Add(1)
		return verify(pub, trustDomain, name, proof)
	}
	return &n
}

// OpeningMACs returns, per log index, whether the stored opening of agent
// has a MAC.
func (s *Store) OpeningMACs(ctx context.Context, agent string) (map[int64]bool, error) {
	var rows []struct {
		Idx int64 `db:"idx"`
		Has bool  `db:"has"`
	}
	err := s.db.SelectContext(ctx, &rows, s.db.Rebind(`SELECT idx, opened_mac IS NOT NULL AS has FROM log_openings WHERE agent_name = ?`), agent)
	out := map[int64]bool{}
	for _, r := range rows {
		out[r.Idx] = r.Has
	}
	return out, err
}

// RecallStoredProofs forgets the cached proofs of name and its suffixes and
// recalls them from name's newest opening (recallStoredProofs); it reports
// whether every one is cached after.
func (r *Registry) RecallStoredProofs(ctx context.Context, name string) bool {
	suffixes := translog.NameSuffixes(name)
	for _, n := range suffixes {
		r.vrf.cache().Remove(n)
	}
	r.recallStoredProofs(ctx, name)
	for _, n := range suffixes {
		if _, ok := r.vrf.get(n); !ok {
			return false
		}
	}
	return true
}

// ExpireOpeningMACRetry lets r ask the token for the openings' MAC key at
// once, as after openingMACRetry.
func (r *Registry) ExpireOpeningMACRetry() {
	r.openKey.mu.Lock()
	r.openKey.next = time.Time{}
	r.openKey.mu.Unlock()
}

// QueryInt64 runs a query of one integer on the Store's database.
func (s *Store) QueryInt64(ctx context.Context, query string) (int64, error) {
	var n int64
	err := s.db.GetContext(ctx, &n, query)
	return n, err
}

// SetVerifyReceiptMaxAge sets how long a verify's receipt is answered as
// kept before the checkpoint is looked at again (verifyReceiptMaxAge), and
// how long the newest cosigned checkpoint is kept; 0: every verify.
func (r *Registry) SetVerifyReceiptMaxAge(d time.Duration) {
	r.verifyReceipts.mu.Lock()
	defer r.verifyReceipts.mu.Unlock()
	r.verifyReceipts.maxAge = d
}

// VerifyReceiptCounts are atr_verify_receipts_total's counters: receipts
// answered as kept, made again against a newer checkpoint, and made from
// the database.
func (r *Registry) VerifyReceiptCounts() (cache, proof, database int64) {
	c := &r.verifyReceipts
	return c.hits.Load(), c.proofs.Load(), c.reads.Load()
}

// SetPendingPruneBatches sets PrunePendingIssuances' rows per transaction
// and transactions per call for the test t.
func SetPendingPruneBatches(t testing.TB, rows, transactions int) {
	oldRows, oldTx := pendingPruneBatch, pendingPruneBatches
	pendingPruneBatch, pendingPruneBatches = rows, transactions
	t.Cleanup(func() { pendingPruneBatch, pendingPruneBatches = oldRows, oldTx })
}

// SetCheckpointPruneBatches sets PruneCheckpoints' rows per transaction and
// transactions per call for the test t.
func SetCheckpointPruneBatches(t testing.TB, rows, transactions int) {
	oldRows, oldTx := checkpointPruneBatch, checkpointPruneBatches
	checkpointPruneBatch, checkpointPruneBatches = rows, transactions
	t.Cleanup(func() { checkpointPruneBatch, checkpointPruneBatches = oldRows, oldTx })
}
