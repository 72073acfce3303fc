package ratelimit

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func TestLocalGCRA(t *testing.T) {
	ctx := context.Background()
	c := &clock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	l := NewLocal(0, RefuseNew, c.now)
	lim := PerHour(10)
	for i := 0; i < 10; i++ {
		res, err := l.Allow(ctx, "k", lim)
		if err != nil || !res.Allowed {
			t.Fatalf("event %d: got %+v, %v; want allowed", i+1, res, err)
		}
		if res.Remaining != 9-i {
			t.Errorf("event %d: remaining %d, want %d", i+1, res.Remaining, 9-i)
		}
	}
	res, _ := l.Allow(ctx, "k", lim)
	if res.Allowed || res.RetryAfter <= 0 || res.RetryAfter > 6*time.Minute {
		t.Fatalf("11th: got %+v, want refused with RetryAfter ≤ 6m", res)
	}
	if chk, _ := l.Check(ctx, "k", lim); chk.Allowed {
		t.Error("Check allows a full bucket")
	}
	if other, _ := l.Allow(ctx, "other", lim); !other.Allowed {
		t.Error("another key is refused")
	}
	c.add(6 * time.Minute)
	if chk, _ := l.Check(ctx, "k", lim); !chk.Allowed {
		t.Error("Check refuses after one interval")
	}
	if res, _ := l.Allow(ctx, "k", lim); !res.Allowed {
		t.Error("refused after one interval")
	}
	if res, _ := l.Allow(ctx, "k", lim); res.Allowed {
		t.Error("two events allowed after one interval")
	}
}

func TestLocalCheckDoesNotSpend(t *testing.T) {
	ctx := context.Background()
	l := NewLocal(0, RefuseNew, nil)
	lim := PerMinute(2)
	for i := 0; i < 100; i++ {
		if res, _ := l.Check(ctx, "k", lim); !res.Allowed {
			t.Fatal("Check refused an unused key")
		}
	}
	if l.Len() != 0 {
		t.Errorf("Check stored %d keys, want 0", l.Len())
	}
}

func TestLocalInvalidLimit(t *testing.T) {
	l := NewLocal(0, RefuseNew, nil)
	for _, lim := range []Limit{{}, {Rate: 1, Period: time.Second}, {Rate: -1, Period: time.Second, Burst: 1}} {
		if _, err := l.Allow(context.Background(), "k", lim); err == nil {
			t.Errorf("limit %+v accepted: an invalid limit must not mean unlimited", lim)
		}
	}
}

func TestLocalBounded(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	l := NewLocal(100, RefuseNew, func() time.Time { return now })
	// A victim's lockout-like state: its bucket is empty.
	for range 5 {
		l.Allow(ctx, "victim", PerHour(5))
	}
	// A flood of fresh keys (e.g. random IPv6 sources) cannot grow the map
	// past its bound, and cannot push the victim's state out of it.
	refused := 0
	for i := 0; i < 10_000; i++ {
		res, err := l.Allow(ctx, hex.EncodeToString([]byte{byte(i >> 8), byte(i)}), PerHour(5))
		if err != nil {
			t.Fatal(err)
		}
		if !res.Allowed {
			refused++
		}
	}
	if n := l.Len(); n > 100 {
		t.Errorf("tracking %d keys, want ≤ 100", n)
	}
	if refused == 0 {
		t.Error("a full map of live buckets admitted every new key")
	}
	if res, _ := l.Allow(ctx, "victim", PerHour(5)); res.Allowed {
		t.Error("the flood wiped the victim's exhausted bucket")
	}
	// Once buckets refill, expired entries make room again.
	now = now.Add(2 * time.Hour)
	if res, _ := l.Allow(ctx, "newcomer", PerHour(5)); !res.Allowed {
		t.Error("no room after every bucket expired")
	}
}

func TestLocalConcurrent(t *testing.T) {
	ctx := context.Background()
	l := NewLocal(0, RefuseNew, nil)
	var wg sync.WaitGroup
	var mu sync.Mutex
	allowed := 0
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if res, _ := l.Allow(ctx, "k", PerHour(10)); res.Allowed {
				mu.Lock()
				allowed++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if allowed != 10 {
		t.Errorf("allowed %d of 50 concurrent events, want 10", allowed)
	}
}

// redisClient connects to the test Redis at 127.0.0.1:6379. In CI a missing Redis fails.
func redisClient(t *testing.T) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379"})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		c.Close()
		if os.Getenv("CI") == "true" {
			t.Fatalf("redis at 127.0.0.1:6379: %v", err)
		}
		t.Skipf("redis at 127.0.0.1:6379: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestPrefix returns a fresh key prefix so that test runs never share buckets.
func testPrefix(t *testing.T) string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return "atrtest:" + hex.EncodeToString(b) + ":"
}

func TestRedisSharedLimit(t *testing.T) {
	c := redisClient(t)
	prefix := testPrefix(t)
	a, b := NewRedis(c, prefix), NewRedis(c, prefix) // two replicas
	ctx := context.Background()
	lim := PerHour(10)
	allowed := 0
	for i := 0; i < 20; i++ {
		l := Limiter(a)
		if i%2 == 1 {
			l = b
		}
		res, err := l.Allow(ctx, "rotate:x", lim)
		if err != nil {
			t.Fatal(err)
		}
		if res.Allowed {
			allowed++
		}
	}
	if allowed != 10 {
		t.Errorf("two replicas allowed %d events, want one global limit of 10", allowed)
	}
	if res, _ := a.Check(ctx, "rotate:x", lim); res.Allowed {
		t.Error("Check allows a spent bucket")
	}
	if res, _ := a.Check(ctx, "fresh", lim); !res.Allowed {
		t.Error("Check refuses a fresh bucket")
	}
	if _, err := a.Allow(ctx, "k", Limit{}); err == nil {
		t.Error("invalid limit accepted")
	}
}

func TestRedisUnreachable(t *testing.T) {
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", DialTimeout: 200 * time.Millisecond, MaxRetries: -1})
	defer c.Close()
	l := NewRedis(c, "x:")
	if _, err := l.Allow(context.Background(), "k", PerHour(1)); err == nil {
		t.Error("Allow without Redis returned no error; the caller could not fail closed")
	}
	if _, err := l.Check(context.Background(), "k", PerHour(1)); err == nil {
		t.Error("Check without Redis returned no error")
	}
}

func BenchmarkLocalAllow(b *testing.B) {
	l := NewLocal(0, RefuseNew, nil)
	ctx := context.Background()
	lim := PerMinute(1_000_000)
	for i := 0; b.Loop(); i++ {
		_, _ = l.Allow(ctx, "k", lim)
	}
}

// A table full of live buckets: RefuseNew refuses newcomers and keeps every bucket;
// EvictNearest admits every newcomer by forgetting the bucket nearest to full, so the
// most spent bucket (the victim's) survives either way. Both report TableFull.
func TestLocalWhenFull(t *testing.T) {
	for _, tc := range []struct {
		name        string
		whenFull    WhenFull
		wantRefused bool
	}{
		{"refuse-new", RefuseNew, true},
		{"evict-nearest", EvictNearest, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
			l := NewLocal(100, tc.whenFull, func() time.Time { return now })
			for range 5 {
				l.Allow(ctx, "victim", PerHour(5))
			}
			refused, full := 0, 0
			for i := 0; i < 10_000; i++ {
				res, err := l.Allow(ctx, hex.EncodeToString([]byte{byte(i >> 8), byte(i)}), PerHour(5))
				if err != nil {
					t.Fatal(err)
				}
				if !res.Allowed {
					refused++
				}
				if res.TableFull {
					full++
				}
			}
			if n := l.Len(); n > 100 {
				t.Errorf("tracking %d keys, want ≤ 100", n)
			}
			if got := refused > 0; got != tc.wantRefused {
				t.Errorf("refused %d newcomers; want refusals: %v", refused, tc.wantRefused)
			}
			if got, want := full, 10_000-99; got != want {
				t.Errorf("TableFull on %d decisions, want %d", got, want)
			}
			if res, _ := l.Allow(ctx, "victim", PerHour(5)); res.Allowed {
				t.Error("the flood wiped the victim's exhausted bucket")
			}
		})
	}
}

// backends returns a Local and, when Redis is up, a Redis limiter.
func backends(t *testing.T) map[string]Limiter {
	t.Helper()
	return map[string]Limiter{
		"local": NewLocal(0, RefuseNew, nil),
		"redis": NewRedis(redisClient(t), testPrefix(t)),
	}
}

func TestAllowN(t *testing.T) {
	ctx := context.Background()
	lim := PerHour(5)
	for name, l := range backends(t) {
		t.Run(name, func(t *testing.T) {
			steps := []struct {
				n           int
				wantAllowed bool
				wantRemain  int
			}{
				{3, true, 2},
				{3, false, 0}, // all or none: nothing spent
				{2, true, 0},
				{1, false, 0},
			}
			for i, st := range steps {
				res, err := l.AllowN(ctx, "k", lim, st.n)
				if err != nil {
					t.Fatalf("step %d: %v", i, err)
				}
				if res.Allowed != st.wantAllowed || res.Remaining != st.wantRemain {
					t.Errorf("step %d AllowN(%d): got allowed %v remaining %d; want %v %d", i, st.n, res.Allowed, res.Remaining, st.wantAllowed, st.wantRemain)
				}
			}
			for _, n := range []int{0, -1} {
				if _, err := l.AllowN(ctx, "k", lim, n); err == nil {
					t.Errorf("AllowN(%d) accepted", n)
				}
			}
		})
	}
}

// Check on a key without state reports ResetAfter 0 and stores nothing; after a spend
// it reports the time until the bucket is full again. The api tells "this address has
// lockout state" by it.
func TestCheckResetAfter(t *testing.T) {
	ctx := context.Background()
	lim := PerHour(10)
	for name, l := range backends(t) {
		t.Run(name, func(t *testing.T) {
			res, err := l.Check(ctx, "k", lim)
			if err != nil {
				t.Fatal(err)
			}
			if !res.Allowed || res.ResetAfter != 0 {
				t.Errorf("fresh key: got allowed %v reset %s; want true 0", res.Allowed, res.ResetAfter)
			}
			if _, err := l.Allow(ctx, "k", lim); err != nil {
				t.Fatal(err)
			}
			res, err = l.Check(ctx, "k", lim)
			if err != nil {
				t.Fatal(err)
			}
			if res.ResetAfter < 5*time.Minute || res.ResetAfter > 6*time.Minute {
				t.Errorf("after one spend: reset %s, want about 6m", res.ResetAfter)
			}
		})
	}
	t.Run("redis stores nothing on Check", func(t *testing.T) {
		c := redisClient(t)
		prefix := testPrefix(t)
		if _, err := NewRedis(c, prefix).Check(ctx, "fresh", lim); err != nil {
			t.Fatal(err)
		}
		if n, err := c.Exists(ctx, "rate:"+prefix+"fresh").Result(); err != nil || n != 0 {
			t.Errorf("Check of a fresh key: %d keys stored (%v), want 0", n, err)
		}
	})
	t.Run("local stores nothing on Check", func(t *testing.T) {
		l := NewLocal(0, RefuseNew, nil)
		if _, err := l.Check(ctx, "fresh", lim); err != nil {
			t.Fatal(err)
		}
		if got := l.Len(); got != 0 {
			t.Errorf("Check of a fresh key: %d keys stored, want 0", got)
		}
	})
}
