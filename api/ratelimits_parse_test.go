package api

import (
	"strings"
	"testing"
	"time"

	"github.com/agent-trust-registry/atr/api/ratelimit"
)

func TestParseRateLimits(t *testing.T) {
	rl, err := ParseRateLimits([]string{"register=600/h:100"})
	if err != nil {
		t.Fatal(err)
	}
	if want := (ratelimit.Limit{Rate: 600, Period: time.Hour, Burst: 100}); rl.Register != want {
		t.Errorf("register = %+v; want %+v", rl.Register, want)
	}
	if rl.Rotate != (ratelimit.Limit{}) {
		t.Errorf("rotate = %+v; want zero (the default applies)", rl.Rotate)
	}
	for _, tc := range []struct {
		in   string
		want ratelimit.Limit
	}{
		{"per-ip=300/m", ratelimit.Limit{Rate: 300, Period: time.Minute, Burst: 300}},
		{"auth-failure=3/90s:3", ratelimit.Limit{Rate: 3, Period: 90 * time.Second, Burst: 3}},
		{"public=20/s:200", ratelimit.Limit{Rate: 20, Period: time.Second, Burst: 200}},
	} {
		rl, err := ParseRateLimits([]string{tc.in})
		if err != nil {
			t.Fatalf("%s: %v", tc.in, err)
		}
		class, _, _ := strings.Cut(tc.in, "=")
		if got := *rl.Classes()[class]; got != tc.want {
			t.Errorf("%s = %+v; want %+v", tc.in, got, tc.want)
		}
	}
	for _, bad := range []string{"register", "nosuch=1/s", "register=0/s", "register=1", "register=1/fortnight", "register=1/s:0", "register=1/-1s", "register=x/s"} {
		if _, err := ParseRateLimits([]string{bad}); err == nil {
			t.Errorf("ParseRateLimits(%q) accepted", bad)
		}
	}
}
