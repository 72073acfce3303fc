package registry_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"testing"
	"time"

	"github.com/agent-trust-registry/atr/ca"
	"github.com/agent-trust-registry/atr/registry"
	"github.com/agent-trust-registry/atr/registry/registrytest"
	"github.com/agent-trust-registry/atr/registry/translog"
)

// TestServerTLSThroughPipeline: every server certificate ServerTLS serves
// was issued by the registry (a row marked issued, a server_cert log entry
// with its fingerprint); a renewal the token refuses keeps the current
// certificate (the refused one is abandoned, never served) until it
// expires, and a certificate is issued again once the token is back.
func TestServerTLSThroughPipeline(t *testing.T) {
	f := registrytest.NewFixture(t)
	ctx := context.Background()
	s, err := f.Registry.ServerTLS(ctx, []string{"localhost"}, []net.IP{net.ParseIP("127.0.0.1")})
	if err != nil {
		t.Fatal(err)
	}
	recorded := func(c *tls.Certificate) registry.ServerCertificateRecord {
		t.Helper()
		rows, err := f.Store.ServerCertificates(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, row := range rows {
			if bytes.Equal(row.DER, c.Leaf.Raw) {
				return row
			}
		}
		t.Fatalf("served certificate %s is not in server_certificates (%d rows)", ca.Fingerprint(c.Leaf), len(rows))
		return registry.ServerCertificateRecord{}
	}
	first, err := s.GetCertificate(nil)
	if err != nil {
		t.Fatal(err)
	}
	row := recorded(first)
	if row.State != "issued" || row.LogIndex == nil {
		t.Fatalf("row of the served certificate = %+v; want issued with a log index", row)
	}
	raw, err := f.Registry.LogEntries(ctx, *row.LogIndex, *row.LogIndex+1)
	if err != nil {
		t.Fatal(err)
	}
	e, err := translog.ParseEntry(raw[0])
	if err != nil || e.Type != translog.EventServerCert || e.Fingerprint != ca.Fingerprint(first.Leaf) {
		t.Fatalf("log entry %d = %+v, %v; want server_cert with fingerprint %s", *row.LogIndex, e, err, ca.Fingerprint(first.Leaf))
	}
	if len(first.Certificate) != 2 || !bytes.Equal(first.Certificate[1], f.Intermediate.Raw) {
		t.Errorf("served chain has %d certificates; want the leaf and the intermediate", len(first.Certificate))
	}

	// A renewal the token refuses: the current certificate stays.
	f.FailSigning(true)
	f.Clock.Advance(registry.ServerCertLifetime*2/3 + time.Minute)
	kept, err := s.GetCertificate(nil)
	if err != nil || kept != first {
		t.Fatalf("GetCertificate with a failing token = %v; want the current certificate", err)
	}
	rows, err := f.Store.ServerCertificates(ctx)
	if err != nil || len(rows) != 2 || rows[1].State != "abandoned" {
		t.Fatalf("rows after the refused renewal = %+v, %v; want the new one abandoned", rows, err)
	}
	// Past its end nothing is served.
	f.Clock.Advance(registry.ServerCertLifetime)
	if c, err := s.GetCertificate(nil); err == nil {
		t.Fatalf("GetCertificate after the certificate expired with a failing token = %s; want an error", ca.Fingerprint(c.Leaf))
	}
	f.FailSigning(false)
	renewed, err := s.GetCertificate(nil)
	if err != nil {
		t.Fatal(err)
	}
	if row := recorded(renewed); row.State != "issued" || renewed.Leaf.SerialNumber.Cmp(first.Leaf.SerialNumber) == 0 {
		t.Errorf("certificate after the token recovered: row %+v; want a new, issued one", row)
	}
}

// TestServerTLSRenewal replays the clock past two thirds of the server
// certificate's life: the next handshake gets a fresh certificate, no restart.
func TestServerTLSRenewal(t *testing.T) {
	f := registrytest.NewFixture(t) // the issuance pipeline over a SoftHSM2 CA, with a fake clock
	clock := f.Clock.Now
	s, err := f.Registry.ServerTLS(context.Background(), []string{"localhost"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	first, _ := s.GetCertificate(nil)
	again, _ := s.GetCertificate(nil)
	if first != again {
		t.Error("a second handshake within the lifetime got a new certificate")
	}
	f.Clock.Advance(registry.ServerCertLifetime*2/3 + time.Minute)
	renewed, err := s.GetCertificate(nil)
	if err != nil {
		t.Fatal(err)
	}
	if renewed.Leaf.SerialNumber.Cmp(first.Leaf.SerialNumber) == 0 {
		t.Fatal("the certificate was not renewed after two thirds of its life")
	}
	if !renewed.Leaf.NotAfter.After(first.Leaf.NotAfter) {
		t.Errorf("renewed NotAfter %v not after %v", renewed.Leaf.NotAfter, first.Leaf.NotAfter)
	}
	pool := x509.NewCertPool()
	pool.AddCert(f.Root)
	inter := x509.NewCertPool()
	inter.AddCert(f.Intermediate)
	if _, err := renewed.Leaf.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, DNSName: "localhost", CurrentTime: clock()}); err != nil {
		t.Errorf("renewed certificate does not verify: %v", err)
	}
}
