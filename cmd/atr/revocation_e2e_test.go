package main

// End-to-end test of revocation across an intermediate rotation and of the
// revocation of an intermediate by its root (issue 13): the real binary, real
// SoftHSM2 tokens, SQLite and PostgreSQL, and openssl as the relying party,
// fetching every CRL from the URL in the certificate's CRL distribution point
// and asking OCSP at the URL in its AIA, over plain http.

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/agent-trust-registry/atr/ca"
)

// revE2E is a registry run by the real binary with an http distribution
// listener; serve can be stopped and started again (a rotation needs a
// restart).
type revE2E struct {
	*e2eEnv
	httpAddr string
	stop     func()
}

func newRevE2E(t *testing.T, databaseURL string) *revE2E {
	t.Helper()
	requireOpenSSL(t)
	httpAddr := freeAddr(t)
	env := []string{"ATR_HTTP_LISTEN=" + httpAddr, "ATR_HTTP_PUBLIC_URL=http://" + httpAddr}
	if databaseURL != "" {
		env = append(env, "ATR_DATABASE_URL="+databaseURL)
	}
	e := &revE2E{e2eEnv: setupE2E(t, env...), httpAddr: httpAddr}
	e.must(t, "ceremony", "root-crl", "--operator", "e2e")
	e.start(t)
	return e
}

func (e *revE2E) start(t *testing.T) { e.stop = e.serve(t) }

// revAgent is one registered agent's files and certificate.
type revAgent struct {
	name, key, cert string
	leaf            *x509.Certificate
}

func (e *revE2E) register(t *testing.T, name string) *revAgent {
	t.Helper()
	dir := t.TempDir()
	a := &revAgent{name: name, key: filepath.Join(dir, "agent.key"), cert: filepath.Join(dir, "agent.pem")}
	e.must(t, "agent", "keygen", "--key", a.key)
	e.must(t, "agent", "register", "--name", name, "--api-key-file", e.apiKey(), "--key", a.key, "--cert", a.cert)
	a.leaf = readCertFile(t, a.cert)
	return a
}

func readCertFile(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	certs, err := ca.ParseCertificatesPEM(data, 0)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return certs[0]
}

// httpGet fetches url over plain http and returns the body of a 200.
func httpGet(t *testing.T, url string) ([]byte, int) {
	t.Helper()
	if !strings.HasPrefix(url, "http://") {
		t.Fatalf("%s is not a plain-http URL", url)
	}
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return b, resp.StatusCode
}

// caCerts returns the served CA bundle (fetched over http) by subject key
// identifier.
func (e *revE2E) caCerts(t *testing.T) map[string]*x509.Certificate {
	t.Helper()
	body, code := httpGet(t, "http://"+e.httpAddr+"/v1/ca/bundle")
	if code != 200 {
		t.Fatalf("GET /v1/ca/bundle: %d", code)
	}
	certs, err := ca.ParseCertificatesPEM(body, 0)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]*x509.Certificate{}
	for _, c := range certs {
		out[hex.EncodeToString(c.SubjectKeyId)] = c
	}
	return out
}

// relyingParty is what openssl needs for one leaf: files for the root, the
// leaf's issuer, the leaf's CRL (from its CDP) and the issuer's root CRL
// (from the issuer's CDP).
type relyingParty struct {
	root, issuer, crl, arl string
}

func (e *revE2E) relyingParty(t *testing.T, a *revAgent, issuer *x509.Certificate) relyingParty {
	t.Helper()
	dir := t.TempDir()
	rp := relyingParty{root: filepath.Join(e.dataDir, "ca", "root.pem"), issuer: filepath.Join(dir, "issuer.pem"),
		crl: filepath.Join(dir, "leaf.crl.pem"), arl: filepath.Join(dir, "root.crl.pem")}
	writeTestFile(t, rp.issuer, ca.EncodeCertificatesPEM(issuer), 0o644)
	if len(a.leaf.CRLDistributionPoints) != 1 || len(issuer.CRLDistributionPoints) != 1 {
		t.Fatalf("CDPs: leaf %q, issuer %q; want one each", a.leaf.CRLDistributionPoints, issuer.CRLDistributionPoints)
	}
	for path, url := range map[string]string{rp.crl: a.leaf.CRLDistributionPoints[0], rp.arl: issuer.CRLDistributionPoints[0]} {
		der, code := httpGet(t, url)
		if code != 200 {
			t.Fatalf("GET %s: %d %s", url, code, der)
		}
		writeTestFile(t, path, pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: der}), 0o644)
	}
	return rp
}

// verify runs openssl verify with CRL checking (-crl_check_all when all) and
// returns its output and whether it accepted the leaf.
func (rp relyingParty) verify(t *testing.T, a *revAgent, all bool) (string, bool) {
	t.Helper()
	check := "-crl_check"
	if all {
		check = "-crl_check_all"
	}
	out, err := exec.Command("openssl", "verify", check, "-CAfile", rp.root, "-untrusted", rp.issuer,
		"-CRLfile", rp.crl, "-CRLfile", rp.arl, "-purpose", "sslclient", a.cert).CombinedOutput()
	return string(out), err == nil && strings.Contains(string(out), ": OK")
}

// ocsp asks the OCSP URL in the leaf's AIA with openssl, checks the response
// against the leaf's issuer, and returns the certificate's status line.
func (rp relyingParty) ocsp(t *testing.T, a *revAgent) string {
	t.Helper()
	if len(a.leaf.OCSPServer) != 1 || !strings.HasPrefix(a.leaf.OCSPServer[0], "http://") {
		t.Fatalf("OCSP AIA %q, want one http URL", a.leaf.OCSPServer)
	}
	out := openssl(t, "ocsp", "-issuer", rp.issuer, "-cert", a.cert, "-url", a.leaf.OCSPServer[0],
		"-CAfile", rp.root, "-VAfile", rp.issuer, "-timeout", "30")
	if !strings.Contains(out, "Response verify OK") {
		t.Fatalf("openssl ocsp: the response does not verify against the leaf's issuer:\n%s", out)
	}
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, a.cert+": ") {
			return line
		}
	}
	t.Fatalf("openssl ocsp: no status line:\n%s", out)
	return ""
}

func TestRevocationAcrossRotationE2E(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	for _, db := range []string{"sqlite", "postgres"} {
		t.Run(db, func(t *testing.T) {
			url := ""
			if db == "postgres" {
				url = postgresURL(t)
			}
			revocationAcrossRotation(t, newRevE2E(t, url))
		})
	}
}

func revocationAcrossRotation(t *testing.T, e *revE2E) {
	// Two agents under intermediate 1; rotate by ceremony and restart; two
	// under intermediate 2.
	old1, old2 := e.register(t, "old-revoked.acme"), e.register(t, "old-kept.acme")
	e.stop()
	e.must(t, "ceremony", "rotate-intermediate", "--operator", "e2e")
	e.start(t)
	new1, new2 := e.register(t, "new-revoked.acme"), e.register(t, "new-kept.acme")

	cas := e.caCerts(t)
	int1, int2 := cas[hex.EncodeToString(old1.leaf.AuthorityKeyId)], cas[hex.EncodeToString(new1.leaf.AuthorityKeyId)]
	if int1 == nil || int2 == nil || int1.Equal(int2) {
		t.Fatalf("want two different intermediates in the bundle, got %v and %v", int1, int2)
	}
	for _, a := range []*revAgent{old1, old2} {
		if !bytes.Equal(a.leaf.AuthorityKeyId, int1.SubjectKeyId) {
			t.Fatalf("%s was not issued by intermediate 1", a.name)
		}
	}
	for _, a := range []*revAgent{new1, new2} {
		if !bytes.Equal(a.leaf.AuthorityKeyId, int2.SubjectKeyId) {
			t.Fatalf("%s was not issued by intermediate 2", a.name)
		}
	}

	crlNumber := func(t *testing.T, a *revAgent) *x509.RevocationList {
		t.Helper()
		der, code := httpGet(t, a.leaf.CRLDistributionPoints[0])
		crl, err := x509.ParseRevocationList(der)
		if code != 200 || err != nil {
			t.Fatalf("%s: CRL at %s: %d %v", a.name, a.leaf.CRLDistributionPoints[0], code, err)
		}
		if !bytes.Equal(crl.AuthorityKeyId, a.leaf.AuthorityKeyId) {
			t.Fatalf("%s: the CRL at its CDP is not its issuer's", a.name)
		}
		return crl
	}
	before := []*x509.RevocationList{crlNumber(t, old1), crlNumber(t, new1)}
	for _, a := range []*revAgent{old1, new1} {
		e.must(t, "agent", "revoke", "--cert", a.cert, "--reason", "keyCompromise", "--api-key-file", e.apiKey())
	}
	t.Run("each issuer's CRL numbers grow", func(t *testing.T) {
		for k, a := range []*revAgent{old1, new1} {
			if after := crlNumber(t, a); after.Number.Cmp(before[k].Number) <= 0 {
				t.Errorf("%s: CRL number %v after a revocation, %v before", a.name, after.Number, before[k].Number)
			}
		}
	})

	t.Run("openssl sees both revocations on CRL and OCSP, each from its own issuer", func(t *testing.T) {
		for _, c := range []struct {
			a       *revAgent
			issuer  *x509.Certificate
			revoked bool
		}{{old1, int1, true}, {old2, int1, false}, {new1, int2, true}, {new2, int2, false}} {
			rp := e.relyingParty(t, c.a, c.issuer)
			out, ok := rp.verify(t, c.a, false)
			if c.revoked && (ok || !strings.Contains(out, "certificate revoked")) {
				t.Errorf("%s: openssl verify -crl_check accepted a revoked certificate:\n%s", c.a.name, out)
			}
			if !c.revoked && !ok {
				t.Errorf("%s: openssl verify -crl_check refused a good certificate:\n%s", c.a.name, out)
			}
			if out, ok := rp.verify(t, c.a, true); ok == c.revoked {
				t.Errorf("%s: openssl verify -crl_check_all (with the root CRL): ok=%v:\n%s", c.a.name, ok, out)
			}
			want := "good"
			if c.revoked {
				want = "revoked"
			}
			if line := rp.ocsp(t, c.a); !strings.HasSuffix(line, ": "+want) {
				t.Errorf("%s: openssl ocsp says %q, want %s", c.a.name, line, want)
			}
		}
	})

	t.Run("revoking intermediate 1 by root CRL ceremony", func(t *testing.T) {
		good := e.register(t, "after-rotation.acme") // under intermediate 2
		// Intermediate 1's CRL before the ceremony: it lists old1 only.
		pre := e.relyingParty(t, old2, int1)
		out := e.must(t, "ceremony", "root-crl", "--revoke", "atr-issuing-1", "--reason", "keyCompromise", "--operator", "e2e")
		if !strings.Contains(out, "1 revoked intermediate") {
			t.Errorf("root-crl output: %s", out)
		}
		// The ceremony is another process: the replicas learn of the new root
		// CRL by notification (PostgreSQL) or their next read of the
		// revision (SQLite, every 250 ms).
		start := time.Now()
		for deadline := start.Add(15 * time.Second); ; { // hang guard, not a timing assertion
			if out, _ := verifyOut(t, e, old2); strings.Contains(out, "issuer_revoked") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("the registry never applied the root CRL")
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Logf("the registry applied the root CRL %v after the ceremony ended", time.Since(start))
		// /v1/verify refuses intermediate 1's leaves, accepts intermediate 2's.
		for _, c := range []struct {
			a    *revAgent
			want string
		}{{old2, "issuer_revoked"}, {good, "VERIFIED"}} {
			out, _ := verifyOut(t, e, c.a)
			if !strings.Contains(out, c.want) {
				t.Errorf("atr verify %s: want %q:\n%s", c.a.name, c.want, out)
			}
		}
		// The bundles drop intermediate 1.
		if cas := e.caCerts(t); cas[hex.EncodeToString(int1.SubjectKeyId)] != nil || cas[hex.EncodeToString(int2.SubjectKeyId)] == nil {
			t.Errorf("bundle after the root CRL: intermediate 1 present=%v, intermediate 2 present=%v", cas[hex.EncodeToString(int1.SubjectKeyId)] != nil, cas[hex.EncodeToString(int2.SubjectKeyId)] != nil)
		}
		// openssl -crl_check_all refuses intermediate 1's leaves: for the
		// intermediate's revocation on the root CRL alone (with the leaf CRL
		// fetched before the ceremony), and with the current CRLs, where
		// intermediate 1's CRL now lists every leaf it issued (cACompromise).
		rp := e.relyingParty(t, old2, int1)
		pre.arl = rp.arl
		if out, ok := pre.verify(t, old2, true); ok || !strings.Contains(out, "certificate revoked") || !strings.Contains(out, "1 depth") {
			t.Errorf("openssl verify -crl_check_all with the new root CRL: want the intermediate (depth 1) revoked:\n%s", out)
		}
		if out, ok := rp.verify(t, old2, true); ok || !strings.Contains(out, "certificate revoked") {
			t.Errorf("openssl verify -crl_check_all of a leaf under the revoked intermediate:\n%s", out)
		}
		if line := rp.ocsp(t, old2); !strings.HasSuffix(line, ": revoked") {
			t.Errorf("OCSP for a leaf of the revoked intermediate: %q, want revoked", line)
		}
		// The root CRL's nextUpdate is a gauge an operator alerts on.
		metrics := e.metrics(t)
		for _, want := range []string{
			`atr_ca_crl_next_update_timestamp_seconds{key_id="` + hex.EncodeToString(int1.AuthorityKeyId) + `",kind="root"}`,
			`atr_ca_crl_next_update_timestamp_seconds{key_id="` + hex.EncodeToString(int2.SubjectKeyId) + `",kind="issuer"}`,
		} {
			if !strings.Contains(metrics, want) {
				t.Errorf("/metrics lacks %s", want)
			}
		}
		rp2 := e.relyingParty(t, good, int2)
		if out, ok := rp2.verify(t, good, true); !ok {
			t.Errorf("openssl verify -crl_check_all of a leaf under intermediate 2:\n%s", out)
		}
	})
}

// metrics returns the /metrics text of the https listener.
func (e *revE2E) metrics(t *testing.T) string {
	t.Helper()
	pool, err := loadCertPool(e.bundle())
	if err != nil {
		t.Fatal(err)
	}
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	resp, err := c.Get("https://" + e.addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET /metrics: %d %v", resp.StatusCode, err)
	}
	return string(b)
}

// verifyOut runs `atr verify` on an agent's certificate.
func verifyOut(t *testing.T, e *revE2E, a *revAgent) (string, int) {
	t.Helper()
	code, out, errb := e.atr(t, "verify", a.cert)
	return fmt.Sprintf("%s%s", out, errb), code
}
