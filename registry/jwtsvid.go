package registry

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/agent-trust-registry/atr/ca"
)

// JWT-SVIDs (SPIFFE JWT-SVID specification): short-lived JWTs an agent
// authenticated by its certificate gets for audiences it names, signed by
// Config.JWTSigner, an ES256 key on the token. The policy (lifetime at most
// 5 minutes and never past the certificate, audience limits, claims,
// signature checked after signing) is ca.JWTSigner's; this file decides who
// gets one and publishes the keys.
//
// Who: an agent actor (AuthenticateAgent) presenting its current
// certificate. A revoked certificate, a revoked agent, an expired
// certificate and a superseded certificate get none — not even during the
// rotation grace, which only keeps the old certificate verifying for
// connections already under way: a token would carry the old credential
// 5 minutes further, and the agent already holds the new certificate.

// ActionJWTSVID is the audit action of a JWT-SVID issuance (the token itself
// is never recorded: its jti, audiences, kid and expiry are).
const ActionJWTSVID = "agent.jwt_svid"

// ErrJWTSVIDDisabled is wrapped (together with ErrUnavailable) by
// IssueJWTSVID when the registry has no JWT-SVID key.
var ErrJWTSVIDDisabled = errors.New("registry: JWT-SVIDs are off (no JWT-SVID key; run 'atr ceremony jwt-key')")

// JWTSVIDRequest is what an agent asks for.
type JWTSVIDRequest struct {
	// Audience is the aud claim: 1 to ca.MaxJWTAudiences values.
	Audience []string
	// TTL is the lifetime asked for: 0 for ca.DefaultJWTSVIDLifetime, else
	// ca.MinJWTSVIDLifetime to ca.MaxJWTSVIDLifetime in whole seconds. The
	// token never outlives the agent's certificate.
	TTL time.Duration
	// Issuer, optional, is the iss claim: the registry's public URL, the
	// issuer of its OpenID discovery document. Set by the api from its
	// configuration, never from the request.
	Issuer string
}

// JWTSVID is an issued JWT-SVID.
type JWTSVID struct {
	Token     string // compact JWS: hand it to the audience, never log it
	SPIFFEID  string // sub
	Audience  []string
	KeyID     string
	ID        string // jti
	IssuedAt  time.Time
	ExpiresAt time.Time
}

// IssueJWTSVID signs a JWT-SVID for the agent a (an agent actor from
// AuthenticateAgent) that presented cert over mTLS. It checks, again and
// against the database, that cert is the agent's current certificate
// (issued, not superseded or revoked, within its validity) and that the
// agent is active; a refusal wraps ErrUnauthenticated. An API key actor gets
// ErrForbidden (owners cannot mint tokens for their agents), a request
// outside the policy ErrInvalid (wrapping a *ca.PolicyError), a registry
// without a JWT-SVID key ErrJWTSVIDDisabled and ErrUnavailable. Every
// issuance and refusal is audited; an issuance that cannot be audited is
// not returned.
func (r *Registry) IssueJWTSVID(ctx context.Context, a Actor, cert *x509.Certificate, req JWTSVIDRequest) (*JWTSVID, error) {
	if r.cfg.JWTSigner == nil {
		return nil, fmt.Errorf("registry: jwt-svid: %w: %w", bare(ErrJWTSVIDDisabled), bare(ErrUnavailable))
	}
	signer, err := ca.NewJWTSigner(r.cfg.JWTSigner)
	if err != nil {
		return nil, fmt.Errorf("registry: jwt-svid: JWT-SVID key: %v: %w", err, bare(ErrUnavailable))
	}
	if a.AgentName == "" {
		return nil, r.deny(ctx, a, ActionJWTSVID, "", fmt.Errorf("registry: jwt-svid: only an agent over mTLS gets a JWT-SVID: %w", bare(ErrForbidden)))
	}
	name := a.AgentName
	if err := ca.CheckJWTAudience(req.Audience); err != nil {
		return nil, wrap("jwt-svid", invalid("audience", err))
	}
	if err := ca.CheckJWTSVIDLifetime(req.TTL); err != nil {
		return nil, wrap("jwt-svid", invalid("ttl", err))
	}
	if err := r.currentCredential(ctx, name, cert); err != nil {
		if errors.Is(err, ErrUnauthenticated) {
			return nil, r.deny(ctx, a, ActionJWTSVID, name, err)
		}
		return nil, err
	}
	svid, err := signer.IssueJWTSVID(ca.JWTSVIDRequest{
		Subject:  ca.AgentURI(r.cfg.TrustDomain, name),
		Audience: req.Audience,
		Issuer:   req.Issuer,
		Lifetime: req.TTL,
		NotAfter: cert.NotAfter,
	}, r.now(), r.rand)
	var pe *ca.PolicyError
	switch {
	case errors.As(err, &pe):
		return nil, wrap("jwt-svid", invalid(pe.Field, err))
	case err != nil:
		r.auditBestEffort(ctx, a, ActionJWTSVID, name, ResultError, map[string]string{"error": "signing"})
		return nil, fmt.Errorf("registry: jwt-svid: %v: %w", err, bare(ErrUnavailable))
	}
	md := map[string]string{
		"jti":        svid.ID,
		"kid":        svid.KeyID,
		"audience":   strings.Join(svid.Audience, " "),
		"expires_at": svid.ExpiresAt.Format(time.RFC3339),
		"ttl":        strconv.Itoa(int(svid.ExpiresAt.Sub(svid.IssuedAt) / time.Second)),
	}
	if err := r.store.inStatement(ctx, "jwt-svid: audit", func(q sqlx.ExtContext) error {
		return r.writeAudit(ctx, q, a, ActionJWTSVID, name, ResultSuccess, md, nil)
	}); err != nil {
		return nil, wrap("jwt-svid", err)
	}
	r.log.WithFields(map[string]any{"agent": name, "actor": a.label(), "request_id": a.RequestID, "jti": svid.ID,
		"kid": svid.KeyID}).Info("JWT-SVID issued")
	return &JWTSVID{
		Token: svid.Token, SPIFFEID: svid.Subject, Audience: svid.Audience, KeyID: svid.KeyID, ID: svid.ID,
		IssuedAt: svid.IssuedAt, ExpiresAt: svid.ExpiresAt,
	}, nil
}

// currentCredential checks that cert is agent name's current certificate,
// by the one rule of AuthenticateAgent (chain to the roots, valid now,
// issuer not revoked, status issued — not superseded or revoked — and the
// agent active with it as its current serial), asked again at issuance. A
// refusal wraps ErrUnauthenticated.
func (r *Registry) currentCredential(ctx context.Context, name string, cert *x509.Certificate) error {
	if cert == nil {
		return fmt.Errorf("registry: jwt-svid: no certificate: %w", bare(ErrUnauthenticated))
	}
	if now := r.now(); !now.Before(cert.NotAfter) { // x509 still accepts the NotAfter second itself
		return fmt.Errorf("registry: jwt-svid: certificate expired: %w", bare(ErrUnauthenticated))
	}
	got, err := r.AuthenticateAgent(ctx, []*x509.Certificate{cert})
	if err != nil {
		return wrap("jwt-svid", err)
	}
	if got.AgentName != name {
		return fmt.Errorf("registry: jwt-svid: certificate of another agent: %w", bare(ErrUnauthenticated))
	}
	return nil
}

// JWTAuthorities are the JWT-SVID keys for the SPIFFE bundle (use
// "jwt-svid"): the current JWTSigner's, then JWTPreviousKeys (still
// verifying tokens signed before a rotation). Empty when JWT-SVIDs are off
// and no previous key is configured. The agent-card key is never one.
func (r *Registry) JWTAuthorities() ([]ca.JWK, error) {
	return r.jwks(ca.JWKUseJWTSVID, false)
}

// JWKS is the key set of GET /.well-known/jwks.json: the JWT-SVID keys (as
// JWTAuthorities) and the agent-card key (Config.CardSigner), every one with
// use "sig" — the value OpenID Connect and JWT libraries accept (some refuse
// a key with any other use).
func (r *Registry) JWKS() ([]ca.JWK, error) {
	return r.jwks(ca.JWKUseSig, true)
}

func (r *Registry) jwks(use string, withCard bool) ([]ca.JWK, error) {
	keys := []ca.JWK{}
	add := func(what string, pub any) error {
		k, err := ca.NewJWK(pub, use)
		if err != nil {
			return fmt.Errorf("registry: jwks: %s: %w", what, err)
		}
		for _, have := range keys {
			if have.Kid == k.Kid {
				return nil
			}
		}
		keys = append(keys, k)
		return nil
	}
	if r.cfg.JWTSigner != nil {
		if err := add("JWT-SVID key", r.cfg.JWTSigner.Public()); err != nil {
			return nil, err
		}
	}
	for i, pub := range r.cfg.JWTPreviousKeys {
		if err := add("previous JWT-SVID key "+strconv.Itoa(i+1), pub); err != nil {
			return nil, err
		}
	}
	if withCard && r.cfg.CardSigner != nil {
		if err := add("agent-card key", r.cfg.CardSigner.Public()); err != nil {
			return nil, err
		}
	}
	return keys, nil
}
