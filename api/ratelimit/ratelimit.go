// Package ratelimit holds the rate limiters of the ATR HTTP layer.
//
// A Limiter answers one question: may the caller identified by key spend one unit of
// limit now? Two backends implement it with the same GCRA (generic cell rate algorithm,
// a token bucket without a refill timer):
//
//   - Local: in-process, for a single node. State is a bounded map (a table); when it is
//     full of live buckets, a new key is either refused or admitted by forgetting the live
//     bucket nearest to full again, as chosen at construction (WhenFull), and the Result
//     says so (TableFull). Callers keep one table per kind of state, so that one kind
//     filling memory never refuses another.
//   - Redis: shared by every replica through github.com/go-redis/redis_rate/v10 (the same
//     GCRA as a Lua script on the Redis server, so replicas enforce one global limit).
//
// A Limiter returns an error only when it cannot decide (Redis unreachable). What to do
// then is the caller's policy: the api package fails closed for privileged endpoints and
// falls back to a Local limiter for public ones.
package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"
)

// Limit is Rate events per Period with bursts of up to Burst events.
// A Limit with Rate ≤ 0, Period ≤ 0 or Burst ≤ 0 is invalid; limiters refuse it with an
// error rather than treating it as "unlimited".
type Limit struct {
	Rate   int
	Period time.Duration
	Burst  int
}

// PerMinute returns n events per minute with a burst of n.
func PerMinute(n int) Limit { return Limit{Rate: n, Period: time.Minute, Burst: n} }

// PerHour returns n events per hour with a burst of n.
func PerHour(n int) Limit { return Limit{Rate: n, Period: time.Hour, Burst: n} }

// Validate reports whether l is a usable limit.
func (l Limit) Validate() error {
	if l.Rate <= 0 || l.Period <= 0 || l.Burst <= 0 {
		return fmt.Errorf("ratelimit: invalid limit %d/%s burst %d: rate, period and burst must be positive", l.Rate, l.Period, l.Burst)
	}
	return nil
}

// interval is the emission interval: the time one event "costs".
func (l Limit) interval() time.Duration {
	return time.Duration(int64(l.Period) / int64(l.Rate))
}

// Result is the outcome of one decision.
type Result struct {
	Allowed    bool
	Limit      Limit
	Remaining  int           // events still allowed right now after this one
	RetryAfter time.Duration // when not allowed: wait at least this long
	// ResetAfter is the time until the bucket is full again; zero means the key holds
	// no state (Check on a key never spent, or spent long enough ago).
	ResetAfter time.Duration
	// TableFull reports that a Local table was full of live buckets when a new key
	// spent an event: under RefuseNew the event was refused and nothing was stored
	// (Allowed is false); under EvictNearest another key's bucket was forgotten to make
	// room. A shared backend never sets it.
	TableFull bool
}

// Limiter decides whether an event for key is allowed under limit.
//
// Allow consumes one event when it is allowed; AllowN consumes n events, all or none.
// Check reports whether one event would be
// allowed now without consuming anything (used for lockouts: a locked-out key is refused
// before the credential is even looked at). Both return an error only when the backend
// cannot decide; the Result is then meaningless.
type Limiter interface {
	Allow(ctx context.Context, key string, limit Limit) (Result, error)
	AllowN(ctx context.Context, key string, limit Limit, n int) (Result, error)
	Check(ctx context.Context, key string, limit Limit) (Result, error)
}

// ErrInvalidLimit is returned for a Limit that fails Validate.
var ErrInvalidLimit = errors.New("ratelimit: invalid limit")

// DefaultMaxKeys is the default bound on the number of keys a Local limiter tracks.
const DefaultMaxKeys = 100_000

// WhenFull is what a Local limiter does with an event of a new key while its table is
// full of live buckets (expired ones are always dropped first).
type WhenFull int

const (
	// RefuseNew refuses the event and forgets nothing, for state a flood of fresh keys
	// must not wipe (a lockout, a rotate budget). A table of this kind must only hold
	// keys an attacker cannot mint at will, or refusing newcomers is a denial of service.
	RefuseNew WhenFull = iota
	// EvictNearest forgets, among a small random sample, the live bucket nearest to full
	// again (the one that carries least information) and admits the new key. For
	// per-client buckets, where the worst a flood achieves is a fresh budget for a few
	// sampled clients, while refusing newcomers would deny service to everyone.
	EvictNearest
)

// Local is an in-process GCRA limiter with a bounded key map. It is safe for concurrent
// use. The zero value is not usable; call NewLocal.
type Local struct {
	mu       sync.Mutex
	tat      map[string]time.Time // theoretical arrival time per key
	maxKeys  int
	whenFull WhenFull
	now      func() time.Time
}

// NewLocal returns a Local limiter tracking at most maxKeys keys (DefaultMaxKeys when
// maxKeys ≤ 0) that handles a full table as whenFull says. now is the clock (time.Now
// when nil).
func NewLocal(maxKeys int, whenFull WhenFull, now func() time.Time) *Local {
	if maxKeys <= 0 {
		maxKeys = DefaultMaxKeys
	}
	if now == nil {
		now = time.Now
	}
	return &Local{tat: make(map[string]time.Time), maxKeys: maxKeys, whenFull: whenFull, now: now}
}

// Allow implements Limiter.
func (l *Local) Allow(_ context.Context, key string, limit Limit) (Result, error) {
	return l.decide(key, limit, 1)
}

// AllowN implements Limiter. n must be positive.
func (l *Local) AllowN(_ context.Context, key string, limit Limit, n int) (Result, error) {
	if n <= 0 {
		return Result{}, fmt.Errorf("ratelimit: AllowN: n = %d, want > 0", n)
	}
	return l.decide(key, limit, n)
}

// Check implements Limiter.
func (l *Local) Check(_ context.Context, key string, limit Limit) (Result, error) {
	return l.decide(key, limit, 0)
}

// Len reports the number of keys currently tracked.
func (l *Local) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.tat)
}

func (l *Local) decide(key string, limit Limit, cost int) (Result, error) {
	if err := limit.Validate(); err != nil {
		return Result{}, fmt.Errorf("%w: %v", ErrInvalidLimit, err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	tat, ok := l.tat[key]
	if !ok || tat.Before(now) {
		tat = now
	}
	res := gcra(now, tat, limit, cost)
	if res.Allowed && cost > 0 {
		if !ok && !l.makeRoom(now) {
			res.TableFull = true
			if l.whenFull == RefuseNew {
				// Refuse the new key rather than forget another key's state
				// (a lockout, a rotate budget), which a flood of fresh keys
				// could otherwise wipe on purpose.
				return Result{Limit: res.Limit, RetryAfter: time.Second, ResetAfter: time.Second, TableFull: true}, nil
			}
			l.evictNearest()
		}
		l.tat[key] = tat.Add(time.Duration(cost) * limit.interval())
	}
	return res, nil
}

// gcra computes the decision for spending cost events at now, given the stored
// theoretical arrival time tat (already clamped to ≥ now).
func gcra(now, tat time.Time, limit Limit, cost int) Result {
	t := limit.interval()
	burstOffset := time.Duration(limit.Burst) * t
	newTAT := tat.Add(time.Duration(cost) * t)
	allowAt := newTAT.Add(-burstOffset)
	diff := now.Sub(allowAt)
	res := Result{Limit: limit}
	if cost == 0 {
		// Would one more event be allowed?
		remaining := math.Floor(float64(diff) / float64(t))
		res.Allowed = remaining >= 1
		if res.Allowed {
			res.Remaining = int(remaining) - 1
		} else {
			res.RetryAfter = t - diff
		}
		res.ResetAfter = tat.Sub(now)
		return res
	}
	if diff < 0 {
		res.RetryAfter = -diff
		res.ResetAfter = tat.Sub(now)
		return res
	}
	res.Allowed = true
	res.Remaining = int(math.Floor(float64(diff) / float64(t)))
	res.ResetAfter = newTAT.Sub(now)
	return res
}

// evictScan bounds the work makeRoom does for one new key.
const evictScan = 16

// makeRoom reports whether the map has room for one more key. When it is
// full, it drops expired entries (buckets full again carry no information)
// among at most evictScan entries — Go starts each map iteration at a random
// place — so a full map costs bounded work per request. Live entries are
// never dropped. Called with mu held.
func (l *Local) makeRoom(now time.Time) bool {
	if len(l.tat) < l.maxKeys {
		return true
	}
	seen := 0
	for k, tat := range l.tat {
		if !tat.After(now) {
			delete(l.tat, k)
		}
		if seen++; seen == evictScan {
			break
		}
	}
	return len(l.tat) < l.maxKeys
}

// evictNearest forgets the live bucket with the earliest theoretical arrival time
// (nearest to full again) among at most evictScan entries. Called with mu held on a
// non-empty map.
func (l *Local) evictNearest() {
	var (
		victim string
		first  time.Time
		seen   int
	)
	for k, tat := range l.tat {
		if seen == 0 || tat.Before(first) {
			victim, first = k, tat
		}
		if seen++; seen == evictScan {
			break
		}
	}
	delete(l.tat, victim)
}
