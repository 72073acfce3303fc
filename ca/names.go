package ca

import (
	"crypto/x509"
	"net/url"
	"strings"
	"unicode/utf8"

	zutil "github.com/zmap/zlint/v3/util"
	"golang.org/x/text/unicode/norm"
)

const (
	// MaxAgentNameLength is the longest agent name, in bytes (DNS limit).
	MaxAgentNameLength = 253
	maxLabelLength     = 63
	// maxRawNameLength bounds the work done on a raw name before
	// normalization. A few non-ASCII characters normalize to ASCII (U+212A
	// KELVIN SIGN is NFC "K", 3 bytes to 1), so the raw cap is a generous
	// multiple of the final one.
	maxRawNameLength = 4 * MaxAgentNameLength
)

// NormalizeAgentName returns the canonical form of an agent name, or a
// *PolicyError with Field "name".
//
// The steps are, in order: Unicode NFC normalization, lowercasing, then the
// checks. The result must be ASCII (any remaining non-ASCII character, such as
// a Cyrillic 'а' that looks like a Latin 'a', is refused rather than mapped),
// made of dot-separated labels of 1–63 characters from [a-z0-9-] that neither
// start nor end with a hyphen and do not have "--" in positions 3–4 (reserved
// for IDNA A-labels such as "xn--…", which could display as confusables), at
// most 253 characters in total. Whitespace, control characters, slashes,
// leading, trailing or doubled dots and the empty string are all refused, so
// a normalized name is also safe as a single path element.
//
// A character whose NFC-and-lowercase form is ASCII (U+212A KELVIN SIGN,
// U+0130 'İ') therefore becomes that ASCII letter: it cannot create a name
// distinct from the ASCII one, which is the point of normalizing before
// checking uniqueness.
//
// Normalization is idempotent: NormalizeAgentName(n) == n for every n it
// returns.
func NormalizeAgentName(s string) (string, error) {
	if s == "" {
		return "", policyErr("name", "empty")
	}
	if len(s) > maxRawNameLength {
		return "", policyErr("name", "longer than %d characters", MaxAgentNameLength)
	}
	if !utf8.ValidString(s) {
		return "", policyErr("name", "not valid UTF-8")
	}
	n := strings.ToLower(norm.NFC.String(s))
	if len(n) > MaxAgentNameLength {
		return "", policyErr("name", "longer than %d characters", MaxAgentNameLength)
	}
	for i := 0; i < len(n); i++ {
		c := n[i]
		switch {
		case c >= utf8.RuneSelf:
			return "", policyErr("name", "non-ASCII character at byte %d", i)
		case c < 0x20 || c == 0x7f:
			return "", policyErr("name", "control character at byte %d", i)
		case c == ' ' || c == '\t':
			return "", policyErr("name", "whitespace at byte %d", i)
		case c == '/' || c == '\\':
			return "", policyErr("name", "slash at byte %d", i)
		case c == '.' || c == '-' || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'):
		default:
			return "", policyErr("name", "character %q not allowed (only a-z, 0-9, '-' and '.')", c)
		}
	}
	labels := strings.Split(n, ".")
	for i, l := range labels {
		switch {
		case l == "":
			return "", policyErr("name", "empty label %d (leading, trailing or doubled dot)", i+1)
		case len(l) > maxLabelLength:
			return "", policyErr("name", "label %d longer than %d characters", i+1, maxLabelLength)
		case l[0] == '-' || l[len(l)-1] == '-':
			return "", policyErr("name", "label %d starts or ends with a hyphen", i+1)
		case len(l) >= 4 && l[2] == '-' && l[3] == '-':
			return "", policyErr("name", "label %d has reserved \"--\" in positions 3-4", i+1)
		}
	}
	return n, nil
}

// AgentURI returns the SPIFFE ID of an agent:
// spiffe://<trustDomain>/agent/<name>. It does not validate its arguments;
// name must already be normalized.
func AgentURI(trustDomain, name string) string {
	return "spiffe://" + trustDomain + "/agent/" + name
}

// AgentName returns the agent name carried by c: c must have exactly one URI
// SAN, of the form spiffe://<trustDomain>/agent/<name> with no user info,
// port, query or fragment, and name must be a normalized agent name. Any
// other shape is a *PolicyError with Field "certificate". It reads only
// c.URIs.
func AgentName(c *x509.Certificate, trustDomain string) (string, error) {
	if c == nil {
		return "", policyErr("certificate", "missing")
	}
	if len(c.URIs) != 1 {
		return "", policyErr("certificate", "has %d URI SANs, want exactly 1", len(c.URIs))
	}
	return agentNameFromURI(c.URIs[0], trustDomain)
}

// AgentIdentity reads the agent name and trust domain from c's one URI SAN,
// spiffe://<trust-domain>/agent/<name>, checked by the rules AgentName
// applies; for a relying party or an agent that does not know the trust
// domain in advance.
func AgentIdentity(c *x509.Certificate) (name, trustDomain string, err error) {
	if c == nil || len(c.URIs) != 1 {
		return "", "", policyErr("certificate", "want exactly one URI SAN (a SPIFFE ID)")
	}
	u := c.URIs[0]
	if u.Scheme != "spiffe" || u.Host == "" {
		return "", "", policyErr("certificate", "URI SAN %q is not spiffe://<trust-domain>/agent/<name>", u.String())
	}
	name, err = agentNameFromURI(u, u.Host)
	if err != nil {
		return "", "", err
	}
	return name, u.Host, nil
}

func agentNameFromURI(u *url.URL, trustDomain string) (string, error) {
	const prefix = "/agent/"
	switch {
	case u.Scheme != "spiffe":
		return "", policyErr("certificate", "URI SAN scheme is not spiffe")
	case u.Opaque != "" || u.User != nil || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || u.RawFragment != "":
		return "", policyErr("certificate", "URI SAN is not a plain SPIFFE ID")
	case u.Host != trustDomain || u.Port() != "":
		return "", policyErr("certificate", "URI SAN is not in trust domain %q", trustDomain)
	case u.RawPath != "" || !strings.HasPrefix(u.Path, prefix):
		return "", policyErr("certificate", "URI SAN is not an agent SPIFFE ID")
	}
	name := strings.TrimPrefix(u.Path, prefix)
	got, err := NormalizeAgentName(name)
	if err != nil || got != name {
		return "", policyErr("certificate", "URI SAN agent name is not normalized")
	}
	return name, nil
}

// validTrustDomain reports whether td is a SPIFFE trust domain name ATR
// accepts: the same rules as an agent name (lowercase DNS labels), with at
// least two labels, and a fully qualified domain name by zlint's own test
// (e_ext_san_uri_host_not_fqdn_or_ip would otherwise refuse every leaf; it
// refuses, e.g., "a.b"). Checking here lets a ceremony refuse an unusable
// trust domain before it creates an intermediate for it.
func validTrustDomain(td string) error {
	n, err := NormalizeAgentName(td)
	if err != nil || n != td {
		return policyErr("trust domain", "%q is not a lowercase DNS name", td)
	}
	if !strings.Contains(td, ".") || !zutil.IsFQDN(td) {
		return policyErr("trust domain", "%q is not a fully qualified domain name", td)
	}
	return nil
}
