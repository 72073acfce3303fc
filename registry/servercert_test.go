package registry_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/agent-trust-registry/atr/registry"
	"github.com/agent-trust-registry/atr/registry/registrytest"
	"github.com/agent-trust-registry/atr/registry/translog"
)

var (
	serverDNS = []string{"localhost", "registry.atr.test"}
	serverIPs = []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")}
)

func serverKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// logEntries returns every entry of the fixture's transparency log, parsed.
func logEntries(t *testing.T, f *registrytest.Fixture) []translog.Entry {
	t.Helper()
	ctx := context.Background()
	signed, err := f.Registry.Checkpoint(ctx)
	if err != nil {
		t.Fatalf("Checkpoint: %v", err)
	}
	cp, err := translog.OpenCheckpoint(signed, f.NoteVerifier)
	if err != nil {
		t.Fatalf("OpenCheckpoint: %v", err)
	}
	if cp.Size == 0 {
		return nil
	}
	raw, err := f.Registry.LogEntries(ctx, 0, cp.Size)
	if err != nil {
		t.Fatalf("LogEntries: %v", err)
	}
	out := make([]translog.Entry, len(raw))
	for i, b := range raw {
		if out[i], err = translog.ParseEntry(b); err != nil {
			t.Fatalf("entry %d: %v", i, err)
		}
	}
	return out
}

func serverCertRows(t *testing.T, f *registrytest.Fixture) []registry.ServerCertificateRecord {
	t.Helper()
	rows, err := f.Store.ServerCertificates(context.Background())
	if err != nil {
		t.Fatalf("ServerCertificates: %v", err)
	}
	return rows
}

func findAudit(t *testing.T, f *registrytest.Fixture, action, target, result string) *registry.AuditEvent {
	t.Helper()
	events, _, err := f.Registry.ListAudit(context.Background(), f.Admin(), "", 100)
	if err != nil {
		t.Fatalf("ListAudit: %v", err)
	}
	for _, e := range events {
		if e.Action == action && e.Target == target && e.Result == result {
			return &e
		}
	}
	return nil
}

// TestServerCertificateIssued: the registry's TLS server certificate is
// issued through the pipeline: the server profile (linted by
// ca.Issuer.PrepareServer), a row marked issued with its TBS, DER,
// fingerprint, issuer key ID and log index, a server_cert log entry with its
// fingerprint and DER, and an audit event; each renewal is a new row and a
// new entry.
func TestServerCertificateIssued(t *testing.T) {
	eachDB(t, func(t *testing.T, f *registrytest.Fixture) {
		ctx := context.Background()
		key := serverKey(t)
		sc, err := f.Registry.IssueServerCertificate(ctx, key.Public(), serverDNS, serverIPs, 0)
		if err != nil {
			t.Fatalf("IssueServerCertificate: %v", err)
		}
		c := sc.Certificate
		if len(sc.Chain) != 1 || !sc.Chain[0].Equal(f.Intermediate) {
			t.Errorf("chain has %d certificates; want the intermediate alone", len(sc.Chain))
		}
		roots, inters := x509.NewCertPool(), x509.NewCertPool()
		roots.AddCert(f.Root)
		inters.AddCert(f.Intermediate)
		for _, name := range []string{"localhost", "registry.atr.test", "127.0.0.1", "::1"} {
			if _, err := c.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inters, DNSName: name, CurrentTime: f.Clock.Now(),
				KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
				t.Errorf("server certificate does not verify for %s: %v", name, err)
			}
		}
		// The server profile: no SPIFFE ID, serverAuth only, the registry's
		// CRL and OCSP URLs, a short life.
		if len(c.URIs) != 0 || !slices.Equal(c.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}) ||
			len(c.CRLDistributionPoints) != 1 || len(c.OCSPServer) != 1 || c.NotAfter.Sub(c.NotBefore) > 25*time.Hour {
			t.Errorf("certificate outside the server profile: URIs %v, EKU %v, CRL %v, OCSP %v, life %v",
				c.URIs, c.ExtKeyUsage, c.CRLDistributionPoints, c.OCSPServer, c.NotAfter.Sub(c.NotBefore))
		}
		if !c.PublicKey.(*ecdsa.PublicKey).Equal(key.Public()) {
			t.Error("certificate is not for the given key")
		}

		rows := serverCertRows(t, f)
		if len(rows) != 1 {
			t.Fatalf("server certificate rows = %+v; want 1", rows)
		}
		row := rows[0]
		wantKeyID := hex.EncodeToString(f.Intermediate.SubjectKeyId)
		if row.State != "issued" || row.Serial != sc.Serial || row.FingerprintSHA256 != sc.FingerprintSHA256 || !bytes.Equal(row.DER, c.Raw) ||
			!bytes.Equal(row.TBS, c.RawTBSCertificate) || row.IssuerKeyID != wantKeyID || row.LogIndex == nil || *row.LogIndex != sc.LogIndex ||
			!row.NotAfter.Equal(c.NotAfter) || !slices.Equal(row.DNSNames, serverDNS) || !slices.Equal(row.IPAddresses, []string{"127.0.0.1", "::1"}) {
			t.Errorf("row = %+v; want issued with serial %s, fingerprint %s, the DER and TBS, issuer key %s, log index %d", row, sc.Serial, sc.FingerprintSHA256, wantKeyID, sc.LogIndex)
		}

		entries := logEntries(t, f)
		if sc.LogIndex >= int64(len(entries)) {
			t.Fatalf("log index %d past the log (%d entries)", sc.LogIndex, len(entries))
		}
		e := entries[sc.LogIndex]
		if e.Type != translog.EventServerCert || e.Fingerprint != sc.FingerprintSHA256 || e.IssuerKeyID != wantKeyID ||
			!bytes.Equal(e.Certificate, c.Raw) || len(e.NameIndexes) != 0 {
			t.Errorf("log entry %d = %+v; want server_cert with the fingerprint, issuer key ID and DER", sc.LogIndex, e)
		}
		ev := findAudit(t, f, registry.ActionServerCertIssue, sc.Serial, registry.ResultSuccess)
		if ev == nil || ev.LogIndex == nil || *ev.LogIndex != sc.LogIndex || ev.Metadata["fingerprint_sha256"] != sc.FingerprintSHA256 || ev.Actor != "system" {
			t.Errorf("audit event = %+v; want server_cert.issue by system with the fingerprint and log index", ev)
		}

		// Renewal: a new key, a new certificate, a new row and a new entry.
		f.Clock.Advance(16 * time.Hour)
		again, err := f.Registry.IssueServerCertificate(ctx, serverKey(t).Public(), serverDNS, serverIPs, 0)
		if err != nil {
			t.Fatalf("renewal: %v", err)
		}
		if again.Serial == sc.Serial || again.LogIndex <= sc.LogIndex {
			t.Errorf("renewal serial %s, log index %d; want a new serial after log index %d", again.Serial, again.LogIndex, sc.LogIndex)
		}
		if rows := serverCertRows(t, f); len(rows) != 2 || rows[1].State != "issued" || rows[1].Serial != again.Serial {
			t.Errorf("rows after renewal = %+v; want two issued", rows)
		}
	})
}

// TestServerCertificateRecordedBeforeSigning: when the token signs, the
// pending row with the TBS is already committed and nothing is in the log;
// when the token fails, the row is abandoned and audited, nothing is logged
// and no certificate is returned.
func TestServerCertificateRecordedBeforeSigning(t *testing.T) {
	eachDB(t, func(t *testing.T, f *registrytest.Fixture) {
		ctx := context.Background()
		before := len(logEntries(t, f))
		var atSign []registry.ServerCertificateRecord
		f.OnSign(func() error {
			atSign = serverCertRows(t, f)
			return registrytest.ErrInjected
		})
		sc, err := f.Registry.IssueServerCertificate(ctx, serverKey(t).Public(), serverDNS, nil, 0)
		if !errors.Is(err, registry.ErrUnavailable) || sc != nil {
			t.Fatalf("IssueServerCertificate with a failing token = %v, %v; want ErrUnavailable and no certificate", sc, err)
		}
		f.OnSign(nil)
		if len(atSign) != 1 || atSign[0].State != "pending" || len(atSign[0].TBS) == 0 || atSign[0].DER != nil || atSign[0].LogIndex != nil {
			t.Fatalf("rows when the token signed = %+v; want one pending row with its TBS and nothing else", atSign)
		}
		if _, err := x509.ParseCertificate(atSign[0].TBS); err == nil {
			t.Error("the recorded TBS parses as a whole certificate; want the TBSCertificate")
		}
		rows := serverCertRows(t, f)
		if len(rows) != 1 || rows[0].State != "abandoned" || rows[0].Serial != atSign[0].Serial {
			t.Errorf("rows after the failure = %+v; want the row abandoned", rows)
		}
		if after := len(logEntries(t, f)); after != before {
			t.Errorf("log grew from %d to %d entries; want nothing logged", before, after)
		}
		if findAudit(t, f, registry.ActionServerCertIssue, atSign[0].Serial, registry.ResultError) == nil {
			t.Error("no audit event for the failed server certificate")
		}
		// The token is back: the next issuance works.
		if _, err := f.Registry.IssueServerCertificate(ctx, serverKey(t).Public(), serverDNS, nil, 0); err != nil {
			t.Errorf("IssueServerCertificate after the token recovered: %v", err)
		}
	})
}

// TestServerCertificateCrashReconciled: a crash after the pending commit
// (the store dies while the token signs) leaves a pending row; after the
// restart Reconcile abandons it once PendingTimeout has passed, audits it
// and never signs; the signed certificate is in no log entry.
func TestServerCertificateCrashReconciled(t *testing.T) {
	eachDB(t, func(t *testing.T, f *registrytest.Fixture) {
		ctx := context.Background()
		store := f.Store
		f.OnSign(func() error { store.Close(); return nil }) // the process "dies" after the pending commit
		if sc, err := f.Registry.IssueServerCertificate(ctx, serverKey(t).Public(), serverDNS, serverIPs, 0); err == nil || sc != nil {
			t.Fatalf("IssueServerCertificate across a crash = %v, %v; want an error and no certificate", sc, err)
		}
		f.OnSign(nil)

		f.Reopen()
		rows := serverCertRows(t, f)
		if len(rows) != 1 || rows[0].State != "pending" {
			t.Fatalf("after restart rows = %+v; want one pending row", rows)
		}
		signs := 0
		f.OnSign(func() error { signs++; return nil })
		if n, err := f.Registry.Reconcile(ctx); err != nil || n != 0 {
			t.Errorf("Reconcile before the timeout = %d, %v; want 0 (row may still be in flight)", n, err)
		}
		f.Clock.Advance(registry.DefaultPendingTimeout + time.Second)
		if n, err := f.Registry.Reconcile(ctx); err != nil || n != 1 {
			t.Fatalf("Reconcile = %d, %v; want 1", n, err)
		}
		if n, err := f.Registry.Reconcile(ctx); err != nil || n != 0 {
			t.Errorf("second Reconcile = %d, %v; want 0", n, err)
		}
		if signs != 0 {
			t.Errorf("Reconcile signed %d times; want never", signs)
		}
		if rows := serverCertRows(t, f); rows[0].State != "abandoned" {
			t.Errorf("state after Reconcile = %q; want abandoned", rows[0].State)
		}
		ev := findAudit(t, f, registry.ActionReconcile, rows[0].Serial, registry.ResultAbandoned)
		if ev == nil || ev.Metadata["kind"] != "server_cert" {
			t.Errorf("reconcile audit event = %+v; want one for the server certificate", ev)
		}
		for i, e := range logEntries(t, f) {
			if e.Type == translog.EventServerCert {
				t.Errorf("log entry %d is a server certificate; want none", i)
			}
		}
	})
}

// TestServerCertificateRefused: names and lifetimes the server profile
// refuses are ErrInvalid, before anything is recorded or signed.
func TestServerCertificateRefused(t *testing.T) {
	eachDB(t, func(t *testing.T, f *registrytest.Fixture) {
		ctx := context.Background()
		signs := 0
		f.OnSign(func() error { signs++; return nil })
		pub := serverKey(t).Public()
		for _, tt := range []struct {
			name     string
			dns      []string
			lifetime time.Duration
		}{
			{"no names", nil, 0},
			{"uppercase name", []string{"LocalHost"}, 0},
			{"wildcard", []string{"*.atr.test"}, 0},
			{"a year", serverDNS, 365 * 24 * time.Hour},
		} {
			if _, err := f.Registry.IssueServerCertificate(ctx, pub, tt.dns, nil, tt.lifetime); !errors.Is(err, registry.ErrInvalid) {
				t.Errorf("%s: %v; want ErrInvalid", tt.name, err)
			}
		}
		if rows := serverCertRows(t, f); len(rows) != 0 || signs != 0 {
			t.Errorf("refused requests left rows %+v and %d signatures; want none", rows, signs)
		}
	})
}
