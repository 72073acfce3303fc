package ca

import (
	"crypto"
	"crypto/x509"
	"errors"
	"testing"
	"time"
)

// selectionFixture is a token's worth of CA certificates: two roots (one
// trusted, one foreign that is also on the list of candidates only when a
// test says so) and intermediates with assorted validity windows.
type selectionFixture struct {
	root, oldRoot, foreign CAKey
	keys                   map[*x509.Certificate]crypto.Signer // what the "token" holds
}

func newSelectionFixture(t *testing.T) *selectionFixture {
	t.Helper()
	f := &selectionFixture{keys: map[*x509.Certificate]crypto.Signer{}}
	mk := func(cn string, notBefore time.Time, lifetime time.Duration) CAKey {
		k := newKey(t, "p256")
		tmpl, err := RootTemplate(cn, lifetime, notBefore)
		if err != nil {
			t.Fatal(err)
		}
		c, err := CreateCertificate(tmpl, tmpl, k.Public(), k)
		if err != nil {
			t.Fatal(err)
		}
		f.keys[c] = k
		return CAKey{Cert: c, Signer: k}
	}
	f.root = mk("Root", testNow.Add(-48*time.Hour), 0)
	f.oldRoot = mk("Old Root", testNow.Add(-96*time.Hour), 24*time.Hour) // expired
	f.foreign = mk("Foreign Root", testNow.Add(-48*time.Hour), 0)
	return f
}

// inter makes an intermediate under parent valid from notBefore for
// lifetime, over key (a new one when nil), and puts its key on the token
// unless absent.
func (f *selectionFixture) inter(t *testing.T, cn string, parent CAKey, notBefore time.Time, lifetime time.Duration, key crypto.Signer, absent bool) *x509.Certificate {
	t.Helper()
	if key == nil {
		key = newKey(t, "p256")
	}
	tmpl, err := IntermediateTemplate(cn, testTD, lifetime, notBefore)
	if err != nil {
		t.Fatal(err)
	}
	if tmpl.NotAfter.After(parent.Cert.NotAfter) {
		tmpl.NotAfter = parent.Cert.NotAfter
	}
	c, err := CreateCertificate(tmpl, parent.Cert, key.Public(), parent.Signer)
	if err != nil {
		t.Fatal(err)
	}
	if !absent {
		f.keys[c] = key
	}
	return c
}

// find is the fixture's KeyFinder: the key stored for the certificate.
func (f *selectionFixture) find(c *x509.Certificate) (crypto.Signer, error) {
	return f.keys[c], nil
}

func TestSplitCAs(t *testing.T) {
	f := newSelectionFixture(t)
	older := f.inter(t, "older", f.root, testNow.Add(-24*time.Hour), 0, nil, false)
	newer := f.inter(t, "newer", f.root, testNow.Add(-time.Hour), 0, nil, false)
	leaf := newTestCA(t, "p256")
	l, _ := leaf.issue(t, "bot", "p256")
	roots, inters := SplitCAs([]*x509.Certificate{older, f.oldRoot.Cert, nil, l, f.root.Cert, newer})
	if len(roots) != 2 || roots[0] != f.root.Cert || roots[1] != f.oldRoot.Cert {
		t.Errorf("roots %v; want Root then Old Root", names(roots))
	}
	if len(inters) != 2 || inters[0] != newer || inters[1] != older {
		t.Errorf("intermediates %v; want newer then older", names(inters))
	}
	if !IsSelfSigned(f.root.Cert) || IsSelfSigned(newer) || IsSelfSigned(nil) {
		t.Error("IsSelfSigned wrong")
	}
	// A certificate claiming to be its own issuer with another key's
	// signature is not self-signed.
	tmpl, _ := RootTemplate("Fake", 0, testNow)
	fake, err := CreateCertificate(tmpl, f.root.Cert, newKey(t, "p256").Public(), f.root.Signer)
	if err == nil && IsSelfSigned(fake) {
		t.Error("a certificate signed by another key counts as self-signed")
	}
}

// TestSelectIssuing: the issuing CA is the newest intermediate valid now,
// issued by a trusted root valid now, whose key is present with its public
// key; the previous ones are the others that qualify, except certificates
// of the issuing key.
func TestSelectIssuing(t *testing.T) {
	f := newSelectionFixture(t)
	hour := time.Hour
	var (
		current  = f.inter(t, "current", f.root, testNow.Add(-2*hour), 0, nil, false)
		rotated  = f.inter(t, "rotated", f.root, testNow.Add(-30*24*hour), 0, nil, false)
		expired  = f.inter(t, "expired", f.root, testNow.Add(-100*24*hour), 24*hour, nil, false)
		future   = f.inter(t, "not yet valid", f.root, testNow.Add(hour), 0, nil, false)
		foreign  = f.inter(t, "foreign root", f.foreign, testNow.Add(-hour), 0, nil, false)
		oldRoot  = f.inter(t, "expired root", f.oldRoot, testNow.Add(-95*hour), 12*hour, nil, false)
		keyless  = f.inter(t, "key destroyed", f.root, testNow.Add(-30*time.Minute), 0, nil, true)
		wrongKey = f.inter(t, "wrong key on token", f.root, testNow.Add(-20*time.Minute), 0, nil, false)
	)
	f.keys[wrongKey] = newKey(t, "p256") // the key under its label is another one
	currentKey := f.keys[current]
	recert := f.inter(t, "current, re-certified earlier", f.root, testNow.Add(-3*hour), 0, currentKey, false)
	all := []*x509.Certificate{expired, recert, rotated, future, foreign, current, oldRoot, keyless, wrongKey}
	trusted := []*x509.Certificate{f.root.Cert, f.oldRoot.Cert}

	tests := []struct {
		name         string
		roots, inter []*x509.Certificate
		now          time.Time
		want         *x509.Certificate
		wantPrevious []*x509.Certificate
	}{
		{"newest valid with key", trusted, all, testNow, current, []*x509.Certificate{rotated}},
		{"not-yet-valid becomes current; one previous per key", trusted, all, testNow.Add(2 * hour), future, []*x509.Certificate{current, rotated}},
		{"foreign root trusted too", append(trusted, f.foreign.Cert), all, testNow, foreign, []*x509.Certificate{current, rotated}},
		{"only the expired and the foreign", trusted, []*x509.Certificate{expired, foreign, oldRoot}, testNow, nil, nil},
		{"same key, other certificate", trusted, []*x509.Certificate{recert, rotated}, testNow, recert, []*x509.Certificate{rotated}},
		{"key absent or another key", trusted, []*x509.Certificate{keyless, wrongKey, rotated}, testNow, rotated, nil},
		{"no roots", nil, all, testNow, nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			roots, inters := SplitCAs(append(append([]*x509.Certificate{}, tt.roots...), tt.inter...))
			got, root, err := SelectIssuing(roots, inters, tt.now, f.find)
			if tt.want == nil {
				if !errors.Is(err, ErrNoCA) {
					t.Fatalf("SelectIssuing = %v, %v; want ErrNoCA", names([]*x509.Certificate{got.Cert}), err)
				}
				return
			}
			if err != nil {
				t.Fatalf("SelectIssuing: %v", err)
			}
			if got.Cert != tt.want {
				t.Errorf("issuing %q; want %q", got.Cert.Subject.CommonName, tt.want.Subject.CommonName)
			}
			if !SamePublicKey(got.Signer.Public(), got.Cert.PublicKey) {
				t.Error("signer's key is not the certificate's")
			}
			if root == nil || got.Cert.CheckSignatureFrom(root) != nil {
				t.Error("returned root did not issue the intermediate")
			}
			prev, err := PreviousIssuing(roots, inters, got.Cert, tt.now, f.find)
			if err != nil {
				t.Fatal(err)
			}
			var prevCerts []*x509.Certificate
			for _, p := range prev {
				prevCerts = append(prevCerts, p.Cert)
			}
			if g, w := names(prevCerts), names(tt.wantPrevious); g != w {
				t.Errorf("previous %s; want %s", g, w)
			}
		})
	}

	t.Run("finder error ends the selection", func(t *testing.T) {
		boom := errors.New("token gone")
		_, _, err := SelectIssuing(trusted, all, testNow, func(*x509.Certificate) (crypto.Signer, error) { return nil, boom })
		if !errors.Is(err, boom) || errors.Is(err, ErrNoCA) {
			t.Errorf("err = %v; want the finder's error", err)
		}
	})
}

func TestSelectRoot(t *testing.T) {
	f := newSelectionFixture(t)
	newer := CAKey{}
	{
		k := newKey(t, "p256")
		tmpl, _ := RootTemplate("Root 2", 0, testNow.Add(-time.Hour))
		c, err := CreateCertificate(tmpl, tmpl, k.Public(), k)
		if err != nil {
			t.Fatal(err)
		}
		newer = CAKey{Cert: c, Signer: k}
	}
	roots, _ := SplitCAs([]*x509.Certificate{f.oldRoot.Cert, f.root.Cert, newer.Cert})
	tests := []struct {
		name string
		keys map[*x509.Certificate]crypto.Signer
		want *x509.Certificate
	}{
		{"newest with key", map[*x509.Certificate]crypto.Signer{f.root.Cert: f.root.Signer, newer.Cert: newer.Signer}, newer.Cert},
		{"newest key absent", map[*x509.Certificate]crypto.Signer{f.root.Cert: f.root.Signer}, f.root.Cert},
		{"newest key is another", map[*x509.Certificate]crypto.Signer{f.root.Cert: f.root.Signer, newer.Cert: f.root.Signer}, f.root.Cert},
		{"only the expired one", map[*x509.Certificate]crypto.Signer{f.oldRoot.Cert: f.oldRoot.Signer}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := SelectRoot(roots, testNow, func(c *x509.Certificate) (crypto.Signer, error) { return tt.keys[c], nil })
			if tt.want == nil {
				if !errors.Is(err, ErrNoCA) {
					t.Fatalf("SelectRoot = %v; want ErrNoCA", err)
				}
				return
			}
			if err != nil || got.Cert != tt.want {
				t.Fatalf("SelectRoot = %v, %v; want %q", names([]*x509.Certificate{got.Cert}), err, tt.want.Subject.CommonName)
			}
		})
	}
}

func TestFingerprintsAndBundle(t *testing.T) {
	f := newSelectionFixture(t)
	c := f.root.Cert
	if fp := Fingerprint(c); len(fp) != 64 || fp != Fingerprint(c) {
		t.Errorf("Fingerprint = %q", fp)
	}
	if fp, err := PublicKeyFingerprint(c.PublicKey); err != nil || len(fp) != 64 {
		t.Errorf("PublicKeyFingerprint = %q, %v", fp, err)
	}
	live := f.inter(t, "live", f.root, testNow.Add(-time.Hour), 0, nil, false)
	dead := f.inter(t, "dead", f.root, testNow.Add(-48*time.Hour), 24*time.Hour, nil, false)
	got := Bundle([]*x509.Certificate{c}, []*x509.Certificate{live, dead}, testNow)
	if len(got) != 2 || got[0] != live || got[1] != c {
		t.Errorf("Bundle = %s; want live, Root", names(got))
	}
	back, err := ParseCertificatesPEM(EncodeCertificatesPEM(got...), 0)
	if err != nil || len(back) != 2 || !back[0].Equal(live) {
		t.Errorf("bundle PEM round trip: %v", err)
	}
}

func names(cs []*x509.Certificate) string {
	s := "["
	for k, c := range cs {
		if k > 0 {
			s += ", "
		}
		if c == nil {
			s += "<nil>"
			continue
		}
		s += c.Subject.CommonName
	}
	return s + "]"
}
