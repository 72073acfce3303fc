package agent

import (
	"fmt"
	"testing"
	"time"
)

// TestJWTSVIDCacheLocalClock: freshness is measured on this host's clock
// from when the token arrived, so a clock behind the registry's never hands
// out an expired token (judged by iat alone it would, for a 200 s skew).
func TestJWTSVIDCacheLocalClock(t *testing.T) {
	server := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	local := server.Add(-200 * time.Second) // this host is 200 s behind
	tok := &JWTSVID{Token: "x.y.z", IssuedAt: server, ExpiresAt: server.Add(5 * time.Minute)}
	var c jwtSVIDCache
	c.put("k", tok, local)
	for _, tt := range []struct {
		after time.Duration
		want  bool
	}{{0, true}, {149 * time.Second, true}, {151 * time.Second, false}, {349 * time.Second, false}} {
		if got := c.get("k", local.Add(tt.after)) != nil; got != tt.want {
			t.Errorf("%v after arrival: cached=%v, want %v", tt.after, got, tt.want)
		}
	}
	if a, b := fmt.Sprintf("%q", []string{"a\x00b"}), fmt.Sprintf("%q", []string{"a", "b"}); a == b {
		t.Errorf("cache keys of distinct audience lists collide: %s", a)
	}
}
