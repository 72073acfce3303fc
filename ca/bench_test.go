package ca

import (
	"testing"
)

func BenchmarkParseCSR(b *testing.B) {
	in := readTestdata(b, "csr-p256.pem")
	for b.Loop() {
		if _, err := ParseCSR(in); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkPrepare(b *testing.B) {
	ca := newTestCA(b, "p256")
	csr := newCSR(b, newKey(b, "p256"))
	serial := testSerial(b)
	for b.Loop() {
		if _, err := ca.issuer.Prepare(csr, "billing-bot.acme", serial, testNow); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSign(b *testing.B) {
	ca := newTestCA(b, "p256")
	csr := newCSR(b, newKey(b, "p256"))
	p, err := ca.issuer.Prepare(csr, "billing-bot.acme", testSerial(b), testNow)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := ca.issuer.Sign(p); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerify measures chain verification: "chain" builds the chain
// every time (the cache emptied per iteration), "cached" is a certificate
// seen before (only the validity window is checked).
func BenchmarkVerify(b *testing.B) {
	ca := newTestCA(b, "p256")
	leaf, _ := ca.issue(b, "billing-bot.acme", "p256")
	b.Run("chain", func(b *testing.B) {
		for b.Loop() {
			ca.verifier.cache = newChainCache(DefaultChainCacheSize)
			if err := ca.verifier.Verify(leaf, nil, testNow); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("cached", func(b *testing.B) {
		for b.Loop() {
			if err := ca.verifier.Verify(leaf, nil, testNow); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkNormalizeAgentName(b *testing.B) {
	for b.Loop() {
		if _, err := NormalizeAgentName("BILLING-bot.ACME"); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkLint is the lint pass alone (zlint with our lint set plus the
// agent lints) on an already signed lint certificate, without building or
// signing the TBS.
func BenchmarkLint(b *testing.B) {
	ca := newTestCA(b, "p256")
	leaf, _ := ca.issue(b, "billing-bot.acme", "p256")
	for b.Loop() {
		findings, err := ca.issuer.lintDER(leaf.Raw, "billing-bot.acme")
		if err != nil || len(findings) != 0 {
			b.Fatalf("lintDER = %v, %v; want no findings", findings, err)
		}
	}
}
