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
	l := NewLocal(0, c.now)
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
	l := NewLocal(0, nil)
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
	l := NewLocal(0, nil)
	for _, lim := range []Limit{{}, {Rate: 1, Period: time.Second}, {Rate: -1, Period: time.Second, Burst: 1}} {
		if _, err := l.Allow(context.Background(), "k", lim); err == nil {
			t.Errorf("limit %+v accepted: an invalid limit must not mean unlimited", lim)
		}
	}
}

func TestLocalBounded(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	l := NewLocal(100, func() time.Time { return now })
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
	l := NewLocal(0, nil)
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
	l := NewLocal(0, nil)
	ctx := context.Background()
	lim := PerMinute(1_000_000)
	for i := 0; b.Loop(); i++ {
		_, _ = l.Allow(ctx, "k", lim)
	}
}
