package ca

import (
	"crypto/x509"
	"net"
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
