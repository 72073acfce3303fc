package registry

import (
	"context"
	"fmt"
	"sync"
)

// batchQueue is the queue in front of a goroutine that runs what queued
// in batches: the group commit's writer (writer.go) and the pending rows'
// batcher (pendingbatch.go). A batch is whatever queued while the previous
// one ran, up to a bound — never an artificial delay.
type batchQueue[T any] struct {
	ch chan T

	// state: enqueue holds it shared while it enqueues, stop exclusively
	// while it sets stopped, so nothing is enqueued after run drained the
	// queue.
	state   sync.RWMutex
	stopped bool
	quit    chan struct{}
	exited  chan struct{}
}

// errStoreClosed is the error of an item that could not be queued, or
// was queued but never ran, because its Store closed.
func errStoreClosed(op string) error {
	return fmt.Errorf("registry: %s: store closed: %w", op, ErrUnavailable)
}

func newBatchQueue[T any](size int) *batchQueue[T] {
	return &batchQueue[T]{ch: make(chan T, size), quit: make(chan struct{}), exited: make(chan struct{})}
}

// enqueue queues it for a batch. It fails, with op in its error, when the
// queue is stopped or ctx ends before there is room; once queued, the item
// runs or is failed by run's closed.
func (q *batchQueue[T]) enqueue(ctx context.Context, op string, it T) error {
	q.state.RLock()
	defer q.state.RUnlock()
	if q.stopped {
		return errStoreClosed(op)
	}
	select {
	case q.ch <- it:
		return nil
	case <-ctx.Done():
		return dbErr(op, ctx.Err())
	}
}

// stop ends run: the items still queued when run sees it are failed (run
// may see it before or after a batch it could still take). It waits until
// run has returned.
func (q *batchQueue[T]) stop() {
	q.state.Lock()
	if q.stopped {
		q.state.Unlock()
		return
	}
	q.stopped = true
	close(q.quit)
	q.state.Unlock()
	<-q.exited
}

// run hands batches of at most max items to batch until stop; then it
// hands every item still queued to closed (nobody will run it), runs exit
// (when set) and returns; stop returns after exit ran.
func (q *batchQueue[T]) run(max int, batch func([]T), closed func(T), exit func()) {
	defer close(q.exited)
	if exit != nil {
		defer exit()
	}
	for {
		var first T
		select {
		case first = <-q.ch:
		case <-q.quit:
			// Nothing is enqueued after quit (see state).
			for {
				select {
				case it := <-q.ch:
					closed(it)
				default:
					return
				}
			}
		}
		items := []T{first}
	drain:
		for len(items) < max {
			select {
			case it := <-q.ch:
				items = append(items, it)
			default:
				break drain
			}
		}
		batch(items)
	}
}
