package agent

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/agent-trust-registry/atr/api/client"
	"github.com/agent-trust-registry/atr/ca"
)

// JWTSVID is a JWT-SVID (SPIFFE JWT-SVID specification) of the agent:
// Token goes to the audience (Authorization: Bearer), which verifies it with
// the registry's SPIFFE bundle or its JWKS (/.well-known/jwks.json).
type JWTSVID = client.JWTSVID

// JWTSVIDFetcher is what fetching JWT-SVIDs needs of the registry API
// (*client.Client has it). The Rotator a Dialer returns must implement it.
type JWTSVIDFetcher interface {
	JWTSVID(ctx context.Context, name string, audience []string, ttl time.Duration) (*client.JWTSVID, error)
}

// maxCachedJWTSVIDs bounds the tokens a Source keeps (one per audience list).
const maxCachedJWTSVIDs = 64

// FetchJWTSVID asks the registry for a JWT-SVID of id's agent for audience,
// over mTLS with id's certificate (dial, as for renewals: the token is the
// agent's alone, no API key gets one). ttl 0 asks for the default, 5
// minutes; the registry never goes past 5 minutes or the certificate's
// expiry. The answer is checked: the agent's SPIFFE ID, the audience asked
// for, not expired at now.
func FetchJWTSVID(ctx context.Context, dial Dialer, id *Identity, audience []string, ttl time.Duration, now time.Time) (*JWTSVID, error) {
	name, err := id.Name()
	if err != nil {
		return nil, err
	}
	what := "getting a JWT-SVID for " + name
	if len(audience) == 0 {
		return nil, fmt.Errorf("agent: %s: at least one audience is required", what)
	}
	r, err := dial(id.TLSCertificate())
	if err != nil {
		return nil, fmt.Errorf("agent: %s: %w", what, err)
	}
	f, ok := r.(JWTSVIDFetcher)
	if !ok {
		return nil, fmt.Errorf("agent: %s: the registry client (%T) cannot fetch JWT-SVIDs", what, r)
	}
	svid, err := f.JWTSVID(ctx, name, audience, ttl)
	if err != nil {
		var ce *client.Error
		if errors.As(err, &ce) && ce.Status == http.StatusUnauthorized {
			// The same 401 for every certificate the server will not take:
			// name the likely cause, as renewals do.
			return nil, Explain(what+" (a revoked, superseded or expired certificate gets none)", err)
		}
		return nil, Explain(what, err)
	}
	want := ca.AgentURI(trustDomainOf(id), name)
	switch {
	case svid.Token == "" || strings.Count(svid.Token, ".") != 2:
		return nil, fmt.Errorf("agent: %s: the registry answered no JWT", what)
	case svid.SPIFFEID != want:
		return nil, fmt.Errorf("agent: %s: the registry answered a token for %q, not %q", what, svid.SPIFFEID, want)
	case !slices.Equal(svid.Audience, audience):
		return nil, fmt.Errorf("agent: %s: the registry answered a token for audience %q, not %q", what, svid.Audience, audience)
	case !svid.ExpiresAt.After(svid.IssuedAt):
		// Compared with its own issue time, not this host's clock, which
		// may be off from the registry's.
		return nil, fmt.Errorf("agent: %s: the registry answered a token that expires (%s) before it is issued (%s)", what,
			svid.ExpiresAt.Format(time.RFC3339), svid.IssuedAt.Format(time.RFC3339))
	}
	return svid, nil
}

func trustDomainOf(id *Identity) string {
	_, td, _ := ca.AgentIdentity(id.Leaf)
	return td
}

// jwtSVIDCache holds a Source's JWT-SVIDs by audience list. The zero value
// is empty and ready.
type jwtSVIDCache struct {
	mu sync.Mutex
	m  map[string]cachedJWTSVID
}

// cachedJWTSVID is a token and when this host received it (its own clock:
// the token's iat and exp are the registry's, which may differ).
type cachedJWTSVID struct {
	t       *JWTSVID
	fetched time.Time
}

// fresh reports whether a token is still worth handing out at now: before
// half its lifetime has passed since it was received, so that its audience
// has the other half to use it.
func (c cachedJWTSVID) fresh(now time.Time) bool {
	return now.Before(c.fetched.Add(c.t.ExpiresAt.Sub(c.t.IssuedAt) / 2))
}

func (c *jwtSVIDCache) get(key string, now time.Time) *JWTSVID {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.m[key]; ok && e.fresh(now) {
		return e.t
	}
	return nil
}

func (c *jwtSVIDCache) put(key string, t *JWTSVID, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]cachedJWTSVID{}
	}
	if _, ok := c.m[key]; !ok && len(c.m) >= maxCachedJWTSVIDs {
		for k, old := range c.m { // drop what is stale; if nothing is, any one
			if !old.fresh(now) {
				delete(c.m, k)
			}
		}
		for k := range c.m {
			if len(c.m) < maxCachedJWTSVIDs {
				break
			}
			delete(c.m, k)
		}
	}
	c.m[key] = cachedJWTSVID{t: t, fetched: now}
}

// JWTSVID returns a JWT-SVID of the agent for audience (one or more values,
// the aud claim), fetched over mTLS with the current certificate
// (FetchJWTSVID) and cached per audience list until half its lifetime has
// passed: a token handed out always has at least half of its lifetime (about
// 2.5 minutes, less near the certificate's expiry) left. Safe for
// concurrent use.
func (s *Source) JWTSVID(ctx context.Context, audience ...string) (*JWTSVID, error) {
	key := fmt.Sprintf("%q", audience) // unambiguous: ["a\x00b"] is not ["a" "b"]
	now := s.cfg.Now()
	if t := s.jwt.get(key, now); t != nil {
		return t, nil
	}
	t, err := FetchJWTSVID(ctx, s.dial, s.id.Load(), audience, 0, now)
	if err != nil {
		return nil, err
	}
	s.jwt.put(key, t, now)
	return t, nil
}
