package ca

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"testing"
	"time"

	zx509 "github.com/zmap/zcrypto/x509"
	"github.com/zmap/zlint/v3/lints/community"
)

// keyWithScalar returns the ECDSA key on c whose private scalar is d.
func keyWithScalar(c elliptic.Curve, d *big.Int) *ecdsa.PrivateKey {
	k := &ecdsa.PrivateKey{D: new(big.Int).Set(d)}
	k.Curve = c
	k.X, k.Y = c.ScalarBaseMult(d.Bytes())
	return k
}

// scalar returns d when neg is false and n−d (the negation of d modulo the
// group order) when it is true.
func scalar(c elliptic.Curve, d int64, neg bool) *big.Int {
	s := big.NewInt(d)
	if neg {
		s.Sub(c.Params().N, s)
	}
	return s
}

// zcryptoCertFor returns, parsed by zcrypto, a certificate for pub signed
// by a throwaway key.
func zcryptoCertFor(t testing.TB, pub *ecdsa.PublicKey) *zx509.Certificate {
	t.Helper()
	signer, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "small key"},
		NotBefore:    testNow,
		NotAfter:     testNow.Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, signer)
	if err != nil {
		t.Fatal(err)
	}
	zc, err := zx509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return zc
}

// smallKeyLintSet returns a lint set of the small-private-key lint alone,
// as newLintSet makes it (failing unless it runs ATR's table).
func smallKeyLintSet(t testing.TB) *lintSet {
	t.Helper()
	full, err := newLintSet()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range full.lints {
		if l.meta.Name == smallKeyLintName {
			if _, ok := l.inst.(smallKeyLint); !ok {
				t.Fatalf("the lint set runs %s as %T, not ATR's table", smallKeyLintName, l.inst)
			}
			return &lintSet{config: full.config, lints: []setLint{l}}
		}
	}
	t.Fatalf("the lint set has no %s", smallKeyLintName)
	return nil
}

// TestSmallKeyLintMatchesZlint: ATR's small-private-key lint reports what
// zlint's e_ecdsa_small_private_key reports, with the same status and
// details, at and around the bound (d and n−d for d ≤ 2^16 refused, 2^16+1
// accepted), on P-256 (the table) and P-384 (zlint's own lint).
func TestSmallKeyLintMatchesZlint(t *testing.T) {
	const bound = 1 << smallKeyBits
	set := smallKeyLintSet(t)
	zlintLint := community.NewEcdsaSmallPrivateKey()
	for _, tc := range []struct {
		curve elliptic.Curve
		d     int64
		neg   bool
		weak  bool
	}{
		{elliptic.P256(), 1, false, true},
		{elliptic.P256(), 1, true, true},
		{elliptic.P256(), 2, false, true},
		{elliptic.P256(), 4096, false, true},
		{elliptic.P256(), 4097, true, true},
		{elliptic.P256(), 8193, false, true},
		{elliptic.P256(), 8193, true, true},
		{elliptic.P256(), 16386, false, true},
		{elliptic.P256(), bound - 1, true, true},
		{elliptic.P256(), bound, false, true},
		{elliptic.P256(), bound, true, true},
		{elliptic.P256(), bound + 1, false, false},
		{elliptic.P256(), bound + 1, true, false},
		{elliptic.P256(), 1 << 40, false, false},
		{elliptic.P384(), 3, false, true},
		{elliptic.P384(), bound, true, true},
		{elliptic.P384(), bound + 1, false, false},
	} {
		k := keyWithScalar(tc.curve, scalar(tc.curve, tc.d, tc.neg))
		zc := zcryptoCertFor(t, &k.PublicKey)
		got := set.run(zc)
		if (len(got) > 0) != tc.weak {
			t.Errorf("%s d=%d neg=%v: findings %v, want weak=%v", tc.curve.Params().Name, tc.d, tc.neg, got, tc.weak)
			continue
		}
		r := zlintLint.Execute(zc)
		if tc.weak {
			if got[0].Lint != smallKeyLintName || got[0].Status != r.Status.String() || got[0].Details != r.Details {
				t.Errorf("%s d=%d neg=%v: ATR %+v, zlint %s %q", tc.curve.Params().Name, tc.d, tc.neg, got[0], r.Status, r.Details)
			}
		} else if r.Status.String() != "pass" {
			t.Errorf("%s d=%d neg=%v: zlint says %s %q, ATR passes it", tc.curve.Params().Name, tc.d, tc.neg, r.Status, r.Details)
		}
	}
}

// TestSmallKeyTableCoversTheBound: the P-256 table holds 2^16 distinct
// entries (two X coordinates sharing their low 64 bits would have hidden
// one j), and keys computed independently by scalar multiplication are
// found with their d, both signs, across the whole range.
func TestSmallKeyTableCoversTheBound(t *testing.T) {
	const bound = 1 << smallKeyBits
	if n := len(p256SmallLogs()); n != bound {
		t.Fatalf("table holds %d entries, want %d", n, bound)
	}
	c := elliptic.P256()
	for d := int64(1); d <= bound; d += 251 {
		for _, neg := range []bool{false, true} {
			k := keyWithScalar(c, scalar(c, d, neg))
			if got := p256SmallLog(&k.PublicKey); int64(got) != d {
				t.Errorf("d=%d neg=%v: p256SmallLog = %d", d, neg, got)
			}
		}
	}
	for _, d := range []int64{bound + 1, bound + 2, 2*bound + 1} {
		k := keyWithScalar(c, scalar(c, d, false))
		if got := p256SmallLog(&k.PublicKey); got != 0 {
			t.Errorf("d=%d: p256SmallLog = %d, want 0", d, got)
		}
	}
}

// TestPrepareRefusesSmallPrivateKey: an agent whose CSR carries a key with
// a tiny private scalar gets no certificate; the lint error names the lint.
func TestPrepareRefusesSmallPrivateKey(t *testing.T) {
	ca := newTestCA(t, "p256")
	c := elliptic.P256()
	for _, tc := range []struct {
		d    int64
		neg  bool
		weak bool
	}{
		{7, false, true},
		{1 << smallKeyBits, true, true},
		{1<<smallKeyBits + 1, false, false},
	} {
		csr := newCSR(t, keyWithScalar(c, scalar(c, tc.d, tc.neg)))
		_, err := ca.issuer.Prepare(csr, "billing-bot.acme", testSerial(t), testNow)
		var le *LintError
		switch {
		case tc.weak && !errors.As(err, &le):
			t.Errorf("d=%d neg=%v: Prepare = %v, want a lint error", tc.d, tc.neg, err)
		case tc.weak && (len(le.Findings) != 1 || le.Findings[0].Lint != smallKeyLintName):
			t.Errorf("d=%d neg=%v: findings %+v, want only %s", tc.d, tc.neg, le.Findings, smallKeyLintName)
		case !tc.weak && err != nil:
			t.Errorf("d=%d: Prepare = %v, want a certificate", tc.d, err)
		}
	}
}

// BenchmarkSmallKeyLint compares ATR's small-key lint with zlint's on one
// P-256 certificate.
func BenchmarkSmallKeyLint(b *testing.B) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	zc := zcryptoCertFor(b, &k.PublicKey)
	set := smallKeyLintSet(b)
	zlintLint := community.NewEcdsaSmallPrivateKey()
	p256SmallLogs() // built once per process, not per certificate
	b.Run("atr", func(b *testing.B) {
		for b.Loop() {
			if f := set.run(zc); len(f) != 0 {
				b.Fatal(f)
			}
		}
	})
	b.Run("zlint", func(b *testing.B) {
		for b.Loop() {
			if r := zlintLint.Execute(zc); r.Status.String() != "pass" {
				b.Fatal(r.Details)
			}
		}
	})
}
