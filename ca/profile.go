package ca

import (
	"fmt"
	"net/url"
	"time"
)

// Leaf profile limits.
const (
	DefaultLeafLifetime = 24 * time.Hour
	MaxLeafLifetime     = 30 * 24 * time.Hour
	DefaultBackdate     = 30 * time.Second
	MaxBackdate         = time.Minute
)

// Profile describes the agent (leaf) certificates an Issuer produces.
type Profile struct {
	// TrustDomain is the SPIFFE trust domain, e.g. "agents.example.com": a
	// lowercase, fully qualified DNS name. Required.
	TrustDomain string
	// Lifetime is how long a certificate stays valid after issuance
	// (NotAfter = issuance time + Lifetime). Zero means DefaultLeafLifetime;
	// at most MaxLeafLifetime.
	Lifetime time.Duration
	// Backdate is subtracted from the issuance time for NotBefore, to absorb
	// clock skew. Zero means DefaultBackdate; at most MaxBackdate.
	Backdate time.Duration
	// CRLURL is the CRL distribution point (an http or https URL; RFC 5280
	// and zlint's w_distribution_point_missing_ldap_or_uri prefer plain
	// http, since the CRL is signed anyway and https would make revocation
	// checking depend on TLS). Optional; when empty the certificate has no
	// CRL distribution point extension.
	CRLURL string
	// OCSPURL is the OCSP responder in the authority information access
	// extension (an http or https URL). Optional; when empty there is no AIA.
	OCSPURL string
	// ServerAuth adds the serverAuth extended key usage to clientAuth, so
	// agents can also serve mutual TLS (DESIGN.md: both).
	ServerAuth bool
}

// withDefaults returns p with zero fields defaulted, or an error if p is
// out of policy.
func (p Profile) withDefaults() (Profile, error) {
	if err := validTrustDomain(p.TrustDomain); err != nil {
		return p, fmt.Errorf("ca: profile: %w", err)
	}
	if p.Lifetime == 0 {
		p.Lifetime = DefaultLeafLifetime
	}
	if p.Lifetime < time.Minute || p.Lifetime > MaxLeafLifetime {
		return p, fmt.Errorf("ca: profile: lifetime %v outside [1m, %v]", p.Lifetime, MaxLeafLifetime)
	}
	if p.Backdate == 0 {
		p.Backdate = DefaultBackdate
	}
	if p.Backdate < 0 || p.Backdate > MaxBackdate {
		return p, fmt.Errorf("ca: profile: backdate %v outside [0, %v]", p.Backdate, MaxBackdate)
	}
	for _, u := range []struct{ name, v string }{{"CRL URL", p.CRLURL}, {"OCSP URL", p.OCSPURL}} {
		if u.v == "" {
			continue
		}
		parsed, err := url.Parse(u.v)
		if err != nil || (parsed.Scheme != "http" && parsed.Scheme != "https") || parsed.Host == "" || parsed.User != nil || parsed.Fragment != "" {
			return p, fmt.Errorf("ca: profile: %s %q is not an absolute http(s) URL", u.name, u.v)
		}
	}
	return p, nil
}
