package registry_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/agent-trust-registry/atr/ca"
	"github.com/agent-trust-registry/atr/registry"
	"github.com/agent-trust-registry/atr/registry/registrytest"
)

// TestOwnerIsolation replays SEC-002, SEC-010, SEC-021 and SEC-026: another
// owner can neither read, list, fetch the certificate of, rotate nor revoke
// an agent, and learns nothing about its existence.
func TestOwnerIsolation(t *testing.T) {
	eachDB(t, func(t *testing.T, f *registrytest.Fixture) {
		ctx := context.Background()
		alice := f.Owner("alice", "alice")
		bob := f.Owner("bob", "bob")
		register(t, f, alice, "svc.alice")
		register(t, f, bob, "svc.bob")
		csr, _ := f.NewCSR()

		steps := []struct {
			name string
			call func(a registry.Actor, agent string) error
		}{
			{"get", func(a registry.Actor, n string) error { _, err := f.Registry.GetAgent(ctx, a, n); return err }},
			{"certificate", func(a registry.Actor, n string) error { _, err := f.Registry.CurrentCertificate(ctx, a, n); return err }},
			{"rotate", func(a registry.Actor, n string) error { _, err := f.Registry.Rotate(ctx, a, n, csr); return err }},
			{"revoke", func(a registry.Actor, n string) error {
				_, err := f.Registry.Revoke(ctx, a, n, "keyCompromise")
				return err
			}},
		}
		for _, s := range steps {
			t.Run(s.name, func(t *testing.T) {
				errOther := s.call(bob, "svc.alice")
				errMissing := s.call(bob, "missing.alice")
				if !errors.Is(errOther, registry.ErrNotFound) || !errors.Is(errMissing, registry.ErrNotFound) {
					t.Errorf("bob %s alice's agent: %v; missing agent: %v; want ErrNotFound for both", s.name, errOther, errMissing)
				}
			})
		}
		d, err := f.Registry.GetAgent(ctx, alice, "svc.alice")
		if err != nil || d.Status != registry.AgentActive || len(d.Certificates) != 1 {
			t.Errorf("alice's agent after bob's attempts = %+v, %v; want untouched", d, err)
		}

		list, next, err := f.Registry.ListAgents(ctx, bob, "", 0)
		if err != nil || next != "" || len(list) != 1 || list[0].Name != "svc.bob" {
			t.Errorf("bob's list = %v, %q, %v; want only svc.bob", names(list), next, err)
		}
		all, _, err := f.Registry.ListAgents(ctx, f.Admin(), "", 0)
		if err != nil || len(all) != 2 {
			t.Errorf("admin list = %v, %v; want both agents", names(all), err)
		}
		if _, err := f.Registry.GetAgent(ctx, f.Admin(), "svc.alice"); err != nil {
			t.Errorf("admin GetAgent: %v", err)
		}

		// Unauthenticated / scope-less actors.
		for _, a := range []registry.Actor{{}, {Owner: "alice"}, {KeyID: "0123456789abcdef", Owner: "alice"}} {
			if _, _, err := f.Registry.ListAgents(ctx, a, "", 0); !errors.Is(err, registry.ErrForbidden) {
				t.Errorf("ListAgents(%+v): %v; want ErrForbidden", a, err)
			}
			if _, err := f.Registry.Register(ctx, a, registry.RegisterRequest{Name: "x.alice", CSR: csr}); !errors.Is(err, registry.ErrForbidden) {
				t.Errorf("Register(%+v): %v; want ErrForbidden", a, err)
			}
		}
		reader := f.Actor("alice", "alice", registry.ScopeAgentsRead)
		if _, err := f.Registry.Register(ctx, reader, registry.RegisterRequest{Name: "x.alice", CSR: csr}); !errors.Is(err, registry.ErrForbidden) {
			t.Errorf("read-only key Register: %v; want ErrForbidden", err)
		}
		if _, err := f.Registry.Revoke(ctx, reader, "svc.alice", ""); !errors.Is(err, registry.ErrForbidden) {
			t.Errorf("read-only key Revoke: %v; want ErrForbidden", err)
		}
		if _, err := f.Registry.GetAgent(ctx, reader, "svc.alice"); err != nil {
			t.Errorf("read-only key GetAgent: %v", err)
		}

		// Refusals are audited with the actor (SEC-008).
		events, _, err := f.Registry.ListAudit(ctx, f.Admin(), "", 100)
		if err != nil {
			t.Fatal(err)
		}
		denied := 0
		for _, e := range events {
			if e.Result == registry.ResultDenied && e.ActorOwner == "bob" && e.Target == "svc.alice" {
				denied++
				if e.Actor != "key:"+bob.KeyID || e.RequestID != bob.RequestID || e.IP != bob.IP {
					t.Errorf("denied event = %+v; want bob's key, request id and ip", e)
				}
			}
		}
		if denied != len(steps) {
			t.Errorf("denied audit events for bob on svc.alice = %d; want %d", denied, len(steps))
		}
	})
}

func names(as []registry.Agent) []string {
	var out []string
	for _, a := range as {
		out = append(out, a.Name)
	}
	return out
}

// TestNamespaceAndNames covers the namespace rule, duplicates and name
// normalization collisions (SEC-007, SEC-018).
func TestNamespaceAndNames(t *testing.T) {
	eachDB(t, func(t *testing.T, f *registrytest.Fixture) {
		ctx := context.Background()
		acme := f.Owner("acme", "acme")
		tests := []struct {
			name, want string // want "" means success
			err        error
		}{
			{"bot.acme", "bot.acme", nil},
			{"acme", "acme", nil},
			{"Deep.Sub.ACME", "deep.sub.acme", nil},
			{"bot.evil", "", registry.ErrForbidden},
			{"notacme", "", registry.ErrForbidden},
			{"bot.acme.evil", "", registry.ErrForbidden},
			{"BOT.acme", "", registry.ErrConflict}, // case collision with bot.acme
			{"bot.acme.", "", registry.ErrInvalid}, // trailing dot
			{"bоt.acme", "", registry.ErrInvalid},  // Cyrillic о (confusable)
			{"../../etc.acme", "", registry.ErrInvalid},
			{"bot/x.acme", "", registry.ErrInvalid},
			{"bot\x00.acme", "", registry.ErrInvalid},
			{"xn--bt-zmc.acme", "", registry.ErrInvalid},
			{"", "", registry.ErrInvalid},
			{strings.Repeat("a", 64) + ".acme", "", registry.ErrInvalid},
		}
		for _, tt := range tests {
			t.Run(fmt.Sprintf("%q", tt.name), func(t *testing.T) {
				csr, _ := f.NewCSR()
				iss, err := f.Registry.Register(ctx, acme, registry.RegisterRequest{Name: tt.name, CSR: csr})
				if tt.err != nil {
					if !errors.Is(err, tt.err) {
						t.Fatalf("Register(%q) error = %v; want %v", tt.name, err, tt.err)
					}
					return
				}
				if err != nil || iss.Agent.Name != tt.want {
					t.Fatalf("Register(%q) = %v, %v; want name %q", tt.name, iss, err, tt.want)
				}
			})
		}
		// A key whose namespace is a sub-namespace cannot climb up.
		sub := f.Owner("acme-billing", "billing.acme")
		csr, _ := f.NewCSR()
		if _, err := f.Registry.Register(ctx, sub, registry.RegisterRequest{Name: "x.acme", CSR: csr}); !errors.Is(err, registry.ErrForbidden) {
			t.Errorf("sub-namespace key registering in parent: %v; want ErrForbidden", err)
		}
		// Another owner with an overlapping namespace meets a conflict, not a takeover.
		rival := f.Owner("rival", "acme")
		if _, err := f.Registry.Register(ctx, rival, registry.RegisterRequest{Name: "bot.acme", CSR: csr}); !errors.Is(err, registry.ErrConflict) {
			t.Errorf("rival registering existing name: %v; want ErrConflict", err)
		}
		// Bad inputs.
		for _, req := range []registry.RegisterRequest{
			{Name: "c.acme", CSR: []byte("not a csr")},
			{Name: "c.acme", CSR: csr, Metadata: map[string]string{"note": "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----"}},
			{Name: "c.acme", CSR: csr, Metadata: map[string]string{"api_key": "x"}},
			{Name: "c.acme", CSR: csr, Capabilities: []string{"has space"}},
		} {
			if _, err := f.Registry.Register(ctx, acme, req); !errors.Is(err, registry.ErrInvalid) {
				t.Errorf("Register(%+v) = %v; want ErrInvalid", req.Metadata, err)
			}
		}
	})
}

func TestListAgentsPagination(t *testing.T) {
	eachDB(t, func(t *testing.T, f *registrytest.Fixture) {
		ctx := context.Background()
		acme := f.Owner("acme", "acme")
		want := []string{"a.acme", "b.acme", "c.acme", "d.acme", "e.acme"}
		for _, n := range []string{"c.acme", "a.acme", "e.acme", "b.acme", "d.acme"} {
			register(t, f, acme, n)
		}
		var got []string
		cursor := ""
		for pages := 0; ; pages++ {
			page, next, err := f.Registry.ListAgents(ctx, acme, cursor, 2)
			if err != nil {
				t.Fatalf("ListAgents(cursor %q): %v", cursor, err)
			}
			got = append(got, names(page)...)
			if next == "" {
				break
			}
			if pages > 5 {
				t.Fatal("pagination does not end")
			}
			cursor = next
		}
		if strings.Join(got, ",") != strings.Join(want, ",") {
			t.Errorf("paged names = %v; want %v", got, want)
		}
		for _, bad := range []string{"!!!", "Li4v", "QkFE"} { // not base64url, "../", "BAD"
			if _, _, err := f.Registry.ListAgents(ctx, acme, bad, 2); !errors.Is(err, registry.ErrInvalid) {
				t.Errorf("ListAgents(cursor %q): %v; want ErrInvalid", bad, err)
			}
		}
		if _, _, err := f.Registry.ListAgents(ctx, acme, "", -1); !errors.Is(err, registry.ErrInvalid) {
			t.Errorf("ListAgents(limit -1): %v; want ErrInvalid", err)
		}
		if page, _, err := f.Registry.ListAgents(ctx, acme, "", 100000); err != nil || len(page) != 5 {
			t.Errorf("ListAgents(limit 100000) = %d, %v; want capped, 5 agents", len(page), err)
		}
	})
}

// TestInvalidWrapsPolicyError: ErrInvalid carries the *ca.PolicyError so the
// api layer can show its safe Reason.
func TestInvalidWrapsPolicyError(t *testing.T) {
	f := registrytest.NewFixture(t)
	csr, _ := f.NewCSR()
	_, err := f.Registry.Register(context.Background(), f.Owner("acme", "acme"), registry.RegisterRequest{Name: "Bad Name.acme", CSR: csr})
	var pe *ca.PolicyError
	if !errors.Is(err, registry.ErrInvalid) || !errors.As(err, &pe) || pe.Field != "name" {
		t.Errorf("Register(bad name) = %v; want ErrInvalid wrapping a *ca.PolicyError for name", err)
	}
}

// TestNamespaceIsolationWithinOwner: one owner holding two keys granted
// different namespaces (team-a.acme, team-b.acme). The team-a key can
// register only under its namespace, and cannot list, read, fetch the
// certificate of, rotate or revoke team-b's agent — it looks absent.
func TestNamespaceIsolationWithinOwner(t *testing.T) {
	eachDB(t, func(t *testing.T, f *registrytest.Fixture) {
		ctx := context.Background()
		teamA := f.Owner("acme", "team-a.acme")
		teamB := f.Owner("acme", "team-b.acme")
		csr, _ := f.NewCSR()
		if _, err := f.Registry.Register(ctx, teamB, registry.RegisterRequest{Name: "db.team-b.acme", CSR: csr}); err != nil {
			t.Fatalf("team-b registering its agent: %v", err)
		}
		csrA, _ := f.NewCSR()
		if _, err := f.Registry.Register(ctx, teamA, registry.RegisterRequest{Name: "web.team-a.acme", CSR: csrA}); err != nil {
			t.Fatalf("team-a registering its agent: %v", err)
		}
		if _, err := f.Registry.Register(ctx, teamA, registry.RegisterRequest{Name: "x.team-b.acme", CSR: csrA}); !errors.Is(err, registry.ErrForbidden) {
			t.Errorf("team-a registering under team-b: %v; want ErrForbidden", err)
		}
		if _, err := f.Registry.GetAgent(ctx, teamA, "db.team-b.acme"); !errors.Is(err, registry.ErrNotFound) {
			t.Errorf("team-a reading team-b's agent: %v; want ErrNotFound", err)
		}
		if _, err := f.Registry.CurrentCertificate(ctx, teamA, "db.team-b.acme"); !errors.Is(err, registry.ErrNotFound) {
			t.Errorf("team-a fetching team-b's certificate: %v; want ErrNotFound", err)
		}
		csr2, _ := f.NewCSR()
		if _, err := f.Registry.Rotate(ctx, teamA, "db.team-b.acme", csr2); !errors.Is(err, registry.ErrNotFound) {
			t.Errorf("team-a rotating team-b's agent: %v; want ErrNotFound", err)
		}
		if _, err := f.Registry.Revoke(ctx, teamA, "db.team-b.acme", "keyCompromise"); !errors.Is(err, registry.ErrNotFound) {
			t.Errorf("team-a revoking team-b's agent: %v; want ErrNotFound", err)
		}
		agents, _, err := f.Registry.ListAgents(ctx, teamA, "", 100)
		if err != nil {
			t.Fatal(err)
		}
		if len(agents) != 1 || agents[0].Name != "web.team-a.acme" {
			t.Errorf("team-a's list = %+v; want only web.team-a.acme", agents)
		}
		if d, err := f.Registry.GetAgent(ctx, teamB, "db.team-b.acme"); err != nil || d.Status != registry.AgentActive {
			t.Errorf("team-b's agent after team-a's attempts: %+v, %v; want it active", d, err)
		}
	})
}
