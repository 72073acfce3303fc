package registry

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/agent-trust-registry/atr/ca"
)

// Verify answers whether leafPEM is a genuine, current, unrevoked agent
// certificate. leafPEM holds the leaf, optionally followed by intermediates;
// chainPEM (optional) holds more intermediates. Both are parsed strictly
// with a 64 KiB cap (SEC-006, SEC-024); input that is not a certificate is
// ErrInvalid. Otherwise the result says Verified or gives a Reason:
//
//   - the chain is built cryptographically to the token-held roots
//     (ca.Verifier, never a subject comparison, SEC-003): untrusted_chain,
//     expired, not_yet_valid, wrong_usage;
//   - then the status comes from the registry by SHA-256 fingerprint:
//     unknown_certificate, revoked, superseded (after the rotation grace
//     period; inside it the result is verified with Status "superseded").
func (r *Registry) Verify(ctx context.Context, leafPEM, chainPEM []byte) (*VerifyResult, error) {
	if r.verify == nil {
		return nil, fmt.Errorf("registry: verify: no verifier configured: %w", bare(ErrUnavailable))
	}
	if len(leafPEM) > MaxPEMSize || len(chainPEM) > MaxPEMSize {
		return nil, invalid("certificate larger than 64 KiB", nil)
	}
	certs, err := r.parsedPEM.parse(leafPEM)
	if err != nil {
		return nil, invalid("certificate", err)
	}
	// Clipped: the parsed slices are shared with other requests, and the
	// append below must not write into them.
	leaf, extra := certs[0], slices.Clip(certs[1:])
	if len(chainPEM) > 0 {
		more, err := r.parsedPEM.parse(chainPEM)
		if err != nil {
			return nil, invalid("chain", err)
		}
		extra = append(extra, more...)
	}
	fp := sha256.Sum256(leaf.Raw)
	res := &VerifyResult{Serial: ca.FormatSerial(leaf.SerialNumber), FingerprintSHA256: hex.EncodeToString(fp[:]), NotAfter: leaf.NotAfter.UTC()}
	now := r.now()
	if err := r.verify.Verify(leaf, extra, now); err != nil {
		res.Reason = verifyReason(err)
		return res, nil
	}
	if revoked, err := r.issuerRevoked(ctx, hex.EncodeToString(leaf.AuthorityKeyId)); err != nil {
		return nil, err
	} else if revoked {
		res.Reason = ReasonIssuerRevoked
		return res, nil
	}
	row, err := r.verifyStatus(ctx, res.FingerprintSHA256)
	if errors.Is(err, ErrNotFound) {
		res.Reason = ReasonUnknownCertificate
		return res, nil
	}
	if err != nil {
		return nil, err
	}
	res.Agent, res.Status, res.LogIndex = row.Agent, row.Status, row.LogIndex
	st := statusAt(*row, now) // the rule CRL and OCSP apply too (status.go)
	res.Verified, res.Reason = st.good(), st.verifyReason
	return res, nil
}

// pemCache keeps the certificates parsed from the PEM inputs Verify saw
// last, by the SHA-256 of the exact bytes: relying parties verify the same
// certificate again and again, and parsing it (PEM, then X.509) was the
// largest share of a verify. Only successful parses of inputs up to
// pemCacheMaxInput bytes are kept (a leaf with its chain is 1–3 KB), so the
// cache holds at most a few tens of MB whatever anyone sends; the entries are
// shared and never modified. At pemCacheSize entries it starts over.
type pemCache struct {
	mu sync.Mutex
	m  map[[sha256.Size]byte][]*x509.Certificate
}

const (
	pemCacheSize     = 1024
	pemCacheMaxInput = 8 << 10
)

// pemParses counts the PEM inputs Verify parsed (tests).
var pemParses atomic.Int64

// parse is ca.ParseCertificatesPEM (default certificate count), cached.
func (c *pemCache) parse(data []byte) ([]*x509.Certificate, error) {
	key := sha256.Sum256(data)
	c.mu.Lock()
	certs, ok := c.m[key]
	c.mu.Unlock()
	if ok {
		return certs, nil
	}
	pemParses.Add(1)
	certs, err := ca.ParseCertificatesPEM(data, 0)
	if err != nil || len(data) > pemCacheMaxInput {
		return certs, err
	}
	c.mu.Lock()
	if c.m == nil || len(c.m) >= pemCacheSize {
		c.m = make(map[[sha256.Size]byte][]*x509.Certificate)
	}
	c.m[key] = slices.Clip(certs)
	c.mu.Unlock()
	return certs, nil
}

// verifyReason maps a ca verification failure onto the fixed reason set.
func verifyReason(err error) string {
	var ve *ca.VerifyError
	if !errors.As(err, &ve) {
		return ReasonUntrustedChain
	}
	switch ve.Reason {
	case ca.ReasonExpired:
		return ReasonExpired
	case ca.ReasonNotYetValid:
		return ReasonNotYetValid
	case ca.ReasonWrongUsage, ca.ReasonNotAgent:
		return ReasonWrongUsage
	}
	return ReasonUntrustedChain
}

// AuthenticateAgent authenticates an agent presenting chain over mTLS (leaf
// first): the chain must verify to the token-held roots, and the leaf must be
// the agent's current certificate (status issued — a superseded one, even
// inside its grace period, is refused) of an active agent. The Actor has
// AgentName and Owner set and no scopes; the only thing an agent may do is
// rotate itself. Every failure is ErrUnauthenticated.
func (r *Registry) AuthenticateAgent(ctx context.Context, chain []*x509.Certificate) (*Actor, error) {
	fail := func(why string) (*Actor, error) {
		r.log.WithField("reason", why).Warn("agent authentication failed")
		return nil, fmt.Errorf("registry: authenticate agent: %w", bare(ErrUnauthenticated))
	}
	if r.verify == nil {
		return nil, fmt.Errorf("registry: authenticate agent: no verifier configured: %w", bare(ErrUnavailable))
	}
	if len(chain) == 0 || chain[0] == nil {
		return fail("no certificate")
	}
	if err := r.verify.Verify(chain[0], chain[1:], r.now()); err != nil {
		return fail(verifyReason(err))
	}
	if revoked, err := r.issuerRevoked(ctx, hex.EncodeToString(chain[0].AuthorityKeyId)); err != nil {
		return nil, err
	} else if revoked {
		return fail(ReasonIssuerRevoked)
	}
	name, err := ca.AgentName(chain[0], r.cfg.TrustDomain)
	if err != nil {
		return fail("not an agent certificate")
	}
	fp := sha256.Sum256(chain[0].Raw)
	row, err := certs(r.store.db).ByFingerprint(ctx, hex.EncodeToString(fp[:]))
	if errors.Is(err, ErrNotFound) {
		return fail(ReasonUnknownCertificate)
	}
	if err != nil {
		return nil, err
	}
	if row.Status != CertIssued || row.Agent != name {
		return fail("certificate is not current")
	}
	agent, err := r.loadAgent(ctx, r.store.db, name, false)
	if err != nil {
		return nil, err
	}
	if agent.Status != AgentActive || agent.CurrentSerial != row.Serial {
		return fail("agent is not active")
	}
	return &Actor{AgentName: name, Owner: agent.Owner}, nil
}
