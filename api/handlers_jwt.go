package api

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/agent-trust-registry/atr/api/client"
	"github.com/agent-trust-registry/atr/ca"
	"github.com/agent-trust-registry/atr/registry"
)

// JWTSVIDs issues JWT-SVIDs and publishes their keys. *registry.Registry
// implements it; a Lifecycle that does not answers 501 on the JWT-SVID,
// JWKS and discovery routes, and its SPIFFE bundle has no JWT authorities.
type JWTSVIDs interface {
	// IssueJWTSVID signs a JWT-SVID for the agent actor that presented cert
	// (its current certificate); refusals wrap registry.ErrUnauthenticated
	// (not current: superseded, revoked, expired), ErrForbidden (not an
	// agent), ErrInvalid (policy), ErrJWTSVIDDisabled (no key).
	IssueJWTSVID(ctx context.Context, a registry.Actor, cert *x509.Certificate, req registry.JWTSVIDRequest) (*registry.JWTSVID, error)
	// JWTAuthorities are the SPIFFE bundle's JWT authorities (use jwt-svid).
	JWTAuthorities() ([]ca.JWK, error)
	// JWKS is the key set of /.well-known/jwks.json (use sig).
	JWKS() ([]ca.JWK, error)
}

// jwtSVIDBodyLimit caps POST /v1/agents/{name}/jwt-svid: 8 audiences of 256
// bytes and a number, with room for JSON escaping.
const jwtSVIDBodyLimit = 16 << 10

// jwksMaxAge is the Cache-Control max-age of the JWKS: short, so verifiers
// see a new key soon after a rotation (operator guide: pre-publish it with
// --jwt-previous-keys first).
const jwksMaxAge = time.Minute

// jwtSVIDRequest is the body of POST /v1/agents/{name}/jwt-svid.
type jwtSVIDRequest struct {
	Audience   []string `json:"audience"`
	TTLSeconds int      `json:"ttl_seconds"`
}

// Validate applies ca's policy with fixed messages (the registry checks again).
func (q *jwtSVIDRequest) Validate() error {
	if ca.CheckJWTAudience(q.Audience) != nil {
		return errInvalid(fmt.Sprintf("audience: 1 to %d distinct values, each 1 to %d bytes without control characters or surrounding spaces",
			ca.MaxJWTAudiences, ca.MaxJWTAudienceLength))
	}
	if q.TTLSeconds < 0 || q.TTLSeconds > int(ca.MaxJWTSVIDLifetime/time.Second) ||
		ca.CheckJWTSVIDLifetime(time.Duration(q.TTLSeconds)*time.Second) != nil {
		return errInvalid(fmt.Sprintf("ttl_seconds: 0 (default, %d) or %d to %d", int(ca.DefaultJWTSVIDLifetime/time.Second),
			int(ca.MinJWTSVIDLifetime/time.Second), int(ca.MaxJWTSVIDLifetime/time.Second)))
	}
	return nil
}

// errJWTSVIDsOff is the 503 of a registry without a JWT-SVID key.
var errJWTSVIDsOff = &apiError{Status: http.StatusServiceUnavailable, Code: CodeUnavailable,
	Message: "JWT-SVIDs are not enabled on this registry (no JWT-SVID key)"}

// handleJWTSVID serves POST /v1/agents/{name}/jwt-svid: a JWT-SVID for the
// agent that authenticated with its current certificate over mTLS (the
// route accepts API keys only to refuse them: 403).
func (s *Server) handleJWTSVID(w http.ResponseWriter, r *http.Request) error {
	js, ok := s.deps.Lifecycle.(JWTSVIDs)
	if !ok {
		return errNotImplemented
	}
	if _, err := pathName(r); err != nil {
		return err
	}
	var req jwtSVIDRequest
	if err := readJSON(r, &req); err != nil {
		return err
	}
	if err := req.Validate(); err != nil {
		return err
	}
	a := actorOf(r)
	if a.AgentName == "" || r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		return &apiError{Status: http.StatusForbidden, Code: CodeForbidden,
			Message: "only the agent itself, over mTLS with its current certificate and no API key, gets a JWT-SVID"}
	}
	svid, err := js.IssueJWTSVID(r.Context(), a, r.TLS.PeerCertificates[0], registry.JWTSVIDRequest{
		Audience: req.Audience,
		TTL:      time.Duration(req.TTLSeconds) * time.Second,
		Issuer:   s.cfg.PublicURL,
	})
	switch {
	case errors.Is(err, registry.ErrJWTSVIDDisabled):
		errJWTSVIDsOff := *errJWTSVIDsOff
		errJWTSVIDsOff.cause = err
		return &errJWTSVIDsOff
	case err != nil:
		return fmt.Errorf("api: jwt-svid: %w", err)
	}
	writeJSONStatus(w, http.StatusOK, client.JWTSVID{
		Token: svid.Token, SPIFFEID: svid.SPIFFEID, Audience: svid.Audience,
		IssuedAt: svid.IssuedAt.UTC(), ExpiresAt: svid.ExpiresAt.UTC(),
	})
	return nil
}

// jwks is a JSON Web Key Set (RFC 7517 §5).
type jwks struct {
	Keys []ca.JWK `json:"keys"`
}

// handleJWKS serves GET /.well-known/jwks.json: the JWT-SVID keys (current
// and previous) and the agent-card key, use "sig", for any JWT library.
func (s *Server) handleJWKS(w http.ResponseWriter, r *http.Request) error {
	js, ok := s.deps.Lifecycle.(JWTSVIDs)
	if !ok {
		return errNotImplemented
	}
	keys, err := js.JWKS()
	if err != nil {
		return fmt.Errorf("api: jwks: %w", err)
	}
	s.cacheable(w, jwksMaxAge)
	writeJSONStatus(w, http.StatusOK, jwks{Keys: keys})
	return nil
}

// openIDConfiguration is the OpenID Connect Discovery 1.0 provider metadata
// a JWT verifier needs: where the keys are and what is signed how. ATR is no
// OpenID provider (no authorization endpoint): the document exists so that
// OIDC-aware verifiers find the JWKS from the issuer, as with SPIRE's OIDC
// discovery provider.
type openIDConfiguration struct {
	Issuer                           string   `json:"issuer"`
	JWKSURI                          string   `json:"jwks_uri"`
	ResponseTypesSupported           []string `json:"response_types_supported"`
	SubjectTypesSupported            []string `json:"subject_types_supported"`
	IDTokenSigningAlgValuesSupported []string `json:"id_token_signing_alg_values_supported"`
	ClaimsSupported                  []string `json:"claims_supported"`
}

// handleOpenIDConfiguration serves GET /.well-known/openid-configuration.
func (s *Server) handleOpenIDConfiguration(w http.ResponseWriter, r *http.Request) error {
	if _, ok := s.deps.Lifecycle.(JWTSVIDs); !ok || s.cfg.PublicURL == "" {
		return errNotImplemented
	}
	s.cacheable(w, s.cfg.BundleMaxAge)
	writeJSONStatus(w, http.StatusOK, openIDConfiguration{
		Issuer:                           s.cfg.PublicURL,
		JWKSURI:                          s.cfg.PublicURL + "/.well-known/jwks.json",
		ResponseTypesSupported:           []string{"id_token"},
		SubjectTypesSupported:            []string{"public"},
		IDTokenSigningAlgValuesSupported: []string{"ES256"},
		ClaimsSupported:                  []string{"iss", "sub", "aud", "exp", "iat", "jti"},
	})
	return nil
}

// jwtAuthorities are the SPIFFE bundle's JWT authorities (nil when the
// Lifecycle issues no JWT-SVIDs).
func (s *Server) jwtAuthorities() ([]ca.JWK, error) {
	js, ok := s.deps.Lifecycle.(JWTSVIDs)
	if !ok {
		return nil, nil
	}
	keys, err := js.JWTAuthorities()
	if err != nil {
		return nil, fmt.Errorf("api: spiffe bundle: %w", err)
	}
	return keys, nil
}
