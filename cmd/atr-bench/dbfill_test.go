package main

import (
	"context"
	"crypto/x509"
	"testing"
	"time"

	"github.com/agent-trust-registry/atr/registry"
	"github.com/agent-trust-registry/atr/registry/registrytest"
)

// TestFilledRevocationsAreInTheCRL: revoked rows the bench writes straight
// into the database with a real leaf's DER are listed by that leaf's CA's
// CRL. Before, the rows named no issuing CA, and a CRL lists its own CA's
// rows only: the quick run's CRL figure was of a 5-entry list.
func TestFilledRevocationsAreInTheCRL(t *testing.T) {
	f := registrytest.NewFixture(t)
	ctx := context.Background()
	csr, _ := f.NewCSR()
	iss, err := f.Registry.Register(ctx, f.Owner("bench", "bench"), registry.RegisterRequest{Name: "probe.bench", CSR: csr})
	if err != nil {
		t.Fatal(err)
	}
	leaf := f.ParseCertificate(iss.CertificatePEM)
	db, pg, err := openDB(ctx, f.DatabaseURL)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	const n = 40
	if _, err := (&filler{db: db, postgres: pg}).fill(ctx, n, "bench", true, leaf.Raw); err != nil {
		t.Fatal(err)
	}
	// The registry sees another connection's commit within its notifier's
	// poll (250 ms on SQLite).
	deadline := time.Now().Add(10 * time.Second)
	for {
		der, _, err := f.Registry.CRL(ctx)
		if err != nil {
			t.Fatal(err)
		}
		rl, err := x509.ParseRevocationList(der)
		if err != nil {
			t.Fatal(err)
		}
		got := len(rl.RevokedCertificateEntries)
		if got >= n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the CRL lists %d entries, want at least the %d filled", got, n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
