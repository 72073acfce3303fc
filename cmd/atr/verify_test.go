package main

import (
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"flag"
	"math/big"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/agent-trust-registry/atr/api/client"
	"github.com/agent-trust-registry/atr/ca"
)

func TestParseWithArgs(t *testing.T) {
	for _, tt := range []struct {
		args    []string
		wantPos []string
		wantX   string
	}{
		{[]string{"c.pem"}, []string{"c.pem"}, ""},
		{[]string{"c.pem", "--x", "1"}, []string{"c.pem"}, "1"},
		{[]string{"--x", "1", "c.pem"}, []string{"c.pem"}, "1"},
		{[]string{"a", "--x", "1", "b"}, []string{"a", "b"}, "1"},
		{[]string{"--x", "1", "--", "-odd.pem"}, []string{"-odd.pem"}, "1"},
	} {
		a, _, _ := testApp(nil)
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		x := fs.String("x", "", "")
		pos, err := a.parseWithArgs(fs, tt.args)
		if err != nil || !slices.Equal(pos, tt.wantPos) || *x != tt.wantX {
			t.Errorf("parseWithArgs(%q) = %q, x=%q, %v; want %q, x=%q", tt.args, pos, *x, err, tt.wantPos, tt.wantX)
		}
	}
}

// offlineFixture is a leaf, its files and a CA bundle.
type offlineFixture struct {
	c                   *testCA
	dir                 string
	leaf                *x509.Certificate
	cert, chain, bundle string
}

func newOfflineFixture(t *testing.T) offlineFixture {
	t.Helper()
	c := newTestCA(t, "test.local")
	k, _ := generateAgentKey("p256")
	f := newAgentFiles(t, c, "bot.acme", k)
	leaf, _, err := loadAgentCert(f.cert, "")
	if err != nil {
		t.Fatal(err)
	}
	return offlineFixture{c: c, dir: f.dir, leaf: leaf, cert: f.cert, chain: f.chain,
		bundle: writeTestFile(t, filepath.Join(f.dir, "bundle.pem"), ca.EncodeCertificatesPEM(c.root), 0o644)}
}

func (f offlineFixture) crlFile(t *testing.T, name string, der []byte) string {
	return writeTestFile(t, filepath.Join(f.dir, name), der, 0o644)
}

func TestVerifyOffline(t *testing.T) {
	f := newOfflineFixture(t)
	now := time.Now()
	good := f.crlFile(t, "good.crl", f.c.crl(t, now.Add(-time.Minute), now.Add(time.Hour),
		x509.RevocationListEntry{SerialNumber: big.NewInt(12345), RevocationTime: now, ReasonCode: 1}))
	goodPEM := f.crlFile(t, "good.crl.pem", pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: f.c.crl(t, now.Add(-time.Minute), now.Add(time.Hour))}))
	revoked := f.crlFile(t, "revoked.crl", f.c.crl(t, now.Add(-time.Minute), now.Add(time.Hour),
		x509.RevocationListEntry{SerialNumber: f.leaf.SerialNumber, RevocationTime: now, ReasonCode: 1}))
	superseded := f.crlFile(t, "superseded.crl", f.c.crl(t, now.Add(-time.Minute), now.Add(time.Hour),
		x509.RevocationListEntry{SerialNumber: f.leaf.SerialNumber, RevocationTime: now, ReasonCode: 4}))
	stale := f.crlFile(t, "stale.crl", f.c.crl(t, now.Add(-2*time.Hour), now.Add(-time.Hour)))
	other := newTestCA(t, "test.local")
	// other's issuing CA has the same subject as the real one: only the
	// signature tells the CRLs apart.
	foreign := f.crlFile(t, "foreign.crl", other.crl(t, now.Add(-time.Minute), now.Add(time.Hour)))
	garbage := f.crlFile(t, "garbage.crl", []byte("not a crl"))

	otherKey, _ := generateAgentKey("p256")
	otherLeaf := other.issue(t, otherKey, "bot.acme")
	otherCert := writeTestFile(t, filepath.Join(f.dir, "other.pem"), ca.EncodeCertificatesPEM(otherLeaf, other.issuing), 0o644)

	for _, tt := range []struct {
		name     string
		args     []string
		wantCode int
		wantOut  string
	}{
		{"valid, DER CRL", []string{f.cert, "--chain", f.chain, "--offline", "--bundle", f.bundle, "--crl", good}, 0, "VERIFIED (offline)"},
		{"valid, PEM CRL, flags first", []string{"--offline", "--bundle", f.bundle, "--crl", goodPEM, "--chain", f.chain, f.cert}, 0, "VERIFIED"},
		{"trust domain pinned and matching", []string{f.cert, "--chain", f.chain, "--offline", "--bundle", f.bundle, "--crl", good, "--trust-domain", "test.local"}, 0, "agent: bot.acme"},
		{"revoked", []string{f.cert, "--chain", f.chain, "--offline", "--bundle", f.bundle, "--crl", revoked}, 1, "revoked (keyCompromise)"},
		{"superseded", []string{f.cert, "--chain", f.chain, "--offline", "--bundle", f.bundle, "--crl", superseded}, 1, "superseded"},
		{"stale CRL", []string{f.cert, "--chain", f.chain, "--offline", "--bundle", f.bundle, "--crl", stale}, 1, ""},
		{"CRL of another CA", []string{f.cert, "--chain", f.chain, "--offline", "--bundle", f.bundle, "--crl", foreign}, 1, ""},
		{"garbage CRL", []string{f.cert, "--chain", f.chain, "--offline", "--bundle", f.bundle, "--crl", garbage}, 1, ""},
		{"certificate of another CA", []string{otherCert, "--offline", "--bundle", f.bundle, "--crl", good}, 1, "untrusted_chain"},
		{"missing intermediate", []string{f.cert, "--offline", "--bundle", f.bundle, "--crl", good}, 1, "untrusted_chain"},
		{"wrong trust domain pinned", []string{f.cert, "--chain", f.chain, "--offline", "--bundle", f.bundle, "--crl", good, "--trust-domain", "other.local"}, 1, "NOT VERIFIED"},
		{"offline without --crl", []string{f.cert, "--offline", "--bundle", f.bundle}, 2, ""},
		{"no certificate", []string{"--offline", "--bundle", f.bundle, "--crl", good}, 2, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			a, out, errb := testApp(nil)
			if code := runAtr(a, append([]string{"verify"}, tt.args...)); code != tt.wantCode {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tt.wantCode, out, errb)
			}
			if !strings.Contains(out.String(), tt.wantOut) {
				t.Errorf("stdout %q lacks %q", out, tt.wantOut)
			}
		})
	}

	t.Run("expired certificate", func(t *testing.T) {
		a, out, _ := testApp(nil)
		a.now = func() time.Time { return f.leaf.NotAfter.Add(time.Minute) }
		crl := f.crlFile(t, "future.crl", f.c.crl(t, f.leaf.NotAfter, f.leaf.NotAfter.Add(time.Hour)))
		if code := runAtr(a, []string{"verify", f.cert, "--chain", f.chain, "--offline", "--bundle", f.bundle, "--crl", crl}); code != 1 {
			t.Fatalf("exit %d, want 1", code)
		}
		if !strings.Contains(out.String(), "expired") {
			t.Errorf("stdout %q does not say expired", out)
		}
	})
	t.Run("json", func(t *testing.T) {
		a, out, _ := testApp(nil)
		if code := runAtr(a, []string{"verify", f.cert, "--chain", f.chain, "--offline", "--bundle", f.bundle, "--crl", good, "--json"}); code != 0 {
			t.Fatalf("exit %d", code)
		}
		var got verifyOutput
		if err := json.Unmarshal(out.Bytes(), &got); err != nil {
			t.Fatal(err)
		}
		if !got.Verified || got.Agent != "bot.acme" || got.FingerprintSHA256 != certFingerprint(f.leaf) {
			t.Errorf("got %+v", got)
		}
	})
}

func TestVerifyOnline(t *testing.T) {
	f := newOfflineFixture(t)
	var gotReq client.VerifyRequest
	answer := func(w http.ResponseWriter, status int, v any) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Request-ID", "req-42")
		w.WriteHeader(status)
		json.NewEncoder(w).Encode(v)
	}
	mode := "verified"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/verify" || r.Method != http.MethodPost {
			http.NotFound(w, r)
			return
		}
		json.NewDecoder(r.Body).Decode(&gotReq)
		switch mode {
		case "verified":
			idx := int64(7)
			answer(w, 200, client.VerifyResult{Verified: true, Agent: "bot.acme", Status: "issued", Serial: "ab", LogIndex: &idx})
		case "revoked":
			answer(w, 200, client.VerifyResult{Verified: false, Agent: "bot.acme", Status: "revoked", Reason: "revoked"})
		case "error":
			answer(w, 429, client.ErrorBody{Error: client.ErrorDetail{Code: "rate_limited", Message: "slow down", RequestID: "req-42"}})
		}
	}))
	defer srv.Close()

	for _, tt := range []struct {
		mode     string
		env      map[string]string
		args     []string
		wantCode int
		want     string
	}{
		{"verified", nil, []string{"--server", srv.URL, f.cert, "--chain", f.chain}, 0, "log index: 7"},
		{"verified", map[string]string{"ATR_SERVER": srv.URL}, []string{f.cert}, 0, "VERIFIED (online)"},
		{"revoked", nil, []string{"--server", srv.URL, f.cert}, 1, "NOT VERIFIED (online): revoked"},
		{"error", nil, []string{"--server", srv.URL, f.cert}, 1, "rate_limited"},
		{"verified", nil, []string{f.cert}, 2, ""},
	} {
		t.Run(tt.mode+" "+strings.Join(tt.args, " "), func(t *testing.T) {
			mode = tt.mode
			a, out, errb := testApp(tt.env)
			code := runAtr(a, append([]string{"verify"}, tt.args...))
			if code != tt.wantCode {
				t.Fatalf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tt.wantCode, out, errb)
			}
			if !strings.Contains(out.String()+errb.String(), tt.want) {
				t.Errorf("output %q %q lacks %q", out, errb, tt.want)
			}
			if tt.mode == "error" && !strings.Contains(errb.String(), "req-42") {
				t.Errorf("stderr %q lacks the request ID", errb)
			}
		})
	}
	t.Run("leaf and chain sent separately", func(t *testing.T) {
		mode = "verified"
		both := writeTestFile(t, filepath.Join(f.dir, "both.pem"), ca.EncodeCertificatesPEM(f.leaf, f.c.issuing), 0o644)
		a, _, errb := testApp(nil)
		if code := runAtr(a, []string{"verify", "--server", srv.URL, both}); code != 0 {
			t.Fatalf("exit %d: %s", code, errb)
		}
		if got := strings.Count(gotReq.Certificate, "BEGIN CERTIFICATE"); got != 1 {
			t.Errorf("certificate field holds %d certificates, want 1", got)
		}
		if got := strings.Count(gotReq.Chain, "BEGIN CERTIFICATE"); got != 1 {
			t.Errorf("chain field holds %d certificates, want 1", got)
		}
	})
}
