package agent

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/agent-trust-registry/atr/api/client"
	"github.com/agent-trust-registry/atr/ca"
)

func TestRenewalDelay(t *testing.T) {
	nb := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	na := nb.Add(90 * time.Minute)
	for _, tt := range []struct {
		name string
		now  time.Time
		j    float64
		rb   time.Duration
		want time.Duration
	}{
		{"middle of the jitter: 2/3", nb, 0.5, 0, 60 * time.Minute},
		{"earliest: 2/3 - 10%", nb, 0, 0, 51 * time.Minute},
		{"latest: 2/3 + 10%", nb, 1, 0, 69 * time.Minute},
		{"later start", nb.Add(30 * time.Minute), 0.5, 0, 30 * time.Minute},
		{"overdue renews at once", nb.Add(80 * time.Minute), 0.5, 0, 0},
		{"renew-before, middle", nb, 0.5, 40 * time.Minute, 50 * time.Minute},
		{"renew-before, earliest", nb, 0, 40 * time.Minute, 45 * time.Minute},
		{"renew-before, latest", nb, 1, 40 * time.Minute, 55 * time.Minute},
		{"renew-before longer than the lifetime", nb, 0.5, 2 * time.Hour, 0},
	} {
		if got := RenewalDelay(nb, na, tt.now, tt.j, tt.rb); got != tt.want {
			t.Errorf("%s: renewalDelay = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestRetryable(t *testing.T) {
	for _, tt := range []struct {
		err  error
		want bool
	}{
		{errors.New("dial tcp: connection refused"), true},
		{&client.Error{Status: 503, Code: "unavailable"}, true},
		{&client.Error{Status: 429, Code: "rate_limited"}, true},
		{&client.Error{Status: 409, Code: "conflict"}, true},
		{&client.Error{Status: 403, Code: "forbidden"}, false},
		{&client.Error{Status: 401, Code: "unauthenticated"}, false},
		{Explain("renewing", &client.Error{Status: 401, Code: "unauthenticated"}), false},
		{Explain("renewing", &client.Error{Status: 502, Code: "bad_gateway"}), true},
		{fmt.Errorf("key: %w", ErrUnknownKeyType), false},
	} {
		if got := Retryable(tt.err); got != tt.want {
			t.Errorf("Retryable(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}

func TestRenewOnce(t *testing.T) {
	c := newTestCA(t, "test.local")
	ctx := context.Background()

	t.Run("new key, matching files, old certificate presented", func(t *testing.T) {
		k0, _ := GenerateKey("p384")
		f := newAgentFiles(t, c, "bot.acme", k0)
		old := f.checkPair(t)
		fr := &fakeRotator{c: c}
		r := newTestRenewer(f, fr)
		var hooked int
		r.Hooks = append(r.Hooks, func(_ context.Context, leaf *x509.Certificate) error {
			hooked++
			f.checkPair(t) // the hook runs only once both files are in place
			return nil
		})
		leaf, err := r.RenewOnce(ctx)
		if err != nil {
			t.Fatal(err)
		}
		got := f.checkPair(t)
		if !got.Equal(leaf) || got.Equal(old) {
			t.Error("the certificate on disk is not the renewed one")
		}
		if got.PublicKey.(interface{ Equal(crypto.PublicKey) bool }).Equal(old.PublicKey) {
			t.Error("renewal reused the old key")
		}
		k, _ := LoadKey(f.key)
		if KeyType(k) != "p384" {
			t.Errorf("new key type %s, want the old key's p384", KeyType(k))
		}
		if len(fr.seen) != 1 || !fr.seen[0].Equal(old) {
			t.Error("the old certificate was not presented for mTLS")
		}
		if hooked != 1 {
			t.Errorf("hook ran %d times, want 1", hooked)
		}
		if st, _ := os.Stat(f.key); st.Mode().Perm() != 0o600 {
			t.Errorf("key mode %04o, want 0600", st.Mode().Perm())
		}
		if left := tempFiles(t, f.dir); len(left) != 0 {
			t.Errorf("leftover files: %v", left)
		}
	})
	t.Run("refused renewal changes nothing", func(t *testing.T) {
		k0, _ := GenerateKey("p256")
		f := newAgentFiles(t, c, "bot.acme", k0)
		keyBefore, _ := os.ReadFile(f.key)
		certBefore, _ := os.ReadFile(f.cert)
		fr := &fakeRotator{c: c, fail: &client.Error{Status: 403, Code: "forbidden", RequestID: "r1"}}
		_, err := newTestRenewer(f, fr).RenewOnce(ctx)
		if err == nil || !strings.Contains(err.Error(), "r1") {
			t.Fatalf("err %v, want the refusal with its request ID", err)
		}
		if k, _ := os.ReadFile(f.key); !bytes.Equal(k, keyBefore) {
			t.Error("key changed")
		}
		if c, _ := os.ReadFile(f.cert); !bytes.Equal(c, certBefore) {
			t.Error("certificate changed")
		}
		if left := tempFiles(t, f.dir); len(left) != 0 {
			t.Errorf("leftover files: %v", left)
		}
	})
	t.Run("a certificate for another key is refused", func(t *testing.T) {
		k0, _ := GenerateKey("p256")
		f := newAgentFiles(t, c, "bot.acme", k0)
		certBefore, _ := os.ReadFile(f.cert)
		evil := &evilRotator{c: c}
		r := newTestRenewer(f, nil)
		r.Dial = func(tls.Certificate) (Rotator, error) { return evil, nil }
		if _, err := r.RenewOnce(ctx); err == nil || !strings.Contains(err.Error(), "another key") {
			t.Fatalf("err %v, want a refusal of the foreign certificate", err)
		}
		if c, _ := os.ReadFile(f.cert); !bytes.Equal(c, certBefore) {
			t.Error("certificate replaced by the foreign one")
		}
		f.checkPair(t)
	})
	t.Run("name mismatch is refused before any request", func(t *testing.T) {
		k0, _ := GenerateKey("p256")
		f := newAgentFiles(t, c, "bot.acme", k0)
		fr := &fakeRotator{c: c}
		r := newTestRenewer(f, fr)
		r.Name = "other.acme"
		if _, err := r.RenewOnce(ctx); err == nil {
			t.Fatal("renewal of another agent's name succeeded")
		}
		if fr.calls != 0 {
			t.Error("the server was called")
		}
	})
}

// evilRotator answers with a certificate for a key the agent does not hold.
type evilRotator struct{ c *testCA }

func (e *evilRotator) Verify(context.Context, []byte, []byte) (*client.VerifyResult, error) {
	return &client.VerifyResult{Verified: true}, nil
}

func (e *evilRotator) Rotate(_ context.Context, name string, _ []byte) (*client.Certificate, error) {
	k, _ := GenerateKey("p256")
	csr, _ := NewCSR(k)
	leaf, err := e.c.IssueCSR(csr, name)
	if err != nil {
		return nil, err
	}
	return &client.Certificate{Certificate: string(ca.EncodeCertificatesPEM(leaf)), Chain: string(ca.EncodeCertificatesPEM(e.c.Issuing))}, nil
}

// TestRenewRecovery replays crashes at each point of the renewal order.
func TestRenewRecovery(t *testing.T) {
	c := newTestCA(t, "test.local")
	t.Run("crash after the certificate was written: staged key moved into place", func(t *testing.T) {
		k0, _ := GenerateKey("p256")
		f := newAgentFiles(t, c, "bot.acme", k0)
		k1, _ := GenerateKey("p256")
		data, _ := MarshalKey(k1)
		writeTestFile(t, f.key+StagedSuffix, data, 0o600)
		writeTestFile(t, f.cert, ca.EncodeCertificatesPEM(c.Issue(t, k1, "bot.acme")), 0o644)
		if err := newTestRenewer(f, &fakeRotator{c: c}).Recover(); err != nil {
			t.Fatal(err)
		}
		f.checkPair(t)
		k, _ := LoadKey(f.key)
		if !k.Public().(*ecdsa.PublicKey).Equal(k1.Public()) {
			t.Error("the staged key is not in place")
		}
		if left := tempFiles(t, f.dir); len(left) != 0 {
			t.Errorf("leftover files: %v", left)
		}
	})
	t.Run("crash before the certificate was written: staged key discarded", func(t *testing.T) {
		k0, _ := GenerateKey("p256")
		f := newAgentFiles(t, c, "bot.acme", k0)
		k1, _ := GenerateKey("p256")
		data, _ := MarshalKey(k1)
		writeTestFile(t, f.key+StagedSuffix, data, 0o600)
		if err := newTestRenewer(f, &fakeRotator{c: c}).Recover(); err != nil {
			t.Fatal(err)
		}
		f.checkPair(t)
		k, _ := LoadKey(f.key)
		if !k.Public().(*ecdsa.PublicKey).Equal(k0.Public()) {
			t.Error("the original key was replaced")
		}
		if left := tempFiles(t, f.dir); len(left) != 0 {
			t.Errorf("leftover files: %v", left)
		}
	})
	t.Run("renewOnce recovers first", func(t *testing.T) {
		k0, _ := GenerateKey("ed25519")
		f := newAgentFiles(t, c, "bot.acme", k0)
		k1, _ := GenerateKey("ed25519")
		data, _ := MarshalKey(k1)
		writeTestFile(t, f.key+StagedSuffix, data, 0o600)
		writeTestFile(t, f.cert, ca.EncodeCertificatesPEM(c.Issue(t, k1, "bot.acme")), 0o644)
		fr := &fakeRotator{c: c}
		if _, err := newTestRenewer(f, fr).RenewOnce(context.Background()); err != nil {
			t.Fatal(err)
		}
		if len(fr.seen) != 1 || !fr.seen[0].PublicKey.(ed25519.PublicKey).Equal(k1.Public()) {
			t.Error("the renewal did not authenticate with the recovered key's certificate")
		}
		f.checkPair(t)
	})
}

func TestWatch(t *testing.T) {
	c := newTestCA(t, "test.local")
	k0, _ := GenerateKey("p256")
	f := newAgentFiles(t, c, "bot.acme", k0)
	fr := &fakeRotator{c: c}
	r := newTestRenewer(f, fr)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var renewals int
	r.Hooks = append(r.Hooks, func(context.Context, *x509.Certificate) error {
		renewals++
		f.checkPair(t)
		if left := tempFiles(t, f.dir); len(left) != 0 {
			t.Errorf("leftover files after a renewal: %v", left)
		}
		return nil
	})
	var delays []time.Duration
	failOnce := true
	sleep := func(ctx context.Context, d time.Duration) error {
		delays = append(delays, d)
		if renewals == 2 && failOnce {
			failOnce = false
			fr.mu.Lock()
			fr.fail = &client.Error{Status: 503, Code: "unavailable"}
			fr.mu.Unlock()
		} else {
			fr.mu.Lock()
			fr.fail = nil
			fr.mu.Unlock()
		}
		if renewals >= 4 {
			cancel()
		}
		return ctx.Err()
	}
	r.MaxBackoff, r.Sleep = time.Minute, sleep
	if err := r.Watch(ctx); err != nil {
		t.Fatalf("watch: %v", err)
	}
	if renewals != 4 {
		t.Errorf("%d renewals, want 4", renewals)
	}
	// Lifetime 1 h + 30 s backdate: the first wait is about 2/3 of it, ±10%.
	life := time.Hour + ca.DefaultBackdate
	if d := delays[0]; d < life*17/30-time.Minute || d > life*23/30 {
		t.Errorf("first delay %v, want about 2/3 of %v", d, life)
	}
	sawRetry := false
	for _, d := range delays {
		if d == RetryInitial {
			sawRetry = true
		}
	}
	if !sawRetry {
		t.Errorf("no retry after the failure; delays %v", delays)
	}

	t.Run("a refusal stops the loop", func(t *testing.T) {
		fr.mu.Lock()
		fr.fail = &client.Error{Status: 403, Code: "forbidden", RequestID: "r9"}
		fr.mu.Unlock()
		r.Sleep = func(context.Context, time.Duration) error { return nil }
		err := r.Watch(context.Background())
		if err == nil || !strings.Contains(err.Error(), "forbidden") {
			t.Errorf("watch after a refusal: %v, want the forbidden error", err)
		}
	})
}

// TestRenewRefusalExplained replays issue 11 item 12: renewing a revoked
// agent said "unauthenticated (HTTP 401)". A 401 is explained by the
// certificate's public status.
func TestRenewRefusalExplained(t *testing.T) {
	c := newTestCA(t, "test.local")
	unauth := &client.Error{Status: 401, Code: "unauthenticated", Message: "authentication required", RequestID: "r7"}
	tests := []struct {
		name    string
		fail    error
		status  *client.VerifyResult
		want    []string
		notWant string
	}{
		{"revoked", unauth, &client.VerifyResult{Reason: "revoked"}, []string{"refused", "is revoked", "register the agent again", "r7"}, "unauthenticated"},
		{"superseded", unauth, &client.VerifyResult{Reason: "superseded"}, []string{"superseded", "current certificate", "r7"}, "unauthenticated"},
		{"unknown", unauth, &client.VerifyResult{Reason: "unknown_certificate"}, []string{"refused", "does not know the certificate"}, "unauthenticated"},
		{"still valid: the server's answer as is", unauth, &client.VerifyResult{Verified: true}, []string{"unauthenticated (HTTP 401)", "r7"}, "revoked"},
		{"other refusals unchanged", &client.Error{Status: 403, Code: "forbidden", RequestID: "r8"}, &client.VerifyResult{Reason: "revoked"}, []string{"forbidden (HTTP 403)"}, "is revoked"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k0, _ := GenerateKey("p256")
			f := newAgentFiles(t, c, "bot.acme", k0)
			fr := &fakeRotator{c: c, fail: tt.fail, status: tt.status}
			_, err := newTestRenewer(f, fr).RenewOnce(context.Background())
			if err == nil {
				t.Fatal("renewal succeeded")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if strings.Contains(err.Error(), tt.notWant) {
				t.Errorf("error %q contains %q", err, tt.notWant)
			}
			if Retryable(err) {
				t.Errorf("Retryable(%v) = true; a refusal is final", err)
			}
		})
	}
}
