package ca

import (
	"bytes"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"
)

var (
	testServerDNS = []string{"localhost", "atr.example.com"}
	testServerIPs = []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")}
)

// TestPrepareServerProfile issues the registry's TLS server certificate
// through PrepareServer and Sign and checks the server profile field by
// field, and that it verifies as a TLS server certificate for each name.
func TestPrepareServerProfile(t *testing.T) {
	for _, alg := range []string{"p256", "rsa2048"} {
		t.Run(alg, func(t *testing.T) {
			ca := newTestCA(t, alg)
			k := newKey(t, "p256")
			serial := testSerial(t)
			p, err := ca.issuer.PrepareServer(k.Public(), testServerDNS, testServerIPs, serial, testNow, 0)
			if err != nil {
				t.Fatalf("PrepareServer: %v", err)
			}
			if p.AgentName() != "" || p.Serial().Cmp(serial) != 0 {
				t.Errorf("Prepared agent name %q, serial %v; want \"\", %v", p.AgentName(), p.Serial(), serial)
			}
			c, err := ca.issuer.Sign(p)
			if err != nil {
				t.Fatalf("Sign: %v", err)
			}
			if !bytes.Equal(c.RawTBSCertificate, p.TBS()) {
				t.Error("signed TBSCertificate differs from Prepared.TBS")
			}
			if !slices.Equal(c.DNSNames, testServerDNS) || len(c.IPAddresses) != 2 || !c.IPAddresses[0].Equal(testServerIPs[0]) || !c.IPAddresses[1].Equal(testServerIPs[1]) {
				t.Errorf("SANs DNS %v IP %v; want %v %v", c.DNSNames, c.IPAddresses, testServerDNS, testServerIPs)
			}
			if len(c.URIs)+len(c.EmailAddresses) != 0 {
				t.Errorf("URI SANs %v, email SANs %v; want none (no SPIFFE ID on a server certificate)", c.URIs, c.EmailAddresses)
			}
			if !bytes.Equal(c.RawSubject, []byte{0x30, 0x00}) {
				t.Errorf("subject %q; want empty", c.Subject)
			}
			if c.IsCA || !c.BasicConstraintsValid || c.KeyUsage != x509.KeyUsageDigitalSignature {
				t.Errorf("cA=%v basicConstraints=%v keyUsage=%#x; want leaf, digitalSignature", c.IsCA, c.BasicConstraintsValid, c.KeyUsage)
			}
			if !slices.Equal(c.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}) {
				t.Errorf("EKU %v; want serverAuth only", c.ExtKeyUsage)
			}
			if !slices.Equal(c.CRLDistributionPoints, []string{testProfile().CRLURL}) || !slices.Equal(c.OCSPServer, []string{testProfile().OCSPURL}) {
				t.Errorf("CRL DP %v, OCSP %v; want the profile's", c.CRLDistributionPoints, c.OCSPServer)
			}
			if !bytes.Equal(c.AuthorityKeyId, ca.inter.SubjectKeyId) || len(c.SubjectKeyId) == 0 {
				t.Error("key identifiers missing or wrong")
			}
			if want := testNow.Add(-DefaultBackdate); !c.NotBefore.Equal(want) {
				t.Errorf("NotBefore %v; want %v", c.NotBefore, want)
			}
			if want := testNow.Add(DefaultTLSServerLifetime); !c.NotAfter.Equal(want) {
				t.Errorf("NotAfter %v; want %v", c.NotAfter, want)
			}
			roots, inters := x509.NewCertPool(), x509.NewCertPool()
			roots.AddCert(ca.root)
			inters.AddCert(ca.inter)
			for _, name := range []string{"localhost", "atr.example.com", "127.0.0.1", "::1"} {
				if _, err := c.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inters, DNSName: name, CurrentTime: testNow,
					KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
					t.Errorf("Verify as %s: %v", name, err)
				}
			}
			// The agent verifier refuses it: it is no agent certificate.
			if err := ca.verifier.Verify(c, nil, testNow); err == nil {
				t.Error("the agent verifier accepted the server certificate")
			}
		})
	}
}

// TestPrepareServerLifetime: lifetime bounds, and the shortening to the
// issuing certificate's end.
func TestPrepareServerLifetime(t *testing.T) {
	ca := newTestCA(t, "p256")
	k := newKey(t, "p256")
	p, err := ca.issuer.PrepareServer(k.Public(), testServerDNS, nil, testSerial(t), testNow, time.Hour)
	if err != nil || !p.NotAfter().Equal(testNow.Add(time.Hour)) {
		t.Fatalf("PrepareServer(1h) NotAfter %v, %v; want %v", p.NotAfter(), err, testNow.Add(time.Hour))
	}
	late := ca.inter.NotAfter.Add(-2 * time.Hour)
	p, err = ca.issuer.PrepareServer(k.Public(), testServerDNS, nil, testSerial(t), late, 0)
	if err != nil || !p.NotAfter().Equal(ca.inter.NotAfter) {
		t.Fatalf("PrepareServer two hours before the intermediate expires: NotAfter %v, %v; want the intermediate's %v", p.NotAfter(), err, ca.inter.NotAfter)
	}
	if _, err := ca.issuer.Sign(p); err != nil {
		t.Fatalf("Sign shortened certificate: %v", err)
	}
	tooLate := ca.inter.NotAfter.Add(-MinTLSServerLifetime + time.Minute)
	if _, err := ca.issuer.PrepareServer(k.Public(), testServerDNS, nil, testSerial(t), tooLate, 0); err == nil || !strings.Contains(err.Error(), "rotate the intermediate") {
		t.Errorf("PrepareServer %v before the intermediate expires: %v; want a refusal naming the rotation", ca.inter.NotAfter.Sub(tooLate), err)
	}
}

func TestPrepareServerRefusals(t *testing.T) {
	ca := newTestCA(t, "p256")
	pub := newKey(t, "p256").Public()
	many := make([]string, MaxTLSServerNames+1)
	for i := range many {
		many[i] = fmt.Sprintf("h%d.example.com", i)
	}
	tests := []struct {
		name     string
		pub      any
		dns      []string
		ips      []net.IP
		serial   *big.Int
		now      time.Time
		lifetime time.Duration
		policy   bool // want *PolicyError
	}{
		{"no names", pub, nil, nil, testSerial(t), testNow, 0, true},
		{"uppercase DNS name", pub, []string{"Localhost"}, nil, testSerial(t), testNow, 0, true},
		{"wildcard", pub, []string{"*.example.com"}, nil, testSerial(t), testNow, 0, true},
		{"trailing dot", pub, []string{"atr.example.com."}, nil, testSerial(t), testNow, 0, true},
		{"repeated DNS name", pub, []string{"localhost", "localhost"}, nil, testSerial(t), testNow, 0, true},
		{"repeated IP", pub, nil, []net.IP{net.ParseIP("127.0.0.1"), net.IPv4(127, 0, 0, 1).To4()}, testSerial(t), testNow, 0, true},
		{"unspecified IP", pub, nil, []net.IP{net.IPv6unspecified}, testSerial(t), testNow, 0, true},
		{"malformed IP", pub, nil, []net.IP{{1, 2, 3}}, testSerial(t), testNow, 0, true},
		{"too many names", pub, many, nil, testSerial(t), testNow, 0, true},
		{"lifetime too long", pub, testServerDNS, nil, testSerial(t), testNow, MaxTLSServerLifetime + time.Second, true},
		{"lifetime too short", pub, testServerDNS, nil, testSerial(t), testNow, MinTLSServerLifetime - time.Second, true},
		{"weak key", newKey(t, "rsa1024").Public(), testServerDNS, nil, testSerial(t), testNow, 0, true},
		{"P-521 key", newKey(t, "p521").Public(), testServerDNS, nil, testSerial(t), testNow, 0, true},
		{"nil serial", pub, testServerDNS, nil, nil, testNow, 0, false},
		{"low-entropy serial", pub, testServerDNS, nil, big.NewInt(12345), testNow, 0, false},
		{"before issuer", pub, testServerDNS, nil, testSerial(t), ca.inter.NotBefore.Add(-time.Hour), 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ca.issuer.PrepareServer(tt.pub, tt.dns, tt.ips, tt.serial, tt.now, tt.lifetime)
			if err == nil {
				t.Fatal("PrepareServer succeeded")
			}
			var pe *PolicyError
			if errors.As(err, &pe) != tt.policy {
				t.Fatalf("PrepareServer error %v; want PolicyError=%v", err, tt.policy)
			}
		})
	}
}

// TestServerLints feeds broken server templates through the server lint
// path and checks that the named lints refuse them.
func TestServerLints(t *testing.T) {
	ca := newTestCA(t, "p256")
	k := newKey(t, "p256")
	spiffe, err := url.Parse(AgentURI(testTD, "a"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		mutate   func(*x509.Certificate)
		wantLint string
	}{
		{"SPIFFE URI SAN", func(c *x509.Certificate) { c.URIs = []*url.URL{spiffe} }, "e_atr_server_names"},
		{"email SAN", func(c *x509.Certificate) { c.EmailAddresses = []string{"ops@example.com"} }, "e_atr_server_names"},
		{"uppercase DNS SAN", func(c *x509.Certificate) { c.DNSNames = []string{"Localhost"} }, "e_atr_server_names"},
		{"wildcard DNS SAN", func(c *x509.Certificate) { c.DNSNames = []string{"*.example.com"} }, "e_atr_server_names"},
		{"clientAuth EKU", func(c *x509.Certificate) { c.ExtKeyUsage = append(c.ExtKeyUsage, x509.ExtKeyUsageClientAuth) }, "e_atr_server_ext_key_usage"},
		{"no EKU", func(c *x509.Certificate) { c.ExtKeyUsage = nil }, "e_atr_server_ext_key_usage"},
		{"too long", func(c *x509.Certificate) { c.NotAfter = c.NotBefore.Add(MaxTLSServerLifetime + time.Hour) }, "e_atr_server_lifetime"},
		{"subject", func(c *x509.Certificate) { c.Subject = pkix.Name{CommonName: "localhost"} }, "e_atr_empty_subject"},
		{"cA=true", func(c *x509.Certificate) { c.IsCA = true }, "e_atr_not_ca"},
		{"keyEncipherment", func(c *x509.Certificate) { c.KeyUsage |= x509.KeyUsageKeyEncipherment }, "e_atr_key_usage"},
		{"before issuer", func(c *x509.Certificate) { c.NotBefore = ca.inter.NotBefore.Add(-time.Second) }, "e_atr_within_issuer_validity"},
		{"short serial", func(c *x509.Certificate) { c.SerialNumber = big.NewInt(7) }, "e_atr_serial"},
		{"wrong CRL", func(c *x509.Certificate) { c.CRLDistributionPoints = []string{"http://evil.example/crl"} }, "e_atr_crl_distribution_point"},
		{"no OCSP", func(c *x509.Certificate) { c.OCSPServer = nil }, "e_atr_ocsp_aia"},
		{"extra extension", func(c *x509.Certificate) {
			c.ExtraExtensions = []pkix.Extension{{Id: []int{1, 2, 3, 4}, Value: []byte{0x05, 0x00}}}
		}, "e_atr_extensions_allowed"},
		// zlint (community) finding.
		{"DNS SAN with NUL (zlint community)", func(c *x509.Certificate) { c.DNSNames = []string{"a\x00.example.com"} }, "e_san_dns_name_includes_null_char"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tmpl, err := ca.issuer.serverLeafTemplate(k.Public(), testServerDNS, testServerIPs, testSerial(t), testNow, 0)
			if err != nil {
				t.Fatal(err)
			}
			tt.mutate(tmpl)
			_, err = ca.issuer.lintTemplateAs(tmpl, k.Public(), ca.issuer.serverLints)
			var le *LintError
			if !errors.As(err, &le) {
				t.Fatalf("lint error = %v; want *LintError", err)
			}
			if !slices.Contains(le.Lints(), tt.wantLint) {
				t.Fatalf("lints %v do not include %s", le.Lints(), tt.wantLint)
			}
		})
	}
}

// TestProfileLintsApplyToTheirProfileOnly makes the split of ATR's lints
// explicit: the agent lints (e_atr_one_uri_san above all) refuse a server
// certificate, the server lints refuse an agent leaf, and each profile's
// certificate passes its own lints with no finding from the other's.
func TestProfileLintsApplyToTheirProfileOnly(t *testing.T) {
	ca := newTestCA(t, "p256")
	k := newKey(t, "p256")
	agent, err := ca.issuer.leafTemplate(k.Public(), "a", testSerial(t), testNow)
	if err != nil {
		t.Fatal(err)
	}
	server, err := ca.issuer.serverLeafTemplate(k.Public(), testServerDNS, testServerIPs, testSerial(t), testNow, 0)
	if err != nil {
		t.Fatal(err)
	}
	lints := func(tmpl *x509.Certificate, atr profileLints) []string {
		t.Helper()
		_, err := ca.issuer.lintTemplateAs(tmpl, k.Public(), atr)
		var le *LintError
		switch {
		case err == nil:
			return nil
		case errors.As(err, &le):
			return le.Lints()
		}
		t.Fatalf("lint: %v", err)
		return nil
	}
	agentOnly := []string{"e_atr_one_uri_san", "e_atr_no_other_sans", "e_atr_ext_key_usage", "e_atr_lifetime"}
	serverOnly := []string{"e_atr_server_names", "e_atr_server_ext_key_usage", "e_atr_server_lifetime"}
	tests := []struct {
		name       string
		tmpl       *x509.Certificate
		atr        profileLints
		want, none []string
	}{
		{"agent leaf, agent lints", agent, ca.issuer.agentProfile("a"), nil, append(agentOnly, serverOnly...)},
		{"server certificate, server lints", server, ca.issuer.serverLints, nil, append(agentOnly, serverOnly...)},
		{"server certificate, agent lints", server, ca.issuer.agentProfile("a"), []string{"e_atr_one_uri_san", "e_atr_no_other_sans", "e_atr_ext_key_usage"}, serverOnly},
		{"agent leaf, server lints", agent, ca.issuer.serverLints, []string{"e_atr_server_names", "e_atr_server_ext_key_usage"}, agentOnly},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := lints(tt.tmpl, tt.atr)
			for _, w := range tt.want {
				if !slices.Contains(got, w) {
					t.Errorf("lints %v do not include %s", got, w)
				}
			}
			for _, n := range tt.none {
				if slices.Contains(got, n) {
					t.Errorf("lints %v include %s, which belongs to the other profile", got, n)
				}
			}
			if tt.want == nil && len(got) > 0 {
				t.Errorf("own profile: lints %v; want none", got)
			}
		})
	}
}

// TestServerCertificateOpenSSL: openssl accepts the server certificate as
// an SSL server certificate under the root (strict X.509 checks).
func TestServerCertificateOpenSSL(t *testing.T) {
	bin := requireOpenSSL(t)
	ca, now := realNowCA(t, "p256")
	dir := t.TempDir()
	p, err := ca.issuer.PrepareServer(newKey(t, "p256").Public(), []string{"localhost"}, []net.IP{net.ParseIP("127.0.0.1")}, testSerial(t), now, 0)
	if err != nil {
		t.Fatal(err)
	}
	c, err := ca.issuer.Sign(p)
	if err != nil {
		t.Fatal(err)
	}
	root, inter, srv := writePEM(t, dir, "root.pem", ca.root), writePEM(t, dir, "inter.pem", ca.inter), writePEM(t, dir, "server.pem", c)
	for _, check := range [][]string{{"-verify_hostname", "localhost"}, {"-verify_ip", "127.0.0.1"}} {
		args := append([]string{"verify", "-x509_strict", "-purpose", "sslserver", "-CAfile", root, "-untrusted", inter}, check...)
		if out := runOpenSSL(t, bin, append(args, srv)...); !strings.Contains(out, ": OK") {
			t.Errorf("openssl verify %v: %s", check, out)
		}
	}
}
