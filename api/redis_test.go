package api

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/agent-trust-registry/atr/api/ratelimit"
)

func testRedis(t *testing.T) *redis.Client {
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

// Two server instances sharing Redis enforce one global rotate limit per agent.
func TestTwoReplicasShareRedisLimit(t *testing.T) {
	rc := testRedis(t)
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	prefix := "atrtest:" + hex.EncodeToString(b) + ":"
	one := newHarness(t, func(_ *Config, d *Deps) { d.Limiter = ratelimit.NewRedis(rc, prefix) })
	two := newHarness(t, func(_ *Config, d *Deps) { d.Limiter = ratelimit.NewRedis(rc, prefix) })
	two.fake = one.fake // one registry behind both replicas
	two.s.deps.Lifecycle, two.s.deps.Auth, two.s.deps.Admin = one.fake, one.fake, one.fake
	one.register(keyAlice, "shared.alice")
	ok := 0
	for i := 0; i < 20; i++ {
		h := one
		if i%2 == 1 {
			h = two
		}
		switch r := h.do("POST", "/v1/agents/shared.alice/rotate", keyAlice, map[string]string{"csr": testCSR}); r.status {
		case 200:
			ok++
		case 429:
		default:
			t.Fatalf("rotate %d: got %d %s", i, r.status, r.body)
		}
	}
	if ok != 10 {
		t.Errorf("two replicas allowed %d rotations, want one global limit of 10", ok)
	}
}

// With Redis down, privileged endpoints fail closed (503) and verify falls back to
// in-process limits.
func TestRedisDownFailsClosed(t *testing.T) {
	rc := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", DialTimeout: 200 * time.Millisecond, MaxRetries: -1})
	t.Cleanup(func() { rc.Close() })
	h := newHarness(t, func(_ *Config, d *Deps) { d.Limiter = ratelimit.NewRedis(rc, "x:") })
	r := h.do("POST", "/v1/agents", keyAlice, map[string]any{"name": "a.alice", "csr": testCSR})
	if r.status != 503 {
		t.Fatalf("register without Redis: got %d %s, want 503", r.status, r.body)
	}
	if e := r.errBody(t); e.Code != CodeUnavailable {
		t.Errorf("code %q, want %q", e.Code, CodeUnavailable)
	}
	if len(h.fake.agents) != 0 {
		t.Error("an agent was registered while the limiter was down")
	}
	if r := h.do("POST", "/v1/verify", "", map[string]string{"certificate": string(h.fake.bundle)}); r.status != 200 {
		t.Errorf("verify without Redis: got %d, want 200 (local fallback)", r.status)
	}
	if r := h.do("GET", "/v1/agents", keyAlice, nil); r.status != 503 {
		t.Errorf("list without Redis: got %d, want 503", r.status)
	}
}
