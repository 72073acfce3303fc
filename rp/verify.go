package rp

// verify.go: is this certificate a genuine, current, unrevoked ATR agent
// certificate? Chain building to pinned roots, revocation status from CRLs
// (given, or fetched from the distribution points) and OCSP (the leaf's
// AIA), and the registry's own answer (POST /v1/verify) through an
// OnlineChecker the caller provides.

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/url"
	"time"

	"golang.org/x/crypto/ocsp"

	"github.com/agent-trust-registry/atr/ca"
)

// Reason is why a certificate did not verify. The chain reasons are those
// of ca.Verifier (ca.Reason); the others are the relying party's.
type Reason string

// The reasons of a Result that did not verify.
const (
	ReasonUntrusted   = Reason(ca.ReasonUntrustedChain) // no chain to a pinned root
	ReasonExpired     = Reason(ca.ReasonExpired)        // a certificate of the chain expired
	ReasonNotYetValid = Reason(ca.ReasonNotYetValid)    // a certificate of the chain not valid yet
	ReasonWrongUsage  = Reason(ca.ReasonWrongUsage)     // not an agent client certificate
	ReasonNotAgent    = Reason(ca.ReasonNotAgent)       // no (single, valid) agent SPIFFE ID
	// ReasonWrongTrustDomain: a genuine agent certificate, of another trust
	// domain than the one pinned (Verifier.TrustDomain).
	ReasonWrongTrustDomain Reason = "wrong_trust_domain"
	// ReasonRevoked: the leaf is revoked (a CRL entry or an OCSP answer
	// "revoked" from its issuer). Result.Revocation holds the evidence.
	ReasonRevoked Reason = "revoked"
	// ReasonSuperseded: the leaf is revoked with reason superseded (its
	// agent rotated to a new certificate).
	ReasonSuperseded Reason = "superseded"
	// ReasonIssuerRevoked: an issuing CA of the chain is revoked by its own
	// issuer's CRL (e.g. the root CRL of an intermediate rotation
	// ceremony). Result.Revocation names the revoked CA certificate.
	ReasonIssuerRevoked Reason = "issuer_revoked"
	// ReasonStatusUnknown: the leaf's OCSP responder does not know it.
	ReasonStatusUnknown Reason = "status_unknown"
	// ReasonOnline: the registry answered "not verified"; Result.Online
	// holds its answer and its own reason.
	ReasonOnline Reason = "online"
)

// ErrStatus is wrapped by every error of Verifier.Verify that left the
// certificate's revocation status undetermined: no usable CRL (missing,
// not signed by the right issuer, not current, unfetchable) or no usable
// OCSP answer. Such a certificate is neither accepted nor refused.
var ErrStatus = errors.New("rp: revocation status unknown")

func statusErr(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrStatus}, args...)...)
}

// OnlineChecker asks the registry about a certificate (POST /v1/verify;
// api/client.Client.VerifyWithoutReceipt does, through a small adapter:
// OnlineStatus keeps no log receipt). An error is a failure to ask, not a
// refusal.
type OnlineChecker interface {
	CheckOnline(ctx context.Context, leaf *x509.Certificate, chain []*x509.Certificate) (*OnlineStatus, error)
}

// OnlineStatus is the registry's answer.
type OnlineStatus struct {
	Verified          bool
	Agent             string
	Status            string // the registry's status: issued, revoked, superseded…
	Reason            string // the registry's reason when not verified
	Serial            string
	FingerprintSHA256 string
	NotAfter          *time.Time
	LogIndex          *int64
}

// Verifier checks agent certificates as a relying party: a chain to Roots
// (ca.Verifier), then the revocation status of every certificate of the
// chain it can learn, then, when Online is set, the registry's answer. The
// zero value is unusable: Roots (with at least one revocation source:
// CRLs, FetchCRLs, OCSP or Online) or Online alone is required. It is safe
// for concurrent use when its fields are not changed.
type Verifier struct {
	// Roots are the trusted self-signed roots; Intermediates the issuing
	// CAs chains may be built through (SplitBundle of GET /v1/ca/bundle).
	// With no Roots the chain is not checked here: Online must be set, and
	// the registry checks it.
	Roots, Intermediates []*x509.Certificate
	// TrustDomain pins the agents' SPIFFE trust domain; "" accepts the
	// certificate's own, bounded only by an issuing CA's URI name
	// constraint when it has one.
	TrustDomain string

	// CRLs are CRLs the caller holds (LoadCRL). Each certificate of the
	// chain is looked up in the CRL of its issuer in the chain: same issuer
	// name, authority key identifier and a signature that verifies under
	// the issuer's key, current at the time of the check. With CRLs or
	// FetchCRLs the leaf's issuer's CRL is required; an issuing CA's is
	// checked when there is one for its issuer (given, or fetched from the
	// CA's distribution point).
	CRLs []*x509.RevocationList
	// FetchCRLs fetches, for each certificate of the chain with no CRL of
	// its issuer in CRLs, the CRL from its first http(s) CRL distribution
	// point, with HTTPClient.
	FetchCRLs bool
	// OCSP asks the leaf's OCSP responder (its first http(s) AIA OCSP URL)
	// with HTTPClient; the answer must be signed by the leaf's issuer (or a
	// responder it delegated to), be for the leaf, and be current.
	OCSP bool
	// HTTPClient fetches CRLs and OCSP answers; nil: a client with a 30 s
	// timeout.
	HTTPClient *http.Client

	// Online, when set, asks the registry last, after every local check
	// passed.
	Online OnlineChecker
}

// Result is the outcome of Verifier.Verify: Verified, or the Reason it is
// not with its evidence.
type Result struct {
	Verified bool
	Reason   Reason // "" when Verified
	// Err is the detail of a chain refusal (a *ca.VerifyError).
	Err error

	Agent, TrustDomain string
	Serial             string // ca.FormatSerial
	FingerprintSHA256  string
	NotAfter           time.Time
	// Chain is the verified chain, leaf first, root last (nil without Roots).
	Chain []*x509.Certificate

	// CRL is the CRL of the leaf's issuer that was consulted, if any.
	CRL *x509.RevocationList
	// OCSP is the OCSP answer for the leaf, if asked.
	OCSP *ocsp.Response
	// Revocation is the evidence of ReasonRevoked, ReasonSuperseded and
	// ReasonIssuerRevoked.
	Revocation *RevocationEvidence
	// Online is the registry's answer, if asked.
	Online *OnlineStatus
}

// RevocationEvidence is what showed a certificate of the chain revoked.
type RevocationEvidence struct {
	Certificate *x509.Certificate // the revoked certificate: the leaf or an issuing CA
	Issuer      *x509.Certificate // who revoked it (signed the CRL or OCSP answer)
	ReasonCode  int               // RFC 5280 reason code (ca.ReasonName)
	RevokedAt   time.Time
	// From a CRL: the CRL and its entry.
	CRL   *x509.RevocationList
	Entry *x509.RevocationListEntry
	// From OCSP: the answer.
	OCSP *ocsp.Response
}

// Verify checks leaf, presented with the intermediates extra, at now:
//
//  1. with Roots: a chain to Roots (ca.Verifier.Verify: signatures, name
//     constraints, validity at now, key usage, EKU clientAuth, one agent
//     SPIFFE ID in the trust domain);
//  2. CRLs (CRLs, FetchCRLs): each certificate of the chain against its
//     issuer's CRL;
//  3. OCSP: the leaf's status from its issuer's responder;
//  4. Online: the registry's answer.
//
// A certificate that does not verify is a Result with Verified false and
// its Reason, with a nil error. An error means nothing was decided: a
// misconfigured Verifier, an undeterminable status (wrapping ErrStatus) or
// a failure to ask the registry.
func (v *Verifier) Verify(ctx context.Context, leaf *x509.Certificate, extra []*x509.Certificate, now time.Time) (*Result, error) {
	if leaf == nil {
		return nil, errors.New("rp: verify: no certificate")
	}
	res := &Result{Serial: ca.FormatSerial(leaf.SerialNumber), FingerprintSHA256: ca.Fingerprint(leaf), NotAfter: leaf.NotAfter}
	switch {
	case len(v.Roots) == 0 && v.Online == nil:
		return nil, errors.New("rp: verify: no roots and no online check")
	case len(v.Roots) > 0 && len(v.CRLs) == 0 && !v.FetchCRLs && !v.OCSP && v.Online == nil:
		return nil, errors.New("rp: verify: no revocation source (CRLs, FetchCRLs, OCSP or Online)")
	}
	if len(v.Roots) > 0 {
		if done, err := v.verifyChain(res, leaf, extra, now); done || err != nil {
			return res, err
		}
		if done, err := v.checkCRLs(ctx, res, now); done || err != nil {
			return res, err
		}
		if v.OCSP {
			if done, err := v.checkOCSP(ctx, res, now); done || err != nil {
				return res, err
			}
		}
	}
	if len(v.Roots) == 0 && v.TrustDomain != "" {
		// verifyChain pins the trust domain; without roots, pin it here.
		if _, td, err := ca.AgentIdentity(leaf); err != nil {
			res.refuse(ReasonNotAgent, err)
			return res, nil
		} else if td != v.TrustDomain {
			res.refuse(ReasonWrongTrustDomain, fmt.Errorf("trust domain %q, not %q", td, v.TrustDomain))
			return res, nil
		}
	}
	if v.Online != nil {
		st, err := v.Online.CheckOnline(ctx, leaf, extra)
		if err != nil {
			return res, fmt.Errorf("rp: verify: online: %w", err)
		}
		res.Online = st
		if res.Agent == "" {
			res.Agent = st.Agent
		}
		if !st.Verified {
			res.Reason = ReasonOnline
			return res, nil
		}
	}
	res.Verified = true
	return res, nil
}

// refuse sets a refusal on res; the bool is "done".
func (r *Result) refuse(reason Reason, err error) (bool, error) {
	r.Reason, r.Err = reason, err
	return true, nil
}

// verifyChain is step 1: it fills res.Chain, Agent and TrustDomain.
func (v *Verifier) verifyChain(res *Result, leaf *x509.Certificate, extra []*x509.Certificate, now time.Time) (bool, error) {
	td := v.TrustDomain
	ownName, ownTD, ownErr := ca.AgentIdentity(leaf)
	if td == "" {
		if ownErr != nil {
			return res.refuse(ReasonNotAgent, ownErr)
		}
		td = ownTD
	}
	cv, err := ca.NewVerifier(v.Roots, v.Intermediates, td)
	if err != nil {
		return false, fmt.Errorf("rp: verify: %w", err)
	}
	if err := cv.Verify(leaf, extra, now); err != nil {
		var ve *ca.VerifyError
		if !errors.As(err, &ve) {
			return false, fmt.Errorf("rp: verify: %w", err)
		}
		if ve.Reason == ca.ReasonNotAgent && ownErr == nil && ownTD != td {
			return res.refuse(ReasonWrongTrustDomain, fmt.Errorf("the certificate is of trust domain %q, not %q: %w", ownTD, td, err))
		}
		return res.refuse(Reason(ve.Reason), err)
	}
	res.Agent, res.TrustDomain = ownName, td
	if name, err := ca.AgentName(leaf, td); err == nil {
		res.Agent = name
	}
	// ca.Verifier proved a chain exists; build it to learn the issuers.
	inter := x509.NewCertPool()
	for _, c := range append(append([]*x509.Certificate{}, v.Intermediates...), extra...) {
		inter.AddCert(c)
	}
	roots := x509.NewCertPool()
	for _, c := range v.Roots {
		roots.AddCert(c)
	}
	chains, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	if err != nil || len(chains) == 0 || len(chains[0]) < 2 {
		return false, fmt.Errorf("rp: verify: building the verified chain again: %v", err)
	}
	res.Chain = chains[0]
	return false, nil
}

// checkCRLs is step 2.
func (v *Verifier) checkCRLs(ctx context.Context, res *Result, now time.Time) (bool, error) {
	if len(v.CRLs) == 0 && !v.FetchCRLs {
		return false, nil
	}
	// From the root down: a revoked CA explains its leaf's refusal first.
	for i := len(res.Chain) - 2; i >= 0; i-- {
		cert, issuer := res.Chain[i], res.Chain[i+1]
		crl, err := v.crlFor(ctx, cert, issuer, now, i == 0)
		if err != nil {
			return false, err
		}
		if crl == nil {
			continue // an issuing CA with no CRL of its issuer at hand
		}
		if i == 0 {
			res.CRL = crl
		}
		e := CRLEntry(crl, cert.SerialNumber)
		if e == nil {
			continue
		}
		ev := &RevocationEvidence{Certificate: cert, Issuer: issuer, ReasonCode: e.ReasonCode, RevokedAt: e.RevocationTime, CRL: crl, Entry: e}
		res.Revocation = ev
		switch {
		case i > 0:
			return res.refuse(ReasonIssuerRevoked, fmt.Errorf("issuing CA %q (serial %s) is revoked by %q", cert.Subject, ca.FormatSerial(cert.SerialNumber), issuer.Subject))
		case e.ReasonCode == 4: // superseded
			return res.refuse(ReasonSuperseded, nil)
		default:
			return res.refuse(ReasonRevoked, nil)
		}
	}
	return false, nil
}

// crlFor returns the CRL of issuer for cert: one of v.CRLs, else fetched.
// required: the leaf's, which must be found.
func (v *Verifier) crlFor(ctx context.Context, cert, issuer *x509.Certificate, now time.Time, required bool) (*x509.RevocationList, error) {
	var (
		lastErr error
		newest  *x509.RevocationList
	)
	for _, crl := range v.CRLs {
		if !bytes.Equal(crl.RawIssuer, issuer.RawSubject) {
			continue
		}
		if err := CheckCRL(crl, issuer, now); err != nil {
			lastErr = err
			continue
		}
		// Of several current CRLs of one issuer, the newest (highest CRL
		// number, then latest thisUpdate): an older one may predate a
		// revocation.
		if newest == nil || newerCRL(crl, newest) {
			newest = crl
		}
	}
	if newest != nil {
		return newest, nil
	}
	if lastErr != nil && (!v.FetchCRLs || len(cert.CRLDistributionPoints) == 0) {
		return nil, statusErr("the CRL of %q: %v", issuer.Subject, lastErr)
	}
	if v.FetchCRLs && len(cert.CRLDistributionPoints) > 0 {
		crl, err := v.fetchCRL(ctx, cert.CRLDistributionPoints[0])
		if err != nil {
			return nil, err
		}
		if err := CheckCRL(crl, issuer, now); err != nil {
			return nil, statusErr("the CRL of %q from %s: %v", issuer.Subject, cert.CRLDistributionPoints[0], err)
		}
		return crl, nil
	}
	if required {
		if lastErr == nil && len(v.CRLs) > 0 {
			lastErr = errors.New("not issued by the certificate's issuing CA")
		} else if lastErr == nil {
			lastErr = errors.New("the certificate has no CRL distribution point")
		}
		return nil, statusErr("no CRL of %q: %v", issuer.Subject, lastErr)
	}
	return nil, nil
}

func (v *Verifier) client() *http.Client {
	if v.HTTPClient != nil {
		return v.HTTPClient
	}
	return &http.Client{Timeout: 30 * time.Second}
}

// httpURL accepts only absolute http and https URLs.
func httpURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%q is not an http(s) URL", raw)
	}
	return nil
}

// fetch does req and returns the body of a 200 answer, at most max bytes.
func (v *Verifier) fetch(req *http.Request, max int64) ([]byte, error) {
	resp, err := v.client().Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("HTTP status %s", resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(body)) > max {
		return nil, fmt.Errorf("answer larger than %d bytes", max)
	}
	return body, nil
}

func (v *Verifier) fetchCRL(ctx context.Context, cdp string) (*x509.RevocationList, error) {
	if err := httpURL(cdp); err != nil {
		return nil, statusErr("CRL distribution point: %v", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, cdp, nil)
	if err != nil {
		return nil, statusErr("fetching the CRL: %v", err)
	}
	body, err := v.fetch(req, MaxCRLSize)
	if err != nil {
		return nil, statusErr("fetching the CRL from %s: %v", cdp, err)
	}
	crl, err := ParseCRL(body)
	if err != nil {
		return nil, statusErr("the CRL from %s: %v", cdp, err)
	}
	return crl, nil
}

// maxOCSPResponse bounds an OCSP answer.
const maxOCSPResponse = 64 << 10

// checkOCSP is step 3.
func (v *Verifier) checkOCSP(ctx context.Context, res *Result, now time.Time) (bool, error) {
	leaf, issuer := res.Chain[0], res.Chain[1]
	if len(leaf.OCSPServer) == 0 {
		return false, statusErr("the certificate names no OCSP responder")
	}
	u := leaf.OCSPServer[0]
	if err := httpURL(u); err != nil {
		return false, statusErr("OCSP responder: %v", err)
	}
	q, err := ocsp.CreateRequest(leaf, issuer, nil)
	if err != nil {
		return false, statusErr("OCSP request: %v", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(q))
	if err != nil {
		return false, statusErr("OCSP request: %v", err)
	}
	req.Header.Set("Content-Type", "application/ocsp-request")
	req.Header.Set("Accept", "application/ocsp-response")
	body, err := v.fetch(req, maxOCSPResponse)
	if err != nil {
		return false, statusErr("asking %s: %v", u, err)
	}
	r, err := CheckOCSP(body, leaf, issuer, now)
	if err != nil {
		return false, err
	}
	res.OCSP = r
	switch r.Status {
	case ocsp.Good:
		return false, nil
	case ocsp.Revoked:
		res.Revocation = &RevocationEvidence{Certificate: leaf, Issuer: issuer, ReasonCode: r.RevocationReason, RevokedAt: r.RevokedAt, OCSP: r}
		if r.RevocationReason == ocsp.Superseded {
			return res.refuse(ReasonSuperseded, nil)
		}
		return res.refuse(ReasonRevoked, nil)
	default:
		return res.refuse(ReasonStatusUnknown, fmt.Errorf("OCSP status %d", r.Status))
	}
}

// CheckOCSP parses an OCSP answer for leaf and checks it: signed by issuer
// itself, for leaf's serial, and current at now (thisUpdate ≤ now <
// nextUpdate; an answer without nextUpdate is refused, since requests carry
// no nonce and it could be replayed forever). Failures wrap ErrStatus.
//
// ATR's responders sign with the issuing CA's key and embed no certificate.
// An answer that embeds a responder certificate other than issuer is
// refused: x/crypto/ocsp accepts any certificate issuer signed as the
// responder (no OCSP-signing usage, validity or revocation check), so the
// holder of any leaf key — the revoked leaf's own — could otherwise vouch
// for itself.
func CheckOCSP(der []byte, leaf, issuer *x509.Certificate, now time.Time) (*ocsp.Response, error) {
	r, err := ocsp.ParseResponseForCert(der, leaf, issuer)
	if err != nil {
		return nil, statusErr("OCSP answer: %v", err)
	}
	if r.Certificate != nil && !r.Certificate.Equal(issuer) {
		return nil, statusErr("OCSP answer signed by a delegated responder %q; only the issuer's own signature is accepted", r.Certificate.Subject)
	}
	if r.SerialNumber == nil || r.SerialNumber.Cmp(leaf.SerialNumber) != 0 {
		return nil, statusErr("OCSP answer for serial %v, not %s", r.SerialNumber, ca.FormatSerial(leaf.SerialNumber))
	}
	if now.Before(r.ThisUpdate) {
		return nil, statusErr("OCSP answer not valid before %s", r.ThisUpdate.UTC().Format(time.RFC3339))
	}
	if r.NextUpdate.IsZero() {
		return nil, statusErr("OCSP answer without nextUpdate")
	}
	if !now.Before(r.NextUpdate) {
		return nil, statusErr("OCSP answer stale: nextUpdate %s has passed", r.NextUpdate.UTC().Format(time.RFC3339))
	}
	return r, nil
}

// newerCRL reports whether a is newer than b: a higher CRL number, or the
// same (or no) number and a later thisUpdate.
func newerCRL(a, b *x509.RevocationList) bool {
	if a.Number != nil && b.Number != nil {
		if c := a.Number.Cmp(b.Number); c != 0 {
			return c > 0
		}
	}
	return a.ThisUpdate.After(b.ThisUpdate)
}

// CheckCRL checks that issuer issued crl (issuer name, authority key
// identifier when both carry one, signature) and that crl is current at
// now (thisUpdate ≤ now < nextUpdate).
func CheckCRL(crl *x509.RevocationList, issuer *x509.Certificate, now time.Time) error {
	if !bytes.Equal(crl.RawIssuer, issuer.RawSubject) {
		return errors.New("not issued by the certificate's issuing CA")
	}
	if len(crl.AuthorityKeyId) > 0 && len(issuer.SubjectKeyId) > 0 && !bytes.Equal(crl.AuthorityKeyId, issuer.SubjectKeyId) {
		return errors.New("authority key identifier does not match the issuing CA")
	}
	if err := crl.CheckSignatureFrom(issuer); err != nil {
		return fmt.Errorf("signature does not verify under the issuing CA: %w", err)
	}
	if now.Before(crl.ThisUpdate) {
		return fmt.Errorf("not valid before %s", crl.ThisUpdate.UTC().Format(time.RFC3339))
	}
	if crl.NextUpdate.IsZero() {
		return errors.New("no nextUpdate: cannot tell whether it is current")
	}
	if !now.Before(crl.NextUpdate) {
		return fmt.Errorf("stale: nextUpdate %s has passed (fetch a fresh CRL)", crl.NextUpdate.UTC().Format(time.RFC3339))
	}
	return nil
}

// CRLEntry returns crl's entry for serial, or nil.
func CRLEntry(crl *x509.RevocationList, serial *big.Int) *x509.RevocationListEntry {
	for i := range crl.RevokedCertificateEntries {
		if crl.RevokedCertificateEntries[i].SerialNumber.Cmp(serial) == 0 {
			return &crl.RevokedCertificateEntries[i]
		}
	}
	return nil
}
