package registry

// The seal of a batch of issuance commits runs after its commit, off the
// writer (issue 14, fourteenth pass). The writer commits a batch's leaves
// and hands the sealer the tree they made (the head and the hashes the
// batch read and wrote); the sealer checks that tree against the stored
// hashes and the previous checkpoint, signs its checkpoint on the token and
// makes it the known one, which wakes the batch's requests waiting for
// their receipts (covering); a third goroutine then stores the note through
// the writer, in whatever batch comes next. Meanwhile the writer runs the
// next batch: it no longer holds its transaction — on SQLite the one write
// lock, on PostgreSQL the log head's row lock — while two signatures are
// made and their goroutines wait for a core.
//
// The guarantees:
//   - A checkpoint is signed only over a committed tree (stronger than
//     before, when a tree was signed inside the transaction that made it and
//     the note dropped if the commit failed).
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
	next    T
	has     bool
	running chan struct{} // closed when the running goroutine ends; nil: none runs
}

func (q *newest[T]) put(v T) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.next, q.has = v, true
	if q.running == nil {
		q.running = make(chan struct{})
		go q.run(q.running)
	}
}

func (q *newest[T]) run(done chan struct{}) {
	defer close(done)
	for {
		q.mu.Lock()
		if !q.has {
			q.running = nil
			q.mu.Unlock()
			return
		}
		v := q.next
		var zero T
		q.next, q.has = zero, false
		q.mu.Unlock()
		q.fn(v)
	}
}

// wait returns when nothing put before it is left to run.
func (q *newest[T]) wait() {
	q.mu.Lock()
	done := q.running
	q.mu.Unlock()
	if done != nil {
		<-done
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
	s.pending = max(s.pending, j.head.Size)
	s.mu.Unlock()
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
	if s.pending == j.head.Size {
		s.pending = 0
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
