package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"flag"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	fnote "github.com/transparency-dev/formats/note"
	"golang.org/x/mod/sumdb/note"

	"github.com/agent-trust-registry/atr/agent"
	"github.com/agent-trust-registry/atr/api/client"
	"github.com/agent-trust-registry/atr/ca"
	"github.com/agent-trust-registry/atr/registry"
	"github.com/agent-trust-registry/atr/registry/registrytest"
	"github.com/agent-trust-registry/atr/registry/translog"
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
	leaf, _, err := agent.LoadCertificate(f.cert, "")
	if err != nil {
		t.Fatal(err)
	}
	return offlineFixture{c: c, dir: f.dir, leaf: leaf, cert: f.cert, chain: f.chain,
		bundle: writeTestFile(t, filepath.Join(f.dir, "bundle.pem"), ca.EncodeCertificatesPEM(c.Root), 0o644)}
}

func (f offlineFixture) crlFile(t *testing.T, name string, der []byte) string {
	return writeTestFile(t, filepath.Join(f.dir, name), der, 0o644)
}

func TestVerifyOffline(t *testing.T) {
	f := newOfflineFixture(t)
	now := time.Now()
	good := f.crlFile(t, "good.crl", f.c.CRL(t, now.Add(-time.Minute), now.Add(time.Hour),
		x509.RevocationListEntry{SerialNumber: big.NewInt(12345), RevocationTime: now, ReasonCode: 1}))
	goodPEM := f.crlFile(t, "good.crl.pem", pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: f.c.CRL(t, now.Add(-time.Minute), now.Add(time.Hour))}))
	revoked := f.crlFile(t, "revoked.crl", f.c.CRL(t, now.Add(-time.Minute), now.Add(time.Hour),
		x509.RevocationListEntry{SerialNumber: f.leaf.SerialNumber, RevocationTime: now, ReasonCode: 1}))
	superseded := f.crlFile(t, "superseded.crl", f.c.CRL(t, now.Add(-time.Minute), now.Add(time.Hour),
		x509.RevocationListEntry{SerialNumber: f.leaf.SerialNumber, RevocationTime: now, ReasonCode: 4}))
	stale := f.crlFile(t, "stale.crl", f.c.CRL(t, now.Add(-2*time.Hour), now.Add(-time.Hour)))
	other := newTestCA(t, "test.local")
	// other's issuing CA has the same subject as the real one: only the
	// signature tells the CRLs apart.
	foreign := f.crlFile(t, "foreign.crl", other.CRL(t, now.Add(-time.Minute), now.Add(time.Hour)))
	garbage := f.crlFile(t, "garbage.crl", []byte("not a crl"))

	otherKey, _ := generateAgentKey("p256")
	otherLeaf := other.Issue(t, otherKey, "bot.acme")
	otherCert := writeTestFile(t, filepath.Join(f.dir, "other.pem"), ca.EncodeCertificatesPEM(otherLeaf, other.Issuing), 0o644)

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
		crl := f.crlFile(t, "future.crl", f.c.CRL(t, f.leaf.NotAfter, f.leaf.NotAfter.Add(time.Hour)))
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
		if !got.Verified || got.Agent != "bot.acme" || got.FingerprintSHA256 != ca.Fingerprint(f.leaf) {
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
		var req client.VerifyRequest
		json.NewDecoder(r.Body).Decode(&req)
		gotReq = req
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
		both := writeTestFile(t, filepath.Join(f.dir, "both.pem"), ca.EncodeCertificatesPEM(f.leaf, f.c.Issuing), 0o644)
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
		// rp.OnlineStatus carries no receipt: none is asked for.
		if gotReq.Receipt == nil || *gotReq.Receipt {
			t.Errorf("receipt = %v, want false", gotReq.Receipt)
		}
	})
}

// receiptFiles is a real registry's certificate, receipt and public keys on
// disk, as a relying party holds them.
type receiptFiles struct {
	f                                         *registrytest.Fixture
	dir                                       string
	cert, chain, receipt, cosigned, bundle    string
	logPEM, logVkeys, vrfPEM, witness, wfile  string
	otherCert, otherLogPEM, tampered, wrongTD string
	witnessVkey                               string
}

func pemPublicKey(t *testing.T, pub any) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

func newReceiptFiles(t *testing.T) receiptFiles {
	t.Helper()
	ctx := context.Background()
	f := registrytest.NewFixture(t)
	owner := f.Owner("acme", "acme")
	var issued []*registry.Issued
	// The agent is the last: its receipt's inclusion proof has 2 hashes.
	for _, name := range []string{"other.acme", "third.acme", "bot.team.acme"} {
		csr, _ := f.NewCSR()
		iss, err := f.Registry.Register(ctx, owner, registry.RegisterRequest{Name: name, CSR: csr})
		if err != nil {
			t.Fatal(err)
		}
		if iss.Receipt == nil {
			t.Fatalf("%s: no receipt", name)
		}
		issued = append(issued, iss)
	}
	dir := t.TempDir()
	w := func(name string, data []byte) string { return writeTestFile(t, filepath.Join(dir, name), data, 0o644) }
	rf := receiptFiles{f: f, dir: dir}
	rf.cert = w("agent.pem", []byte(issued[2].CertificatePEM))
	rf.chain = w("agent.chain.pem", []byte(issued[2].ChainPEM))
	rf.otherCert = w("other.pem", []byte(issued[0].CertificatePEM))
	rf.receipt = w("agent.receipt.json", issued[2].Receipt)
	rf.bundle = w("bundle.pem", ca.EncodeCertificatesPEM(f.Root, f.Intermediate))
	rf.logPEM = w("log-key.pem", pemPublicKey(t, f.LogKey.Public()))
	otherLog, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rf.otherLogPEM = w("other-log-key.pem", pemPublicKey(t, otherLog.Public()))
	ecV, err := translog.VerifierKey(f.LogOrigin, f.LogKey.Public())
	if err != nil {
		t.Fatal(err)
	}
	edV, err := translog.Ed25519VerifierKey(f.LogOrigin, f.LogKeyEd25519.Public())
	if err != nil {
		t.Fatal(err)
	}
	rf.logVkeys = w("log.vkey", []byte(ecV+"\n"+edV+"\n"))
	rf.vrfPEM = w("vrf-key.pem", pemPublicKey(t, f.VRFKey.Public()))

	// A witness cosigns the receipt's checkpoint.
	skey, vkey, err := note.GenerateKey(rand.Reader, "witness.test")
	if err != nil {
		t.Fatal(err)
	}
	ws, err := fnote.NewSignerForCosignatureV1(skey)
	if err != nil {
		t.Fatal(err)
	}
	rf.witnessVkey = vkey
	rf.wfile = w("witnesses", []byte("# the witness\n"+vkey+"\n"))
	r, err := translog.ParseReceipt(issued[2].Receipt)
	if err != nil {
		t.Fatal(err)
	}
	text, _, _ := strings.Cut(string(r.Checkpoint), "\n\n")
	signed, err := note.Sign(&note.Note{Text: text + "\n"}, ws)
	if err != nil {
		t.Fatal(err)
	}
	_, line, _ := strings.Cut(string(signed), "\n\n")
	r.Checkpoint = append(append([]byte{}, r.Checkpoint...), line...)
	cosigned, err := r.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	rf.cosigned = w("agent.receipt.cosigned.json", cosigned)
	r.InclusionProof[0][3] ^= 0x10
	tampered, err := r.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	rf.tampered = w("agent.receipt.tampered.json", tampered)
	return rf
}

func TestVerifyReceipt(t *testing.T) {
	rf := newReceiptFiles(t)
	dataDir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dataDir, "ca"), 0o755); err != nil {
		t.Fatal(err)
	}
	for from, to := range map[string]string{rf.logPEM: "log-key.pem", rf.vrfPEM: "vrf-key.pem", rf.bundle: "bundle.pem"} {
		data, _ := os.ReadFile(from)
		writeTestFile(t, filepath.Join(dataDir, "ca", to), data, 0o644)
	}
	keys := []string{"--bundle", rf.bundle, "--log-key", rf.logPEM, "--vrf-key", rf.vrfPEM}
	for _, tt := range []struct {
		name     string
		env      map[string]string
		args     []string
		wantCode int
		want     string
	}{
		{"log signature alone (no witness policy)", nil, append([]string{rf.cert, "--receipt", rf.receipt}, keys...), 0, "VERIFIED (receipt)"},
		{"agent name shown", nil, append([]string{rf.cert, "--receipt", rf.receipt}, keys...), 0, "agent: bot.team.acme"},
		{"log verifier key strings (both log keys)", nil, []string{rf.cert, "--receipt", rf.receipt, "--bundle", rf.bundle, "--log-key", rf.logVkeys, "--vrf-key", rf.vrfPEM}, 0, "VERIFIED (receipt)"},
		{"keys and bundle from the data dir", map[string]string{"ATR_DATA_DIR": dataDir}, []string{rf.cert, "--receipt", rf.receipt}, 0, "VERIFIED (receipt)"},
		{"--data-dir flag", nil, []string{rf.cert, "--receipt", rf.receipt, "--data-dir", dataDir}, 0, "VERIFIED (receipt)"},
		{"1-of-1 witness, key on the command line", nil, append([]string{rf.cert, "--receipt", rf.cosigned, "--witness", rf.witnessVkey, "--witness-threshold", "1"}, keys...), 0, "witness cosignatures required: 1"},
		{"witness keys from a file, threshold defaults to all", nil, append([]string{rf.cert, "--receipt", rf.cosigned, "--witness", rf.wfile}, keys...), 0, "VERIFIED (receipt)"},
		{"uncosigned checkpoint under a 1-of-1 policy", nil, append([]string{rf.cert, "--receipt", rf.receipt, "--witness", rf.witnessVkey}, keys...), 1, "NOT VERIFIED (receipt): witness_policy"},
		{"witness threshold 0 accepts the uncosigned checkpoint", nil, append([]string{rf.cert, "--receipt", rf.receipt, "--witness", rf.witnessVkey, "--witness-threshold", "0"}, keys...), 0, "VERIFIED (receipt)"},
		{"tampered inclusion proof", nil, append([]string{rf.cert, "--receipt", rf.tampered}, keys...), 1, "NOT VERIFIED (receipt): inclusion"},
		{"another certificate's receipt", nil, append([]string{rf.otherCert, "--receipt", rf.receipt}, keys...), 1, "other_certificate"},
		{"another log key", nil, []string{rf.cert, "--receipt", rf.receipt, "--bundle", rf.bundle, "--log-key", rf.otherLogPEM, "--vrf-key", rf.vrfPEM}, 1, "log_signature"},
		{"another trust domain", nil, append([]string{rf.cert, "--receipt", rf.receipt, "--trust-domain", "other.atr.test"}, keys...), 1, "chain"},
		{"a bundle without the issuing CA", nil, []string{rf.cert, "--receipt", rf.receipt, "--bundle", rf.logPEM, "--log-key", rf.logPEM, "--vrf-key", rf.vrfPEM}, 1, "CA bundle"},
		{"missing VRF key", nil, []string{rf.cert, "--receipt", rf.receipt, "--bundle", rf.bundle, "--log-key", rf.logPEM, "--vrf-key", filepath.Join(rf.dir, "nope.pem")}, 1, "reading the VRF key"},
		{"the log key is not a VRF key", nil, []string{rf.cert, "--receipt", rf.receipt, "--bundle", rf.bundle, "--log-key", rf.logPEM, "--vrf-key", rf.logPEM}, 1, "VRF key"},
		{"not a receipt", nil, append([]string{rf.cert, "--receipt", rf.cert}, keys...), 1, "malformed"},
		{"--receipt with --offline", nil, append([]string{rf.cert, "--receipt", rf.receipt, "--offline"}, keys...), 2, "two different checks"},
		{"threshold above the keys", nil, append([]string{rf.cert, "--receipt", rf.cosigned, "--witness", rf.witnessVkey, "--witness-threshold", "2"}, keys...), 2, "threshold 2 of 1"},
		{"a witness key that does not parse", nil, append([]string{rf.cert, "--receipt", rf.cosigned, "--witness", "not-a-key"}, keys...), 2, "witness policy"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			a, out, errb := testApp(tt.env)
			code := runAtr(a, append([]string{"verify"}, tt.args...))
			if code != tt.wantCode || !strings.Contains(out.String()+errb.String(), tt.want) {
				t.Errorf("exit %d, want %d with %q\nstdout: %s\nstderr: %s", code, tt.wantCode, tt.want, out, errb)
			}
		})
	}

	t.Run("json", func(t *testing.T) {
		a, out, errb := testApp(nil)
		if code := runAtr(a, append([]string{"verify", rf.cert, "--receipt", rf.cosigned, "--witness", rf.witnessVkey, "--json"}, keys...)); code != 0 {
			t.Fatalf("exit %d\n%s\n%s", code, out, errb)
		}
		var got verifyOutput
		if err := json.Unmarshal(out.Bytes(), &got); err != nil {
			t.Fatal(err)
		}
		if !got.Verified || got.Mode != "receipt" || got.Agent != "bot.team.acme" || got.LogIndex == nil || got.TreeSize == nil || *got.LogIndex >= *got.TreeSize {
			t.Errorf("got %+v", got)
		}
	})
}
