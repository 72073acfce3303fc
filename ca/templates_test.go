package ca

import (
	"crypto/x509"
	"errors"
	"net"
	"net/url"
	"slices"
	"testing"
	"time"
)

func TestTemplates(t *testing.T) {
	root, err := RootTemplate("Root", 0, testNow)
	if err != nil {
		t.Fatal(err)
	}
	if !root.IsCA || root.MaxPathLen != 1 || root.KeyUsage != x509.KeyUsageCertSign|x509.KeyUsageCRLSign ||
		!root.NotAfter.Equal(testNow.Add(DefaultRootLifetime)) || !root.NotBefore.Equal(testNow.Add(-time.Minute)) {
		t.Errorf("root template %+v", root)
	}
	inter, err := IntermediateTemplate("Issuing", testTD, 0, testNow)
	if err != nil {
		t.Fatal(err)
	}
	if !inter.IsCA || inter.MaxPathLen != 0 || !inter.MaxPathLenZero || len(inter.PermittedURIDomains) != 1 ||
		inter.PermittedURIDomains[0] != testTD || !inter.PermittedDNSDomainsCritical {
		t.Errorf("intermediate template %+v", inter)
	}
	srv, err := ServerTemplate([]string{"atr.example.com"}, []net.IP{net.ParseIP("127.0.0.1")}, 0, testNow)
	if err != nil {
		t.Fatal(err)
	}
	if srv.IsCA || len(srv.ExtKeyUsage) != 1 || srv.ExtKeyUsage[0] != x509.ExtKeyUsageServerAuth ||
		!srv.NotAfter.Equal(testNow.Add(DefaultServerLifetime)) {
		t.Errorf("server template %+v", srv)
	}
	if a, b := root.SerialNumber, inter.SerialNumber; a.Cmp(b) == 0 || a.BitLen() < 64 {
		t.Error("template serials not random")
	}

	bad := map[string]func() error{
		"root lifetime too long": func() error { _, err := RootTemplate("R", MaxRootLifetime+time.Hour, testNow); return err },
		"root empty CN":          func() error { _, err := RootTemplate("", 0, testNow); return err },
		"root control char CN":   func() error { _, err := RootTemplate("a\nb", 0, testNow); return err },
		"intermediate > 2 years": func() error {
			_, err := IntermediateTemplate("I", testTD, MaxIntermediateLifetime+time.Hour, testNow)
			return err
		},
		"intermediate bad trust domain": func() error { _, err := IntermediateTemplate("I", "Bad TD", 0, testNow); return err },
		"intermediate non-FQDN":         func() error { _, err := IntermediateTemplate("I", "a.b", 0, testNow); return err },
		"server no names":               func() error { _, err := ServerTemplate(nil, nil, 0, testNow); return err },
		"server bad DNS name":           func() error { _, err := ServerTemplate([]string{"a b"}, nil, 0, testNow); return err },
		"server lifetime too long": func() error {
			_, err := ServerTemplate([]string{"a.example"}, nil, MaxServerLifetime+time.Hour, testNow)
			return err
		},
		"negative lifetime": func() error { _, err := RootTemplate("R", -time.Hour, testNow); return err },
	}
	for name, f := range bad {
		t.Run(name, func(t *testing.T) {
			if f() == nil {
				t.Fatal("accepted")
			}
		})
	}
}

func TestCreateCertificateChecks(t *testing.T) {
	k := newKey(t, "p256")
	rt, _ := RootTemplate("R", 0, testNow)
	if _, err := CreateCertificate(rt, rt, newKey(t, "p256").Public(), k); err == nil {
		t.Error("self-signed certificate over a foreign key accepted")
	}
	if _, err := CreateCertificate(rt, rt, k.Public(), misbehavingSigner{k, "other message"}); err == nil {
		t.Error("misbehaving signer accepted")
	}
	root, err := CreateCertificate(rt, rt, k.Public(), k)
	if err != nil {
		t.Fatal(err)
	}
	it, _ := IntermediateTemplate("I", testTD, 0, testNow)
	ik := newKey(t, "p384")
	if _, err := CreateCertificate(it, root, ik.Public(), otherKeySigner{k.Public(), newKey(t, "p256")}); err == nil {
		t.Error("signer with the wrong key accepted")
	}
	inter, err := CreateCertificate(it, root, ik.Public(), k)
	if err != nil {
		t.Fatal(err)
	}
	if len(inter.SubjectKeyId) == 0 || string(inter.AuthorityKeyId) != string(root.SubjectKeyId) {
		t.Error("key identifiers missing")
	}
	if len(inter.PermittedURIDomains) != 1 {
		t.Error("name constraints lost")
	}
	for _, e := range inter.Extensions {
		if e.Id.String() == "2.5.29.30" && !e.Critical {
			t.Error("name constraints not critical")
		}
	}
	if _, err := CreateCertificate(nil, root, ik.Public(), k); err == nil {
		t.Error("nil template accepted")
	}
}

// TestIntermediateURINameConstraintOption (issue 11, item 5): the issuing CA
// profile carries the critical URI name constraint only when asked, since
// pyca/cryptography rejects every chain through it; without it the trust
// domain is still enforced by ATR: issuance puts the trust domain's SPIFFE ID
// in the leaf, the issuance lint refuses a foreign one before the issuing key
// signs, and Verifier refuses a foreign leaf the issuing key signed anyway.
func TestIntermediateURINameConstraintOption(t *testing.T) {
	nb := testNow.Add(-time.Hour)
	tests := []struct {
		name         string
		template     func() (*x509.Certificate, error)
		wantNC       bool // a critical name constraints extension
		wantPermitTD bool // ... permitting the trust domain's URIs
	}{
		{"IntermediateTemplate", func() (*x509.Certificate, error) { return IntermediateTemplate("I", testTD, 0, nb) }, true, true},
		{"without the URI name constraint", func() (*x509.Certificate, error) {
			return IntermediateTemplateWithOptions("I", testTD, 0, nb, IntermediateOptions{})
		}, false, false},
		{"with the URI name constraint", func() (*x509.Certificate, error) {
			return IntermediateTemplateWithOptions("I", testTD, 0, nb, IntermediateOptions{URINameConstraint: true})
		}, true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rootKey, interKey := newKey(t, "p384"), newKey(t, "p256")
			rt, err := RootTemplate("R", 0, nb)
			if err != nil {
				t.Fatal(err)
			}
			root, err := CreateCertificate(rt, rt, rootKey.Public(), rootKey)
			if err != nil {
				t.Fatal(err)
			}
			it, err := tt.template()
			if err != nil {
				t.Fatal(err)
			}
			inter, err := CreateCertificate(it, root, interKey.Public(), rootKey)
			if err != nil {
				t.Fatal(err)
			}
			if !inter.IsCA || inter.MaxPathLen != 0 || !inter.MaxPathLenZero {
				t.Errorf("intermediate: cA %v pathLen %d (zero %v); want a CA with pathLen 0", inter.IsCA, inter.MaxPathLen, inter.MaxPathLenZero)
			}
			gotNC := false
			for _, e := range inter.Extensions {
				if e.Id.String() == "2.5.29.30" {
					gotNC = e.Critical
				}
			}
			if gotNC != tt.wantNC {
				t.Errorf("critical name constraints extension: got %v, want %v", gotNC, tt.wantNC)
			}
			if got := slices.Contains(inter.PermittedURIDomains, testTD); got != tt.wantPermitTD {
				t.Errorf("permitted URI domains %q: contains %s = %v, want %v", inter.PermittedURIDomains, testTD, got, tt.wantPermitTD)
			}

			iss, err := NewIssuer(interKey, inter, []*x509.Certificate{root}, testProfile())
			if err != nil {
				t.Fatalf("NewIssuer: %v", err)
			}
			ver, err := NewVerifier([]*x509.Certificate{root}, []*x509.Certificate{inter}, testTD)
			if err != nil {
				t.Fatal(err)
			}
			k := newKey(t, "p256")
			p, err := iss.Prepare(newCSR(t, k), "billing-bot.acme", testSerial(t), testNow)
			if err != nil {
				t.Fatalf("Prepare: %v", err)
			}
			leaf, err := iss.Sign(p)
			if err != nil {
				t.Fatalf("Sign: %v", err)
			}
			if err := ver.Verify(leaf, nil, testNow); err != nil {
				t.Errorf("Verify(issued leaf) = %v, want nil", err)
			}
			if got, want := leaf.URIs[0].String(), AgentURI(testTD, "billing-bot.acme"); got != want {
				t.Errorf("leaf URI SAN %s, want %s", got, want)
			}

			// The issuance lint refuses a foreign trust domain before the
			// real signature, with or without the constraint.
			tmpl, err := iss.leafTemplate(k.Public(), "billing-bot.acme", testSerial(t), testNow)
			if err != nil {
				t.Fatal(err)
			}
			foreign, err := url.Parse(AgentURI("evil.example.org", "billing-bot.acme"))
			if err != nil {
				t.Fatal(err)
			}
			tmpl.URIs = []*url.URL{foreign}
			_, err = iss.lintTemplate(tmpl, k.Public(), "billing-bot.acme")
			var le *LintError
			if !errors.As(err, &le) || !slices.Contains(le.Lints(), "e_atr_one_uri_san") {
				t.Errorf("lint of a foreign-domain leaf: %v; want e_atr_one_uri_san", err)
			}

			// A foreign leaf signed by the issuing key itself (a misused
			// key, bypassing the pipeline) is refused by Verifier: as an
			// untrusted chain when the constraint is there, as not an agent
			// when it is not.
			forged := signLeaf(t, agentTemplate(t, AgentURI("evil.example.org", "a")), inter, newKey(t, "p256").Public(), interKey)
			wantReason := ReasonNotAgent
			if tt.wantNC {
				wantReason = ReasonUntrustedChain
			}
			var ve *VerifyError
			if err := ver.Verify(forged, nil, testNow); !errors.As(err, &ve) || ve.Reason != wantReason {
				t.Errorf("Verify(foreign leaf signed by the issuing key) = %v; want %s", err, wantReason)
			}
		})
	}
}
