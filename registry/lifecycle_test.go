package registry_test

import (
	"context"
	"crypto/x509"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agent-trust-registry/atr/ca"
	"github.com/agent-trust-registry/atr/registry"
	"github.com/agent-trust-registry/atr/registry/registrytest"
)

// eachDB runs fn on a fresh fixture per database.
func eachDB(t *testing.T, fn func(t *testing.T, f *registrytest.Fixture), opts ...registrytest.Option) {
	for _, db := range registrytest.Databases() {
		t.Run(db, func(t *testing.T) {
			f := registrytest.NewFixture(t, append([]registrytest.Option{registrytest.WithDatabase(db)}, opts...)...)
			fn(t, f)
		})
	}
}

func register(t *testing.T, f *registrytest.Fixture, a registry.Actor, name string) *registry.Issued {
	t.Helper()
	csr, _ := f.NewCSR()
	iss, err := f.Registry.Register(context.Background(), a, registry.RegisterRequest{Name: name, CSR: csr})
	if err != nil {
		t.Fatalf("Register(%q): %v", name, err)
	}
	return iss
}

func verifyPEM(t *testing.T, f *registrytest.Fixture, certPEM string) *registry.VerifyResult {
	t.Helper()
	res, err := f.Registry.Verify(context.Background(), []byte(certPEM), nil)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	return res
}

func wantReason(t *testing.T, what string, res *registry.VerifyResult, want string) {
	t.Helper()
	if want == "" {
		if !res.Verified || res.Reason != "" {
			t.Errorf("%s: verified=%v reason=%q; want verified", what, res.Verified, res.Reason)
		}
		return
	}
	if res.Verified || res.Reason != want {
		t.Errorf("%s: verified=%v reason=%q; want not verified, reason %q", what, res.Verified, res.Reason, want)
	}
}

func TestLifecycle(t *testing.T) {
	eachDB(t, func(t *testing.T, f *registrytest.Fixture) {
		ctx := context.Background()
		owner := f.Owner("acme", "acme")
		csr, _ := f.NewCSR()
		iss, err := f.Registry.Register(ctx, owner, registry.RegisterRequest{
			Name: "billing-bot.acme", CSR: csr, Capabilities: []string{"invoices:read"}, Metadata: map[string]string{"team": "billing"},
		})
		if err != nil {
			t.Fatalf("Register: %v", err)
		}
		if iss.Agent.Owner != "acme" || iss.Agent.Status != registry.AgentActive || iss.Agent.Name != "billing-bot.acme" {
			t.Errorf("Register agent = %+v; want owner acme, active, billing-bot.acme", iss.Agent)
		}
		if iss.Certificate.Serial == "" || len(iss.Certificate.FingerprintSHA256) != 64 || iss.ChainPEM == "" {
			t.Errorf("Register certificate record incomplete: %+v", iss.Certificate)
		}
		// The chain is the issuer's, the issuing certificate first.
		chain, err := ca.ParseCertificatesPEM([]byte(iss.ChainPEM), 8)
		if want := f.Issuer.Chain(); err != nil || len(chain) != len(want) {
			t.Errorf("ChainPEM = %d certificates, %v; want the issuer's %d", len(chain), err, len(want))
		} else {
			for i := range want {
				if !chain[i].Equal(want[i]) {
					t.Errorf("ChainPEM certificate %d is %s; want %s", i, chain[i].Subject, want[i].Subject)
				}
			}
		}
		leaf := f.ParseCertificate(iss.CertificatePEM)
		if len(leaf.URIs) != 1 || leaf.URIs[0].String() != "spiffe://"+registrytest.TrustDomain+"/agent/billing-bot.acme" {
			t.Errorf("leaf URIs = %v", leaf.URIs)
		}
		res := verifyPEM(t, f, iss.CertificatePEM)
		wantReason(t, "fresh certificate", res, "")
		if res.Agent != "billing-bot.acme" || res.Status != registry.CertIssued || res.LogIndex == nil || *res.LogIndex != iss.LogIndex {
			t.Errorf("Verify = %+v; want agent, status issued, log index %d", res, iss.LogIndex)
		}
		if res, err := f.Registry.Verify(ctx, []byte(iss.CertificatePEM), []byte(iss.ChainPEM)); err != nil || !res.Verified {
			t.Errorf("Verify with chain = %+v, %v; want verified", res, err)
		}

		// Rotate: old certificate superseded, verifies during the grace period only.
		csr2, _ := f.NewCSR()
		rot, err := f.Registry.Rotate(ctx, owner, "billing-bot.acme", csr2)
		if err != nil {
			t.Fatalf("Rotate: %v", err)
		}
		if rot.LogIndex <= iss.LogIndex || rot.Certificate.Predecessor != iss.Certificate.Serial {
			t.Errorf("Rotate = log %d predecessor %q; want log > %d, predecessor %s", rot.LogIndex, rot.Certificate.Predecessor, iss.LogIndex, iss.Certificate.Serial)
		}
		res = verifyPEM(t, f, iss.CertificatePEM)
		wantReason(t, "superseded in grace", res, "")
		if res.Status != registry.CertSuperseded {
			t.Errorf("superseded status = %q", res.Status)
		}
		f.Clock.Advance(registry.DefaultRotationGrace + time.Second)
		wantReason(t, "superseded after grace", verifyPEM(t, f, iss.CertificatePEM), registry.ReasonSuperseded)
		wantReason(t, "rotated certificate", verifyPEM(t, f, rot.CertificatePEM), "")

		d, err := f.Registry.GetAgent(ctx, owner, "billing-bot.acme")
		if err != nil {
			t.Fatalf("GetAgent: %v", err)
		}
		if len(d.Certificates) != 2 || d.CurrentSerial != rot.Certificate.Serial ||
			d.Certificates[0].Successor != rot.Certificate.Serial || d.Certificates[0].Status != registry.CertSuperseded ||
			d.Certificates[0].GraceUntil == nil || d.Certificates[1].Predecessor != iss.Certificate.Serial {
			t.Errorf("GetAgent history: current %s, %d certificates: %+v", d.CurrentSerial, len(d.Certificates), d.Certificates[0].Status)
		}
		if d.Metadata["team"] != "billing" || len(d.Capabilities) != 1 {
			t.Errorf("GetAgent attributes = %v %v", d.Metadata, d.Capabilities)
		}
		cur, err := f.Registry.CurrentCertificate(ctx, owner, "billing-bot.acme")
		if err != nil || cur != rot.CertificatePEM {
			t.Errorf("CurrentCertificate = %v; want the rotated certificate", err)
		}

		// Revoke: terminal and idempotent.
		ag, err := f.Registry.Revoke(ctx, owner, "billing-bot.acme", "keyCompromise")
		if err != nil || ag.Status != registry.AgentRevoked {
			t.Fatalf("Revoke = %+v, %v", ag, err)
		}
		wantReason(t, "revoked", verifyPEM(t, f, rot.CertificatePEM), registry.ReasonRevoked)
		if _, err := f.Registry.Revoke(ctx, owner, "billing-bot.acme", "unspecified"); err != nil {
			t.Errorf("second Revoke: %v; want idempotent success", err)
		}
		d, _ = f.Registry.GetAgent(ctx, owner, "billing-bot.acme")
		if got := d.Certificates[1]; got.Status != registry.CertRevoked || got.RevocationReason != "keyCompromise" || got.RevokedAt == nil {
			t.Errorf("revoked record = %s %q %v; want revoked keyCompromise with time", got.Status, got.RevocationReason, got.RevokedAt)
		}
		csr3, _ := f.NewCSR()
		if _, err := f.Registry.Rotate(ctx, owner, "billing-bot.acme", csr3); !errors.Is(err, registry.ErrConflict) {
			t.Errorf("Rotate after revoke: %v; want ErrConflict", err)
		}
		if _, err := f.Registry.Register(ctx, owner, registry.RegisterRequest{Name: "billing-bot.acme", CSR: csr3}); !errors.Is(err, registry.ErrConflict) {
			t.Errorf("re-Register revoked name: %v; want ErrConflict", err)
		}
		for _, bad := range []string{"certificateHold", "removeFromCRL", "bogus"} {
			if _, err := f.Registry.Revoke(ctx, owner, "billing-bot.acme", bad); !errors.Is(err, registry.ErrInvalid) {
				t.Errorf("Revoke reason %q: %v; want ErrInvalid", bad, err)
			}
		}
	})
}

// TestRevokeInGraceCertificates: revocation also revokes superseded
// certificates still in their grace period.
func TestRevokeInGraceCertificates(t *testing.T) {
	eachDB(t, func(t *testing.T, f *registrytest.Fixture) {
		ctx := context.Background()
		owner := f.Owner("acme", "acme")
		first := register(t, f, owner, "bot.acme")
		csr, _ := f.NewCSR()
		if _, err := f.Registry.Rotate(ctx, owner, "bot.acme", csr); err != nil {
			t.Fatal(err)
		}
		if _, err := f.Registry.Revoke(ctx, owner, "bot.acme", "keyCompromise"); err != nil {
			t.Fatal(err)
		}
		wantReason(t, "superseded-in-grace after revoke", verifyPEM(t, f, first.CertificatePEM), registry.ReasonRevoked)
	})
}

func TestAgentSelfRotation(t *testing.T) {
	eachDB(t, func(t *testing.T, f *registrytest.Fixture) {
		ctx := context.Background()
		owner := f.Owner("acme", "acme")
		iss := register(t, f, owner, "bot.acme")
		other := register(t, f, owner, "other.acme")
		chain := []*x509.Certificate{f.ParseCertificate(iss.CertificatePEM), f.Intermediate}
		agent, err := f.Registry.AuthenticateAgent(ctx, chain)
		if err != nil || agent.AgentName != "bot.acme" || agent.KeyID != "" || len(agent.Scopes) != 0 {
			t.Fatalf("AuthenticateAgent = %+v, %v; want agent bot.acme without scopes", agent, err)
		}
		csr, _ := f.NewCSR()
		if _, err := f.Registry.Rotate(ctx, *agent, "other.acme", csr); !errors.Is(err, registry.ErrForbidden) {
			t.Errorf("agent rotating another agent: %v; want ErrForbidden", err)
		}
		if _, err := f.Registry.Revoke(ctx, *agent, "bot.acme", ""); !errors.Is(err, registry.ErrForbidden) {
			t.Errorf("agent revoking: %v; want ErrForbidden", err)
		}
		if _, err := f.Registry.GetAgent(ctx, *agent, "bot.acme"); !errors.Is(err, registry.ErrForbidden) {
			t.Errorf("agent reading: %v; want ErrForbidden", err)
		}
		rot, err := f.Registry.Rotate(ctx, *agent, "bot.acme", csr)
		if err != nil {
			t.Fatalf("agent self-rotation: %v", err)
		}
		// The superseded certificate no longer authenticates, even in grace.
		if _, err := f.Registry.AuthenticateAgent(ctx, chain); !errors.Is(err, registry.ErrUnauthenticated) {
			t.Errorf("AuthenticateAgent with superseded cert: %v; want ErrUnauthenticated", err)
		}
		if _, err := f.Registry.AuthenticateAgent(ctx, []*x509.Certificate{f.ParseCertificate(rot.CertificatePEM)}); err != nil {
			t.Errorf("AuthenticateAgent with new cert: %v", err)
		}
		if _, err := f.Registry.Revoke(ctx, owner, "other.acme", ""); err != nil {
			t.Fatal(err)
		}
		if _, err := f.Registry.AuthenticateAgent(ctx, []*x509.Certificate{f.ParseCertificate(other.CertificatePEM)}); !errors.Is(err, registry.ErrUnauthenticated) {
			t.Errorf("AuthenticateAgent with revoked cert: %v; want ErrUnauthenticated", err)
		}
		if _, err := f.Registry.AuthenticateAgent(ctx, nil); !errors.Is(err, registry.ErrUnauthenticated) {
			t.Errorf("AuthenticateAgent(nil): %v; want ErrUnauthenticated", err)
		}
	})
}

// TestRotationRefusedWhenAgentRevokedDuringSigning: an agent revoked while
// its rotation's certificate is being signed keeps its revocation; the
// rotation's commit finds the agent no longer active with the serial it
// replaces (its UPDATE of the agent matches no row) and fails with
// ErrConflict, and its certificate is neither stored nor logged.
func TestRotationRefusedWhenAgentRevokedDuringSigning(t *testing.T) {
	eachDB(t, func(t *testing.T, f *registrytest.Fixture) {
		ctx := context.Background()
		owner := f.Owner("acme", "acme")
		reg := register(t, f, owner, "busy.acme")
		var once atomic.Bool
		f.OnSign(func() error {
			if once.CompareAndSwap(false, true) {
				if _, err := f.Registry.Revoke(ctx, owner, "busy.acme", "keyCompromise"); err != nil {
					t.Errorf("revoke while signing: %v", err)
				}
			}
			return nil
		})
		csr, _ := f.NewCSR()
		_, err := f.Registry.Rotate(ctx, owner, "busy.acme", csr)
		f.OnSign(nil)
		if !errors.Is(err, registry.ErrConflict) {
			t.Fatalf("rotation of an agent revoked meanwhile: %v, want ErrConflict", err)
		}
		if !once.Load() {
			t.Fatal("the revocation did not run while the rotation signed")
		}
		ag, err := f.Registry.GetAgent(ctx, owner, "busy.acme")
		if err != nil || ag.Status != registry.AgentRevoked || ag.CurrentSerial != reg.Certificate.Serial || len(ag.Certificates) != 1 {
			t.Fatalf("agent %+v, %v; want revoked with its one certificate %s", ag, err, reg.Certificate.Serial)
		}
		// The log holds the registration and the revocation, no rotation.
		if es, err := f.Registry.LogEntries(ctx, reg.LogIndex, reg.LogIndex+2); err != nil || len(es) != 2 {
			t.Fatalf("log entries after the registration: %d, %v; want 2", len(es), err)
		}
		if _, err := f.Registry.LogEntries(ctx, reg.LogIndex, reg.LogIndex+3); !errors.Is(err, registry.ErrNotFound) {
			t.Fatalf("a third log entry after the registration: %v, want ErrNotFound", err)
		}
	})
}

// TestIssuanceRefusedWhenReconciledDuringSigning: when signing outlasts
// PendingTimeout and Reconcile abandons the pending row meanwhile, the
// issuance's commit finds the row no longer pending (its guard, which on
// PostgreSQL a rotation runs in one statement with the agent's) and fails
// with ErrUnavailable: no certificate is stored, logged or returned, and a
// rotated agent keeps its serial.
func TestIssuanceRefusedWhenReconciledDuringSigning(t *testing.T) {
	eachDB(t, func(t *testing.T, f *registrytest.Fixture) {
		ctx := context.Background()
		owner := f.Owner("acme", "acme")
		reg := register(t, f, owner, "slow.acme")
		reconcileWhileSigning := func() {
			var once atomic.Bool
			f.OnSign(func() error {
				if once.CompareAndSwap(false, true) {
					f.Clock.Advance(registry.DefaultPendingTimeout + time.Second)
					if n, err := f.Registry.Reconcile(ctx); err != nil || n != 1 {
						t.Errorf("Reconcile while signing = %d, %v; want 1", n, err)
					}
				}
				return nil
			})
			t.Cleanup(func() { f.OnSign(nil) })
		}
		nothingLogged := func(what string) {
			t.Helper()
			if _, err := f.Registry.LogEntries(ctx, reg.LogIndex+1, reg.LogIndex+2); !errors.Is(err, registry.ErrNotFound) {
				t.Fatalf("a log entry after the registration, once %s: %v, want ErrNotFound", what, err)
			}
		}
		nothingLogged("registered")

		reconcileWhileSigning()
		csr, _ := f.NewCSR()
		if iss, err := f.Registry.Rotate(ctx, owner, "slow.acme", csr); !errors.Is(err, registry.ErrUnavailable) || iss != nil {
			t.Fatalf("rotation reconciled while signing: certificate returned %t, %v; want ErrUnavailable and none", iss != nil, err)
		}
		ag, err := f.Registry.GetAgent(ctx, owner, "slow.acme")
		if err != nil || ag.CurrentSerial != reg.Certificate.Serial || len(ag.Certificates) != 1 {
			t.Fatalf("agent %+v, %v; want its one certificate %s", ag, err, reg.Certificate.Serial)
		}
		nothingLogged("the rotation failed")

		reconcileWhileSigning()
		csr, _ = f.NewCSR()
		if iss, err := f.Registry.Register(ctx, owner, registry.RegisterRequest{Name: "late.acme", CSR: csr}); !errors.Is(err, registry.ErrUnavailable) || iss != nil {
			t.Fatalf("registration reconciled while signing: certificate returned %t, %v; want ErrUnavailable and none", iss != nil, err)
		}
		if _, err := f.Registry.GetAgent(ctx, owner, "late.acme"); !errors.Is(err, registry.ErrNotFound) {
			t.Fatalf("agent of a reconciled registration: %v, want ErrNotFound", err)
		}
		nothingLogged("the registration failed")
	})
}
