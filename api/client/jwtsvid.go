package client

import (
	"context"
	"net/http"
	"net/url"
	"time"
)

// JWTSVIDRequest is the body of POST /v1/agents/{name}/jwt-svid.
// TTLSeconds 0 asks for the default lifetime (5 minutes); otherwise 10 to
// 300. The token never outlives the agent's certificate.
type JWTSVIDRequest struct {
	Audience   []string `json:"audience"`
	TTLSeconds int      `json:"ttl_seconds,omitempty"`
}

// JWTSVID is a JWT-SVID (SPIFFE JWT-SVID specification) and what it says:
// Token is the compact JWS to send to an audience (Authorization: Bearer);
// SPIFFEID its sub claim, Audience its aud claim, IssuedAt and ExpiresAt its
// iat and exp.
type JWTSVID struct {
	Token     string    `json:"token"`
	SPIFFEID  string    `json:"spiffe_id"`
	Audience  []string  `json:"audience"`
	IssuedAt  time.Time `json:"issued_at"`
	ExpiresAt time.Time `json:"expires_at"`
}

// JWTSVID asks for a JWT-SVID of agent name for audience (POST
// /v1/agents/{name}/jwt-svid). Only the agent itself gets one: the Client
// must present its current certificate (WithClientCertificate) and no API
// key. ttl 0 asks for the default lifetime; it is sent in whole seconds.
func (c *Client) JWTSVID(ctx context.Context, name string, audience []string, ttl time.Duration) (*JWTSVID, error) {
	var out JWTSVID
	req := JWTSVIDRequest{Audience: audience, TTLSeconds: int(ttl / time.Second)}
	if err := c.doJSON(ctx, http.MethodPost, "/v1/agents/"+url.PathEscape(name)+"/jwt-svid", nil, req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// JWKS returns the registry's JSON Web Key Set (GET /.well-known/jwks.json):
// the keys of its JWT-SVIDs and agent cards.
func (c *Client) JWKS(ctx context.Context) ([]byte, error) {
	return c.doBytes(ctx, http.MethodGet, "/.well-known/jwks.json", nil)
}
