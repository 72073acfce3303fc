package ca

import (
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Verifier limits: bounded work per verification.
const (
	// MaxExtraIntermediates is the most caller-supplied intermediates Verify
	// considers; more is refused outright.
	MaxExtraIntermediates = 4
	// MaxChainLength is the longest chain (leaf and root included) accepted.
	MaxChainLength = 5
)

// Verifier verifies agent certificates by building a chain with
// x509.Certificate.Verify to a fixed set of roots (those held on the token).
// It never compares names to decide trust. It is safe for concurrent use.
type Verifier struct {
	roots         *x509.CertPool
	intermediates *x509.CertPool
	rootList      []*x509.Certificate
	interList     []*x509.Certificate
	trustDomain   string
	cache         *chainCache
}

// NewVerifier returns a Verifier trusting roots (at least one), knowing the
// given intermediates (the issuing CAs), for agents of trustDomain.
func NewVerifier(roots, intermediates []*x509.Certificate, trustDomain string) (*Verifier, error) {
	if len(roots) == 0 {
		return nil, errors.New("ca: new verifier: no roots")
	}
	if err := validTrustDomain(trustDomain); err != nil {
		return nil, fmt.Errorf("ca: new verifier: %w", err)
	}
	v := &Verifier{roots: x509.NewCertPool(), intermediates: x509.NewCertPool(), trustDomain: trustDomain,
		cache: newChainCache(DefaultChainCacheSize)}
	for k, r := range roots {
		if r == nil || !r.BasicConstraintsValid || !r.IsCA {
			return nil, fmt.Errorf("ca: new verifier: root %d is not a CA certificate", k)
		}
		v.roots.AddCert(r)
		v.rootList = append(v.rootList, r)
	}
	for k, c := range intermediates {
		if c == nil || !c.BasicConstraintsValid || !c.IsCA {
			return nil, fmt.Errorf("ca: new verifier: intermediate %d is not a CA certificate", k)
		}
		v.intermediates.AddCert(c)
		v.interList = append(v.interList, c)
	}
	return v, nil
}

// Roots returns the trusted roots (a copy of the slice).
func (v *Verifier) Roots() []*x509.Certificate {
	return append([]*x509.Certificate(nil), v.rootList...)
}

// Intermediates returns the known intermediates (a copy of the slice).
func (v *Verifier) Intermediates() []*x509.Certificate {
	return append([]*x509.Certificate(nil), v.interList...)
}

// Verify checks that leaf is a genuine, currently valid agent certificate
// at time now: a chain to one of the roots exists (through the known
// intermediates and at most MaxExtraIntermediates supplied in extra), every
// signature on it verifies, name constraints hold, every certificate is
// valid at now, the leaf is not a CA, has key usage digitalSignature and EKU
// clientAuth (checked through the chain), and carries exactly one agent
// SPIFFE ID in the trust domain. Failures are *VerifyError:
// ReasonUntrustedChain, ReasonExpired, ReasonNotYetValid, ReasonWrongUsage
// or ReasonNotAgent. Time reasons are reported only for chains that would
// otherwise verify, so a forged certificate is always "untrusted_chain".
// It does not check revocation: that is the registry's job.
func (v *Verifier) Verify(leaf *x509.Certificate, extra []*x509.Certificate, now time.Time) error {
	if leaf == nil {
		return &VerifyError{Reason: ReasonUntrustedChain, Err: errors.New("no certificate")}
	}
	if len(extra) > MaxExtraIntermediates {
		return &VerifyError{Reason: ReasonUntrustedChain, Err: fmt.Errorf("%d supplied intermediates, at most %d", len(extra), MaxExtraIntermediates)}
	}
	// A certificate's bytes never change and the roots are fixed for the
	// Verifier's life, so a chain that verified once verifies again at any
	// time inside the validity windows of the chain it was built on; only
	// the time is re-checked for a cached chain. Status (revocation) is the
	// caller's and is never cached here.
	key := chainKey(leaf, extra)
	if v.cache.valid(key, now) {
		return nil
	}
	inter := v.intermediates
	if len(extra) > 0 {
		inter = v.intermediates.Clone()
		for _, c := range extra {
			if c != nil {
				inter.AddCert(c)
			}
		}
	}
	opts := x509.VerifyOptions{
		Roots:         v.roots,
		Intermediates: inter,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	chains, err := v.chains(leaf, opts)
	if err != nil {
		var cie x509.CertificateInvalidError
		if errors.As(err, &cie) && cie.Reason == x509.Expired {
			return v.timeError(leaf, opts, cie, now)
		}
		if errors.As(err, &cie) && cie.Reason == x509.IncompatibleUsage {
			return &VerifyError{Reason: ReasonWrongUsage, Err: err}
		}
		return &VerifyError{Reason: ReasonUntrustedChain, Err: err}
	}
	if leaf.IsCA || leaf.KeyUsage&x509.KeyUsageDigitalSignature == 0 {
		return &VerifyError{Reason: ReasonWrongUsage, Err: errors.New("leaf is a CA or lacks digitalSignature key usage")}
	}
	if _, err := AgentName(leaf, v.trustDomain); err != nil {
		return &VerifyError{Reason: ReasonNotAgent, Err: err}
	}
	v.cache.add(key, chains[0])
	return nil
}

// DefaultChainCacheSize bounds the verified-chain cache of a Verifier.
const DefaultChainCacheSize = 1 << 16

// chainCache remembers chains that verified, keyed by the digest of the leaf
// and the supplied intermediates, with the window in which every certificate
// of the chain is valid. It is bounded; when full, an arbitrary entry goes
// (it is only a cache: a miss costs one chain verification).
type chainCache struct {
	mu  sync.Mutex
	m   map[[sha256.Size]byte]window
	max int
}

type window struct{ notBefore, notAfter time.Time }

func newChainCache(max int) *chainCache {
	return &chainCache{m: make(map[[sha256.Size]byte]window), max: max}
}

func chainKey(leaf *x509.Certificate, extra []*x509.Certificate) [sha256.Size]byte {
	h := sha256.New()
	h.Write(leaf.Raw)
	for _, c := range extra {
		if c != nil {
			d := sha256.Sum256(c.Raw)
			h.Write(d[:])
		}
	}
	var k [sha256.Size]byte
	h.Sum(k[:0])
	return k
}

func (c *chainCache) valid(key [sha256.Size]byte, now time.Time) bool {
	c.mu.Lock()
	w, ok := c.m[key]
	c.mu.Unlock()
	return ok && !now.Before(w.notBefore) && !now.After(w.notAfter)
}

func (c *chainCache) add(key [sha256.Size]byte, chain []*x509.Certificate) {
	w := window{notBefore: chain[0].NotBefore, notAfter: chain[0].NotAfter}
	for _, cert := range chain[1:] {
		if cert.NotBefore.After(w.notBefore) {
			w.notBefore = cert.NotBefore
		}
		if cert.NotAfter.Before(w.notAfter) {
			w.notAfter = cert.NotAfter
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[key]; !ok && len(c.m) >= c.max {
		for k := range c.m {
			delete(c.m, k)
			break
		}
	}
	c.m[key] = w
}

// chains runs x509 verification and enforces MaxChainLength.
func (v *Verifier) chains(leaf *x509.Certificate, opts x509.VerifyOptions) ([][]*x509.Certificate, error) {
	chains, err := leaf.Verify(opts)
	if err != nil {
		return nil, err
	}
	var ok [][]*x509.Certificate
	for _, c := range chains {
		if len(c) <= MaxChainLength {
			ok = append(ok, c)
		}
	}
	if len(ok) == 0 {
		return nil, fmt.Errorf("every chain is longer than %d certificates", MaxChainLength)
	}
	return ok, nil
}

// timeError classifies an x509.Expired failure. crypto/x509 checks the
// leaf's validity window before any signature (an intermediate or root out
// of its window surfaces as an UnknownAuthorityError instead), so the chain
// is re-verified at the edge of the offending certificate's window: only if
// it is genuine then is the failure reported as expired / not yet valid.
func (v *Verifier) timeError(leaf *x509.Certificate, opts x509.VerifyOptions, cie x509.CertificateInvalidError, now time.Time) error {
	if cie.Cert == nil {
		return &VerifyError{Reason: ReasonUntrustedChain, Err: cie}
	}
	reason, probe := ReasonExpired, cie.Cert.NotAfter
	if now.Before(cie.Cert.NotBefore) {
		reason, probe = ReasonNotYetValid, cie.Cert.NotBefore
	}
	opts.CurrentTime = probe
	if _, err := v.chains(leaf, opts); err != nil {
		var again x509.CertificateInvalidError
		if errors.As(err, &again) && again.Reason == x509.IncompatibleUsage {
			return &VerifyError{Reason: ReasonWrongUsage, Err: err}
		}
		return &VerifyError{Reason: ReasonUntrustedChain, Err: err}
	}
	return &VerifyError{Reason: reason, Err: cie}
}
