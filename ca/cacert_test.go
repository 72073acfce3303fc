package ca

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"errors"
	"io"
	"slices"
	"testing"
	"time"
)

// TestCreateRootAndIntermediate: the ceremony profiles pass the linted path
// for every key algorithm a ceremony may use, and the results are what the
// templates say.
func TestCreateRootAndIntermediate(t *testing.T) {
	for _, alg := range []string{"p256", "p384", "rsa2048", "ed25519"} {
		t.Run(alg, func(t *testing.T) {
			rk, ik := newKey(t, alg), newKey(t, "p256")
			rt, err := RootTemplate("ATR Root CA", 0, testNow)
			if err != nil {
				t.Fatal(err)
			}
			root, err := CreateRoot(rt, rk)
			if err != nil {
				t.Fatalf("CreateRoot: %v", err)
			}
			if !IsSelfSigned(root) || root.MaxPathLen != 1 || root.SerialNumber.Cmp(rt.SerialNumber) != 0 {
				t.Errorf("root: self-signed %v, pathLen %d", IsSelfSigned(root), root.MaxPathLen)
			}
			for _, nc := range []bool{false, true} {
				it, err := IntermediateTemplateWithOptions("ATR Issuing CA", testTD, 0, testNow,
					IntermediateOptions{URINameConstraint: nc, CRLURL: "http://atr.example.com/v1/crl/" + KeyID(root)})
				if err != nil {
					t.Fatal(err)
				}
				inter, err := CreateIntermediate(it, CAKey{Cert: root, Signer: rk}, ik.Public(), testNow)
				if err != nil {
					t.Fatalf("CreateIntermediate (name constraint %v): %v", nc, err)
				}
				if err := inter.CheckSignatureFrom(root); err != nil || !bytes.Equal(inter.AuthorityKeyId, root.SubjectKeyId) {
					t.Errorf("intermediate not issued by the root: %v", err)
				}
				if got := len(inter.PermittedURIDomains) > 0; got != nc {
					t.Errorf("name constraint %v, want %v", got, nc)
				}
				if _, err := NewIssuer(ik, inter, []*x509.Certificate{root}, testProfile()); err != nil {
					t.Errorf("NewIssuer over the new intermediate: %v", err)
				}
			}
		})
	}
}

// TestCreateCALintRefuses: a template that breaks the profile is refused
// with a *LintError naming the lint, and the real signer never signs.
func TestCreateCALintRefuses(t *testing.T) {
	rk := newKey(t, "p384")
	rt, _ := RootTemplate("ATR Root CA", 0, testNow)
	root, err := CreateRoot(rt, rk)
	if err != nil {
		t.Fatal(err)
	}
	rootKey := CAKey{Cert: root, Signer: rk}
	ik := newKey(t, "p256")
	tests := []struct {
		name     string
		root     bool
		mutate   func(c *x509.Certificate)
		wantLint string
	}{
		{"root not a CA", true, func(c *x509.Certificate) { c.IsCA, c.MaxPathLen = false, -1 }, "e_atr_ca_basic_constraints"},
		{"root without keyCertSign (zlint)", true, func(c *x509.Certificate) { c.KeyUsage = x509.KeyUsageCRLSign }, "e_path_len_constraint_improperly_included"},
		{"root with EKU", true, func(c *x509.Certificate) { c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth} }, "e_atr_ca_ext_key_usage"},
		{"root lives 30 years", true, func(c *x509.Certificate) { c.NotAfter = c.NotBefore.Add(30 * 365 * 24 * time.Hour) }, "e_atr_ca_lifetime"},
		{"root small serial", true, func(c *x509.Certificate) { c.SerialNumber.SetInt64(7) }, "e_atr_serial"},
		{"root with CRL distribution point", true, func(c *x509.Certificate) { c.CRLDistributionPoints = []string{"http://x.example/crl"} }, "e_atr_extensions_allowed"},
		{"intermediate pathLen 1", false, func(c *x509.Certificate) { c.MaxPathLen, c.MaxPathLenZero = 1, false }, "e_atr_ca_basic_constraints"},
		{"intermediate lives 3 years", false, func(c *x509.Certificate) { c.NotAfter = c.NotBefore.Add(3 * 365 * 24 * time.Hour) }, "e_atr_ca_lifetime"},
		{"intermediate DNS name constraint", false, func(c *x509.Certificate) { c.PermittedDNSDomains = []string{"example.com"} }, "e_atr_ca_name_constraints"},
		{"intermediate empty subject", false, func(c *x509.Certificate) { c.Subject.CommonName = "" }, "e_atr_ca_subject"},
		{"intermediate without cRLSign", false, func(c *x509.Certificate) { c.KeyUsage = x509.KeyUsageCertSign }, "e_atr_key_usage"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			counting := &countingSigner{}
			var err error
			if tt.root {
				tmpl, _ := RootTemplate("ATR Root CA", 0, testNow)
				tt.mutate(tmpl)
				counting.Signer = newKey(t, "p256")
				_, err = CreateRoot(tmpl, counting)
			} else {
				tmpl, _ := IntermediateTemplate("ATR Issuing CA", testTD, 0, testNow)
				tt.mutate(tmpl)
				counting.Signer = rk
				_, err = CreateIntermediate(tmpl, CAKey{Cert: root, Signer: counting}, ik.Public(), testNow)
			}
			var le *LintError
			if !errors.As(err, &le) {
				t.Fatalf("err = %v; want a *LintError", err)
			}
			if !slices.Contains(le.Lints(), tt.wantLint) {
				t.Errorf("lints %v; want %s among them", le.Lints(), tt.wantLint)
			}
			if counting.n != 0 {
				t.Errorf("the real signer signed %d times; want 0", counting.n)
			}
		})
	}

	t.Run("intermediate outliving the root", func(t *testing.T) {
		it, _ := IntermediateTemplate("ATR Issuing CA", testTD, 0, testNow)
		it.NotAfter = root.NotAfter.Add(time.Hour)
		if _, err := CreateIntermediate(it, rootKey, ik.Public(), testNow); err == nil {
			t.Error("accepted")
		}
	})
	t.Run("root signer of another key", func(t *testing.T) {
		it, _ := IntermediateTemplate("ATR Issuing CA", testTD, 0, testNow)
		if _, err := CreateIntermediate(it, CAKey{Cert: root, Signer: newKey(t, "p384")}, ik.Public(), testNow); err == nil {
			t.Error("accepted")
		}
	})
	t.Run("misbehaving signer", func(t *testing.T) {
		it, _ := IntermediateTemplate("ATR Issuing CA", testTD, 0, testNow)
		if _, err := CreateIntermediate(it, CAKey{Cert: root, Signer: misbehavingSigner{rk, "other message"}}, ik.Public(), testNow); err == nil {
			t.Error("accepted")
		}
		tmpl, _ := RootTemplate("ATR Root CA", 0, testNow)
		if _, err := CreateRoot(tmpl, misbehavingSigner{rk, "other message"}); err == nil {
			t.Error("root accepted")
		}
	})
}

// countingSigner counts the real signatures.
type countingSigner struct {
	crypto.Signer
	n int
}

func (s *countingSigner) Sign(r io.Reader, d []byte, o crypto.SignerOpts) ([]byte, error) {
	s.n++
	return s.Signer.Sign(r, d, o)
}
