package registry

import (
	"context"
	"sync"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/agent-trust-registry/atr/ca"
)

// The prune of pending_issuances. Every issuance records its serial and TBS
// there before the token signs (record-before-sign) and moves the row to
// issued in the transaction that stores its certificate. Only pending rows
// are ever read again (Reconcile), and an issued row holds nothing its
// certificate's row does not (the TBS is the certificate's), so issued rows
// are deleted PendingIssuedKeep after their issuance. Abandoned rows stay
// for good: they are the record of signatures that never left the CA.
//
// Serials lead with the time they were made (ca.NewSerialAt), so the rows
// old enough are those below ca.SerialFloorAt(now - PendingIssuedKeep), one
// range of the serial key. Each call reads that range from where the last
// one stopped (pendingPruner.from): the abandoned rows, which stay at the
// low end of the key for good, and the rows already pruned are not stepped
// over again at every call. A row settled to issued only after the floor
// passed its serial (Reconcile not running for an hour) would be skipped,
// so the range starts from the lowest serial again once a day.

// PendingIssuedKeep is how long an issuance's record-before-sign row is
// kept once its certificate is stored (PrunePendingIssuances).
const PendingIssuedKeep = time.Hour

// pendingPruneRestart is how often a prune reads the range from its start.
const pendingPruneRestart = 24 * time.Hour

// pendingPruneBatch and pendingPruneBatches bound one PrunePendingIssuances:
// rows per transaction (on SQLite the one writer's lock is held that long),
// transactions per call (the maintenance loop calls it every 30 s).
var (
	pendingPruneBatch   = 1000
	pendingPruneBatches = 50
)

// pendingPruner is where the next prune starts: no issued row below from
// is older than the floor it reached (as far as this process knows), since
// restarted.
type pendingPruner struct {
	mu        sync.Mutex
	from      string
	restarted time.Time
}

// PrunePendingIssuances deletes the rows of issued issuances made more
// than PendingIssuedKeep ago, by the registry's clock, at most
// pendingPruneBatches transactions of pendingPruneBatch rows; the
// maintenance loop calls it. Without it the table kept every issuance's row,
// TBS included (~0.5 KB), for good. Pending rows (Reconcile's) and abandoned
// ones stay, and so do issued rows whose serials do not lead with their
// time (random serials of versions before ca.NewSerialAt). It writes nothing
// (on SQLite: takes no write lock) while no row is that old, and returns the
// number of rows deleted.
func (r *Registry) PrunePendingIssuances(ctx context.Context) (int64, error) {
	p := &r.pendingPrune
	p.mu.Lock()
	defer p.mu.Unlock()
	now := r.now()
	floor, err := ca.SerialFloorAt(now.Add(-PendingIssuedKeep))
	if err != nil {
		return 0, wrap("pruning pending issuances", err)
	}
	if now.Sub(p.restarted) >= pendingPruneRestart || now.Before(p.restarted) {
		p.from, p.restarted = "", now
	}
	var total int64
	for range pendingPruneBatches {
		serials, err := certs(r.store.db).IssuedPendingSerials(ctx, p.from, floor, pendingPruneBatch)
		if err != nil {
			return total, wrap("pruning pending issuances", err)
		}
		if len(serials) == 0 {
			p.from = floor
			break
		}
		first, last := serials[0], serials[len(serials)-1]
		var n int64
		if err := r.store.inTx(ctx, "pruning pending issuances", func(tx *sqlx.Tx) error {
			var err error
			n, err = certs(tx).DeleteIssuedPending(ctx, first, last)
			return err
		}); err != nil {
			return total, wrap("pruning pending issuances", err)
		}
		total += n
		if p.from = last; len(serials) < pendingPruneBatch {
			p.from = floor
			break
		}
	}
	return total, nil
}
