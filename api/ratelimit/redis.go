package ratelimit

import (
	"context"
	"fmt"

	"github.com/go-redis/redis_rate/v10"
	"github.com/redis/go-redis/v9"
)

// Redis is a Limiter shared by every replica that uses the same Redis server. Keys are
// stored under "rate:<prefix><key>".
//
// Every key is written with a TTL equal to the time until its bucket is full again, and
// Check writes nothing for a key without state, so Redis holds only live buckets: the
// memory a flood of fresh keys costs is its rate times the lifetime of one bucket, which
// the caller keeps short by creating long-lived state (lockouts) only for keys that have
// already spent a short budget. Redis has no key bound of its own (that is maxmemory's
// job); Result.TableFull is never set.
type Redis struct {
	lim    *redis_rate.Limiter
	prefix string
}

// NewRedis returns a Redis limiter over client. prefix namespaces the keys (for example
// "atr:") so that several deployments can share one Redis.
func NewRedis(client *redis.Client, prefix string) *Redis {
	return &Redis{lim: redis_rate.NewLimiter(client), prefix: prefix}
}

// Allow implements Limiter.
func (r *Redis) Allow(ctx context.Context, key string, limit Limit) (Result, error) {
	return r.decide(ctx, key, limit, 1)
}

// AllowN implements Limiter. n must be positive.
func (r *Redis) AllowN(ctx context.Context, key string, limit Limit, n int) (Result, error) {
	if n <= 0 {
		return Result{}, fmt.Errorf("ratelimit: AllowN: n = %d, want > 0", n)
	}
	return r.decide(ctx, key, limit, n)
}

// Check implements Limiter.
func (r *Redis) Check(ctx context.Context, key string, limit Limit) (Result, error) {
	return r.decide(ctx, key, limit, 0)
}

func (r *Redis) decide(ctx context.Context, key string, limit Limit, cost int) (Result, error) {
	if err := limit.Validate(); err != nil {
		return Result{}, fmt.Errorf("%w: %v", ErrInvalidLimit, err)
	}
	rl := redis_rate.Limit{Rate: limit.Rate, Burst: limit.Burst, Period: limit.Period}
	res, err := r.lim.AllowN(ctx, r.prefix+key, rl, cost)
	if err != nil {
		return Result{}, fmt.Errorf("ratelimit: redis: %w", err)
	}
	out := Result{
		Limit:      limit,
		Remaining:  res.Remaining,
		RetryAfter: res.RetryAfter,
		ResetAfter: res.ResetAfter,
	}
	if cost == 0 {
		// AllowN with cost 0 always "allows"; one more event fits when Remaining ≥ 1.
		out.Allowed = res.Remaining >= 1
		if out.Allowed {
			out.Remaining = res.Remaining - 1
		} else {
			out.RetryAfter = limit.interval()
		}
		return out, nil
	}
	out.Allowed = res.Allowed > 0
	return out, nil
}
