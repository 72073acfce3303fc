package main

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/agent-trust-registry/atr/ca"
)

// TestESTWithOpenSSLAndCurl enrolls and re-enrolls an agent over EST
// (RFC 7030) against the real `atr serve` binary with a client nobody here
// wrote: openssl, curl and base64 driving the RFC's messages exactly
// (testdata/est-openssl-curl.sh). Every answer is read by
// `openssl pkcs7 -print_certs`; both certificates pass `openssl verify`; the
// superseded certificate is refused; the registry knows both, and the new one
// verifies online.
func TestESTWithOpenSSLAndCurl(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test of the real binary; skipped with -short")
	}
	requireOpenSSL(t)
	for _, tool := range []string{"curl", "base64"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv("CI") == "true" {
				t.Fatalf("%s is required in CI", tool)
			}
			t.Skipf("%s not installed", tool)
		}
	}
	e := newE2E(t)
	work := t.TempDir()
	const name = "est-bot.acme"
	script, err := filepath.Abs(filepath.Join("testdata", "est-openssl-curl.sh"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sh", script, "https://"+e.addr, filepath.Join(e.dataDir, "ca"), e.apiKey(), name, work)
	cmd.Env = e.env
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "est: ok") {
		t.Fatalf("est-openssl-curl.sh: %v\n%s", err, out)
	}

	read := func(f string) string {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(work, f))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	// cacerts: what GET /v1/ca/bundle serves, certificate for certificate.
	got := printedCerts(t, read("cacerts.pem"))
	bundle, err := os.ReadFile(e.bundle())
	if err != nil {
		t.Fatal(err)
	}
	want, err := ca.ParseCertificatesPEM(bundle, 16)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) {
		t.Fatalf("cacerts has %d certificates, the bundle %d", len(got), len(want))
	}
	for i := range want {
		if !got[i].Equal(want[i]) {
			t.Errorf("cacerts certificate %d is %s, the bundle's %s", i, got[i].Subject, want[i].Subject)
		}
	}
	// csrattrs as openssl reads it.
	for _, s := range []string{"commonName", "id-ecPublicKey", "prime256v1", "ecdsa-with-SHA256"} {
		if !strings.Contains(read("csrattrs.txt"), s) {
			t.Errorf("openssl asn1parse of csrattrs lacks %s:\n%s", s, read("csrattrs.txt"))
		}
	}
	// Both certificates name the agent, differ, and are the registry's.
	var certs []*x509.Certificate
	for _, f := range []string{"agent.pem", "agent2.pem"} {
		cs := printedCerts(t, read(f))
		if len(cs) != 1 {
			t.Fatalf("%s holds %d certificates, want the issued one alone", f, len(cs))
		}
		if n, _, err := ca.AgentIdentity(cs[0]); err != nil || n != name {
			t.Errorf("%s names %q (%v), want %s", f, n, err, name)
		}
		certs = append(certs, cs[0])
	}
	if certs[0].SerialNumber.Cmp(certs[1].SerialNumber) == 0 {
		t.Error("re-enrollment kept the serial")
	}
	c := e.apiClient(t)
	// The first is superseded by the re-enrollment (still verified inside the
	// rotation grace period), the second is current.
	for i, f := range []string{"agent.pem", "agent2.pem"} {
		vr, err := c.Verify(context.Background(), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: certs[i].Raw}), nil)
		if err != nil {
			t.Fatalf("verify %s: %v", f, err)
		}
		wantStatus := []string{"superseded", "issued"}[i]
		if vr.Agent != name || vr.Status != wantStatus || (i == 1 && !vr.Verified) {
			t.Errorf("verify %s: %+v; want agent %s, status %s", f, vr, name, wantStatus)
		}
	}
}

// printedCerts parses the output of `openssl pkcs7 -print_certs`: PEM blocks,
// each after its subject= and issuer= lines.
func printedCerts(t *testing.T, text string) []*x509.Certificate {
	t.Helper()
	var out []*x509.Certificate
	rest := []byte(text)
	for {
		var b *pem.Block
		if b, rest = pem.Decode(rest); b == nil {
			return out
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, c)
	}
}
