package registry

import (
	"testing"
	"time"
)

// TestNewestWaitsOnlyForWhatWasPut: newest.wait returns once the values put
// before it ran, while values put after it still run (under a steady load
// of issuances the sealer's goroutine never ends, and Store.Close must not
// wait for it to); and values put while one runs are coalesced into the
// newest.
func TestNewestWaitsOnlyForWhatWasPut(t *testing.T) {
	var q newest[int]
	first, release := make(chan struct{}), make(chan struct{})
	ran := make(chan int, 10)
	q.fn = func(v int) {
		ran <- v
		if v == 1 {
			<-first
			q.put(2) // put while 1 runs: the goroutine goes on with it
			return
		}
		<-release
	}
	q.put(1)
	waited := make(chan struct{})
	go func() {
		q.wait()
		close(waited)
	}()
	// Once wait holds its target (it made the condition it waits on), 1
	// ends and 2 is put.
	for {
		q.mu.Lock()
		waiting := q.cond != nil
		q.mu.Unlock()
		if waiting {
			break
		}
		time.Sleep(time.Millisecond)
	}
	close(first)
	select {
	case <-waited:
	case <-time.After(time.Minute):
		close(release)
		t.Fatal("wait is still waiting for a value put after it")
	}
	if v := <-ran; v != 1 {
		t.Fatalf("ran %d first, want 1", v)
	}
	if v := <-ran; v != 2 { // 2 runs, held on release
		t.Fatalf("ran %d, want 2", v)
	}
	q.put(3)
	q.put(4) // coalesced with 3: only 4 runs
	close(release)
	q.wait()
	if v := <-ran; v != 4 {
		t.Fatalf("ran %d after 2, want 4 (3 coalesced into it)", v)
	}
	select {
	case v := <-ran:
		t.Fatalf("ran %d as well", v)
	default:
	}
}
