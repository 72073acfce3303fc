package ca

import "net"

// The checks below are the ones NewIssuer and PrepareServer apply, exported
// so that a configuration can be refused when it is read (atr serve's
// Config.Validate) rather than when the server starts: one owner per rule.

// Validate reports whether p is within policy: a usable trust domain, a
// lifetime and backdate within bounds, absolute http(s) CRL and OCSP URLs.
// NewIssuer refuses exactly the profiles Validate refuses.
func (p Profile) Validate() error {
	_, err := p.withDefaults()
	return err
}

// ValidateTrustDomain reports whether td is a SPIFFE trust domain ATR can
// issue under: a lowercase, fully qualified DNS name with at least two labels.
func ValidateTrustDomain(td string) error { return validTrustDomain(td) }

// ValidateServerNames reports whether dns and ips can name a server
// certificate: at least one, at most MaxTLSServerNames, normalized lowercase
// DNS names, specified IP addresses, no repeats.
func ValidateServerNames(dns []string, ips []net.IP) error { return checkServerNames(dns, ips) }
