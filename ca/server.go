package ca

import (
	"crypto"
	"crypto/x509"
	"fmt"
	"math/big"
	"net"
	"slices"
	"time"
)

// The registry's own TLS server certificate goes through the same pipeline
// as an agent leaf (Prepare, record, Sign): built from a fixed profile,
// signed with the throwaway lint key and linted with zlint (the same lint
// selection as agent leaves: it is a certificate of a private PKI, not a Web
// PKI one) and ATR's server lints, then signed by the issuing key only after
// the caller recorded Prepared.TBS.
//
// Server profile: empty subject, DNS and IP SANs only (no URI SAN: it is no
// SPIFFE ID, and no email), cA=false, KeyUsage digitalSignature only
// (critical), EKU serverAuth only, SubjectKeyId, AuthorityKeyId, the leaf
// profile's CRL distribution point and OCSP AIA, a random serial of at least
// 64 bits, backdated by the profile's Backdate, and a short lifetime.

// Server certificate limits.
const (
	// DefaultTLSServerLifetime is the server certificate's lifetime when
	// PrepareServer is given 0.
	DefaultTLSServerLifetime = 24 * time.Hour
	// MinTLSServerLifetime and MaxTLSServerLifetime bound the lifetime.
	MinTLSServerLifetime = 10 * time.Minute
	MaxTLSServerLifetime = 7 * 24 * time.Hour
	// MaxTLSServerNames bounds the DNS names and IP addresses together.
	MaxTLSServerNames = 64
)

// PrepareServer builds the TLS server certificate of the registry itself
// over pub, for the DNS names dns (each lowercase and already normalized,
// NormalizeAgentName(d) == d: DNS-label rules, no wildcards) and the IP
// addresses ips (at least one name in all, at most MaxTLSServerNames, no
// duplicates), with serial (from NewSerial), issued at now, valid for
// lifetime (0 means DefaultTLSServerLifetime; at most MaxTLSServerLifetime).
// When the issuing certificate expires sooner, the lifetime is shortened to
// end with it; if less than MinTLSServerLifetime would remain, PrepareServer
// fails (rotate the intermediate).
//
// Like Prepare, it signs the template with the throwaway lint key and lints
// the result, with zlint and the server lints (serverLints; never the agent
// lints); any error or fatal finding is a *LintError. Refusals of the
// inputs (key, names, lifetime) are *PolicyError. Record Prepared.TBS
// durably before calling Sign. Prepared.AgentName of a server certificate is
// "".
func (i *Issuer) PrepareServer(pub crypto.PublicKey, dns []string, ips []net.IP, serial *big.Int, now time.Time, lifetime time.Duration) (*Prepared, error) {
	if err := CheckPublicKey(pub); err != nil {
		return nil, err
	}
	if err := checkServerNames(dns, ips); err != nil {
		return nil, err
	}
	if err := checkSerial(serial); err != nil {
		return nil, fmt.Errorf("ca: prepare server: %w", err)
	}
	if serial.BitLen() < minSerialBits {
		return nil, fmt.Errorf("ca: prepare server: serial has fewer than %d bits", minSerialBits)
	}
	tmpl, err := i.serverLeafTemplate(pub, dns, ips, serial, now, lifetime)
	if err != nil {
		return nil, err
	}
	lc, err := i.lintTemplateAs(tmpl, pub, i.serverLints)
	if err != nil {
		return nil, err
	}
	return i.newPrepared(tmpl, pub, lc, "")
}

// checkServerNames checks the names of a server certificate.
func checkServerNames(dns []string, ips []net.IP) error {
	if len(dns)+len(ips) == 0 {
		return policyErr("name", "a server certificate needs at least one DNS name or IP address")
	}
	if len(dns)+len(ips) > MaxTLSServerNames {
		return policyErr("name", "at most %d DNS names and IP addresses", MaxTLSServerNames)
	}
	seen := make(map[string]bool, len(dns)+len(ips))
	for _, d := range dns {
		if n, err := NormalizeAgentName(d); err != nil || n != d { // the same DNS-label rules
			return policyErr("name", "DNS name %q is not a normalized lowercase DNS name", d)
		}
		if seen[d] {
			return policyErr("name", "DNS name %q repeated", d)
		}
		seen[d] = true
	}
	for _, ip := range ips {
		if len(ip) != net.IPv4len && len(ip) != net.IPv6len {
			return policyErr("name", "malformed IP address")
		}
		if ip.IsUnspecified() {
			return policyErr("name", "IP address %s is unspecified", ip)
		}
		k := ip.To16().String()
		if seen[k] {
			return policyErr("name", "IP address %s repeated", ip)
		}
		seen[k] = true
	}
	return nil
}

// serverLeafTemplate builds the server certificate template from the profile.
// The only inputs from the caller are the public key, the names and the
// lifetime.
func (i *Issuer) serverLeafTemplate(pub crypto.PublicKey, dns []string, ips []net.IP, serial *big.Int, now time.Time, lifetime time.Duration) (*x509.Certificate, error) {
	if lifetime == 0 {
		lifetime = DefaultTLSServerLifetime
	}
	if lifetime < MinTLSServerLifetime || lifetime > MaxTLSServerLifetime {
		return nil, policyErr("lifetime", "server certificate lifetime %v outside [%v, %v]", lifetime, MinTLSServerLifetime, MaxTLSServerLifetime)
	}
	now = now.UTC().Truncate(time.Second)
	if now.Before(i.cert.NotBefore) {
		return nil, fmt.Errorf("ca: prepare server: issuing certificate is not valid until %v", i.cert.NotBefore)
	}
	notBefore := now.Add(-i.profile.Backdate)
	if notBefore.Before(i.cert.NotBefore) {
		notBefore = i.cert.NotBefore.UTC()
	}
	notAfter := now.Add(lifetime)
	if notAfter.After(i.cert.NotAfter) {
		notAfter = i.cert.NotAfter.UTC()
	}
	if notAfter.Sub(now) < MinTLSServerLifetime {
		return nil, fmt.Errorf("ca: prepare server: issuing certificate expires at %v, too soon for a server certificate; rotate the intermediate", i.cert.NotAfter)
	}
	skid, err := subjectKeyID(pub)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		DNSNames:              slices.Clone(dns),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  false,
		SubjectKeyId:          skid,
	}
	for _, ip := range ips {
		tmpl.IPAddresses = append(tmpl.IPAddresses, slices.Clone(ip))
	}
	if i.profile.CRLURL != "" {
		tmpl.CRLDistributionPoints = []string{i.profile.CRLURL}
	}
	if i.profile.OCSPURL != "" {
		tmpl.OCSPServer = []string{i.profile.OCSPURL}
	}
	return tmpl, nil
}

// serverLints are ATR's own lints of the server profile: DNS and IP SANs
// only (e_atr_server_names: no URI SAN, which would make the certificate
// look like an agent's SPIFFE ID, and no email), EKU serverAuth only
// (e_atr_server_ext_key_usage), lifetime at most MaxTLSServerLifetime
// (e_atr_server_lifetime), then leafLints. The agent lints
// (e_atr_one_uri_san, e_atr_no_other_sans, e_atr_ext_key_usage,
// e_atr_lifetime) do not apply.
func (i *Issuer) serverLints(c *x509.Certificate) []Finding {
	var out []Finding
	fail := func(lintName, format string, args ...any) {
		out = append(out, Finding{Lint: lintName, Status: "error", Details: fmt.Sprintf(format, args...)})
	}
	if len(c.URIs) > 0 {
		fail("e_atr_server_names", "%d URI SANs, want none", len(c.URIs))
	}
	if len(c.EmailAddresses) > 0 {
		fail("e_atr_server_names", "email SANs present")
	}
	if len(c.DNSNames)+len(c.IPAddresses) == 0 {
		fail("e_atr_server_names", "no DNS or IP SAN")
	}
	for _, d := range c.DNSNames {
		if n, err := NormalizeAgentName(d); err != nil || n != d {
			fail("e_atr_server_names", "DNS SAN %q is not a normalized lowercase DNS name", d)
		}
	}
	want := []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	if !slices.Equal(c.ExtKeyUsage, want) || len(c.UnknownExtKeyUsage) > 0 {
		fail("e_atr_server_ext_key_usage", "extended key usage %v (+%d unknown), want %v", c.ExtKeyUsage, len(c.UnknownExtKeyUsage), want)
	}
	if d := c.NotAfter.Sub(c.NotBefore); d <= 0 || d > MaxTLSServerLifetime+i.profile.Backdate {
		fail("e_atr_server_lifetime", "validity %v exceeds %v + backdate %v", d, MaxTLSServerLifetime, i.profile.Backdate)
	}
	return append(out, i.leafLints(c)...)
}
