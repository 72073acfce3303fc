package api

import (
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/agent-trust-registry/atr/api/ratelimit"
	"github.com/agent-trust-registry/atr/ca"
)

// Config is the HTTP layer's configuration. The zero value plus a TrustDomain is a safe
// configuration: no CORS origins, no trusted proxies, default body and rate limits.
type Config struct {
	// TrustDomain is the SPIFFE trust domain ("example.org"), used in the SPIFFE bundle.
	TrustDomain string

	// TLS reports that the server is reached over HTTPS (directly, or through a
	// TLS-terminating proxy); it turns on Strict-Transport-Security.
	TLS bool

	// HSTSMaxAge is the max-age of Strict-Transport-Security when TLS is on.
	// Default 1 year (31536000 s).
	HSTSMaxAge time.Duration

	// CORSOrigins lists the exact origins ("https://console.example.org") allowed to make
	// cross-origin requests. Empty (the default) allows none. "*" is refused: every
	// endpoint that matters takes credentials, and "*" with credentials is never allowed.
	CORSOrigins []string

	// BodyLimit caps every request body, in bytes. Default 256 KiB; at most 1 MiB.
	// Some endpoints use a smaller cap (verify: 64 KiB, OCSP: 16 KiB).
	BodyLimit int64

	// TrustedProxies lists the CIDRs ("10.0.0.0/8") of reverse proxies whose
	// X-Forwarded-For header is believed (RFC 7239 Forwarded is always ignored).
	// Empty: the socket peer is the client. The client is the right-most address
	// that is not a trusted proxy.
	TrustedProxies []string

	// RateLimits tunes the limits; zero fields take the defaults. Limits cannot be
	// disabled: every value is bounded by a hard ceiling (see RateLimits).
	RateLimits RateLimits

	// SPIFFERefreshHint is the spiffe_refresh_hint of the SPIFFE bundle. Default 5 minutes.
	SPIFFERefreshHint time.Duration

	// BundleMaxAge is the Cache-Control max-age of the public CA bundle, SPIFFE bundle
	// and CRL responses. Default 5 minutes.
	BundleMaxAge time.Duration

	// HandlerTimeout bounds each request's context. Default 30 s.
	HandlerTimeout time.Duration

	// PublicURL is the base URL clients reach this server at
	// ("https://atr.example.org:8443", no trailing slash): the issuer of the
	// OpenID discovery document and the iss claim of JWT-SVIDs. Empty: GET
	// /.well-known/openid-configuration answers 501 and JWT-SVIDs carry no iss.
	PublicURL string
}

// RateLimits are the per-class limits. A zero Limit takes the default. A configured
// limit must be valid (rate, period and burst positive) and may not allow more than
// Ceiling times the default rate; there is no way to turn a limit off.
type RateLimits struct {
	// PerIP applies to every request of a client IP (except the public classes below,
	// which have their own, larger per-IP limit). Default 300/min, burst 60.
	PerIP ratelimit.Limit
	// Public applies per client IP to verify, OCSP, CRL, bundles, log and openapi.
	// Default 1200/min, burst 200.
	Public ratelimit.Limit
	// PerKey applies to every authenticated request of one API key (or one agent over
	// mTLS). Default 120/min, burst 30.
	PerKey ratelimit.Limit
	// List applies per API key to GET /v1/agents and GET /v1/admin/audit. Default 10/min.
	List ratelimit.Limit
	// Rotate applies per agent name to POST /v1/agents/{name}/rotate. Default 10/hour.
	Rotate ratelimit.Limit
	// Revoke applies per agent name to POST /v1/agents/{name}/revoke. Default 10/hour.
	Revoke ratelimit.Limit
	// Card applies per agent name to POST /v1/agents/{name}/card: every signed
	// card is a permanent leaf of the public log. Default 10/hour.
	Card ratelimit.Limit
	// Register applies per API key to POST /v1/agents. Default 60/hour, burst 20.
	Register ratelimit.Limit
	// AuthFailure counts failed authentications per client IP in a short window.
	// Default 5/min. While it is spent, every request presenting credentials from that
	// IP gets 429, valid or not.
	AuthFailure ratelimit.Limit
	// LockoutThreshold is the number of failed authentications after which a client IP
	// is locked out for LockoutDuration. Defaults 10 and 30 minutes. While locked out,
	// every request presenting credentials from that IP gets 429, valid or not.
	// Lockout state is created only when an IP spends its AuthFailure budget (it then
	// counts as min(AuthFailure.Burst, LockoutThreshold) failures, and every later
	// failure while the state lasts counts one): failures slower than AuthFailure leave
	// nothing behind once the short window passes, so failed logins from many addresses
	// cannot fill memory with long-lived entries.
	LockoutThreshold int
	LockoutDuration  time.Duration
}

// Rate-limit class names: the CLASS of ATR_RATE_LIMITS (--rate-limits) and the class
// label of atr_ratelimit_rejections_total are the same words. ClassLockout is only a
// label: the lockout is tuned by LockoutThreshold and LockoutDuration.
const (
	ClassPerIP       = "per-ip"
	ClassPublic      = "public"
	ClassPerKey      = "per-key"
	ClassList        = "list"
	ClassRotate      = "rotate"
	ClassRevoke      = "revoke"
	ClassCard        = "card"
	ClassRegister    = "register"
	ClassAuthFailure = "auth-failure"
	ClassLockout     = "lockout"
)

// RateLimitClassNames lists the settable classes, in the order of the documentation.
func RateLimitClassNames() []string {
	return []string{ClassPerIP, ClassPublic, ClassPerKey, ClassList, ClassRotate, ClassRevoke, ClassCard, ClassRegister, ClassAuthFailure}
}

// Classes maps each settable class name to its field of rl.
func (rl *RateLimits) Classes() map[string]*ratelimit.Limit {
	return map[string]*ratelimit.Limit{
		ClassPerIP:       &rl.PerIP,
		ClassPublic:      &rl.Public,
		ClassPerKey:      &rl.PerKey,
		ClassList:        &rl.List,
		ClassRotate:      &rl.Rotate,
		ClassRevoke:      &rl.Revoke,
		ClassCard:        &rl.Card,
		ClassRegister:    &rl.Register,
		ClassAuthFailure: &rl.AuthFailure,
	}
}

// Ceiling bounds how far a configured limit can be raised above its default rate (per
// unit of time). It keeps "raise the limit" from becoming "disable the limit".
const Ceiling = 100

// DefaultRateLimits returns the built-in limits.
func DefaultRateLimits() RateLimits {
	return RateLimits{
		PerIP:            ratelimit.Limit{Rate: 300, Period: time.Minute, Burst: 60},
		Public:           ratelimit.Limit{Rate: 1200, Period: time.Minute, Burst: 200},
		PerKey:           ratelimit.Limit{Rate: 120, Period: time.Minute, Burst: 30},
		List:             ratelimit.PerMinute(10),
		Rotate:           ratelimit.PerHour(10),
		Revoke:           ratelimit.PerHour(10),
		Card:             ratelimit.PerHour(10),
		Register:         ratelimit.Limit{Rate: 60, Period: time.Hour, Burst: 20},
		AuthFailure:      ratelimit.PerMinute(5),
		LockoutThreshold: 10,
		LockoutDuration:  30 * time.Minute,
	}
}

const (
	defaultBodyLimit  = 256 << 10
	maxBodyLimit      = 1 << 20
	verifyBodyLimit   = 64 << 10
	ocspBodyLimit     = 16 << 10
	defaultHSTSMaxAge = 365 * 24 * time.Hour
)

// withDefaults returns c with zero fields replaced by defaults.
func (c Config) withDefaults() Config {
	if c.BodyLimit == 0 {
		c.BodyLimit = defaultBodyLimit
	}
	if c.HSTSMaxAge == 0 {
		c.HSTSMaxAge = defaultHSTSMaxAge
	}
	if c.SPIFFERefreshHint == 0 {
		c.SPIFFERefreshHint = 5 * time.Minute
	}
	if c.BundleMaxAge == 0 {
		c.BundleMaxAge = 5 * time.Minute
	}
	if c.HandlerTimeout == 0 {
		c.HandlerTimeout = 30 * time.Second
	}
	c.RateLimits = c.RateLimits.withDefaults()
	return c
}

func (rl RateLimits) withDefaults() RateLimits {
	d := DefaultRateLimits()
	pick := func(v *ratelimit.Limit, def ratelimit.Limit) {
		if *v == (ratelimit.Limit{}) {
			*v = def
		}
	}
	pick(&rl.PerIP, d.PerIP)
	pick(&rl.Public, d.Public)
	pick(&rl.PerKey, d.PerKey)
	pick(&rl.List, d.List)
	pick(&rl.Rotate, d.Rotate)
	pick(&rl.Revoke, d.Revoke)
	pick(&rl.Card, d.Card)
	pick(&rl.Register, d.Register)
	pick(&rl.AuthFailure, d.AuthFailure)
	if rl.LockoutThreshold == 0 {
		rl.LockoutThreshold = d.LockoutThreshold
	}
	if rl.LockoutDuration == 0 {
		rl.LockoutDuration = d.LockoutDuration
	}
	return rl
}

// Validate checks c (after defaults are applied) and returns every problem found.
func (c Config) Validate() error {
	c = c.withDefaults()
	var errs []error
	if err := ca.ValidateTrustDomain(c.TrustDomain); err != nil {
		errs = append(errs, err)
	}
	if c.BodyLimit < 1024 || c.BodyLimit > maxBodyLimit {
		errs = append(errs, fmt.Errorf("body limit %d outside [1024, %d]", c.BodyLimit, maxBodyLimit))
	}
	for _, o := range c.CORSOrigins {
		if err := checkOrigin(o); err != nil {
			errs = append(errs, err)
		}
	}
	if _, err := ParseTrustedProxies(c.TrustedProxies); err != nil {
		errs = append(errs, err)
	}
	if c.HSTSMaxAge < 0 || c.SPIFFERefreshHint < 0 || c.BundleMaxAge < 0 || c.HandlerTimeout < 0 {
		errs = append(errs, errors.New("durations must not be negative"))
	}
	if err := c.RateLimits.validate(); err != nil {
		errs = append(errs, err)
	}
	if c.PublicURL != "" {
		if u, err := url.Parse(c.PublicURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" ||
			u.User != nil || u.RawQuery != "" || u.Fragment != "" || strings.HasSuffix(c.PublicURL, "/") {
			errs = append(errs, fmt.Errorf("public URL %q: want http(s)://host[:port][/path] without a trailing slash", c.PublicURL))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("api: invalid config: %w", errors.Join(errs...))
	}
	return nil
}

func (rl RateLimits) validate() error {
	d := DefaultRateLimits()
	var errs []error
	check := func(name string, v, def ratelimit.Limit) {
		if err := v.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("rate limit %s: %w", name, err))
			return
		}
		// Compare events per second: v.Rate/v.Period ≤ Ceiling·def.Rate/def.Period.
		lhs := float64(v.Rate) / v.Period.Seconds()
		rhs := Ceiling * float64(def.Rate) / def.Period.Seconds()
		if lhs > rhs || v.Burst > Ceiling*def.Burst {
			errs = append(errs, fmt.Errorf("rate limit %s: %d/%s burst %d exceeds the ceiling (%d× the default)", name, v.Rate, v.Period, v.Burst, Ceiling))
		}
	}
	got, defs := rl.Classes(), d.Classes()
	for _, name := range RateLimitClassNames() {
		check(name, *got[name], *defs[name])
	}
	if rl.LockoutThreshold < 1 || rl.LockoutThreshold > 1000 {
		errs = append(errs, fmt.Errorf("lockout threshold %d outside [1, 1000]", rl.LockoutThreshold))
	}
	if rl.LockoutDuration < time.Minute || rl.LockoutDuration > 24*time.Hour {
		errs = append(errs, fmt.Errorf("lockout duration %s outside [1m, 24h]", rl.LockoutDuration))
	}
	return errors.Join(errs...)
}

// lockoutLimit expresses "locked for LockoutDuration after LockoutThreshold failures"
// as a GCRA limit: a burst of LockoutThreshold that refills one failure per
// LockoutDuration.
func (rl RateLimits) lockoutLimit() ratelimit.Limit {
	return ratelimit.Limit{Rate: 1, Period: rl.LockoutDuration, Burst: rl.LockoutThreshold}
}

func checkOrigin(o string) error {
	if o == "*" || strings.Contains(o, "*") {
		return fmt.Errorf("CORS origin %q: wildcards are not allowed", o)
	}
	u, err := url.Parse(o)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" ||
		u.Path != "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return fmt.Errorf("CORS origin %q: want scheme://host[:port]", o)
	}
	return nil
}

// ParseTrustedProxies reads Config.TrustedProxies: CIDRs ("10.0.0.0/8"); a
// bare address means that address alone (/32, or /128 for IPv6).
func ParseTrustedProxies(cidrs []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range cidrs {
		p, err := netip.ParsePrefix(strings.TrimSpace(s))
		if err != nil {
			// A bare address means a /32 or /128.
			a, aerr := netip.ParseAddr(strings.TrimSpace(s))
			if aerr != nil {
				return nil, fmt.Errorf("trusted proxy %q: %w", s, err)
			}
			p = netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen())
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// ParseRateLimits reads rate-limit overrides, each "CLASS=RATE/PERIOD[:BURST]"
// (e.g. "register=600/h:100"): CLASS one of RateLimitClassNames, PERIOD s, m,
// h or a Go duration, BURST defaulting to RATE. Classes not named keep their
// defaults (zero here; Config applies them). Values beyond the ceiling are
// refused by Validate: limits can be raised, never switched off.
func ParseRateLimits(items []string) (RateLimits, error) {
	var rl RateLimits
	classes := rl.Classes()
	for _, it := range items {
		name, spec, ok := strings.Cut(it, "=")
		p, known := classes[name]
		if !ok || !known {
			return rl, fmt.Errorf("rate limit %q: want CLASS=RATE/PERIOD[:BURST] with CLASS one of %s", it, strings.Join(RateLimitClassNames(), ", "))
		}
		l, err := parseLimit(spec)
		if err != nil {
			return rl, fmt.Errorf("rate limit %q: %w", it, err)
		}
		*p = l
	}
	return rl, nil
}

func parseLimit(spec string) (ratelimit.Limit, error) {
	rateS, rest, ok := strings.Cut(spec, "/")
	if !ok {
		return ratelimit.Limit{}, errors.New("want RATE/PERIOD[:BURST]")
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
