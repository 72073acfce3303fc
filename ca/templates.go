package ca

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"net"
	"time"
)

// Ceremony and server certificate limits.
const (
	DefaultRootLifetime         = 10 * 365 * 24 * time.Hour
	MaxRootLifetime             = 25 * 365 * 24 * time.Hour
	DefaultIntermediateLifetime = 365 * 24 * time.Hour
	MaxIntermediateLifetime     = 2 * 365 * 24 * time.Hour
	DefaultServerLifetime       = 30 * 24 * time.Hour
	MaxServerLifetime           = 90 * 24 * time.Hour
	// caBackdate is how far CA and server templates are backdated.
	caBackdate = time.Minute
)

func caValidity(lifetime, def, max time.Duration, now time.Time) (time.Time, time.Time, error) {
	if lifetime == 0 {
		lifetime = def
	}
	if lifetime < time.Hour || lifetime > max {
		return time.Time{}, time.Time{}, fmt.Errorf("lifetime %v outside [1h, %v]", lifetime, max)
	}
	now = now.UTC().Truncate(time.Second)
	return now.Add(-caBackdate), now.Add(lifetime), nil
}

func checkCN(cn string) error {
	if cn == "" || len(cn) > 64 {
		return errors.New("common name must be 1-64 characters")
	}
	for i := 0; i < len(cn); i++ {
		if cn[i] < 0x20 || cn[i] >= 0x7f {
			return errors.New("common name must be printable ASCII")
		}
	}
	return nil
}

// RootTemplate returns the template of a self-signed root CA certificate
// with subject CN=cn: pathLen 1 (root → issuing CA → leaf), key usage
// keyCertSign|cRLSign (critical), a random 128-bit serial, backdated one
// minute. lifetime 0 means DefaultRootLifetime; at most MaxRootLifetime.
// Sign it with CreateCertificate(tmpl, tmpl, pub, signer).
func RootTemplate(cn string, lifetime time.Duration, now time.Time) (*x509.Certificate, error) {
	t, err := caTemplate(cn, lifetime, DefaultRootLifetime, MaxRootLifetime, now)
	if err != nil {
		return nil, fmt.Errorf("ca: root template: %w", err)
	}
	t.MaxPathLen = 1
	t.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign
	return t, nil
}

// caTemplate is what root and issuing CA templates share: subject CN=cn, a
// random serial, the validity window (lifetime 0 means def, at most max),
// and the CA basic constraints.
func caTemplate(cn string, lifetime, def, max time.Duration, now time.Time) (*x509.Certificate, error) {
	if err := checkCN(cn); err != nil {
		return nil, err
	}
	nb, na, err := caValidity(lifetime, def, max, now)
	if err != nil {
		return nil, err
	}
	serial, err := NewSerial(rand.Reader)
	if err != nil {
		return nil, err
	}
	return &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             nb,
		NotAfter:              na,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}, nil
}

// IntermediateOptions are the choices of the issuing CA profile.
type IntermediateOptions struct {
	// CRLURL, when set, is the intermediate's CRL distribution point: where
	// its root publishes the CRL of revoked intermediates (an http URL, RFC
	// 5280 4.2.1.13).
	CRLURL string
	// URINameConstraint adds a critical name constraints extension
	// permitting only URI SANs whose host is the trust domain, so that
	// relying parties which process it (Go's crypto/x509, OpenSSL,
	// go-spiffe) refuse a leaf outside the trust domain even if the issuing
	// key were misused. pyca/cryptography's X.509 verifier (43 and later,
	// the Python relying parties) does not support URI name constraints and
	// rejects every chain through such an intermediate, critical or not.
	// Without it the trust domain is enforced by ATR itself: issuance builds
	// the only URI SAN from the profile's trust domain, the e_atr_one_uri_san
	// lint refuses any other before the issuing key signs, and Verifier
	// refuses a leaf outside the trust domain (ReasonNotAgent).
	URINameConstraint bool
}

// IntermediateTemplate returns the template of the issuing CA certificate
// with subject CN=cn, with the URI name constraint (IntermediateOptions
// URINameConstraint: true); see IntermediateTemplateWithOptions. The key
// ceremony chooses the options itself (atr ceremony intermediate
// --uri-name-constraint).
func IntermediateTemplate(cn, trustDomain string, lifetime time.Duration, now time.Time) (*x509.Certificate, error) {
	return IntermediateTemplateWithOptions(cn, trustDomain, lifetime, now, IntermediateOptions{URINameConstraint: true})
}

// IntermediateTemplateWithOptions returns the template of the issuing CA
// certificate with subject CN=cn: pathLen 0 (it may only issue leaves), key
// usage keyCertSign|cRLSign|digitalSignature (the last for signing OCSP
// responses directly), and, with opts.URINameConstraint, critical name
// constraints permitting only URI SANs whose host is trustDomain (other name
// types are not constrained, which lets it issue the registry's TLS server
// certificate). lifetime 0 means DefaultIntermediateLifetime; at most
// MaxIntermediateLifetime (2 years).
func IntermediateTemplateWithOptions(cn, trustDomain string, lifetime time.Duration, now time.Time, opts IntermediateOptions) (*x509.Certificate, error) {
	if err := validTrustDomain(trustDomain); err != nil {
		return nil, fmt.Errorf("ca: intermediate template: %w", err)
	}
	t, err := caTemplate(cn, lifetime, DefaultIntermediateLifetime, MaxIntermediateLifetime, now)
	if err != nil {
		return nil, fmt.Errorf("ca: intermediate template: %w", err)
	}
	t.MaxPathLen, t.MaxPathLenZero = 0, true
	t.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature
	if opts.CRLURL != "" {
		t.CRLDistributionPoints = []string{opts.CRLURL}
	}
	if opts.URINameConstraint {
		t.PermittedURIDomains = []string{trustDomain}
		// Go marks the whole name constraints extension critical with this.
		t.PermittedDNSDomainsCritical = true
	}
	return t, nil
}

// ServerTemplate returns the template of a TLS server certificate for the
// registry itself: the given DNS and IP SANs (at least one), subject CN = the
// first DNS name (or empty with a critical SAN when there is none), EKU
// serverAuth, key usage digitalSignature, a random serial. lifetime 0 means
// DefaultServerLifetime; at most MaxServerLifetime.
func ServerTemplate(dnsNames []string, ips []net.IP, lifetime time.Duration, now time.Time) (*x509.Certificate, error) {
	if len(dnsNames)+len(ips) == 0 {
		return nil, errors.New("ca: server template: no DNS names or IP addresses")
	}
	for _, d := range dnsNames {
		n, err := NormalizeAgentName(d) // same DNS-label rules
		if err != nil || n != d {
			return nil, fmt.Errorf("ca: server template: DNS name %q is not a lowercase DNS name", d)
		}
	}
	for _, ip := range ips {
		if ip.To16() == nil {
			return nil, errors.New("ca: server template: malformed IP address")
		}
	}
	nb, na, err := caValidity(lifetime, DefaultServerLifetime, MaxServerLifetime, now)
	if err != nil {
		return nil, fmt.Errorf("ca: server template: %w", err)
	}
	serial, err := NewSerial(rand.Reader)
	if err != nil {
		return nil, err
	}
	t := &x509.Certificate{
		SerialNumber:          serial,
		NotBefore:             nb,
		NotAfter:              na,
		DNSNames:              append([]string(nil), dnsNames...),
		IPAddresses:           append([]net.IP(nil), ips...),
		BasicConstraintsValid: true,
		IsCA:                  false,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if len(dnsNames) > 0 {
		t.Subject = pkix.Name{CommonName: dnsNames[0]}
	}
	return t, nil
}

// CreateCertificate signs tmpl with signer as parent (pass tmpl as parent for
// a self-signed certificate) for the subject key pub, parses the result and
// checks its signature against parent's public key — or, when self-signed,
// against its own — so that a misbehaving signer is caught. For a
// self-signed certificate pub must be signer's public key.
func CreateCertificate(tmpl, parent *x509.Certificate, pub crypto.PublicKey, signer crypto.Signer) (*x509.Certificate, error) {
	if tmpl == nil || parent == nil || pub == nil || signer == nil {
		return nil, errors.New("ca: create certificate: nil argument")
	}
	selfSigned := tmpl == parent
	if selfSigned {
		sp, ok := signer.Public().(interface{ Equal(crypto.PublicKey) bool })
		if !ok || !sp.Equal(pub) {
			return nil, errors.New("ca: create certificate: self-signed certificate's key is not the signer's")
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, signer)
	if err != nil {
		return nil, fmt.Errorf("ca: create certificate: %w", err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("ca: create certificate: parsing result: %w", err)
	}
	issuer := parent
	if selfSigned {
		issuer = c
	}
	if err := c.CheckSignatureFrom(issuer); err != nil {
		return nil, fmt.Errorf("ca: create certificate: signature does not verify: %w", err)
	}
	if !selfSigned && len(parent.Raw) > 0 && !bytes.Equal(c.RawIssuer, parent.RawSubject) {
		return nil, errors.New("ca: create certificate: issuer name does not match parent's subject")
	}
	return c, nil
}
