package faults

import (
	"context"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/agent-trust-registry/atr/api"
	"github.com/agent-trust-registry/atr/api/client"
	"github.com/agent-trust-registry/atr/hsm/hsmtest"
	"github.com/agent-trust-registry/atr/registry/registrytest"
)

// TestTokenTrouble breaks the issuing token under a running registry and
// API: signing must fail closed with 503 and the token must recover without
// a restart. cmd/atr's serve cannot be started from this package (package
// main), so the server is api.New over a registrytest fixture in-process —
// the same wiring serve does, with the token's sessions pulled out by a
// second PKCS#11 handle in this process (hsmtest.Saboteur; SoftHSM2 sessions are per process).
func TestTokenTrouble(t *testing.T) {
	f := registrytest.NewFixture(t)
	srv, err := api.New(api.Config{TrustDomain: registrytest.TrustDomain},
		api.Deps{Lifecycle: f.Registry, Auth: f.Registry, Admin: f.Registry}, f.Log)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	c, err := client.New(hs.URL, client.WithAPIKey(f.NewAPIKey("acme", "acme", "agents:read", "agents:write")))
	if err != nil {
		t.Fatal(err)
	}
	sab := hsmtest.NewSaboteur(t, f.IssuingKey.URI().Token)

	register := func(ctx context.Context, name string) (*client.Certificate, error) {
		csr, err := NewCSR()
		if err != nil {
			return nil, err
		}
		return c.Register(ctx, client.RegisterRequest{Name: name, CSR: string(csr)})
	}
	if _, err := register(t.Context(), "before.acme"); err != nil {
		t.Fatal(err)
	}
	troubles := []struct {
		name    string
		inflict func(tb testing.TB)
	}{
		{"sessions closed", sab.CloseAllSessions},
		{"module finalized", sab.Finalize},
	}
	for i, tr := range troubles {
		t.Run(tr.name, func(t *testing.T) {
			tr.inflict(t)
			_, err := register(t.Context(), "during"+string(rune('a'+i))+".acme")
			if cerr := checkUnavailable(err); cerr != nil {
				t.Errorf("register with a broken token: %v", cerr)
			}
			if err := c.Ready(t.Context()); err != nil {
				t.Logf("readyz while the token rebuilds: %v", err)
			} else {
				t.Log("readyz: token already recovered")
			}
			waitFor(t, "readyz", 30*time.Second, c.Ready)
			cert, err := register(t.Context(), "after"+string(rune('a'+i))+".acme")
			if err != nil {
				t.Fatalf("register after recovery: %v", err)
			}
			res, err := c.Verify(t.Context(), []byte(cert.Certificate), []byte(cert.Chain))
			if err != nil || !res.Verified {
				t.Fatalf("verify after recovery: %+v, %v", res, err)
			}
		})
	}
	pend, err := f.Store.PendingIssuances(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, pi := range pend {
		if pi.State == "issued" {
			continue
		}
		t.Logf("pending issuance %s of %s left %s by the failed signature", pi.Serial, pi.Agent, pi.State)
	}
}
