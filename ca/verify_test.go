package ca

import (
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net/url"
	"testing"
	"time"
)

// signLeaf signs an arbitrary leaf template under parent with key, bypassing
// the issuer's lints — how an attacker or a buggy CA would.
func signLeaf(t *testing.T, tmpl, parent *x509.Certificate, pub crypto.PublicKey, key crypto.Signer) *x509.Certificate {
	t.Helper()
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func agentTemplate(t *testing.T, uri string) *x509.Certificate {
	t.Helper()
	u, err := url.Parse(uri)
	if err != nil {
		t.Fatal(err)
	}
	return &x509.Certificate{
		SerialNumber:          testSerial(t),
		NotBefore:             testNow.Add(-time.Minute),
		NotAfter:              testNow.Add(time.Hour),
		URIs:                  []*url.URL{u},
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
}

func TestVerify(t *testing.T) {
	ca := newTestCA(t, "p256")
	other := newTestCA(t, "p256")
	leaf, leafKey := ca.issue(t, "billing-bot.acme", "p256")
	attacker := newKey(t, "p256")

	// SEC-003: a certificate claiming the intermediate as issuer (same
	// issuer name, same AKID) but signed by the attacker's key.
	fakeInter := &x509.Certificate{
		SerialNumber: big.NewInt(2), RawSubject: ca.inter.RawSubject, SubjectKeyId: ca.inter.SubjectKeyId,
		NotBefore: ca.inter.NotBefore, NotAfter: ca.inter.NotAfter, BasicConstraintsValid: true, IsCA: true,
		KeyUsage: x509.KeyUsageCertSign, PublicKey: attacker.Public(),
	}
	forged := signLeaf(t, agentTemplate(t, AgentURI(testTD, "billing-bot.acme")), fakeInter, leafKey.Public(), attacker)
	if forged.Issuer.String() != ca.inter.Subject.String() {
		t.Fatal("forged certificate does not carry the intermediate's name")
	}
	// The attacker's intermediate itself, with the real intermediate's
	// subject, self-issued, supplied as an extra chain certificate.
	fakeInterTmpl := *fakeInter
	fakeInterTmpl.PublicKey = nil
	fakeInterCert := signLeaf(t, &fakeInterTmpl, &fakeInterTmpl, attacker.Public(), attacker)
	forgedExpired := signLeaf(t, func() *x509.Certificate {
		c := agentTemplate(t, AgentURI(testTD, "a"))
		c.NotAfter = testNow.Add(-time.Hour)
		c.NotBefore = testNow.Add(-2 * time.Hour)
		return c
	}(), fakeInter, leafKey.Public(), attacker)

	serverOnly := agentTemplate(t, AgentURI(testTD, "a"))
	serverOnly.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	noDigSig := agentTemplate(t, AgentURI(testTD, "a"))
	noDigSig.KeyUsage = x509.KeyUsageKeyEncipherment
	caLeaf := agentTemplate(t, AgentURI(testTD, "a"))
	caLeaf.IsCA = true
	outside := agentTemplate(t, AgentURI("evil.example.org", "a"))
	workload := agentTemplate(t, "spiffe://"+testTD+"/workload/a")
	twoURIs := agentTemplate(t, AgentURI(testTD, "a"))
	twoURIs.URIs = append(twoURIs.URIs, twoURIs.URIs[0])
	pub := leafKey.Public()

	tests := []struct {
		name  string
		leaf  *x509.Certificate
		extra []*x509.Certificate
		now   time.Time
		want  Reason // "" means verified
	}{
		{"issued leaf", leaf, nil, testNow, ""},
		{"issued leaf with chain supplied", leaf, []*x509.Certificate{ca.inter, ca.root}, testNow, ""},
		{"leaf of another CA", other.mustIssue(t), nil, testNow, ReasonUntrustedChain},
		{"another CA's intermediate supplied", other.mustIssue(t), []*x509.Certificate{other.inter}, testNow, ReasonUntrustedChain},
		{"SEC-003 forged issuer name", forged, nil, testNow, ReasonUntrustedChain},
		{"SEC-003 forged with fake intermediate", forged, []*x509.Certificate{fakeInterCert}, testNow, ReasonUntrustedChain},
		{"forged and expired", forgedExpired, nil, testNow, ReasonUntrustedChain},
		{"intermediate as leaf", ca.inter, nil, testNow, ReasonWrongUsage},
		{"expired", leaf, nil, leaf.NotAfter.Add(time.Second), ReasonExpired},
		{"not yet valid", leaf, nil, leaf.NotBefore.Add(-time.Second), ReasonNotYetValid},
		{"valid at NotAfter", leaf, nil, leaf.NotAfter, ""},
		{"serverAuth only", signLeaf(t, serverOnly, ca.inter, pub, ca.interKey), nil, testNow, ReasonWrongUsage},
		{"no digitalSignature", signLeaf(t, noDigSig, ca.inter, pub, ca.interKey), nil, testNow, ReasonWrongUsage},
		{"cA=true leaf", signLeaf(t, caLeaf, ca.inter, pub, ca.interKey), nil, testNow, ReasonWrongUsage},
		{"URI outside trust domain (name constraints)", signLeaf(t, outside, ca.inter, pub, ca.interKey), nil, testNow, ReasonUntrustedChain},
		{"not an agent ID", signLeaf(t, workload, ca.inter, pub, ca.interKey), nil, testNow, ReasonNotAgent},
		{"two URI SANs", signLeaf(t, twoURIs, ca.inter, pub, ca.interKey), nil, testNow, ReasonNotAgent},
		{"too many extras", leaf, []*x509.Certificate{ca.inter, ca.inter, ca.inter, ca.inter, ca.inter}, testNow, ReasonUntrustedChain},
		{"nil leaf", nil, nil, testNow, ReasonUntrustedChain},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ca.verifier.Verify(tt.leaf, tt.extra, tt.now)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Verify = %v; want success", err)
				}
				return
			}
			var ve *VerifyError
			if !errors.As(err, &ve) || ve.Reason != tt.want {
				t.Fatalf("Verify = %v; want reason %s", err, tt.want)
			}
		})
	}
}

func (ca *testCA) mustIssue(t *testing.T) *x509.Certificate {
	c, _ := ca.issue(t, "billing-bot.acme", "p256")
	return c
}

// TestVerifyUnconstrainedIntermediate: even an intermediate without name
// constraints (mis-issued by the root) cannot make a foreign SPIFFE ID an
// agent of our trust domain.
func TestVerifyUnconstrainedIntermediate(t *testing.T) {
	ca := newTestCA(t, "p256")
	k := newKey(t, "p256")
	it := &x509.Certificate{SerialNumber: big.NewInt(3), Subject: pkix.Name{CommonName: "loose"},
		NotBefore: testNow.Add(-time.Hour), NotAfter: testNow.Add(time.Hour), BasicConstraintsValid: true,
		IsCA: true, MaxPathLenZero: true, KeyUsage: x509.KeyUsageCertSign}
	loose := signLeaf(t, it, ca.root, k.Public(), ca.rootKey)
	leaf := signLeaf(t, agentTemplate(t, AgentURI("evil.example.org", "a")), loose, newKey(t, "p256").Public(), k)
	var ve *VerifyError
	if err := ca.verifier.Verify(leaf, []*x509.Certificate{loose}, testNow); !errors.As(err, &ve) || ve.Reason != ReasonNotAgent {
		t.Fatalf("Verify = %v; want %s", err, ReasonNotAgent)
	}
}

func TestNewVerifierChecks(t *testing.T) {
	ca := newTestCA(t, "p256")
	leaf := ca.mustIssue(t)
	if _, err := NewVerifier(nil, nil, testTD); err == nil {
		t.Error("no roots accepted")
	}
	if _, err := NewVerifier([]*x509.Certificate{leaf}, nil, testTD); err == nil {
		t.Error("leaf accepted as root")
	}
	if _, err := NewVerifier([]*x509.Certificate{ca.root}, []*x509.Certificate{leaf}, testTD); err == nil {
		t.Error("leaf accepted as intermediate")
	}
	if _, err := NewVerifier([]*x509.Certificate{ca.root}, nil, "bad td"); err == nil {
		t.Error("bad trust domain accepted")
	}
}

// TestVerifyCache: a verified chain is remembered, but only for the window
// in which every certificate of the chain is valid — a cached success must
// never turn an expired or not-yet-valid leaf (or an expired intermediate)
// into a valid one — and only for the same leaf with the same supplied
// intermediates.
func TestVerifyCache(t *testing.T) {
	ca := newTestCA(t, "p256")
	leaf := ca.mustIssue(t)
	for range 3 {
		if err := ca.verifier.Verify(leaf, nil, testNow); err != nil {
			t.Fatalf("Verify: %v", err)
		}
	}
	if n := len(ca.verifier.cache.m); n != 1 {
		t.Fatalf("cache holds %d entries after verifying one leaf; want 1", n)
	}
	for _, tc := range []struct {
		name string
		at   time.Time
		want Reason
	}{
		{"after the leaf expired", leaf.NotAfter.Add(time.Second), ReasonExpired},
		{"before the leaf is valid", leaf.NotBefore.Add(-time.Second), ReasonNotYetValid},
	} {
		err := ca.verifier.Verify(leaf, nil, tc.at)
		var ve *VerifyError
		if !errors.As(err, &ve) || ve.Reason != tc.want {
			t.Errorf("%s: Verify = %v; want %s despite the cached chain", tc.name, err, tc.want)
		}
	}
	// The window is the intersection over the chain: an intermediate
	// expiring before the leaf bounds it.
	w := ca.verifier.cache.m[chainKey(leaf, nil)]
	for _, c := range []*x509.Certificate{leaf, ca.inter, ca.root} {
		if w.notBefore.Before(c.NotBefore) || w.notAfter.After(c.NotAfter) {
			t.Errorf("cached window [%v, %v] exceeds %s's [%v, %v]", w.notBefore, w.notAfter, c.Subject, c.NotBefore, c.NotAfter)
		}
	}
	// Other supplied intermediates make another key: nothing verified with
	// one set is assumed for another.
	if chainKey(leaf, nil) == chainKey(leaf, []*x509.Certificate{ca.inter}) {
		t.Error("the cache key ignores the supplied intermediates")
	}
	// Failures are not cached: a certificate from another CA stays refused.
	other := newTestCA(t, "p256").mustIssue(t)
	for range 2 {
		if err := ca.verifier.Verify(other, nil, testNow); err == nil {
			t.Fatal("a foreign certificate verified")
		}
	}
	if n := len(ca.verifier.cache.m); n != 1 {
		t.Errorf("cache holds %d entries; want 1 (failures are never cached)", n)
	}
}

func TestChainCacheBounded(t *testing.T) {
	c := newChainCache(4)
	ca := newTestCA(t, "p256")
	for range 10 {
		leaf := ca.mustIssue(t)
		c.add(chainKey(leaf, nil), []*x509.Certificate{leaf, ca.inter, ca.root})
	}
	if len(c.m) > 4 {
		t.Errorf("cache holds %d entries; want ≤ 4", len(c.m))
	}
}
