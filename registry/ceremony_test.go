package registry_test

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/agent-trust-registry/atr/registry"
	"github.com/agent-trust-registry/atr/registry/registrytest"
	"github.com/agent-trust-registry/atr/registry/translog"
)

// TestRecordCACertificates: every CA certificate reaches the transparency log
// exactly once as a "ceremony" entry with its DER, across restarts (and so
// across replicas, which race on the same primary key); a leaf is refused.
func TestRecordCACertificates(t *testing.T) {
	eachDB(t, func(t *testing.T, f *registrytest.Fixture) {
		ctx := context.Background()
		cas := f.Verifier.Roots()
		cas = append(cas, f.Intermediate)
		n, err := f.Registry.RecordCACertificates(ctx, cas)
		if err != nil || n != len(cas) {
			t.Fatalf("first RecordCACertificates = %d, %v; want %d, nil", n, err, len(cas))
		}
		f.Reopen()
		if n, err := f.Registry.RecordCACertificates(ctx, cas); err != nil || n != 0 {
			t.Fatalf("second RecordCACertificates = %d, %v; want 0, nil (idempotent)", n, err)
		}
		entries, err := f.Registry.LogEntries(ctx, 0, int64(len(cas)))
		if err != nil {
			t.Fatalf("LogEntries: %v", err)
		}
		found := map[string]int{}
		for _, raw := range entries {
			e, err := translog.ParseEntry(raw)
			if err != nil {
				t.Fatalf("ParseEntry: %v", err)
			}
			if e.Type != translog.EventCeremony {
				continue
			}
			for _, c := range cas {
				if bytes.Equal(e.Certificate, c.Raw) {
					found[c.Subject.String()]++
				}
			}
		}
		for _, c := range cas {
			if found[c.Subject.String()] != 1 {
				t.Errorf("ceremony entries for %s = %d; want exactly 1", c.Subject, found[c.Subject.String()])
			}
		}

		csr, _ := f.NewCSR()
		iss, err := f.Registry.Register(ctx, f.Owner("acme", "acme"), registry.RegisterRequest{Name: "bot.acme", CSR: csr})
		if err != nil {
			t.Fatalf("Register: %v", err)
		}
		leaf := f.ParseCertificate(iss.CertificatePEM)
		if _, err := f.Registry.RecordCACertificates(ctx, append(cas, leaf)); !errors.Is(err, registry.ErrInvalid) {
			t.Errorf("RecordCACertificates with a leaf: %v; want ErrInvalid", err)
		}
	})
}
