package ca

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"crypto/x509"
	"golang.org/x/crypto/ocsp"
	"math/big"
)

// requireOpenSSL returns the openssl binary; a missing one skips the test
// locally and fails it in CI.
func requireOpenSSL(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("openssl")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("openssl not installed (required in CI)")
		}
		t.Skip("openssl not installed")
	}
	return p
}

func runOpenSSL(t *testing.T, bin string, args ...string) string {
	t.Helper()
	out, err := exec.Command(bin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("openssl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// realNowCA is a test CA valid now (openssl verifies against the wall clock).
func realNowCA(t *testing.T, alg string) (*testCA, time.Time) {
	t.Helper()
	now := time.Now()
	ca := &testCA{rootKey: newKey(t, "p384"), interKey: newKey(t, alg)}
	rt, err := RootTemplate("ATR Test Root", 0, now)
	if err != nil {
		t.Fatal(err)
	}
	if ca.root, err = CreateCertificate(rt, rt, ca.rootKey.Public(), ca.rootKey); err != nil {
		t.Fatal(err)
	}
	it, err := IntermediateTemplate("ATR Test Issuing CA", testTD, 0, now)
	if err != nil {
		t.Fatal(err)
	}
	if ca.inter, err = CreateCertificate(it, ca.root, ca.interKey.Public(), ca.rootKey); err != nil {
		t.Fatal(err)
	}
	if ca.issuer, err = NewIssuer(ca.interKey, ca.inter, []*x509.Certificate{ca.root}, testProfile()); err != nil {
		t.Fatal(err)
	}
	return ca, now
}

func TestOpenSSLVerify(t *testing.T) {
	bin := requireOpenSSL(t)
	for _, alg := range []string{"p256", "rsa2048"} {
		t.Run(alg, func(t *testing.T) {
			ca, now := realNowCA(t, alg)
			dir := t.TempDir()
			root := writePEM(t, dir, "root.pem", ca.root)
			inter := writePEM(t, dir, "inter.pem", ca.inter)

			k := newKey(t, "p256")
			p, err := ca.issuer.Prepare(newCSR(t, k), "billing-bot.acme", testSerial(t), now)
			if err != nil {
				t.Fatal(err)
			}
			leafCert, err := ca.issuer.Sign(p)
			if err != nil {
				t.Fatal(err)
			}
			leaf := writePEM(t, dir, "leaf.pem", leafCert)
			out := runOpenSSL(t, bin, "verify", "-x509_strict", "-purpose", "sslclient", "-CAfile", root, "-untrusted", inter, leaf)
			if !strings.Contains(out, ": OK") {
				t.Fatalf("openssl verify: %s", out)
			}
			runOpenSSL(t, bin, "verify", "-x509_strict", "-CAfile", root, inter)

			// The registry's TLS server certificate.
			st, err := ServerTemplate([]string{"localhost"}, []net.IP{net.ParseIP("127.0.0.1")}, 0, now)
			if err != nil {
				t.Fatal(err)
			}
			srvCert, err := CreateCertificate(st, ca.inter, newKey(t, "p256").Public(), ca.interKey)
			if err != nil {
				t.Fatal(err)
			}
			srv := writePEM(t, dir, "server.pem", srvCert)
			runOpenSSL(t, bin, "verify", "-x509_strict", "-purpose", "sslserver", "-CAfile", root, "-untrusted", inter, srv)

			// Name constraints: an intermediate-signed leaf outside the
			// trust domain is refused by openssl too.
			outside := signLeaf(t, func() *x509.Certificate {
				c := agentTemplate(t, AgentURI("evil.example.org", "a"))
				c.NotBefore, c.NotAfter = now.Add(-time.Minute), now.Add(time.Hour)
				return c
			}(), ca.inter, k.Public(), ca.interKey)
			bad := writePEM(t, dir, "outside.pem", outside)
			if out, err := exec.Command(bin, "verify", "-CAfile", root, "-untrusted", inter, bad).CombinedOutput(); err == nil {
				t.Fatalf("openssl accepted a leaf outside the name constraints: %s", out)
			}

			// CRLs: the responder's first, made by x509.CreateRevocationList,
			// and its second, encoded by crlTBS (crltbs.go).
			revoked := []x509.RevocationListEntry{{SerialNumber: leafCert.SerialNumber, RevocationTime: now.Add(-time.Second), ReasonCode: 1}}
			responder := ca.issuer.Responder()
			bundle := writePEM(t, dir, "bundle.pem", ca.inter, ca.root)
			for number, path := range []string{"crypto/x509", "crlTBS"} {
				crlDER, err := responder.SignCRL(big.NewInt(int64(number+1)), now.Add(-time.Minute), now.Add(24*time.Hour), revoked)
				if err != nil {
					t.Fatal(err)
				}
				if learned := responder.crlEnc.Load() != nil; !learned {
					t.Fatalf("%s: the responder did not learn its CRL encoding", path)
				}
				crl := filepath.Join(dir, "crl.der")
				if err := os.WriteFile(crl, crlDER, 0o600); err != nil {
					t.Fatal(err)
				}
				out = runOpenSSL(t, bin, "crl", "-inform", "DER", "-in", crl, "-CAfile", bundle, "-verify", "-noout", "-text")
				if !strings.Contains(out, "verify OK") && !strings.Contains(out, "verify ok") {
					t.Fatalf("%s: openssl crl -verify: %s", path, out)
				}
				if !strings.Contains(out, "Key Compromise") || !strings.Contains(strings.ToUpper(out), strings.ToUpper(leafCert.SerialNumber.Text(16))) {
					t.Fatalf("%s: CRL does not list the revoked serial with its reason:\n%s", path, out)
				}
				// openssl verify with CRL checking rejects the revoked leaf.
				if out, err := exec.Command(bin, "verify", "-crl_check", "-CRLfile", crl, "-CAfile", root, "-untrusted", inter, leaf).CombinedOutput(); err == nil {
					t.Fatalf("%s: openssl accepted a revoked leaf: %s", path, out)
				}
			}

			// OCSP response.
			resp, err := ca.issuer.SignOCSP(ocsp.Response{SerialNumber: leafCert.SerialNumber, Status: ocsp.Revoked,
				RevokedAt: now.Add(-time.Second), RevocationReason: ocsp.KeyCompromise,
				ThisUpdate: now.Add(-time.Minute), NextUpdate: now.Add(time.Hour)})
			if err != nil {
				t.Fatal(err)
			}
			respFile := filepath.Join(dir, "ocsp.der")
			if err := os.WriteFile(respFile, resp, 0o600); err != nil {
				t.Fatal(err)
			}
			out = runOpenSSL(t, bin, "ocsp", "-respin", respFile, "-issuer", inter, "-cert", leaf, "-CAfile", root, "-verify_other", inter)
			if !strings.Contains(out, "revoked") || !strings.Contains(out, "Response verify OK") {
				t.Fatalf("openssl ocsp: %s", out)
			}
		})
	}
}
