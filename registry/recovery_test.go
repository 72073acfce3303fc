package registry_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agent-trust-registry/atr/ca"
	"github.com/agent-trust-registry/atr/registry"
	"github.com/agent-trust-registry/atr/registry/registrytest"
)

// TestSigningFailureAbandonsPending: when the token fails after the pending
// row was recorded, the client gets ErrUnavailable, the row is abandoned and
// audited, and the name stays free.
func TestSigningFailureAbandonsPending(t *testing.T) {
	eachDB(t, func(t *testing.T, f *registrytest.Fixture) {
		ctx := context.Background()
		owner := f.Owner("acme", "acme")
		csr, _ := f.NewCSR()
		f.FailSigning(true)
		if _, err := f.Registry.Register(ctx, owner, registry.RegisterRequest{Name: "bot.acme", CSR: csr}); !errors.Is(err, registry.ErrUnavailable) {
			t.Fatalf("Register with failing token: %v; want ErrUnavailable", err)
		}
		rows, err := f.Store.PendingIssuances(ctx)
		if err != nil || len(rows) != 1 || rows[0].State != "abandoned" || len(rows[0].TBS) == 0 {
			t.Fatalf("pending rows = %+v, %v; want one abandoned row with its TBS", rows, err)
		}
		f.FailSigning(false)
		if _, err := f.Registry.Register(ctx, owner, registry.RegisterRequest{Name: "bot.acme", CSR: csr}); err != nil {
			t.Errorf("Register after the token recovered: %v", err)
		}
	})
}

// TestCrashBetweenPendingAndIssued kills the store while the token signs:
// the certificate never reaches the client, the pending row survives the
// "crash", and after restart Reconcile abandons it without re-signing.
func TestCrashBetweenPendingAndIssued(t *testing.T) {
	eachDB(t, func(t *testing.T, f *registrytest.Fixture) {
		ctx := context.Background()
		owner := f.Owner("acme", "acme")
		csr, _ := f.NewCSR()
		store := f.Store
		f.OnSign(func() error { store.Close(); return nil }) // the process "dies" after the pending commit
		iss, err := f.Registry.Register(ctx, owner, registry.RegisterRequest{Name: "bot.acme", CSR: csr})
		if err == nil || iss != nil {
			t.Fatalf("Register across a crash = %v, %v; want an error and no certificate", iss, err)
		}
		f.OnSign(nil)

		f.Reopen()
		rows, err := f.Store.PendingIssuances(ctx)
		if err != nil || len(rows) != 1 || rows[0].State != "pending" || rows[0].Agent != "bot.acme" {
			t.Fatalf("after restart pending rows = %+v, %v; want one pending row for bot.acme", rows, err)
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
		if signs != 0 {
			t.Errorf("Reconcile signed %d times; want never", signs)
		}
		rows, _ = f.Store.PendingIssuances(ctx)
		if rows[0].State != "abandoned" {
			t.Errorf("state after Reconcile = %q; want abandoned", rows[0].State)
		}
		admin := f.Admin()
		if _, err := f.Registry.GetAgent(ctx, admin, "bot.acme"); !errors.Is(err, registry.ErrNotFound) {
			t.Errorf("GetAgent after abandoned issuance: %v; want ErrNotFound", err)
		}
		events, _, _ := f.Registry.ListAudit(ctx, admin, "", 100)
		found := false
		for _, e := range events {
			found = found || (e.Action == registry.ActionReconcile && e.Result == registry.ResultAbandoned && e.Target == "bot.acme")
		}
		if !found {
			t.Error("no audit event for the abandoned issuance")
		}
		if _, err := f.Registry.Register(ctx, owner, registry.RegisterRequest{Name: "bot.acme", CSR: csr}); err != nil {
			t.Errorf("Register after reconcile: %v", err)
		}
	})
}

// TestVerifyReasons replays SEC-003, SEC-006 and SEC-024.
func TestVerifyReasons(t *testing.T) {
	eachDB(t, func(t *testing.T, f *registrytest.Fixture) {
		ctx := context.Background()
		owner := f.Owner("acme", "acme")
		iss := register(t, f, owner, "bot.acme")

		// A certificate genuinely signed by the CA but unknown to the registry.
		csr, err := ca.ParseCSR(mustCSR(t, f))
		if err != nil {
			t.Fatal(err)
		}
		serial, _ := ca.NewSerial(rand.Reader)
		prep, err := f.Issuer.Prepare(csr, "ghost.acme", serial, f.Clock.Now())
		if err != nil {
			t.Fatal(err)
		}
		ghost, err := f.Issuer.Sign(prep)
		if err != nil {
			t.Fatal(err)
		}
		wantReason(t, "unknown certificate", verifyPEM(t, f, pemOf(ghost)), registry.ReasonUnknownCertificate)

		// SEC-003: a forgery with the intermediate's subject, signed by another key.
		wantReason(t, "forged chain", verifyPEM(t, f, pemOf(forge(t, f, ghost))), registry.ReasonUntrustedChain)

		// Wrong usage: a server certificate signed by the issuing key.
		tmpl, err := ca.ServerTemplate([]string{"bot.acme.example"}, nil, 0, f.Clock.Now())
		if err != nil {
			t.Fatal(err)
		}
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		srv, err := ca.CreateCertificate(tmpl, f.Intermediate, k.Public(), f.IssuingKey)
		if err != nil {
			t.Fatal(err)
		}
		wantReason(t, "server certificate", verifyPEM(t, f, pemOf(srv)), registry.ReasonWrongUsage)

		// Time.
		f.Clock.Advance(-10 * time.Minute)
		wantReason(t, "before notBefore", verifyPEM(t, f, iss.CertificatePEM), registry.ReasonNotYetValid)
		f.Clock.Advance(10*time.Minute + 25*time.Hour)
		wantReason(t, "after notAfter", verifyPEM(t, f, iss.CertificatePEM), registry.ReasonExpired)

		// Input that is not a certificate is ErrInvalid (400), never a panic.
		big := "-----BEGIN CERTIFICATE-----\n" + strings.Repeat("QUFB", 20000) + "\n-----END CERTIFICATE-----\n"
		keyPEM := "-----BEGIN PRIVATE KEY-----\nQUFB\n-----END PRIVATE KEY-----\n"
		for _, in := range []string{"", "garbage", big, keyPEM, "-----BEGIN CERTIFICATE-----\nQUFB\n-----END CERTIFICATE-----\n", string(mustCSR(t, f))} {
			if _, err := f.Registry.Verify(ctx, []byte(in), nil); !errors.Is(err, registry.ErrInvalid) {
				t.Errorf("Verify(%.20q…) = %v; want ErrInvalid", in, err)
			}
		}
		if _, err := f.Registry.Verify(ctx, []byte(iss.CertificatePEM), []byte("junk")); !errors.Is(err, registry.ErrInvalid) {
			t.Errorf("Verify with junk chain = %v; want ErrInvalid", err)
		}
	})
}

func mustCSR(t *testing.T, f *registrytest.Fixture) []byte {
	csr, _ := f.NewCSR()
	return csr
}

func pemOf(c *x509.Certificate) string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}))
}

// forge copies a genuine leaf and signs it with a self-made "intermediate"
// carrying the real intermediate's subject and key id.
func forge(t *testing.T, f *registrytest.Fixture, leaf *x509.Certificate) *x509.Certificate {
	t.Helper()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	fake := *f.Intermediate
	fake.PublicKey = k.Public()
	tmpl := *leaf
	tmpl.SerialNumber = big.NewInt(4242424242424242)
	der, err := x509.CreateCertificate(rand.Reader, &tmpl, &fake, leaf.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestConcurrentLifecycle runs registrations, rotations and revocations
// from many goroutines (run with -race): each succeeds exactly once, log
// indexes are unique and gap-free, and racing registrations of one name
// yield one winner.
func TestConcurrentLifecycle(t *testing.T) {
	eachDB(t, func(t *testing.T, f *registrytest.Fixture) {
		ctx := context.Background()
		owner := f.Owner("acme", "acme")
		const n = 6
		var (
			mu      sync.Mutex
			indexes = map[int64]bool{}
			wg      sync.WaitGroup
			errs    = make(chan error, 3*n+8)
		)
		record := func(i int64) {
			mu.Lock()
			defer mu.Unlock()
			if indexes[i] {
				errs <- fmt.Errorf("log index %d handed out twice", i)
			}
			indexes[i] = true
		}
		for i := range n {
			wg.Go(func() {
				name := fmt.Sprintf("bot-%d.acme", i)
				csr, _ := f.NewCSR()
				iss, err := f.Registry.Register(ctx, owner, registry.RegisterRequest{Name: name, CSR: csr})
				if err != nil {
					errs <- fmt.Errorf("register %s: %w", name, err)
					return
				}
				record(iss.LogIndex)
				rot, err := f.Registry.Rotate(ctx, owner, name, csr)
				if err != nil {
					errs <- fmt.Errorf("rotate %s: %w", name, err)
					return
				}
				record(rot.LogIndex)
				if _, err := f.Registry.Revoke(ctx, owner, name, "cessationOfOperation"); err != nil {
					errs <- fmt.Errorf("revoke %s: %w", name, err)
				}
			})
		}
		var wins, conflicts int
		var wmu sync.Mutex
		for range 4 {
			wg.Go(func() {
				csr, _ := f.NewCSR()
				_, err := f.Registry.Register(ctx, owner, registry.RegisterRequest{Name: "contested.acme", CSR: csr})
				wmu.Lock()
				defer wmu.Unlock()
				switch {
				case err == nil:
					wins++
				case errors.Is(err, registry.ErrConflict):
					conflicts++
				default:
					errs <- fmt.Errorf("contested register: %w", err)
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		if wins != 1 || conflicts != 3 {
			t.Errorf("contested registrations: %d wins, %d conflicts; want 1 and 3", wins, conflicts)
		}
		// Every event appears once in the log: n×(register, rotate, revoke of 2
		// certificates in grace) + the contested winner (API key events are not
		// log events).
		want := int64(n*4 + 1)
		list, _, err := f.Registry.ListAgents(ctx, owner, "", 100)
		if err != nil || len(list) != n+1 {
			t.Errorf("agents = %d, %v; want %d", len(list), err, n+1)
		}
		if es, err := f.Registry.LogEntries(ctx, 0, want); err != nil || int64(len(es)) != want {
			t.Errorf("log entries [0, %d) = %d, %v; want all of them", want, len(es), err)
		}
		if _, err := f.Registry.LogEntries(ctx, 0, want+1); !errors.Is(err, registry.ErrNotFound) {
			t.Errorf("log entries [0, %d) = %v; want ErrNotFound (exactly %d entries)", want+1, err, want)
		}
		events, _, err := f.Registry.ListAudit(ctx, f.Admin(), "", 100)
		if err != nil {
			t.Fatal(err)
		}
		seen := map[int64]bool{}
		for _, e := range events {
			if e.LogIndex == nil {
				continue
			}
			if seen[*e.LogIndex] || *e.LogIndex >= want {
				t.Errorf("audit event %s %s has log index %d (duplicate or beyond the %d entries)", e.Action, e.Target, *e.LogIndex, want)
			}
			seen[*e.LogIndex] = true
		}
	})
}
