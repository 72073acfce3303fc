package main

import (
	"context"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Stats summarizes one measured run: how many operations completed, how many
// failed, the wall-clock time and the latency distribution of the successful
// ones.
type Stats struct {
	N        int           // operations attempted
	Errors   int           // operations that returned an error
	Elapsed  time.Duration // wall clock from the first start to the last end
	P50      time.Duration
	P95      time.Duration
	P99      time.Duration
	Mean     time.Duration
	FirstErr error // the first error seen, for the report's note
}

// Rate is successful operations per second over Elapsed.
func (s Stats) Rate() float64 {
	if s.Elapsed <= 0 {
		return 0
	}
	return float64(s.N-s.Errors) / s.Elapsed.Seconds()
}

// Percentile returns the p-th percentile (0 < p ≤ 100) of sorted by the
// nearest-rank method: the smallest value such that at least p% of the values
// are ≤ it. sorted must be in ascending order; an empty slice yields 0.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	if p <= 0 {
		return sorted[0]
	}
	rank := int(math.Ceil(p / 100 * float64(len(sorted))))
	rank = min(max(rank, 1), len(sorted))
	return sorted[rank-1]
}

// summarize builds Stats from latencies (unsorted; it sorts them in place).
func summarize(lat []time.Duration, errs int, elapsed time.Duration, firstErr error) Stats {
	slices.Sort(lat)
	s := Stats{N: len(lat) + errs, Errors: errs, Elapsed: elapsed, FirstErr: firstErr}
	if len(lat) == 0 {
		return s
	}
	var sum time.Duration
	for _, d := range lat {
		sum += d
	}
	s.Mean = sum / time.Duration(len(lat))
	s.P50, s.P95, s.P99 = Percentile(lat, 50), Percentile(lat, 95), Percentile(lat, 99)
	return s
}

// runN runs op for i = 0..n-1 on conc goroutines (each i exactly once) and
// measures every call. The clock starts after every worker is ready.
func runN(ctx context.Context, n, conc int, op func(ctx context.Context, i int) error) Stats {
	conc = max(1, min(conc, n))
	var (
		next     atomic.Int64
		mu       sync.Mutex
		lat      = make([]time.Duration, 0, n)
		errs     int
		firstErr error
		wg       sync.WaitGroup
	)
	start := make(chan struct{})
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			local := make([]time.Duration, 0, n/conc+1)
			var lerrs int
			var lfirst error
			<-start
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					break
				}
				t := time.Now()
				err := op(ctx, i)
				d := time.Since(t)
				if err != nil {
					lerrs++
					if lfirst == nil {
						lfirst = err
					}
					continue
				}
				local = append(local, d)
			}
			mu.Lock()
			lat = append(lat, local...)
			errs += lerrs
			if firstErr == nil {
				firstErr = lfirst
			}
			mu.Unlock()
		}()
	}
	t0 := time.Now()
	close(start)
	wg.Wait()
	return summarize(lat, errs, time.Since(t0), firstErr)
}

// runFor runs op on conc goroutines until d has passed and measures every
// call (used for the in-process baselines, which have no budget to respect).
func runFor(ctx context.Context, d time.Duration, conc int, op func() error) Stats {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var (
		mu       sync.Mutex
		lat      []time.Duration
		errs     int
		firstErr error
		wg       sync.WaitGroup
	)
	t0 := time.Now()
	for range max(1, conc) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var local []time.Duration
			var lerrs int
			var lfirst error
			for ctx.Err() == nil {
				t := time.Now()
				err := op()
				if err != nil {
					lerrs++
					if lfirst == nil {
						lfirst = err
					}
					continue
				}
				local = append(local, time.Since(t))
			}
			mu.Lock()
			lat = append(lat, local...)
			errs += lerrs
			if firstErr == nil {
				firstErr = lfirst
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	return summarize(lat, errs, time.Since(t0), firstErr)
}

// runPaced starts op for i = 0..n-1 at a fixed rate (ops per second), each
// in its own goroutine, whatever the previous ones are doing (an open-loop
// load, as independent clients produce), and measures every call.
func runPaced(ctx context.Context, n int, rate float64, op func(ctx context.Context, i int) error) Stats {
	var (
		mu       sync.Mutex
		lat      = make([]time.Duration, 0, n)
		errs     int
		firstErr error
		wg       sync.WaitGroup
	)
	interval := time.Duration(float64(time.Second) / rate)
	t0 := time.Now()
	for i := range n {
		if d := time.Until(t0.Add(time.Duration(i) * interval)); d > 0 {
			select {
			case <-time.After(d):
			case <-ctx.Done():
			}
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			t := time.Now()
			err := op(ctx, i)
			d := time.Since(t)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs++
				if firstErr == nil {
					firstErr = err
				}
				return
			}
			lat = append(lat, d)
		}()
	}
	wg.Wait()
	return summarize(lat, errs, time.Since(t0), firstErr)
}
