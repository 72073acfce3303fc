package registry_test

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"

	"github.com/agent-trust-registry/atr/ca"
	"github.com/agent-trust-registry/atr/registry"
	"github.com/agent-trust-registry/atr/registry/registrytest"
)

// jwtBundleOf is the go-spiffe JWT bundle of the registry's JWT authorities,
// read through go-jose from their JSON form.
func jwtBundleOf(t *testing.T, keys []ca.JWK) *jwtbundle.Bundle {
	t.Helper()
	auth := map[string]crypto.PublicKey{}
	for _, k := range keys {
		b, err := json.Marshal(k)
		if err != nil {
			t.Fatal(err)
		}
		var jwk jose.JSONWebKey
		if err := jwk.UnmarshalJSON(b); err != nil {
			t.Fatalf("go-jose refuses %s: %v", b, err)
		}
		auth[jwk.KeyID] = jwk.Key
	}
	return jwtbundle.FromJWTAuthorities(spiffeid.RequireTrustDomainFromString(registrytest.TrustDomain), auth)
}

// agentActor authenticates the agent of iss by its certificate, as the api
// does for mTLS, and returns the actor and the certificate.
func agentActor(t *testing.T, f *registrytest.Fixture, iss *registry.Issued) (registry.Actor, *x509.Certificate) {
	t.Helper()
	cert := f.ParseCertificate(iss.CertificatePEM)
	a, err := f.Registry.AuthenticateAgent(context.Background(), []*x509.Certificate{cert, f.Intermediate})
	if err != nil {
		t.Fatalf("AuthenticateAgent: %v", err)
	}
	return *a, cert
}

func TestIssueJWTSVID(t *testing.T) {
	eachDB(t, func(t *testing.T, f *registrytest.Fixture) {
		ctx := context.Background()
		owner := f.Owner("acme", "acme")
		iss := register(t, f, owner, "bot.acme")
		agent, cert := agentActor(t, f, iss)

		svid, err := f.Registry.IssueJWTSVID(ctx, agent, cert, registry.JWTSVIDRequest{Audience: []string{"payments", "ledger"}})
		if err != nil {
			t.Fatalf("IssueJWTSVID: %v", err)
		}
		if want := "spiffe://" + registrytest.TrustDomain + "/agent/bot.acme"; svid.SPIFFEID != want {
			t.Errorf("SPIFFEID = %s, want %s", svid.SPIFFEID, want)
		}
		if d := svid.ExpiresAt.Sub(svid.IssuedAt); d != ca.DefaultJWTSVIDLifetime {
			t.Errorf("lifetime %v, want %v", d, ca.DefaultJWTSVIDLifetime)
		}
		authorities, err := f.Registry.JWTAuthorities()
		if err != nil {
			t.Fatal(err)
		}
		got, err := jwtsvid.ParseAndValidate(svid.Token, jwtBundleOf(t, authorities), []string{"ledger"})
		if err != nil {
			t.Fatalf("go-spiffe refuses the JWT-SVID: %v", err)
		}
		if got.ID.String() != svid.SPIFFEID || !got.Expiry.Equal(svid.ExpiresAt) {
			t.Errorf("go-spiffe reads %s until %v", got.ID, got.Expiry)
		}
		if _, err := jwtsvid.ParseAndValidate(svid.Token, jwtBundleOf(t, authorities), []string{"other"}); err == nil {
			t.Error("go-spiffe accepts the JWT-SVID for another audience")
		}

		// A shorter lifetime; and near the certificate's end, the token
		// ends with it.
		short, err := f.Registry.IssueJWTSVID(ctx, agent, cert, registry.JWTSVIDRequest{Audience: []string{"a"}, TTL: time.Minute})
		if err != nil || short.ExpiresAt.Sub(short.IssuedAt) != time.Minute {
			t.Fatalf("TTL 1m: %+v, %v", short, err)
		}
		f.Clock.Set(cert.NotAfter.Add(-2 * time.Minute))
		capped, err := f.Registry.IssueJWTSVID(ctx, agent, cert, registry.JWTSVIDRequest{Audience: []string{"a"}})
		if err != nil {
			t.Fatalf("near NotAfter: %v", err)
		}
		if capped.ExpiresAt.After(cert.NotAfter) || cert.NotAfter.Sub(capped.ExpiresAt) >= time.Second {
			t.Errorf("near NotAfter %v: exp %v, want the certificate's NotAfter", cert.NotAfter, capped.ExpiresAt)
		}
		f.Clock.Set(cert.NotAfter)
		if _, err := f.Registry.IssueJWTSVID(ctx, agent, cert, registry.JWTSVIDRequest{Audience: []string{"a"}}); !errors.Is(err, registry.ErrUnauthenticated) {
			t.Errorf("expired certificate: %v, want ErrUnauthenticated", err)
		}

		// The audit trail has the issuance, not the token.
		events, _, err := f.Registry.ListAudit(ctx, f.Admin(), "", 100)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, e := range events {
			if e.Action != registry.ActionJWTSVID || e.Result != registry.ResultSuccess {
				continue
			}
			n++
			if e.Target != "bot.acme" || e.Actor != "agent:bot.acme" || e.Metadata["jti"] == "" || e.Metadata["kid"] == "" {
				t.Errorf("audit event %+v", e)
			}
			b, _ := json.Marshal(e)
			for _, tok := range []string{svid.Token, short.Token, capped.Token} {
				if strings.Contains(string(b), strings.Split(tok, ".")[2]) || strings.Contains(string(b), strings.Split(tok, ".")[1]) {
					t.Errorf("the audit trail holds a token: %s", b)
				}
			}
		}
		if n != 3 {
			t.Errorf("%d audited issuances, want 3", n)
		}
	})
}

// TestJWTSVIDRefusals: only the agent itself, with its current certificate,
// gets a token, and only within the policy.
func TestJWTSVIDRefusals(t *testing.T) {
	f := registrytest.NewFixture(t)
	ctx := context.Background()
	owner := f.Owner("acme", "acme")
	bot := register(t, f, owner, "bot.acme")
	other := register(t, f, owner, "other.acme")
	botActor, botCert := agentActor(t, f, bot)
	otherActor, otherCert := agentActor(t, f, other)
	aud := []string{"payments"}
	issue := func(a registry.Actor, c *x509.Certificate, req registry.JWTSVIDRequest) error {
		_, err := f.Registry.IssueJWTSVID(ctx, a, c, req)
		return err
	}
	for _, tc := range []struct {
		name string
		a    registry.Actor
		c    *x509.Certificate
		req  registry.JWTSVIDRequest
		want error
	}{
		{"owner key", owner, botCert, registry.JWTSVIDRequest{Audience: aud}, registry.ErrForbidden},
		{"admin key", f.Admin(), botCert, registry.JWTSVIDRequest{Audience: aud}, registry.ErrForbidden},
		{"another agent's certificate", botActor, otherCert, registry.JWTSVIDRequest{Audience: aud}, registry.ErrUnauthenticated},
		{"no certificate", botActor, nil, registry.JWTSVIDRequest{Audience: aud}, registry.ErrUnauthenticated},
		{"no audience", botActor, botCert, registry.JWTSVIDRequest{}, registry.ErrInvalid},
		{"empty audience", botActor, botCert, registry.JWTSVIDRequest{Audience: []string{""}}, registry.ErrInvalid},
		{"too many audiences", botActor, botCert, registry.JWTSVIDRequest{Audience: strings.Split("a b c d e f g h i", " ")}, registry.ErrInvalid},
		{"TTL over 5 minutes", botActor, botCert, registry.JWTSVIDRequest{Audience: aud, TTL: 6 * time.Minute}, registry.ErrInvalid},
		{"TTL too short", botActor, botCert, registry.JWTSVIDRequest{Audience: aud, TTL: time.Second}, registry.ErrInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := issue(tc.a, tc.c, tc.req); !errors.Is(err, tc.want) {
				t.Fatalf("IssueJWTSVID: %v, want %v", err, tc.want)
			}
		})
	}

	// Superseded (even in its grace period) and revoked: none.
	csr, _ := f.NewCSR()
	rot, err := f.Registry.Rotate(ctx, botActor, "bot.acme", csr)
	if err != nil {
		t.Fatal(err)
	}
	if err := issue(botActor, botCert, registry.JWTSVIDRequest{Audience: aud}); !errors.Is(err, registry.ErrUnauthenticated) {
		t.Errorf("superseded certificate in grace: %v, want ErrUnauthenticated", err)
	}
	if res := verifyPEM(t, f, bot.CertificatePEM); !res.Verified {
		t.Fatalf("the superseded certificate should still verify in its grace period: %+v", res)
	}
	newActor, newCert := agentActor(t, f, rot)
	if err := issue(newActor, newCert, registry.JWTSVIDRequest{Audience: aud}); err != nil {
		t.Errorf("the new certificate: %v", err)
	}
	if err := issue(otherActor, otherCert, registry.JWTSVIDRequest{Audience: aud}); err != nil {
		t.Fatalf("other agent before revocation: %v", err)
	}
	if _, err := f.Registry.Revoke(ctx, owner, "other.acme", "keyCompromise"); err != nil {
		t.Fatal(err)
	}
	if err := issue(otherActor, otherCert, registry.JWTSVIDRequest{Audience: aud}); !errors.Is(err, registry.ErrUnauthenticated) {
		t.Errorf("revoked agent: %v, want ErrUnauthenticated", err)
	}
	events, _, err := f.Registry.ListAudit(ctx, f.Admin(), "", 100)
	if err != nil {
		t.Fatal(err)
	}
	denied := 0
	for _, e := range events {
		if e.Action == registry.ActionJWTSVID && e.Result == registry.ResultDenied {
			denied++
		}
	}
	if denied < 4 {
		t.Errorf("%d audited refusals, want at least 4", denied)
	}
}

// TestJWTSVIDExpiredRefused: a token issued in the past is refused by go-spiffe.
func TestJWTSVIDExpiredRefused(t *testing.T) {
	f := registrytest.NewFixture(t, registrytest.WithStart(time.Now().Add(-time.Hour)))
	iss := register(t, f, f.Owner("acme", "acme"), "bot.acme")
	agent, cert := agentActor(t, f, iss)
	svid, err := f.Registry.IssueJWTSVID(context.Background(), agent, cert, registry.JWTSVIDRequest{Audience: []string{"a"}})
	if err != nil {
		t.Fatal(err)
	}
	keys, err := f.Registry.JWTAuthorities()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := jwtsvid.ParseAndValidate(svid.Token, jwtBundleOf(t, keys), []string{"a"}); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Fatalf("go-spiffe on a token that expired 55 minutes ago: %v, want expired", err)
	}
}

// TestJWTKeys: the JWT authorities are the current and previous JWT keys;
// the JWKS adds the agent-card key; without a JWT key, no JWT-SVIDs.
func TestJWTKeys(t *testing.T) {
	f := registrytest.NewFixture(t)
	kidOf := func(pub crypto.PublicKey) string {
		kid, err := ca.JWKThumbprint(pub)
		if err != nil {
			t.Fatal(err)
		}
		return kid
	}
	jwtKid, cardKid := kidOf(f.JWTKey.Public()), kidOf(f.CardKey.Public())
	kids := func(keys []ca.JWK, err error) string {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, k := range keys {
			out = append(out, k.Use+":"+k.Kid)
		}
		return strings.Join(out, " ")
	}
	if got, want := kids(f.Registry.JWTAuthorities()), "jwt-svid:"+jwtKid; got != want {
		t.Errorf("JWTAuthorities = %s, want %s", got, want)
	}
	if got, want := kids(f.Registry.JWKS()), "sig:"+jwtKid+" sig:"+cardKid; got != want {
		t.Errorf("JWKS = %s, want %s", got, want)
	}

	// After a rotation: a new key signs, the old one is still published.
	newKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	cfg := f.Config
	cfg.JWTSigner, cfg.JWTPreviousKeys = newKey, []crypto.PublicKey{f.JWTKey.Public()}
	rotated, err := registry.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	newKid := kidOf(newKey.Public())
	if got, want := kids(rotated.JWTAuthorities()), "jwt-svid:"+newKid+" jwt-svid:"+jwtKid; got != want {
		t.Errorf("after rotation, JWTAuthorities = %s, want %s", got, want)
	}
	iss := register(t, f, f.Owner("acme", "acme"), "bot.acme")
	agent, cert := agentActor(t, f, iss)
	svid, err := rotated.IssueJWTSVID(context.Background(), agent, cert, registry.JWTSVIDRequest{Audience: []string{"a"}})
	if err != nil || svid.KeyID != newKid {
		t.Fatalf("after rotation: %+v, %v; want kid %s", svid, err, newKid)
	}

	// Off: no key, no tokens; a previous key alone is still published.
	cfg.JWTSigner, cfg.CardSigner = nil, nil
	off, err := registry.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	_, err = off.IssueJWTSVID(context.Background(), agent, cert, registry.JWTSVIDRequest{Audience: []string{"a"}})
	if !errors.Is(err, registry.ErrJWTSVIDDisabled) || !errors.Is(err, registry.ErrUnavailable) {
		t.Errorf("without a JWT key: %v, want ErrJWTSVIDDisabled and ErrUnavailable", err)
	}
	if got, want := kids(off.JWKS()), "sig:"+jwtKid; got != want {
		t.Errorf("without a JWT key, JWKS = %s, want %s", got, want)
	}
}
