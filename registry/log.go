package registry

// The transparency log in the database: tables log_entries, log_hashes
// (tlog stored hashes), log_head (one row: size and root, locked by every
// append) and log_checkpoints (signed notes), created by the migrations.
// The Merkle logic lives in registry/translog; this file only stores it.

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/sirupsen/logrus"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
	"golang.org/x/sync/singleflight"

	"github.com/agent-trust-registry/atr/registry/translog"
)

// maxLogEntriesPerRead bounds entries().
const maxLogEntriesPerRead = 1000

// checkpointInterval is the minimum time between two checkpoint signatures
// by one process (the HSM is not to be flooded by checkpoint requests).
const checkpointInterval = time.Second

// transparencyLog appends entries inside the caller's transaction and serves
// checkpoints, entries, proofs and tiles. It is safe for concurrent use, and
// several replicas may share one database: appends are sequenced by the
// log_head row lock, checkpoints deduplicated by their size.
type transparencyLog struct {
	store    *Store
	db       *sqlx.DB
	signer   note.Signer
	verifier note.Verifier
	origin   string
	log      *logrus.Entry
	now      func() time.Time // time.Now; tests may replace it

	// signerEd25519, when set, signs each checkpoint after signer (for
	// witnesses, which verify Ed25519 only; see witnesslog.go).
	signerEd25519 note.Signer

	group      singleflight.Group
	mu         sync.Mutex // guards lastSigned
	lastSigned time.Time

	// frontierRead is when a batch last began with an empty memo, reading
	// the tree's frontier from the database (seedMemo).
	frontierRead atomic.Pointer[time.Time]

	// known is the largest checkpoint this process has signed or read and
	// checked. A stored checkpoint never changes, so a receipt whose leaf it
	// covers is made against it without a database read (covering).
	known atomic.Pointer[knownCheckpoint]

	// txHashes is the memo of the transaction that appended last in this
	// process, and the size of the tree it holds (txMemo); root and
	// rollbacks are those of the head the transaction's last append wrote
	// (txHead), held is set by that append.
	txMu     sync.Mutex
	txHashes struct {
		tx        *sqlx.Tx
		hs        *memoHashes
		size      int64
		root      []byte
		rollbacks int64
		held      bool
		// start is the head the memo was begun at (seedMemo), which is
		// the tree the batch found when it took the head.
		start logHead
	}

	// sealed counts the checkpoints sealBatch stored with their batch
	// (tests).
	sealed atomic.Int64

	// recent holds the last checkpoints sealed with their batch, each with
	// the hashes its batch held (sealedCovering).
	recentMu sync.Mutex
	recent   [recentSealed]*knownCheckpoint
	recentAt int
}

// recentSealed is how many sealed checkpoints the log keeps for the
// receipts of their own batches' issuances.
const recentSealed = 8

// sealedCovering returns the smallest of the recently sealed checkpoints
// that covers minSize leaves, or nil. A fresh issuance's receipt is made
// against its own batch's checkpoint, whose hashes hold the leaf's
// inclusion proof (the batch wrote or seeded them), even when later
// batches committed before the issuance's request went on: the latest
// checkpoint (covering) holds another batch's hashes, and its proof of an
// older leaf reads the stored ones (TestBatchesReadNoStoredHashes).
func (l *transparencyLog) sealedCovering(minSize int64) *knownCheckpoint {
	l.recentMu.Lock()
	defer l.recentMu.Unlock()
	var best *knownCheckpoint
	for _, k := range l.recent {
		if k != nil && k.Size >= minSize && (best == nil || k.Size < best.Size) {
			best = k
		}
	}
	return best
}

// rememberSealed keeps k among the recently sealed checkpoints.
func (l *transparencyLog) rememberSealed(k *knownCheckpoint) {
	l.recentMu.Lock()
	defer l.recentMu.Unlock()
	l.recent[l.recentAt] = k
	l.recentAt = (l.recentAt + 1) % recentSealed
}

// forgetSealed drops the recently sealed checkpoints (the database no
// longer holds the tree this process knew).
func (l *transparencyLog) forgetSealed() {
	l.recentMu.Lock()
	defer l.recentMu.Unlock()
	clear(l.recent[:])
}

func newTransparencyLog(s *Store, signer note.Signer, verifier note.Verifier, origin string, log *logrus.Entry) *transparencyLog {
	return &transparencyLog{store: s, db: s.db, signer: signer, verifier: verifier, origin: origin, log: log, now: time.Now}
}

// sqlRunner is what both *sqlx.DB and *sqlx.Tx offer.
type sqlRunner interface {
	sqlx.QueryerContext
	sqlx.ExecerContext
	Rebind(string) string
}

// hashStore is translog.HashStore over log_hashes, within a transaction or
// directly on the database (reads only: stored hashes are immutable).
type hashStore struct{ q sqlRunner }

func (s hashStore) ReadHashes(ctx context.Context, indexes []int64) ([]tlog.Hash, error) {
	if len(indexes) == 0 {
		return nil, nil
	}
	query, args, err := sqlx.In(`SELECT idx, hash FROM log_hashes WHERE idx IN (?)`, indexes)
	if err != nil {
		return nil, fmt.Errorf("registry: log: building hash query: %v", err)
	}
	rows, err := s.q.QueryxContext(ctx, s.q.Rebind(query), args...)
	if err != nil {
		return nil, dbErr("log: reading hashes", err)
	}
	defer rows.Close()
	found := make(map[int64]tlog.Hash, len(indexes))
	for rows.Next() {
		var (
			idx int64
			raw []byte
		)
		if err := rows.Scan(&idx, &raw); err != nil {
			return nil, dbErr("log: reading hashes", err)
		}
		if len(raw) != tlog.HashSize {
			return nil, fmt.Errorf("registry: log: stored hash %d has %d bytes", idx, len(raw))
		}
		found[idx] = tlog.Hash(raw)
	}
	if err := rows.Err(); err != nil {
		return nil, dbErr("log: reading hashes", err)
	}
	out := make([]tlog.Hash, len(indexes))
	for i, idx := range indexes {
		h, ok := found[idx]
		if !ok {
			return nil, fmt.Errorf("registry: log: stored hash %d is missing", idx)
		}
		out[i] = h
	}
	return out, nil
}

func (s hashStore) WriteHashes(ctx context.Context, start int64, hashes []tlog.Hash) error {
	if len(hashes) == 0 {
		return nil
	}
	var b strings.Builder
	b.WriteString(`INSERT INTO log_hashes (idx, hash) VALUES `)
	args := make([]any, 0, 2*len(hashes))
	for i, h := range hashes {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("(?, ?)")
		args = append(args, start+int64(i), h[:])
	}
	if _, err := s.q.ExecContext(ctx, s.q.Rebind(b.String()), args...); err != nil {
		return dbErr("log: writing hashes", err)
	}
	return nil
}

// memoHashes is a hashStore that keeps what it read and wrote, for
// operations whose steps need overlapping hashes (an append checks the old
// root, extends the tree and computes the new root; a checkpoint computes
// the root and proves consistency): each hash is read once. Scope it to one
// call or to one transaction (txMemo, which forgets what a rolled-back
// savepoint wrote), never across transactions.
type memoHashes struct {
	hashStore
	m map[int64]tlog.Hash
}

func newMemoHashes(q sqlRunner) *memoHashes {
	return &memoHashes{hashStore: hashStore{q}, m: make(map[int64]tlog.Hash)}
}

func (s *memoHashes) ReadHashes(ctx context.Context, indexes []int64) ([]tlog.Hash, error) {
	var missing []int64
	for _, idx := range indexes {
		if _, ok := s.m[idx]; !ok {
			missing = append(missing, idx)
		}
	}
	if len(missing) > 0 {
		got, err := s.hashStore.ReadHashes(ctx, missing)
		if err != nil {
			return nil, err
		}
		for i, idx := range missing {
			s.m[idx] = got[i]
		}
	}
	out := make([]tlog.Hash, len(indexes))
	for i, idx := range indexes {
		out[i] = s.m[idx]
	}
	return out, nil
}

func (s *memoHashes) WriteHashes(ctx context.Context, start int64, hashes []tlog.Hash) error {
	if err := s.hashStore.WriteHashes(ctx, start, hashes); err != nil {
		return err
	}
	for i, h := range hashes {
		s.m[start+int64(i)] = h
	}
	return nil
}

// txMemo returns the hashes tx read and wrote so far, for an append or a
// seal in tx at head (read in tx): the group commit's batch runs many
// appends and a seal in one transaction, which would otherwise read the
// same frontier of the tree again for each (a statement per append, on
// PostgreSQL a round trip under the log_head lock). Only what tx itself
// holds is kept — the hashes it read (stored hashes never change) and
// wrote — and only while tx appends: an append of another transaction in
// this process drops it. The memo holds the tree of the size tx's last
// append left (txAppended). A head smaller than that is a savepoint rolled
// back since (a failed item of the batch): what it wrote is dropped. A
// head larger is another writer's append (another replica's, got in after
// such a rollback): the memo starts afresh. Either way the memo is used
// only when it gives head's root, and the caller's check of head against
// the stored hashes stands as before.
func (l *transparencyLog) txMemo(ctx context.Context, tx *sqlx.Tx, head logHead) *memoHashes {
	l.txMu.Lock()
	defer l.txMu.Unlock()
	m := &l.txHashes
	if m.tx == tx && head.Size <= m.size {
		if head.Size < m.size {
			m.hs.forgetFrom(tlog.StoredHashCount(head.Size))
			m.size = head.Size
		}
		root, err := translog.RootHash(ctx, m.hs, head.Size)
		if err == nil && string(root[:]) == string(head.Root) {
			return m.hs
		}
	}
	m.tx, m.hs, m.size, m.held, m.start = tx, l.seedMemo(ctx, tx, head), head.Size, false, head
	return m.hs
}

// seedMemo returns a new memo for tx at head (read in tx, which holds the
// log's head from then on), holding the tree's frontier — the stored
// hashes its root is made of, which its next append reads too — when head
// is the tree of the checkpoint this process knows with its hashes (the
// one its last batch sealed, sealBatch): the batch then reads no stored
// hash of the tree it starts from (TestIssuanceStatements; on PostgreSQL a
// round trip under the log_head lock). Stored hashes never change, and
// equal size and root are the same tree. The callers' check of head
// against the stored hashes (planAppend, signTree) runs on the memo: on a
// seeded one it compares the head with this process's copy of the
// frontier, so at least every frontierRecheck a batch starts empty and
// reads the database's rows. Any other head starts an empty memo.
func (l *transparencyLog) seedMemo(ctx context.Context, tx *sqlx.Tx, head logHead) *memoHashes {
	hs := newMemoHashes(tx)
	now := l.now()
	k := l.known.Load()
	// At most every frontierRecheck a batch reads the frontier all the
	// same, so that the check of the head against the stored hashes
	// (planAppend) still finds a damaged row at the tree's edge — the log
	// then refuses to extend or sign it (TestLogRefusesDamagedFrontierWhileSeeding).
	last := l.frontierRead.Load()
	if k == nil || k.hashes == nil || k.Size != head.Size || head.Size == 0 || string(k.hash[:]) != string(head.Root) ||
		last == nil || now.Sub(*last) >= frontierRecheck || now.Before(*last) {
		l.frontierRead.Store(&now)
		return hs
	}
	f := &frontierHashes{from: k.hashes, into: hs.m}
	if root, err := translog.RootHash(ctx, f, head.Size); err != nil || root != k.hash {
		clear(hs.m) // a hash missing from k's: read them all, as before
	}
	return hs
}

// frontierRecheck is how often, at most, a batch that could take the tree's
// frontier from memory reads it from the database instead (seedMemo).
const frontierRecheck = time.Second

// frontierHashes serves reads from a sealed checkpoint's hashes (from, never
// changed) and copies what it served into a memo's map (into); a hash not
// in from is an error.
type frontierHashes struct {
	from, into map[int64]tlog.Hash
}

func (f *frontierHashes) ReadHashes(_ context.Context, indexes []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(indexes))
	for i, idx := range indexes {
		h, ok := f.from[idx]
		if !ok {
			return nil, fmt.Errorf("registry: log: stored hash %d not in the sealed checkpoint's", idx)
		}
		out[i], f.into[idx] = h, h
	}
	return out, nil
}

func (f *frontierHashes) WriteHashes(context.Context, int64, []tlog.Hash) error {
	return errors.New("registry: log: a sealed checkpoint's hashes are read-only")
}

// txStart returns the head tx's memo was begun at (seedMemo), while tx is
// the transaction that appended last in this process.
func (l *transparencyLog) txStart(tx *sqlx.Tx) (logHead, bool) {
	l.txMu.Lock()
	defer l.txMu.Unlock()
	m := &l.txHashes
	return m.start, m.tx == tx
}

// txAppended records that tx's memo hs now holds the tree of size, whose
// root tx's append just wrote to log_head.
func (l *transparencyLog) txAppended(tx *sqlx.Tx, hs *memoHashes, size int64, root tlog.Hash) {
	l.txMu.Lock()
	defer l.txMu.Unlock()
	if m := &l.txHashes; m.tx == tx && m.hs == hs {
		m.size, m.root = size, root[:]
		m.rollbacks, m.held = l.store.rollbacks.Load(), true
	}
}

// txHead returns the head tx's last append wrote, when tx still holds it:
// on PostgreSQL the append locked the log_head row (SELECT … FOR UPDATE)
// and the lock lasts until tx ends, on SQLite tx holds the write lock, so
// no other writer can have moved the head since. A batch item's savepoint
// rolled back since (Store.rollbacks; writer.runItems) may have undone the
// append and, on PostgreSQL, released the lock: then, and for any other
// transaction, ok is false and the caller reads (and locks) the head. The
// group commit's batch so reads the head once, not once per append and
// again for its seal (TestLogBatchAppendsAroundRolledBackItems): on
// PostgreSQL each read is a round trip under the log head's lock. Should
// the head have moved all the same, the append's guarded UPDATE of
// log_head, which names the size and the root it extends, refuses it
// (appendWrite; TestAppendRefusedOnAStaleHead).
func (l *transparencyLog) txHead(tx *sqlx.Tx) (head logHead, ok bool) {
	l.txMu.Lock()
	defer l.txMu.Unlock()
	m := &l.txHashes
	if m.tx != tx || !m.held || m.rollbacks != l.store.rollbacks.Load() {
		return logHead{}, false
	}
	return logHead{Size: m.size, Root: m.root}, true
}

// forgetFrom drops the hashes at index n and beyond.
func (s *memoHashes) forgetFrom(n int64) {
	for idx := range s.m {
		if idx >= n {
			delete(s.m, idx)
		}
	}
}

// below returns a copy of the hashes at indexes below n.
func (s *memoHashes) below(n int64) map[int64]tlog.Hash {
	out := make(map[int64]tlog.Hash, len(s.m))
	for idx, h := range s.m {
		if idx < n {
			out[idx] = h
		}
	}
	return out
}

// entryStore is translog.EntryReader over log_entries.
type entryStore struct{ q sqlRunner }

func (s entryStore) ReadEntries(ctx context.Context, start, end int64) ([][]byte, error) {
	rows, err := s.q.QueryxContext(ctx, s.q.Rebind(`SELECT idx, data FROM log_entries WHERE idx >= ? AND idx < ? ORDER BY idx`), start, end)
	if err != nil {
		return nil, dbErr("log: reading entries", err)
	}
	defer rows.Close()
	out := make([][]byte, 0, end-start)
	for rows.Next() {
		var (
			idx  int64
			data []byte
		)
		if err := rows.Scan(&idx, &data); err != nil {
			return nil, dbErr("log: reading entries", err)
		}
		if want := start + int64(len(out)); idx != want {
			return nil, fmt.Errorf("registry: log: entry %d is missing", want)
		}
		out = append(out, data)
	}
	if err := rows.Err(); err != nil {
		return nil, dbErr("log: reading entries", err)
	}
	if int64(len(out)) != end-start {
		return nil, fmt.Errorf("registry: log: entry %d is missing", start+int64(len(out)))
	}
	return out, nil
}

// logErr maps translog's sentinels onto the registry's.
func logErr(op string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, translog.ErrNotFound):
		return fmt.Errorf("registry: %s: %w: %v", op, ErrNotFound, err)
	case errors.Is(err, translog.ErrInvalid):
		return fmt.Errorf("registry: %s: %w", op, invalid(err.Error(), nil))
	}
	return dbErr(op, err)
}

type logHead struct {
	Size int64  `db:"size"`
	Root []byte `db:"root"`
}

// appendTx appends e to the log inside tx and returns its index. It locks
// the log_head row first (SELECT … FOR UPDATE on PostgreSQL; an SQLite
// transaction already holds the write lock from BEGIN IMMEDIATE), so
// concurrent appenders, in this process or other replicas, are serialized
// and the log stays gap-free: the entry, its stored hashes and the new head
// commit or roll back together with the caller's state change.
//
// Before extending the tree it checks that the head's root matches the
// stored hashes, so a damaged log is never extended.
//
// It returns the leaf's bytes too, for a receipt made without reading them
// back.
func (l *transparencyLog) appendTx(ctx context.Context, tx *sqlx.Tx, e translog.Entry) (int64, []byte, error) {
	return l.appendWith(ctx, tx, e, nil)
}

// opening is a leaf's opening (log_openings), stored with its append.
type opening struct {
	agent string
	json  []byte
	mac   []byte // openingMAC of json; nil: stored without one
}

// appendWith is appendTx that also stores the opening beside returns for
// the leaf's index (beside nil: none). The entry, its stored hashes, the
// opening and the new head are written by one statement on PostgreSQL
// (a round trip under the log_head lock instead of four), by four on
// SQLite.
func (l *transparencyLog) appendWith(ctx context.Context, tx *sqlx.Tx, e translog.Entry, beside func(idx int64) (opening, error)) (int64, []byte, error) {
	p, err := l.planAppend(ctx, tx, e, beside)
	if err != nil {
		return 0, nil, err
	}
	if err := execPlan(ctx, tx, "log: appending", []guard{p.head}, p.stmts); err != nil {
		return 0, nil, err
	}
	p.written()
	return p.idx, p.data, nil
}

// lockHead locks the log_head row in tx on PostgreSQL (SQLite's
// transaction holds the database's write lock from BEGIN IMMEDIATE). A
// transaction that will append and also locks rows of its own — an agent's,
// for a revocation or a card — takes the head first: a batch of issuance
// commits holds the head while its items lock their agents' rows, so the
// other order could deadlock with it (TestLogHeadLockedBeforeAgentRow).
// tx then holds the head (txHead) for its first append.
func (l *transparencyLog) lockHead(ctx context.Context, tx *sqlx.Tx) error {
	if tx.DriverName() != "postgres" {
		return nil
	}
	var head logHead
	if err := tx.GetContext(ctx, &head, `SELECT size, root FROM log_head WHERE id = $1 FOR UPDATE`, singletonID); err != nil {
		return dbErr("log: locking head", err)
	}
	// The first append of tx takes this head (txHead) instead of reading
	// and locking it again.
	l.txMu.Lock()
	defer l.txMu.Unlock()
	hs := l.seedMemo(ctx, tx, head)
	l.txHashes.tx, l.txHashes.hs, l.txHashes.size, l.txHashes.root, l.txHashes.start = tx, hs, head.Size, head.Root, head
	l.txHashes.rollbacks, l.txHashes.held = l.store.rollbacks.Load(), true
	return nil
}

// appendPlan is an append worked out in memory (planAppend): the guarded
// UPDATE of log_head and the inserts that store it, for the caller to run
// — with statements of its own, in one round trip on PostgreSQL (execPlan)
// — and then written, once they ran. An append whose statements did not
// run, or failed, is dropped with nothing to undo in memory.
type appendPlan struct {
	idx   int64
	data  []byte
	head  guard
	stmts []stmt
	// written keeps the append's hashes in the transaction's memo and its
	// head as the one the transaction holds (txHead).
	written func()
}

// planAppend works out the append of e in tx: it reads and locks the head
// unless tx holds it (txHead), checks that the head's root matches the
// stored hashes (a damaged log is never extended), and computes the leaf's
// hashes and the new root.
func (l *transparencyLog) planAppend(ctx context.Context, tx *sqlx.Tx, e translog.Entry, beside func(idx int64) (opening, error)) (*appendPlan, error) {
	data, err := e.Marshal()
	if err != nil {
		return nil, logErr("log: encoding entry", err)
	}
	head, held := l.txHead(tx)
	if !held {
		q := `SELECT size, root FROM log_head WHERE id = $1`
		if tx.DriverName() == "postgres" {
			q += ` FOR UPDATE`
		}
		if err := tx.GetContext(ctx, &head, q, singletonID); err != nil {
			return nil, dbErr("log: locking head", err)
		}
	}
	memo := l.txMemo(ctx, tx, head)
	if head.Size > 0 {
		root, err := translog.RootHash(ctx, memo, head.Size)
		if err != nil {
			return nil, logErr("log: checking head", err)
		}
		if string(root[:]) != string(head.Root) {
			l.log.WithField("tree_size", head.Size).Error("transparency log head does not match stored hashes; refusing to append")
			return nil, fmt.Errorf("registry: log: head root does not match stored hashes at size %d", head.Size)
		}
	}
	idx := head.Size
	hs := &heldHashes{memoHashes: memo}
	if err := translog.Append(ctx, hs, idx, data); err != nil {
		return nil, logErr("log: appending", err)
	}
	root, err := translog.RootHash(ctx, hs, idx+1)
	if err != nil {
		return nil, logErr("log: computing root", err)
	}
	var o *opening
	if beside != nil {
		v, err := beside(idx)
		if err != nil {
			return nil, err
		}
		o = &v
	}
	w := appendWrite{idx: idx, data: data, at: dbTime(l.now()), hashStart: hs.start, hashes: hs.held, opening: o, root: root, prev: head.Root}
	return &appendPlan{idx: idx, data: data, head: w.headGuard(), stmts: w.inserts(), written: func() {
		hs.keep()
		l.txAppended(tx, memo, idx+1, root)
	}}, nil
}

// heldHashes is a memo whose one write (translog.Append's) is held until
// the append stores it (appendWrite) and kept in the memo only then.
type heldHashes struct {
	*memoHashes
	start int64
	held  []tlog.Hash
}

func (s *heldHashes) ReadHashes(ctx context.Context, indexes []int64) ([]tlog.Hash, error) {
	var from []int64
	for _, idx := range indexes {
		if idx < s.start || idx >= s.start+int64(len(s.held)) {
			from = append(from, idx)
		}
	}
	got, err := s.memoHashes.ReadHashes(ctx, from)
	if err != nil {
		return nil, err
	}
	out := make([]tlog.Hash, len(indexes))
	for i, idx := range indexes {
		if idx >= s.start && idx < s.start+int64(len(s.held)) {
			out[i] = s.held[idx-s.start]
		} else {
			out[i], got = got[0], got[1:]
		}
	}
	return out, nil
}

func (s *heldHashes) WriteHashes(_ context.Context, start int64, hashes []tlog.Hash) error {
	if s.held != nil {
		return errors.New("registry: log: one append writes its hashes once")
	}
	s.start, s.held = start, hashes
	return nil
}

// keep adds the held hashes, now stored, to the memo.
func (s *heldHashes) keep() {
	for i, h := range s.held {
		s.m[s.start+int64(i)] = h
	}
}

// appendWrite is what one append stores: the entry, its stored hashes, the
// leaf's opening (if any) and the new head, whose update is refused unless
// the head is still the one the append extended (size idx, root prev).
type appendWrite struct {
	idx       int64
	data      []byte
	at        time.Time
	hashStart int64
	hashes    []tlog.Hash
	opening   *opening
	root      tlog.Hash
	prev      []byte
}

// inserts returns the statements that store w's entry, hashes and
// opening.
func (w appendWrite) inserts() []stmt {
	out := []stmt{{`INSERT INTO log_entries (idx, data, created_at) VALUES (?, ?, ?)`, []any{w.idx, w.data, w.at}}}
	if len(w.hashes) > 0 {
		var b strings.Builder
		b.WriteString(`INSERT INTO log_hashes (idx, hash) VALUES `)
		args := make([]any, 0, 2*len(w.hashes))
		for i, h := range w.hashes {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString("(?, ?)")
			args = append(args, w.hashStart+int64(i), h[:])
		}
		out = append(out, stmt{b.String(), args})
	}
	if w.opening != nil {
		var mac any // NULL, not an empty value, without a MAC
		if w.opening.mac != nil {
			mac = w.opening.mac
		}
		out = append(out, stmt{`INSERT INTO log_openings (idx, agent_name, opened, opened_mac) VALUES (?, ?, ?, ?)`, []any{w.idx, w.opening.agent, string(w.opening.json), mac}})
	}
	return out
}

// headGuard is w's UPDATE of log_head: it names the size and the root it
// extends, so it changes no row — and the append is refused — when the
// head is anywhere else (TestAppendRefusedOnAStaleHead).
func (w appendWrite) headGuard() guard {
	return guard{stmt: stmt{headGuardQuery, []any{w.idx + 1, w.root[:], w.idx, w.prev}},
		miss: func() error { return fmt.Errorf("registry: log: head moved during append: %w", ErrConflict) }}
}

// head reads the current tree head.
func (l *transparencyLog) head(ctx context.Context) (logHead, error) { return headIn(ctx, l.db) }

// headIn is head through q (a transaction, or the database).
func headIn(ctx context.Context, q sqlx.QueryerContext) (logHead, error) {
	var h logHead
	if err := sqlx.GetContext(ctx, q, &h, `SELECT size, root FROM log_head WHERE id = $1`, singletonID); err != nil {
		return logHead{}, dbErr("log: reading head", err)
	}
	return h, nil
}

type storedCheckpoint struct {
	Size int64  `db:"size"`
	Note string `db:"note"`
}

// latestCheckpoint reads the newest stored checkpoint (nil: none), and
// keeps it as the known one when it is newer and its note checks.
func (l *transparencyLog) latestCheckpoint(ctx context.Context) (*storedCheckpoint, error) {
	return l.latestCheckpointIn(ctx, l.db)
}

// latestCheckpointIn is latestCheckpoint through q (a transaction, or the
// database).
func (l *transparencyLog) latestCheckpointIn(ctx context.Context, q sqlx.QueryerContext) (*storedCheckpoint, error) {
	var c storedCheckpoint
	err := sqlx.GetContext(ctx, q, &c, `SELECT size, note FROM log_checkpoints ORDER BY size DESC LIMIT 1`)
	if err != nil {
		if e := dbErr("", err); errors.Is(e, ErrNotFound) {
			return nil, nil
		}
		return nil, dbErr("log: reading checkpoint", err)
	}
	if k := l.known.Load(); k == nil || c.Size > k.Size {
		if k, err := l.check(&c); err == nil {
			l.remember(k)
		}
	}
	return &c, nil
}

// latestBefore returns the latest stored checkpoint for a batch's seal in
// tx, which holds the log's head (the caller checked txHead): the
// checkpoint this process knows, without a read, when tx began at its tree
// — no other process appended or sealed a larger tree while tx held the
// head, and one sealed at the same size states the same root; the seal then
// stores with storeTopCheckpoint — else latestCheckpointIn's.
func (l *transparencyLog) latestBefore(ctx context.Context, tx *sqlx.Tx) (c *storedCheckpoint, fromMemory bool, err error) {
	if k := l.known.Load(); k != nil && k.Size > 0 {
		if start, ok := l.txStart(tx); ok && start.Size == k.Size && string(start.Root) == string(k.hash[:]) {
			return &k.storedCheckpoint, true, nil
		}
	}
	c, err = l.latestCheckpointIn(ctx, tx)
	return c, false, err
}

// knownCheckpoint is a stored checkpoint whose note was checked: it opens
// with the log's key and states the size it is stored under.
type knownCheckpoint struct {
	storedCheckpoint
	hash tlog.Hash // the root the note states
	// hashes, when set, are stored hashes of the tree — those the batch
	// that sealed it read and wrote (sealBatch), never changed after its
	// commit — from which its fresh receipts are proved (proofHashes).
	hashes map[int64]tlog.Hash
}

// proofHashes returns where the hashes of k's tree are read: k's own,
// then next.
func (k *knownCheckpoint) proofHashes(next translog.HashStore) translog.HashStore {
	if k == nil || k.hashes == nil {
		return next
	}
	return hashLayer{m: k.hashes, next: next}
}

// check checks a stored checkpoint's note; a damaged row is an error and is
// never kept or served as a receipt's checkpoint.
func (l *transparencyLog) check(c *storedCheckpoint) (*knownCheckpoint, error) {
	if l.verifier == nil {
		return nil, fmt.Errorf("registry: log: no checkpoint verifier configured: %w", ErrUnavailable)
	}
	cp, err := translog.OpenCheckpoint([]byte(c.Note), l.verifier)
	if err != nil {
		return nil, fmt.Errorf("registry: log: stored checkpoint %d does not verify: %v", c.Size, err)
	}
	if cp.Size != c.Size {
		return nil, fmt.Errorf("registry: log: checkpoint stored as size %d states size %d", c.Size, cp.Size)
	}
	return &knownCheckpoint{storedCheckpoint: *c, hash: cp.Hash}, nil
}

// checkOnce is check, without checking again the known checkpoint (the
// latest stored one, when this process signed or read it last).
func (l *transparencyLog) checkOnce(c *storedCheckpoint) (*knownCheckpoint, error) {
	if k := l.known.Load(); k != nil && k.Size == c.Size && k.Note == c.Note {
		return k, nil
	}
	return l.check(c)
}

// remember keeps k as the known checkpoint when it is larger than the one
// kept.
func (l *transparencyLog) remember(k *knownCheckpoint) {
	for {
		old := l.known.Load()
		if old != nil && old.Size >= k.Size {
			return
		}
		if l.known.CompareAndSwap(old, k) {
			return
		}
	}
}

// forget drops k as the known checkpoint (a receipt found that it does not
// match the stored tree, say after the database was restored from a backup):
// the next caller reads or signs again.
func (l *transparencyLog) forget(k *knownCheckpoint) {
	l.forgetSealed()
	// k may be an older sealed checkpoint than the known one (a fresh
	// receipt's, sealedCovering): a known checkpoint at least as large is
	// of the same lost tree, and is dropped too.
	if cur := l.known.Load(); cur != nil && (cur == k || cur.Size >= k.Size) && l.known.CompareAndSwap(cur, nil) {
		l.log.WithField("tree_size", cur.Size).Warn("the checkpoint this process knew does not match the stored log; reading it again")
	}
}

// checkpoint returns the latest signed checkpoint (a C2SP signed note). If
// the log has grown since the latest stored checkpoint it signs a new one,
// at most once per checkpointInterval per process and once at a time
// (singleflight); within the interval the previous checkpoint is returned.
func (l *transparencyLog) checkpoint(ctx context.Context) ([]byte, error) {
	head, err := l.head(ctx)
	if err != nil {
		return nil, err
	}
	latest, err := l.latestCheckpoint(ctx)
	if err != nil {
		return nil, err
	}
	if latest != nil && latest.Size >= head.Size {
		return []byte(latest.Note), nil
	}
	if latest != nil {
		l.mu.Lock()
		recent := l.now().Sub(l.lastSigned) < checkpointInterval
		l.mu.Unlock()
		if recent {
			return []byte(latest.Note), nil
		}
	}
	k, err := l.signShared(ctx)
	if err != nil {
		return nil, err
	}
	return []byte(k.Note), nil
}

// covering returns a stored checkpoint whose tree holds at least minSize
// leaves, for a receipt: the known checkpoint when it is large enough (no
// database read), else one signed now, not paced by checkpointInterval.
// Callers that arrive while a signature is under way share it, so a batch of
// issuances committed together costs one signature. ErrNotFound: the log is
// smaller than minSize.
func (l *transparencyLog) covering(ctx context.Context, minSize int64) (*knownCheckpoint, error) {
	if l.signer == nil {
		// Nothing can be signed: a stored checkpoint covering the leaf is
		// the only answer (latestCheckpoint keeps it once checked).
		if _, err := l.latestCheckpoint(ctx); err != nil {
			return nil, err
		}
		if k := l.known.Load(); k != nil && k.Size >= minSize {
			return k, nil
		}
		return nil, fmt.Errorf("registry: log: no checkpoint covers %d leaves and no checkpoint signer is configured: %w", minSize, ErrUnavailable)
	}
	for try := 0; ; try++ {
		if k := l.known.Load(); k != nil && k.Size >= minSize {
			return k, nil
		}
		c, err := l.signShared(ctx)
		if err != nil {
			return nil, err
		}
		if c.Size >= minSize {
			return c, nil
		}
		// The shared signature may have read the head before the caller's
		// leaf was committed; the next one began after this one ended, so
		// after the commit: a second miss means the log really is smaller.
		if try == 1 {
			return nil, fmt.Errorf("registry: checkpoint: tree size %d is below %d: %w", c.Size, minSize, ErrNotFound)
		}
	}
}

// signShared is signCheckpoint, once at a time per process: callers that
// arrive while it runs get its result.
// Never call it (nor covering or checkpoint) inside a Store transaction: on
// SQLite the checkpoint is stored through the writer, which would wait for
// itself.
func (l *transparencyLog) signShared(ctx context.Context) (*knownCheckpoint, error) {
	v, err, _ := l.group.Do("checkpoint", func() (any, error) {
		// Detached from the caller: other callers share this result.
		return l.signCheckpoint(context.WithoutCancel(ctx))
	})
	if err != nil {
		return nil, err
	}
	return v.(*knownCheckpoint), nil
}

// signCheckpoint signs and stores a checkpoint of the current tree, unless
// the latest stored one already covers it, and returns the stored one.
// Before signing it recomputes the root from the stored hashes, checks it
// against log_head, and checks consistency with the previous checkpoint, so
// the log never signs a tree inconsistent with one it signed before. The
// checkpoint returned was checked (check) and is the known one.
func (l *transparencyLog) signCheckpoint(ctx context.Context) (*knownCheckpoint, error) {
	if l.signer == nil || l.verifier == nil {
		return nil, fmt.Errorf("registry: log: no checkpoint signer configured: %w", ErrUnavailable)
	}
	head, err := l.head(ctx)
	if err != nil {
		return nil, err
	}
	if k := l.known.Load(); k != nil && k.Size > head.Size {
		// The log is smaller than a checkpoint this process saw: the
		// database was restored from a backup. Checkpoints of the lost
		// branch are not served again from memory.
		l.log.WithFields(logrus.Fields{"tree_size": head.Size, "known_size": k.Size}).Error("the transparency log is smaller than a checkpoint this process saw; forgetting it")
		l.known.CompareAndSwap(k, nil)
		l.forgetSealed()
	}
	latest, err := l.latestCheckpoint(ctx)
	if err != nil {
		return nil, err
	}
	if latest != nil && latest.Size >= head.Size {
		// Another caller or replica was faster.
		k, err := l.checkOnce(latest)
		if err != nil {
			return nil, err
		}
		l.remember(k)
		return k, nil
	}
	msg, root, err := l.signTree(ctx, newMemoHashes(l.db), head, latest)
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	l.lastSigned = l.now()
	l.mu.Unlock()
	// If another replica stored a checkpoint of this size first, the insert
	// returns nothing and that one is served, so that all replicas agree on
	// the note for a size.
	c := &storedCheckpoint{Size: head.Size}
	if err := l.store.inStatement(ctx, "log: storing checkpoint", func(q sqlx.ExtContext) error {
		var err error
		c.Note, err = storeCheckpoint(ctx, q, head.Size, msg, l.now())
		return err
	}); err != nil {
		return nil, err
	}
	k := &knownCheckpoint{storedCheckpoint: *c, hash: root}
	if c.Note != string(msg) {
		// Another replica stored this size first: its note is checked.
		if k, err = l.check(c); err != nil {
			return nil, err
		}
	}
	l.remember(k)
	l.log.WithField("tree_size", head.Size).Info("signed transparency log checkpoint")
	return k, nil
}

// signTree checks the tree of head against the stored hashes (read through
// hs) and against latest, the newest stored checkpoint (nil: none), and
// signs a checkpoint of it: the log never signs a tree whose root the stored
// hashes do not give, nor one inconsistent with a checkpoint it signed
// before. It returns the signed note and the root.
func (l *transparencyLog) signTree(ctx context.Context, hs translog.HashStore, head logHead, latest *storedCheckpoint) ([]byte, tlog.Hash, error) {
	sign, root, err := l.startSignTree(ctx, hs, head, latest)
	if err != nil {
		return nil, tlog.Hash{}, err
	}
	msg, err := sign()
	return msg, root, err
}

// startSignTree is signTree begun: it makes the same checks, starts the
// checkpoint's signatures (translog.StartSignCheckpoint) and returns the
// root and a function that waits for them and returns the signed note.
func (l *transparencyLog) startSignTree(ctx context.Context, hs translog.HashStore, head logHead, latest *storedCheckpoint) (func() ([]byte, error), tlog.Hash, error) {
	root, err := translog.RootHash(ctx, hs, head.Size)
	if err != nil {
		return nil, tlog.Hash{}, logErr("log: computing root", err)
	}
	if head.Size > 0 && string(root[:]) != string(head.Root) {
		l.log.WithField("tree_size", head.Size).Error("transparency log head does not match stored hashes; refusing to sign")
		return nil, tlog.Hash{}, fmt.Errorf("registry: log: head root does not match stored hashes at size %d", head.Size)
	}
	if latest != nil && latest.Size > 0 {
		prev, err := l.checkOnce(latest)
		if err != nil {
			return nil, tlog.Hash{}, err
		}
		proof, err := translog.ConsistencyProof(ctx, hs, prev.Size, head.Size)
		if err != nil {
			return nil, tlog.Hash{}, logErr("log: proving consistency", err)
		}
		if err := translog.CheckConsistency(proof, head.Size, root, prev.Size, prev.hash); err != nil {
			l.log.WithField("tree_size", head.Size).Error("transparency log is inconsistent with its last checkpoint; refusing to sign")
			return nil, tlog.Hash{}, fmt.Errorf("registry: log: tree %d is inconsistent with checkpoint %d: %v", head.Size, prev.Size, err)
		}
	}
	var more []note.Signer
	if l.signerEd25519 != nil {
		more = append(more, l.signerEd25519)
	}
	sign := translog.StartSignCheckpoint(translog.Checkpoint{Origin: l.origin, Size: head.Size, Hash: root}, l.signer, more...)
	return func() ([]byte, error) {
		msg, err := sign()
		if err != nil {
			return nil, fmt.Errorf("registry: log: signing checkpoint: %w: %v", ErrUnavailable, err)
		}
		return msg, nil
	}, root, nil
}

// storeCheckpoint stores msg as the checkpoint of size and returns the note
// stored for that size: msg, or the note another replica stored first.
func storeCheckpoint(ctx context.Context, q sqlx.ExtContext, size int64, msg []byte, now time.Time) (string, error) {
	var stored string
	err := sqlx.GetContext(ctx, q, &stored, q.Rebind(`INSERT INTO log_checkpoints (size, note, created_at) VALUES (?, ?, ?)
		ON CONFLICT (size) DO NOTHING RETURNING note`), size, string(msg), dbTime(now))
	if errors.Is(err, sql.ErrNoRows) {
		err = sqlx.GetContext(ctx, q, &stored, q.Rebind(`SELECT note FROM log_checkpoints WHERE size = ?`), size)
	}
	return stored, dbErr("log: storing checkpoint", err)
}

// storeTopCheckpoint is storeCheckpoint for a seal that did not read the
// latest stored checkpoint (latestBefore): it stores msg only while no
// checkpoint of a larger tree is stored, in the same statement; when one is,
// nothing is stored and the error says so.
//
// The test is on the largest stored size, which both databases read from
// the primary key's last entry whatever the parameters. "NOT EXISTS (…
// WHERE size > ?)" read the whole table on PostgreSQL once its generic
// plan took over: a third of the rows estimated to match, a sequential
// scan found none, once per batch under the log head's lock
// (TestBatchFindsLargerCheckpointsByIndex).
func storeTopCheckpoint(ctx context.Context, q sqlx.ExtContext, size int64, msg []byte, now time.Time) (string, error) {
	var stored string
	err := sqlx.GetContext(ctx, q, &stored, q.Rebind(`INSERT INTO log_checkpoints (size, note, created_at)
		SELECT ?, ?, ? WHERE COALESCE((SELECT MAX(size) FROM log_checkpoints), -1) <= ?
		ON CONFLICT (size) DO NOTHING RETURNING note`), size, string(msg), dbTime(now), size)
	if errors.Is(err, sql.ErrNoRows) {
		err = sqlx.GetContext(ctx, q, &stored, q.Rebind(`SELECT note FROM log_checkpoints WHERE size = ?`), size)
		if errors.Is(err, sql.ErrNoRows) {
			return "", fmt.Errorf("registry: log: a checkpoint of a tree larger than %d is stored: not sealing", size)
		}
	}
	return stored, dbErr("log: storing checkpoint", err)
}

// sealBatch signs the checkpoint of the tree a batch of issuance commits
// makes and stores it inside the batch's transaction tx, before the commit
// (writer.go): one commit — on SQLite one fsync — holds the batch's leaves
// and the checkpoint their receipts are made against, instead of a second
// transaction after it. The same checks as signCheckpoint's come first
// (signTree).
//
// It works in two steps. sealBatch itself, called once the batch's items
// have run, makes the checks on the tree they made and starts the
// signatures; the batchSeal it returns waits for them and stores the note
// in tx. On PostgreSQL a batch's statements are collected and sent
// together (early: not sent yet), so the token signs while PostgreSQL runs
// them (TestSealSignsWhileTheStatementsRun); the tree is then the one tx
// holds in memory (txHead), and without it nothing is sealed early — a
// read of the head would find the tree before the batch. A batch whose
// statement then fails drops the signed note: a note of a tree that never
// committed is made more often than before (each such failure, not only a
// failed COMMIT), and as before it never leaves the process. The
// batchSeal returns what to run once tx committed — only then is the
// checkpoint known (covering finds it without a read); a batch that rolls
// back drops the note unseen, so no signed note of an uncommitted tree ever
// leaves the process. Either step returns nil when it sealed nothing: no
// signer, no growth, a failed check or signature — the receipts then take
// the usual path (covering signs after the commit). A failed statement is
// not returned: on PostgreSQL it aborts tx and the commit reports it.
func (l *transparencyLog) sealBatch(ctx context.Context, tx *sqlx.Tx, early bool) batchSeal {
	if l.signer == nil || l.verifier == nil {
		return nil
	}
	head, held := l.txHead(tx)
	if !held && early {
		return nil
	}
	if !held {
		var err error
		if head, err = headIn(ctx, tx); err != nil {
			return nil
		}
	}
	if k := l.known.Load(); k != nil && k.Size >= head.Size {
		return nil // nothing new, or a restored database (signCheckpoint forgets k)
	}
	// With the head held, the known checkpoint may stand for the latest
	// stored one (latestBefore); the store then refuses to add a checkpoint
	// below a larger one (a database whose head was rewound to the known
	// tree while larger checkpoints stayed), as the read would have.
	var (
		last       *storedCheckpoint
		fromMemory bool
		err        error
	)
	if held {
		last, fromMemory, err = l.latestBefore(ctx, tx)
	} else {
		last, err = l.latestCheckpointIn(ctx, tx)
	}
	if err != nil || (last != nil && last.Size >= head.Size) {
		return nil
	}
	notSealed := func(err error) {
		l.log.WithError(err).WithField("tree_size", head.Size).Warn("checkpoint not sealed with its batch; receipts sign one after the commit")
	}
	hs := l.txMemo(ctx, tx, head)
	sign, root, err := l.startSignTree(ctx, hs, head, last)
	if err != nil {
		notSealed(err)
		return nil
	}
	return func(store bool) func() {
		msg, err := sign()
		if !store {
			return nil
		}
		if err != nil {
			notSealed(err)
			return nil
		}
		now := l.now()
		put := storeCheckpoint
		if fromMemory {
			put = storeTopCheckpoint
		}
		stored, err := put(ctx, tx, head.Size, msg, now)
		if err != nil || stored != string(msg) {
			return nil
		}
		// The receipts' copy of the hashes: the memo stays the transaction's.
		k := &knownCheckpoint{storedCheckpoint: storedCheckpoint{Size: head.Size, Note: stored}, hash: root, hashes: hs.below(tlog.StoredHashCount(head.Size))}
		return func() {
			l.mu.Lock()
			l.lastSigned = now
			l.mu.Unlock()
			l.remember(k)
			l.rememberSealed(k)
			l.sealed.Add(1)
			l.log.WithField("tree_size", head.Size).Debug("signed transparency log checkpoint with its batch")
		}
	}
}

// entries returns the raw entries [start, end), end clamped to the tree size;
// at most maxLogEntriesPerRead. start beyond the tree is ErrNotFound.
func (l *transparencyLog) entries(ctx context.Context, start, end int64) ([][]byte, error) {
	if start < 0 || end <= start {
		return nil, invalid("log entries: want 0 ≤ start < end", nil)
	}
	if end-start > maxLogEntriesPerRead {
		return nil, invalid(fmt.Sprintf("log entries: at most %d per request", maxLogEntriesPerRead), nil)
	}
	head, err := l.head(ctx)
	if err != nil {
		return nil, err
	}
	if end > head.Size {
		// A range past the tree is refused, never cut short: a caller must not
		// mistake a short answer for the end of the log (issue 11 item 7).
		return nil, fmt.Errorf("registry: log entries: [%d, %d) runs past tree size %d: %w", start, end, head.Size, ErrNotFound)
	}
	return entryStore{l.db}.ReadEntries(ctx, start, end)
}

// inclusionProof returns the proof that entry index is in the tree of the
// given size (0 ≤ index < size ≤ current size).
func (l *transparencyLog) inclusionProof(ctx context.Context, index, size int64) ([]tlog.Hash, error) {
	if index < 0 || index >= size {
		return nil, invalid("log inclusion proof: want 0 ≤ index < tree_size", nil)
	}
	head, err := l.head(ctx)
	if err != nil {
		return nil, err
	}
	if size > head.Size {
		return nil, fmt.Errorf("registry: log inclusion proof: tree size %d beyond %d: %w", size, head.Size, ErrNotFound)
	}
	p, err := translog.InclusionProof(ctx, hashStore{l.db}, index, size)
	if err != nil {
		return nil, logErr("log: inclusion proof", err)
	}
	return p, nil
}

// consistencyProof returns the proof that the tree of newSize extends the
// tree of oldSize (1 ≤ oldSize ≤ newSize ≤ current size).
func (l *transparencyLog) consistencyProof(ctx context.Context, oldSize, newSize int64) ([]tlog.Hash, error) {
	if oldSize < 1 || oldSize > newSize {
		return nil, invalid("log consistency proof: want 1 ≤ old ≤ new", nil)
	}
	head, err := l.head(ctx)
	if err != nil {
		return nil, err
	}
	if newSize > head.Size {
		return nil, fmt.Errorf("registry: log consistency proof: tree size %d beyond %d: %w", newSize, head.Size, ErrNotFound)
	}
	p, err := translog.ConsistencyProof(ctx, hashStore{l.db}, oldSize, newSize)
	if err != nil {
		return nil, logErr("log: consistency proof", err)
	}
	return p, nil
}

// tile serves a C2SP tlog-tiles resource ("tile/<L>/<N>[.p/<W>]" or
// "tile/entries/<N>[.p/<W>]", see translog.ReadTile) from the current tree.
// A malformed path is ErrInvalid, a tile beyond the tree ErrNotFound.
func (l *transparencyLog) tile(ctx context.Context, path string) ([]byte, error) {
	head, err := l.head(ctx)
	if err != nil {
		return nil, err
	}
	b, err := translog.ReadTile(ctx, hashStore{l.db}, entryStore{l.db}, head.Size, path)
	if err != nil {
		return nil, logErr("log: tile", err)
	}
	return b, nil
}
