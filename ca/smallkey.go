package ca

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"fmt"
	"math/big"
	"sync"

	zx509 "github.com/zmap/zcrypto/x509"
	"github.com/zmap/zlint/v3/lint"
)

// The small-private-key lint, with a faster search for P-256 keys. zlint's e_ecdsa_small_private_key reports an ECDSA key whose
// private scalar d is in 1 … 2^16 or is the negation of one (a key anyone
// can compute from the public key). It finds d with a baby-step giant-step
// walk of ~32 point additions through crypto/elliptic's big-integer API,
// each with a field inversion: ~90 µs, 40 % of a leaf's whole lint and
// ~4 % of an issuance's CPU (docs/performance-history.md, sixteenth pass). For
// P-256, the curve of nearly every agent key, ATR asks the same question of
// a table of the X coordinates of j·G for every j in 1 … 2^16 (built once
// per process, ~0.4 s), so a key costs one map lookup. A P-256 point and its
// negation share their X, so the lookup finds d and n−d alike. Keys on other
// curves are checked by zlint's own lint, unchanged. The finding keeps
// zlint's name, status and details (TestSmallKeyLintMatchesZlint).
const (
	smallKeyLintName = "e_ecdsa_small_private_key"
	// smallKeyBits is zlint's default bound: d ≤ 2^16 is reported.
	smallKeyBits = 16
)

// p256SmallLogs maps the low 64 bits of the X coordinate of j·G to j, for
// 1 ≤ j ≤ 2^smallKeyBits, on P-256. A hit is a candidate only (64 bits of
// X), confirmed by computing j·G. Two entries of the table sharing their
// low 64 bits (probability ~2^-33) would hide the earlier j; the table is
// the same in every process, and the test of the bound checks every j.
var p256SmallLogs = sync.OnceValue(func() map[uint64]uint32 {
	c := elliptic.P256()
	p := c.Params()
	n := 1 << smallKeyBits
	logs := make(map[uint64]uint32, n)
	x, y := new(big.Int).Set(p.Gx), new(big.Int).Set(p.Gy)
	for j := 1; j <= n; j++ {
		logs[x.Uint64()] = uint32(j)
		if j < n {
			x, y = c.Add(x, y, p.Gx, p.Gy)
		}
	}
	return logs
})

// smallKeyLint is zlint's e_ecdsa_small_private_key as the lint set runs
// it (newLintSetOf puts it in place of zlint's instance, with zlint's
// metadata): zlint's CheckApplies, and for a P-256 key the table instead
// of zlint's walk, with zlint's status and details; keys on other curves go
// to zlint's Execute. ATR sets no zlint configuration, so zlint's instance
// searches 2^16 as the table does.
type smallKeyLint struct {
	lint.CertificateLintInterface // zlint's instance
}

func (l smallKeyLint) Execute(zc *zx509.Certificate) *lint.LintResult {
	pub := zcryptoECDSAKey(zc)
	if pub == nil || pub.Curve != elliptic.P256() {
		return l.CertificateLintInterface.Execute(zc)
	}
	if d := p256SmallLog(pub); d != 0 {
		return &lint.LintResult{Status: lint.Error, Details: fmt.Sprintf(
			"the ECDSA private key is %d, or its negation modulo the group order, and so can be trivially recovered by anyone", d)}
	}
	return &lint.LintResult{Status: lint.Pass}
}

// p256SmallLog returns d in 1 … 2^smallKeyBits with d·G = ±pub, or 0.
func p256SmallLog(pub *ecdsa.PublicKey) uint32 {
	j, ok := p256SmallLogs()[pub.X.Uint64()]
	if !ok {
		return 0
	}
	if gx, _ := pub.Curve.ScalarBaseMult(big.NewInt(int64(j)).Bytes()); gx.Cmp(pub.X) != 0 {
		return 0
	}
	return j
}

// zcryptoECDSAKey returns zc's ECDSA public key, or nil.
func zcryptoECDSAKey(zc *zx509.Certificate) *ecdsa.PublicKey {
	if zc.PublicKeyAlgorithm != zx509.ECDSA {
		return nil
	}
	switch k := zc.PublicKey.(type) {
	case *zx509.AugmentedECDSA:
		return k.Pub
	case *ecdsa.PublicKey:
		return k
	}
	return nil
}
