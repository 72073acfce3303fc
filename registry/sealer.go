package registry

// The seal of a batch of issuance commits runs after its commit, off the
// writer (issue 14, fourteenth pass). The writer commits a batch's leaves
// and hands the sealer the tree they made (the head and the hashes the
// batch read and wrote); the sealer checks that tree against the stored
// hashes and the previous checkpoint, signs its checkpoint on the token and
// makes it the known one, which wakes the batch's requests waiting for
// their receipts (covering); a third goroutine then stores the note — on
// SQLite through the writer, in whatever batch comes next, on PostgreSQL by
// a statement of its own on the pool. A note handed out beyond a receipt
// (to witnesses, at GET /log/checkpoint) is stored first (published). Meanwhile the writer runs the
// next batch: it no longer holds its transaction — on SQLite the one write
// lock, on PostgreSQL the log head's row lock — while two signatures are
// made and their goroutines wait for a core.
//
// The guarantees:
//   - A checkpoint is signed only over a committed tree (stronger than
//     before, when a tree was signed inside the transaction that made it and
//     the note dropped if the commit failed), after its root is recomputed
//     from the stored hashes and it is proved consistent with the
//     checkpoint this process knows (else the newest stored one; signTree).
//   - A receipt is handed out only once its checkpoint is signed and known;
//     an issuance is acknowledged, as before, only after its leaf committed.
//   - The note of a receipt may reach log_checkpoints a batch later than
//     the receipt leaves; a crash in between loses only that note, never a
//     leaf: the tree it signs is durable, and the next checkpoint, of a
//     larger tree, is checked consistent with it and stored.
//
// Trees that commit while the sealer signs are coalesced: it signs the
// newest, which covers every leaf before it.

import (
	"context"
	"sync"
	"time"

	"golang.org/x/mod/sumdb/tlog"
)

// sealTimeout bounds one seal and one store of a checkpoint.
const sealTimeout = 30 * time.Second

// newest runs fn on the newest value put to it, one value at a time, on a
// goroutine that runs while values come and ends when none is left: values
// put while fn runs are coalesced into the newest of them.
type newest[T any] struct {
	fn func(T)

	mu      sync.Mutex
	cond    *sync.Cond // on mu: broadcast when done moves
	next    T
	has     bool
	running bool
	// puts counts the values put; done, those run or coalesced into one
	// that ran.
	puts, done uint64
}

func (q *newest[T]) put(v T) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.puts++
	q.next, q.has = v, true
	if !q.running {
		q.running = true
		go q.run()
	}
}

func (q *newest[T]) run() {
	q.mu.Lock()
	defer q.mu.Unlock()
	for q.has {
		v, n := q.next, q.puts
		var zero T
		q.next, q.has = zero, false
		q.mu.Unlock()
		q.fn(v)
		q.mu.Lock()
		q.done = n
		if q.cond != nil {
			q.cond.Broadcast()
		}
	}
	q.running = false
}

// queued tells whether a value waits to be run.
func (q *newest[T]) queued() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.has
}

// wait returns when every value put before it ran or was coalesced into
// one that ran (not when the goroutine ends: values put after it do not
// hold it).
func (q *newest[T]) wait() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.cond == nil {
		q.cond = sync.NewCond(&q.mu)
	}
	for target := q.puts; q.done < target; {
		q.cond.Wait()
	}
}

// sealJob is a committed batch's tree waiting for its checkpoint.
type sealJob struct {
	head logHead
	// hashes are stored hashes of the tree, those the batch read and wrote
	// (never changed after its commit); the rest are read from the database.
	hashes map[int64]tlog.Hash
}

// sealer signs the checkpoints of committed batches (see the top of the
// file); one per transparency log.
type sealer struct {
	l      *transparencyLog
	jobs   newest[sealJob]
	stores newest[*knownCheckpoint]

	mu sync.Mutex
	// pending is the size of the newest tree put and not yet sealed (0:
	// none); ended is closed, and replaced, each time a seal ends.
	pending int64
	ended   chan struct{}
}

func newSealer(l *transparencyLog) *sealer {
	s := &sealer{l: l, ended: make(chan struct{})}
	s.jobs.fn = s.seal
	s.stores.fn = s.store
	return s
}

// put hands the sealer a committed tree (the writer, after the commit).
func (s *sealer) put(j sealJob) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pending = max(s.pending, j.head.Size)
	s.jobs.put(j)
}

// waitFor returns what closes when the seal under way ends, when a tree of
// at least minSize leaves is waiting for its seal; ok is false when none is.
func (s *sealer) waitFor(minSize int64) (ended <-chan struct{}, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pending == 0 || s.pending < minSize {
		return nil, false
	}
	return s.ended, true
}

// seal signs j's checkpoint, makes it known and has it stored; whatever
// the outcome, it wakes the waiters (covering), which sign one themselves
// when this seal failed and no other is pending.
func (s *sealer) seal(j sealJob) {
	ctx, cancel := context.WithTimeout(context.Background(), sealTimeout)
	defer cancel()
	k := s.l.sealCommitted(ctx, j)
	s.mu.Lock()
	if !s.jobs.queued() {
		s.pending = 0 // nothing else to seal (put holds mu while it queues)
	}
	close(s.ended)
	s.ended = make(chan struct{})
	s.mu.Unlock()
	if k != nil {
		s.stores.put(k)
	}
}

// store stores k's note, unless it was stored meanwhile (published).
// Another replica may have stored one of the same size first (its note of
// the same tree is kept: storeCheckpoint).
func (s *sealer) store(k *knownCheckpoint) {
	ctx, cancel := context.WithTimeout(context.Background(), sealTimeout)
	defer cancel()
	if _, err := s.l.published(ctx, k); err != nil {
		s.l.log.WithError(err).WithField("tree_size", k.Size).Warn("checkpoint signed after its batch was not stored; a later one will be")
	}
}

// wait returns when the trees put before it are sealed and their notes
// stored (or their store failed).
func (s *sealer) wait() {
	s.jobs.wait()
	s.stores.wait()
}
