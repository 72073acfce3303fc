package main

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/agent-trust-registry/atr/api"
	"github.com/agent-trust-registry/atr/api/ratelimit"
)

// rateLimitClasses maps the names accepted by --rate-limits (ATR_RATE_LIMITS)
// to the api's limit classes; the api owns the names, which are also the class
// label of atr_ratelimit_rejections_total.
func rateLimitClasses(rl *api.RateLimits) map[string]*ratelimit.Limit {
	return rl.Classes()
}

// parseRateLimits reads "class=RATE/PERIOD[:BURST]" items, e.g.
// "register=600/h:100,verify…". PERIOD is s, m, h or a Go duration; BURST
// defaults to RATE. Classes not named keep their defaults. The api package
// refuses values above its ceiling: limits can be raised, never switched off.
func parseRateLimits(items []string) (api.RateLimits, error) {
	var rl api.RateLimits
	classes := rateLimitClasses(&rl)
	for _, it := range items {
		name, spec, ok := strings.Cut(it, "=")
		p, known := classes[name]
		if !ok || !known {
			return rl, fmt.Errorf("rate limit %q: want CLASS=RATE/PERIOD[:BURST] with CLASS one of %s", it, strings.Join(rateLimitClassNames(), ", "))
		}
		l, err := parseLimit(spec)
		if err != nil {
			return rl, fmt.Errorf("rate limit %q: %w", it, err)
		}
		*p = l
	}
	return rl, nil
}

func rateLimitClassNames() []string { return api.RateLimitClassNames() }

func parseLimit(spec string) (ratelimit.Limit, error) {
	rateS, rest, ok := strings.Cut(spec, "/")
	if !ok {
		return ratelimit.Limit{}, fmt.Errorf("want RATE/PERIOD[:BURST]")
	}
	periodS, burstS, hasBurst := strings.Cut(rest, ":")
	rate, err := strconv.Atoi(rateS)
	if err != nil || rate <= 0 {
		return ratelimit.Limit{}, fmt.Errorf("rate %q must be a positive integer", rateS)
	}
	var period time.Duration
	switch periodS {
	case "s":
		period = time.Second
	case "m", "min":
		period = time.Minute
	case "h":
		period = time.Hour
	default:
		if period, err = time.ParseDuration(periodS); err != nil || period <= 0 {
			return ratelimit.Limit{}, fmt.Errorf("period %q must be s, m, h or a positive duration", periodS)
		}
	}
	burst := rate
	if hasBurst {
		if burst, err = strconv.Atoi(burstS); err != nil || burst <= 0 {
			return ratelimit.Limit{}, fmt.Errorf("burst %q must be a positive integer", burstS)
		}
	}
	return ratelimit.Limit{Rate: rate, Period: period, Burst: burst}, nil
}

// optionalDuration parses an optional duration setting; "" means zero (the
// consumer's default).
func optionalDuration(name, s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("%s %q: want a positive duration such as 24h or 90s", name, s)
	}
	return d, nil
}
