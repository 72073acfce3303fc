package ca

import (
	"crypto"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"math/big"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"
)

func TestReasonCodes(t *testing.T) {
	tests := []struct {
		name string
		code int // -1 means refused
	}{
		{"unspecified", 0},
		{"keyCompromise", 1},
		{"keycompromise", 1},
		{"cACompromise", 2},
		{"affiliationChanged", 3},
		{"superseded", 4},
		{"cessationOfOperation", 5},
		{"privilegeWithdrawn", 9},
		{"aACompromise", 10},
		{"certificateHold", -1},
		{"removeFromCRL", -1},
		{"", -1},
		{"key_compromise", -1},
		{"1", -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ReasonCode(tt.name)
			if tt.code < 0 {
				var pe *PolicyError
				if !errors.As(err, &pe) {
					t.Fatalf("ReasonCode(%q) = %d, %v; want *PolicyError", tt.name, got, err)
				}
				return
			}
			if err != nil || got != tt.code {
				t.Fatalf("ReasonCode(%q) = %d, %v; want %d", tt.name, got, err, tt.code)
			}
			if n := ReasonName(got); !equalFold(n, tt.name) {
				t.Fatalf("ReasonName(%d) = %q", got, n)
			}
		})
	}
	for _, c := range []int{-1, 6, 7, 8, 11, 100} {
		if n := ReasonName(c); n != "" {
			t.Errorf("ReasonName(%d) = %q, want empty", c, n)
		}
	}
}

func equalFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range len(a) {
		x, y := a[i]|0x20, b[i]|0x20
		if x != y {
			return false
		}
	}
	return true
}

func TestSignCRL(t *testing.T) {
	ca := newTestCA(t, "p256")
	entries := []x509.RevocationListEntry{
		{SerialNumber: big.NewInt(1000001), RevocationTime: testNow.Add(-time.Hour), ReasonCode: 1},
		{SerialNumber: testSerial(t), RevocationTime: testNow.Add(-time.Minute), ReasonCode: 4},
		{SerialNumber: testSerial(t), RevocationTime: testNow.Add(-time.Minute), ReasonCode: 0},
	}
	der, err := ca.issuer.SignCRL(big.NewInt(7), testNow, testNow.Add(24*time.Hour), entries)
	if err != nil {
		t.Fatal(err)
	}
	crl, err := x509.ParseRevocationList(der)
	if err != nil {
		t.Fatal(err)
	}
	if err := crl.CheckSignatureFrom(ca.inter); err != nil {
		t.Fatal(err)
	}
	if crl.Number.Int64() != 7 || len(crl.RevokedCertificateEntries) != 3 {
		t.Fatalf("number %v, %d entries", crl.Number, len(crl.RevokedCertificateEntries))
	}
	for k, e := range crl.RevokedCertificateEntries {
		if e.SerialNumber.Cmp(entries[k].SerialNumber) != 0 || e.ReasonCode != entries[k].ReasonCode {
			t.Errorf("entry %d = %v/%d, want %v/%d", k, e.SerialNumber, e.ReasonCode, entries[k].SerialNumber, entries[k].ReasonCode)
		}
	}
	if string(crl.AuthorityKeyId) != string(ca.inter.SubjectKeyId) {
		t.Error("CRL authority key identifier is not the issuer's")
	}

	bad := []struct {
		name       string
		number     *big.Int
		this, next time.Time
		entries    []x509.RevocationListEntry
	}{
		{"zero number", big.NewInt(0), testNow, testNow.Add(time.Hour), nil},
		{"nil number", nil, testNow, testNow.Add(time.Hour), nil},
		{"next before this", big.NewInt(1), testNow, testNow.Add(-time.Hour), nil},
		{"certificateHold", big.NewInt(1), testNow, testNow.Add(time.Hour), []x509.RevocationListEntry{{SerialNumber: big.NewInt(5), RevocationTime: testNow, ReasonCode: 6}}},
		{"unassigned reason 7", big.NewInt(1), testNow, testNow.Add(time.Hour), []x509.RevocationListEntry{{SerialNumber: big.NewInt(5), RevocationTime: testNow, ReasonCode: 7}}},
		{"no revocation time", big.NewInt(1), testNow, testNow.Add(time.Hour), []x509.RevocationListEntry{{SerialNumber: big.NewInt(5)}}},
		{"negative serial", big.NewInt(1), testNow, testNow.Add(time.Hour), []x509.RevocationListEntry{{SerialNumber: big.NewInt(-5), RevocationTime: testNow}}},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := ca.issuer.SignCRL(tt.number, tt.this, tt.next, tt.entries); err == nil {
				t.Fatal("SignCRL succeeded")
			}
		})
	}
	t.Run("misbehaving signer", func(t *testing.T) {
		broken := *ca.issuer
		broken.signer = misbehavingSigner{ca.interKey, "other message"}
		if _, err := broken.SignCRL(big.NewInt(1), testNow, testNow.Add(time.Hour), nil); err == nil {
			t.Fatal("SignCRL with a misbehaving signer succeeded")
		}
	})
}

func TestSignOCSP(t *testing.T) {
	ca := newTestCA(t, "p256")
	leaf := ca.mustIssue(t)
	base := ocsp.Response{SerialNumber: leaf.SerialNumber, ThisUpdate: testNow, NextUpdate: testNow.Add(time.Hour)}
	for _, st := range []struct {
		name string
		r    ocsp.Response
	}{
		{"good", withStatus(base, ocsp.Good, 0)},
		{"unknown", withStatus(base, ocsp.Unknown, 0)},
		{"revoked", withStatus(base, ocsp.Revoked, ocsp.KeyCompromise)},
	} {
		t.Run(st.name, func(t *testing.T) {
			der, err := ca.issuer.SignOCSP(st.r)
			if err != nil {
				t.Fatal(err)
			}
			got, err := ocsp.ParseResponseForCert(der, leaf, ca.inter)
			if err != nil {
				t.Fatal(err)
			}
			if got.Status != st.r.Status || got.SerialNumber.Cmp(leaf.SerialNumber) != 0 {
				t.Fatalf("status %d serial %v", got.Status, got.SerialNumber)
			}
			if st.r.Status == ocsp.Revoked && (got.RevocationReason != ocsp.KeyCompromise || !got.RevokedAt.Equal(st.r.RevokedAt)) {
				t.Fatalf("revocation %d at %v", got.RevocationReason, got.RevokedAt)
			}
		})
	}
	bad := map[string]ocsp.Response{
		"no serial":        {ThisUpdate: testNow, NextUpdate: testNow.Add(time.Hour)},
		"hold":             withStatus(base, ocsp.Revoked, ocsp.CertificateHold),
		"revoked no time":  func() ocsp.Response { r := withStatus(base, ocsp.Revoked, 1); r.RevokedAt = time.Time{}; return r }(),
		"bad status":       withStatus(base, 7, 0),
		"next before this": {SerialNumber: leaf.SerialNumber, ThisUpdate: testNow, NextUpdate: testNow.Add(-time.Hour)},
	}
	for name, r := range bad {
		t.Run(name, func(t *testing.T) {
			if _, err := ca.issuer.SignOCSP(r); err == nil {
				t.Fatal("SignOCSP succeeded")
			}
		})
	}
	t.Run("misbehaving signer", func(t *testing.T) {
		broken := *ca.issuer
		broken.signer = misbehavingSigner{ca.interKey.(crypto.Signer), "garbage"}
		if _, err := broken.SignOCSP(withStatus(base, ocsp.Good, 0)); err == nil {
			t.Fatal("SignOCSP with a misbehaving signer succeeded")
		}
	})
}

func withStatus(r ocsp.Response, status, reason int) ocsp.Response {
	r.Status = status
	if status == ocsp.Revoked {
		r.RevokedAt = testNow.Add(-time.Minute)
		r.RevocationReason = reason
	}
	return r
}

func TestNewResponder(t *testing.T) {
	tc := newTestCA(t, "p256")
	leaf, leafKey := tc.issue(t, "bot.acme", "p256")
	tests := []struct {
		name   string
		signer crypto.Signer
		cert   *x509.Certificate
		ok     bool
	}{
		{"intermediate", tc.interKey, tc.inter, true},
		{"root (its CRL of intermediates)", tc.rootKey, tc.root, true},
		{"key of another CA", tc.rootKey, tc.inter, false},
		{"a leaf is no CA", leafKey, leaf, false},
		{"nil signer", nil, tc.inter, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := NewResponder(tt.signer, tt.cert)
			if (err == nil) != tt.ok {
				t.Fatalf("NewResponder: %v, want ok=%v", err, tt.ok)
			}
			if !tt.ok {
				return
			}
			if r.KeyID() != hex.EncodeToString(tt.cert.SubjectKeyId) {
				t.Errorf("KeyID %s", r.KeyID())
			}
			der, err := r.SignCRL(big.NewInt(1), testNow, testNow.Add(time.Hour), nil)
			if err != nil {
				t.Fatal(err)
			}
			crl, err := x509.ParseRevocationList(der)
			if err != nil || crl.CheckSignatureFrom(tt.cert) != nil {
				t.Errorf("CRL does not verify under %s: %v", tt.cert.Subject, err)
			}
		})
	}
}

// TestNextCRL: the root's CRL of revoked intermediates is extended, never
// rebuilt: the number grows by one, earlier entries keep their time and
// reason, a certificate already listed is not listed again, and a previous
// CRL or a certificate of another CA is refused.
func TestNextCRL(t *testing.T) {
	c := newTestCA(t, "p256")
	other := newTestCA(t, "p256")
	rootResp, err := NewResponder(c.rootKey, c.root)
	if err != nil {
		t.Fatal(err)
	}
	t0 := testNow
	number, entries, added, err := NextCRL(nil, c.root, nil, 2, t0)
	if err != nil || number.Int64() != 1 || len(entries) != 0 || len(added) != 0 {
		t.Fatalf("first CRL: %v, %v, %v, %v", number, entries, added, err)
	}
	first, err := rootResp.SignCRL(number, t0, t0.Add(time.Hour), entries)
	if err != nil {
		t.Fatal(err)
	}
	number, entries, added, err = NextCRL(first, c.root, []*x509.Certificate{c.inter, c.inter}, 1, t0.Add(time.Minute))
	if err != nil || number.Int64() != 2 || len(entries) != 1 || len(added) != 1 || entries[0].ReasonCode != 1 {
		t.Fatalf("second CRL: %v, %+v, %d added, %v", number, entries, len(added), err)
	}
	second, err := rootResp.SignCRL(number, t0.Add(time.Minute), t0.Add(time.Hour), entries)
	if err != nil {
		t.Fatal(err)
	}
	number, entries, added, err = NextCRL(second, c.root, []*x509.Certificate{c.inter}, 2, t0.Add(2*time.Minute))
	if err != nil || number.Int64() != 3 || len(entries) != 1 || len(added) != 0 ||
		entries[0].ReasonCode != 1 || !entries[0].RevocationTime.Equal(t0.Add(time.Minute)) {
		t.Fatalf("third CRL: %v, %+v, %d added, %v; want the first revocation kept", number, entries, len(added), err)
	}

	otherResp, _ := NewResponder(other.rootKey, other.root)
	foreign, _ := otherResp.SignCRL(big.NewInt(9), t0, t0.Add(time.Hour), nil)
	bad := []struct {
		name   string
		prev   []byte
		revoke []*x509.Certificate
		reason int
	}{
		{"previous CRL of another root", foreign, nil, 2},
		{"garbage previous CRL", []byte("not a CRL"), nil, 2},
		{"intermediate of another root", nil, []*x509.Certificate{other.inter}, 2},
		{"certificateHold", nil, []*x509.Certificate{c.inter}, 6},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			if _, _, _, err := NextCRL(tt.prev, c.root, tt.revoke, tt.reason, t0); err == nil {
				t.Error("accepted")
			}
		})
	}
}
