package registry

import (
	"context"
	"sync"

	"github.com/jmoiron/sqlx"
)

// Cheap reads while a fleet rotates (issue 14).
//
// Verify and OCSP answer a certificate's status from memory while the
// revocation revision (revocation_state.seq) they read it at is current
// (statuscache.go, ocsp.go). Every change of any certificate's status moves
// that revision, and a fleet that rotates changes one with every rotation
// (the predecessor, issued to superseded): with rotations running, every
// verify and every OCSP request read its certificate from the database
// again, however unrelated (docs/performance.md, "Reads while a fleet
// rotates").
//
// A supersede alone records, under the revision it moved to, the
// certificate it changed (superseded_changes, migrations 015). The
// notifier reads the rows of every revision it has not seen yet with the
// revision itself (notifier.read), and keeps them here. A status cached at
// revision s is still current at the latest revision when every revision
// after s is a recorded supersede and none of them names the certificate.
// A revision without a row — a revocation, a root CRL, a restore, a row
// pruned before this replica read it — makes every status cached before it
// stale, as it always did.

// supersedeLogSize bounds the revisions a supersedeLog keeps (and one read
// of superseded_changes): a status cached longer ago than that many
// revisions is read again.
const supersedeLogSize = 1 << 13

// supersededKeep is how many revisions of superseded_changes the
// maintenance loop keeps (PruneSupersededChanges): far more than a replica
// that is reading at all falls behind.
const supersededKeep = 1 << 17

// supersededChange is a row of superseded_changes.
type supersededChange struct {
	Seq         int64  `db:"seq"`
	Serial      string `db:"serial"`
	Fingerprint string `db:"fingerprint_sha256"`
}

// supersedeLog is what a notifier knows of the revisions it read: every
// revision in (from, known] is a supersede of the certificate it lists.
type supersedeLog struct {
	mu       sync.Mutex
	started  bool
	known    int64 // the latest revision read
	from     int64 // no revision after it is other than a listed supersede
	maxSeen  int64 // the largest revision ever read (a restore moves known back)
	ring     []supersededChange
	head     int // index of the oldest change in ring
	byFP     map[string]int64
	bySerial map[string]int64
}

func newSupersedeLog() *supersedeLog {
	return &supersedeLog{byFP: map[string]int64{}, bySerial: map[string]int64{}}
}

// wants reports whether advancing to revision to needs the rows after
// known, and from which revision.
func (l *supersedeLog) wants(to int64) (after int64, ok bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.known, l.started && to > l.known && to-l.known <= supersedeLogSize
}

// advance records that the latest revision is to, with rows the rows of
// superseded_changes in (known, to] in revision order (as read after to
// was: every revision up to it had committed). A revision without its row
// becomes the new from.
func (l *supersedeLog) advance(to int64, rows []supersededChange) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case !l.started:
		l.started, l.known, l.from, l.maxSeen = true, to, to, to
		return
	case to == l.known:
		return
	case to < l.known:
		// The database went back (a restore): nothing cached at a revision
		// this log has seen is known to be current, whatever the revision
		// does next. (A restore the notifier does not see go back — the
		// revision back past its last read before its next read — cannot
		// be told from revisions: operator.md §7 stops every replica for a
		// restore, which empties every cache.)
		l.reset(to)
		return
	case to-l.known > supersedeLogSize:
		l.known, l.from = to, max(l.from, to)
		l.maxSeen = max(l.maxSeen, to)
		return
	}
	next := l.known + 1
	for _, c := range rows {
		if c.Seq < next || c.Seq > to {
			continue // not asked for
		}
		if c.Seq > next {
			l.from = max(l.from, c.Seq-1) // revisions next … c.Seq-1 changed something else
		}
		l.push(c)
		next = c.Seq + 1
	}
	if next <= to {
		l.from = max(l.from, to)
	}
	l.known = to
	l.maxSeen = max(l.maxSeen, to)
}

// reset forgets every change after a restore to revision to: from is past
// every revision seen, so no status cached at one of them is kept.
func (l *supersedeLog) reset(to int64) {
	l.known = to
	l.from = max(l.maxSeen+1, to)
	l.ring, l.head = l.ring[:0], 0
	clear(l.byFP)
	clear(l.bySerial)
}

// push appends c, dropping the oldest change when the log is full (the
// revisions up to it are then no longer known).
func (l *supersedeLog) push(c supersededChange) {
	if len(l.ring) < supersedeLogSize {
		l.ring = append(l.ring, c)
	} else {
		old := l.ring[l.head]
		l.ring[l.head] = c
		l.head = (l.head + 1) % len(l.ring)
		l.from = max(l.from, old.Seq)
		if l.byFP[old.Fingerprint] == old.Seq {
			delete(l.byFP, old.Fingerprint)
		}
		if l.bySerial[old.Serial] == old.Seq {
			delete(l.bySerial, old.Serial)
		}
	}
	l.byFP[c.Fingerprint] = c.Seq
	l.bySerial[c.Serial] = c.Seq
}

// fingerprintUnchanged reports whether the status of the certificate with
// this SHA-256 fingerprint (lowercase hex), read at revision since, is
// still its status at the latest revision read.
func (l *supersedeLog) fingerprintUnchanged(fp string, since int64) bool {
	return l != nil && l.unchanged(l.byFP, fp, since)
}

// serialUnchanged is fingerprintUnchanged for a certificate by serial
// (ca.FormatSerial's spelling, as stored).
func (l *supersedeLog) serialUnchanged(serial string, since int64) bool {
	return l != nil && l.unchanged(l.bySerial, serial, since)
}

// unchanged answers for key of index, l.byFP or l.bySerial (made once,
// read and written under l.mu).
func (l *supersedeLog) unchanged(index map[string]int64, key string, since int64) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.started || since < l.from || since > l.known {
		return false
	}
	s, ok := index[key]
	return !ok || s <= since
}

// serialUnchanged is supersedeLog.serialUnchanged of the notifier's log,
// false without a notifier.
func (s *revocationService) serialUnchanged(serial string, since int64) bool {
	return s.notify != nil && s.notify.sup.serialUnchanged(serial, since)
}

// readSupersedes reads the rows of superseded_changes in (after, to], each
// serial in ca.FormatSerial's spelling, the OCSP cache's: a row records
// the serial as its certificate row stores it, and replicas older than
// migration 004 stored some without their leading zero (certStore.Status).
func (n *notifier) readSupersedes(ctx context.Context, after, to int64) ([]supersededChange, error) {
	var rows []supersededChange
	err := n.store.db.SelectContext(ctx, &rows,
		`SELECT seq, serial, fingerprint_sha256 FROM superseded_changes WHERE seq > $1 AND seq <= $2 ORDER BY seq`, after, to)
	for i := range rows {
		if len(rows[i].Serial)%2 == 1 {
			rows[i].Serial = "0" + rows[i].Serial
		}
	}
	return rows, dbErr("notify: reading superseded certificates", err)
}

// PruneSupersededChanges deletes the rows of superseded_changes older than
// the last supersededKeep revisions (the maintenance loop). A replica that
// had not read them yet reads its cache again instead, as after any change
// it cannot place. It returns the number of rows deleted; it writes
// nothing (on SQLite: takes no write lock) while no row is that old.
func (r *Registry) PruneSupersededChanges(ctx context.Context) (int64, error) {
	var old bool
	if err := r.store.db.GetContext(ctx, &old, `SELECT EXISTS (SELECT 1 FROM superseded_changes
		WHERE seq <= (SELECT seq FROM revocation_state WHERE id = 1) - $1)`, supersededKeep); err != nil {
		return 0, dbErr("pruning superseded changes", err)
	}
	if !old {
		return 0, nil
	}
	var n int64
	err := r.store.inTx(ctx, "pruning superseded changes", func(tx *sqlx.Tx) error {
		res, err := tx.ExecContext(ctx, tx.Rebind(`DELETE FROM superseded_changes
			WHERE seq <= (SELECT seq FROM revocation_state WHERE id = 1) - ?`), supersededKeep)
		if err != nil {
			return dbErr("pruning superseded changes", err)
		}
		n, err = res.RowsAffected()
		return dbErr("pruning superseded changes", err)
	})
	return n, err
}
