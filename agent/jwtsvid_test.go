package agent

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agent-trust-registry/atr/api/client"
	"github.com/agent-trust-registry/atr/ca"
)

// fakeJWTRegistry mints real JWT-SVIDs with a software key and counts them.
type fakeJWTRegistry struct {
	fakeRotator
	signer  *ca.JWTSigner
	now     func() time.Time
	mu      sync.Mutex
	fetches int
	refuse  error
	subject string // overrides the sub of the answer when set
}

func (f *fakeJWTRegistry) dial(cert tls.Certificate) (Rotator, error) { return f, nil }

func (f *fakeJWTRegistry) JWTSVID(_ context.Context, name string, audience []string, ttl time.Duration) (*client.JWTSVID, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fetches++
	if f.refuse != nil {
		return nil, f.refuse
	}
	sub := ca.AgentURI("agents.atr.test", name)
	svid, err := f.signer.IssueJWTSVID(ca.JWTSVIDRequest{Subject: sub, Audience: audience, Lifetime: ttl}, f.now(), rand.Reader)
	if err != nil {
		return nil, err
	}
	if f.subject != "" {
		sub = f.subject
	}
	return &client.JWTSVID{Token: svid.Token, SPIFFEID: sub, Audience: svid.Audience, IssuedAt: svid.IssuedAt, ExpiresAt: svid.ExpiresAt}, nil
}

func TestSourceJWTSVIDCache(t *testing.T) {
	c := newTestCA(t, "agents.atr.test")
	k, err := GenerateKey(KeyP256)
	if err != nil {
		t.Fatal(err)
	}
	id := &Identity{Key: k, Leaf: c.Issue(t, k, "bot.acme"), Chain: nil}
	jwtKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ca.NewJWTSigner(jwtKey)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().Truncate(time.Second)
	clock := func() time.Time { return now }
	reg := &fakeJWTRegistry{signer: signer, now: clock}
	s := &Source{cfg: Config{Now: clock}, name: "bot.acme", dial: reg.dial}
	s.id.Store(id)
	ctx := context.Background()

	first, err := s.JWTSVID(ctx, "payments")
	if err != nil {
		t.Fatal(err)
	}
	if first.SPIFFEID != "spiffe://agents.atr.test/agent/bot.acme" || first.ExpiresAt.Sub(first.IssuedAt) != 5*time.Minute {
		t.Fatalf("JWTSVID = %+v", first)
	}
	for _, tc := range []struct {
		name        string
		advance     time.Duration
		aud         []string
		wantSame    bool
		wantFetches int
	}{
		{"cached", time.Minute, []string{"payments"}, true, 1},
		{"another audience", 0, []string{"ledger"}, false, 2},
		{"several audiences", 0, []string{"payments", "ledger"}, false, 3},
		{"still fresh just before half", 89 * time.Second, []string{"payments"}, true, 3},
		{"renewed at half its lifetime", time.Second, []string{"payments"}, false, 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			now = now.Add(tc.advance)
			got, err := s.JWTSVID(ctx, tc.aud...)
			if err != nil {
				t.Fatal(err)
			}
			if (got.Token == first.Token) != tc.wantSame || reg.fetches != tc.wantFetches {
				t.Fatalf("same token %v, %d fetches; want %v, %d", got.Token == first.Token, reg.fetches, tc.wantSame, tc.wantFetches)
			}
			if !strings.EqualFold(strings.Join(got.Audience, " "), strings.Join(tc.aud, " ")) {
				t.Fatalf("audience %q, want %q", got.Audience, tc.aud)
			}
		})
	}

	// The cache is bounded.
	for i := 0; i < 3*maxCachedJWTSVIDs; i++ {
		if _, err := s.JWTSVID(ctx, fmt.Sprint("aud-", i)); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(s.jwt.m); n > maxCachedJWTSVIDs {
		t.Errorf("%d cached tokens, want at most %d", n, maxCachedJWTSVIDs)
	}

	// Refusals and wrong answers are errors, never cached.
	if _, err := s.JWTSVID(ctx); err == nil {
		t.Error("no audience: no error")
	}
	reg.refuse = &client.Error{Status: http.StatusUnauthorized, Code: "unauthenticated", Message: "authentication required", RequestID: "r1"}
	_, err = s.JWTSVID(ctx, "new")
	if err == nil || !strings.Contains(err.Error(), "revoked, superseded or expired") || !strings.Contains(err.Error(), "r1") {
		t.Errorf("refused: %v", err)
	}
	reg.refuse, reg.subject = nil, "spiffe://agents.atr.test/agent/other.acme"
	if _, err := s.JWTSVID(ctx, "new"); err == nil || !strings.Contains(err.Error(), "other.acme") {
		t.Errorf("a token for another agent: %v", err)
	}
}
