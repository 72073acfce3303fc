package ca

import (
	"bytes"
	"crypto/rand"
	"crypto/x509"
	"math/big"
	"testing"
	"time"
)

// crlCase is one CRL's values, for crlTBS and x509.CreateRevocationList.
type crlCase struct {
	name       string
	number     *big.Int
	this, next time.Time
	entries    []x509.RevocationListEntry
}

// crlCases covers what crlTBS encodes: no entries, each reason code
// SignCRL allows (unspecified not encoded), serials and CRL numbers of 1 to
// 20 octets (with and without the leading zero octet), times in UTCTime and
// in GeneralizedTime (before 1950, from 2050), with fractions of a second
// and in other zones.
func crlCases(t testing.TB) []crlCase {
	t.Helper()
	twenty := new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), 159), big.NewInt(1)) // 20 octets, top bit clear
	high := new(big.Int).Lsh(big.NewInt(0xff), 64)                                  // top bit set: a leading zero octet
	east := time.FixedZone("UTC+9", 9*3600)
	var every []x509.RevocationListEntry
	for code := range 11 {
		if ReasonName(code) == "" {
			continue
		}
		every = append(every, x509.RevocationListEntry{SerialNumber: big.NewInt(int64(1000 + code)), RevocationTime: testNow.Add(-time.Duration(code) * time.Hour), ReasonCode: code})
	}
	return []crlCase{
		{"no entries", big.NewInt(1), testNow, testNow.Add(24 * time.Hour), nil},
		{"one unspecified", big.NewInt(2), testNow, testNow.Add(time.Hour), []x509.RevocationListEntry{
			{SerialNumber: testSerial(t), RevocationTime: testNow.Add(-time.Minute)}}},
		{"every reason", big.NewInt(3), testNow, testNow.Add(time.Hour), every},
		{"serial sizes", new(big.Int).Set(twenty), testNow, testNow.Add(time.Hour), []x509.RevocationListEntry{
			{SerialNumber: big.NewInt(1), RevocationTime: testNow, ReasonCode: 1},
			{SerialNumber: big.NewInt(127), RevocationTime: testNow},
			{SerialNumber: big.NewInt(128), RevocationTime: testNow, ReasonCode: 4},
			{SerialNumber: high, RevocationTime: testNow, ReasonCode: 5},
			{SerialNumber: twenty, RevocationTime: testNow, ReasonCode: 9},
		}},
		{"times", high, time.Date(2049, 12, 31, 23, 59, 59, 999999999, time.UTC), time.Date(2050, 1, 1, 0, 0, 0, 0, time.UTC), []x509.RevocationListEntry{
			{SerialNumber: big.NewInt(7), RevocationTime: time.Date(1949, 12, 31, 23, 59, 59, 0, time.UTC), ReasonCode: 3},
			{SerialNumber: big.NewInt(8), RevocationTime: time.Date(1950, 1, 1, 0, 0, 0, 0, time.UTC)},
			{SerialNumber: big.NewInt(9), RevocationTime: time.Date(2050, 6, 1, 12, 0, 0, 5, time.UTC), ReasonCode: 10},
			{SerialNumber: big.NewInt(10), RevocationTime: testNow.In(east).Add(1500 * time.Millisecond), ReasonCode: 2},
		}},
		{"other zone", big.NewInt(1 << 40), testNow.In(east).Add(time.Nanosecond), testNow.In(east).Add(time.Hour), []x509.RevocationListEntry{
			{SerialNumber: testSerial(t), RevocationTime: testNow.In(east), ReasonCode: 1}}},
	}
}

// createdTBS is the TBSCertList and signature AlgorithmIdentifier of the
// CRL x509.CreateRevocationList makes of c with r's key.
func createdTBS(t testing.TB, r *Responder, c crlCase) (tbs, algID []byte) {
	t.Helper()
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number: c.number, ThisUpdate: c.this, NextUpdate: c.next, RevokedCertificateEntries: c.entries,
	}, r.cert, r.signer)
	if err != nil {
		t.Fatalf("%s: CreateRevocationList: %v", c.name, err)
	}
	tbs, algID, _, err = crlParts(der)
	if err != nil {
		t.Fatal(err)
	}
	return tbs, algID
}

// TestCRLTBSMatchesCreateRevocationList: for every CA key type, crlTBS
// encodes each case's TBSCertList byte for byte as
// x509.CreateRevocationList does, under the AlgorithmIdentifier it writes.
func TestCRLTBSMatchesCreateRevocationList(t *testing.T) {
	for _, alg := range []string{"p256", "p384", "p521", "ed25519", "rsa2048"} {
		ca := newTestCA(t, alg)
		r := ca.issuer.Responder()
		sig, err := crlSignatureAlgorithm(r.signer.Public())
		if err != nil {
			t.Fatalf("%s: %v", alg, err)
		}
		for _, c := range crlCases(t) {
			want, wantAlg := createdTBS(t, r, c)
			if !bytes.Equal(sig.algID, wantAlg) {
				t.Errorf("%s: algorithm identifier %x, want %x", alg, sig.algID, wantAlg)
			}
			got, err := crlTBS(sig.algID, r.cert.RawSubject, r.cert.SubjectKeyId, c.number, c.this, c.next, c.entries)
			if err != nil {
				t.Fatalf("%s, %s: crlTBS: %v", alg, c.name, err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s, %s: crlTBS\n%x\nwant (x509.CreateRevocationList)\n%x", alg, c.name, got, want)
			}
		}
	}
}

// TestSignCRLLearnsItsEncoding: a responder makes CRLs with
// x509.CreateRevocationList until one with entries was encoded the same by
// crlTBS, and then with crlTBS; those CRLs parse, verify under the CA
// certificate and carry what was asked. A responder whose signer does not
// sign what it is given fails on either path.
func TestSignCRLLearnsItsEncoding(t *testing.T) {
	for _, alg := range []string{"p256", "p384", "p521", "ed25519", "rsa2048"} {
		ca := newTestCA(t, alg)
		r, err := NewResponder(ca.interKey, ca.inter)
		if err != nil {
			t.Fatal(err)
		}
		cases := crlCases(t)
		for k, c := range cases {
			learned := r.crlEnc.Load() != nil
			der, err := r.SignCRL(c.number, c.this, c.next, c.entries)
			if err != nil {
				t.Fatalf("%s, %s: SignCRL: %v", alg, c.name, err)
			}
			// Learned from the first case with entries (the second).
			if learned != (k > 1) || (r.crlEnc.Load() != nil) != (k > 0) {
				t.Fatalf("%s, %s: learned before %v, after %v", alg, c.name, learned, r.crlEnc.Load() != nil)
			}
			crl, err := x509.ParseRevocationList(der)
			if err != nil {
				t.Fatalf("%s, %s: %v", alg, c.name, err)
			}
			if err := crl.CheckSignatureFrom(ca.inter); err != nil {
				t.Errorf("%s, %s: %v", alg, c.name, err)
			}
			if crl.Number.Cmp(c.number) != 0 || !crl.ThisUpdate.Equal(c.this.Truncate(time.Second)) || !crl.NextUpdate.Equal(c.next.Truncate(time.Second)) ||
				!bytes.Equal(crl.AuthorityKeyId, ca.inter.SubjectKeyId) || !bytes.Equal(crl.RawIssuer, ca.inter.RawSubject) {
				t.Errorf("%s, %s: number %v, this %v, next %v", alg, c.name, crl.Number, crl.ThisUpdate, crl.NextUpdate)
			}
			if len(crl.RevokedCertificateEntries) != len(c.entries) {
				t.Fatalf("%s, %s: %d entries, want %d", alg, c.name, len(crl.RevokedCertificateEntries), len(c.entries))
			}
			for j, e := range crl.RevokedCertificateEntries {
				w := c.entries[j]
				if e.SerialNumber.Cmp(w.SerialNumber) != 0 || e.ReasonCode != w.ReasonCode || !e.RevocationTime.Equal(w.RevocationTime.Truncate(time.Second)) {
					t.Errorf("%s, %s: entry %d = %v/%d/%v, want %v/%d/%v", alg, c.name, j, e.SerialNumber, e.ReasonCode, e.RevocationTime, w.SerialNumber, w.ReasonCode, w.RevocationTime)
				}
			}
		}
		if r.crlEnc.Load() == nil {
			t.Fatalf("%s: never learned", alg)
		}
		for _, mode := range []string{"garbage", "other message"} {
			broken := &Responder{signer: misbehavingSigner{ca.interKey, mode}, cert: ca.inter}
			broken.crlEnc.Store(r.crlEnc.Load())
			if _, err := broken.SignCRL(big.NewInt(9), testNow, testNow.Add(time.Hour), cases[2].entries); err == nil {
				t.Errorf("%s: a CRL encoded by crlTBS signed by a %s signer", alg, mode)
			}
		}
	}
}

// TestLearnCRLEncodingRefusesADifference: a CRL whose TBSCertList crlTBS
// would not encode the same (here, another issuer's, or values other than
// the CRL's) teaches nothing.
func TestLearnCRLEncodingRefusesADifference(t *testing.T) {
	ca := newTestCA(t, "p256")
	other := newTestCA(t, "p256")
	c := crlCases(t)[2]
	der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number: c.number, ThisUpdate: c.this, NextUpdate: c.next, RevokedCertificateEntries: c.entries,
	}, other.inter, other.interKey)
	if err != nil {
		t.Fatal(err)
	}
	r, err := NewResponder(ca.interKey, ca.inter)
	if err != nil {
		t.Fatal(err)
	}
	r.learnCRLEncoding(der, c.number, c.this, c.next, c.entries)
	if r.crlEnc.Load() != nil {
		t.Fatal("learned from another CA's CRL")
	}
	mine, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number: c.number, ThisUpdate: c.this, NextUpdate: c.next, RevokedCertificateEntries: c.entries,
	}, ca.inter, ca.interKey)
	if err != nil {
		t.Fatal(err)
	}
	r.learnCRLEncoding(mine, big.NewInt(99), c.this, c.next, c.entries)
	r.learnCRLEncoding(mine, c.number, c.this, c.next, c.entries[1:])
	r.learnCRLEncoding(mine[:len(mine)-1], c.number, c.this, c.next, c.entries)
	if r.crlEnc.Load() != nil {
		t.Fatal("learned from a CRL of other values")
	}
	r.learnCRLEncoding(mine, c.number, c.this, c.next, c.entries)
	if r.crlEnc.Load() == nil {
		t.Fatal("did not learn from its own CRL")
	}
}

// TestCRLTimesOutOfRange: a revocation time outside ASN.1's years 0 to
// 9999 fails on both paths, never reaches a CRL.
func TestCRLTimesOutOfRange(t *testing.T) {
	ca := newTestCA(t, "p256")
	r, err := NewResponder(ca.interKey, ca.inter)
	if err != nil {
		t.Fatal(err)
	}
	c := crlCases(t)[2]
	if _, err := r.SignCRL(c.number, c.this, c.next, c.entries); err != nil || r.crlEnc.Load() == nil {
		t.Fatalf("SignCRL: %v; learned %v", err, r.crlEnc.Load() != nil)
	}
	for _, at := range []time.Time{time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(-1, 12, 31, 0, 0, 0, 0, time.UTC)} {
		entries := []x509.RevocationListEntry{{SerialNumber: big.NewInt(5), RevocationTime: at, ReasonCode: 1}}
		if _, err := r.SignCRL(big.NewInt(2), testNow, testNow.Add(time.Hour), entries); err == nil {
			t.Errorf("crlTBS path: a CRL with a revocation time in year %d", at.Year())
		}
		if _, err := ca.issuer.Responder().SignCRL(big.NewInt(2), testNow, testNow.Add(time.Hour), entries); err == nil {
			t.Errorf("crypto/x509 path: a CRL with a revocation time in year %d", at.Year())
		}
	}
	if _, err := r.SignCRL(big.NewInt(3), time.Date(0, 6, 1, 0, 0, 0, 0, time.UTC), time.Time{}, nil); err == nil {
		t.Error("a CRL without nextUpdate")
	}
}

// FuzzCRLTBS: for any entry crlTBS may be given (what SignCRL accepts),
// its encoding is x509.CreateRevocationList's.
func FuzzCRLTBS(f *testing.F) {
	f.Add([]byte{1}, uint8(0), int64(1772366400), []byte{7}, int64(0))
	f.Add([]byte{0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}, uint8(4), int64(2524608000), []byte{0xff, 0xff}, int64(-1))
	f.Add(bytes.Repeat([]byte{0x7f}, 20), uint8(10), int64(-631152001), bytes.Repeat([]byte{0x7f}, 20), int64(999999999))
	ca := newTestCA(f, "p256")
	r := ca.issuer.Responder()
	sig, err := crlSignatureAlgorithm(r.signer.Public())
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, serial []byte, reason uint8, unix int64, number []byte, nanos int64) {
		e := x509.RevocationListEntry{SerialNumber: new(big.Int).SetBytes(serial), RevocationTime: time.Unix(unix, nanos%1e9), ReasonCode: int(reason)}
		n := new(big.Int).SetBytes(number)
		if y := e.RevocationTime.UTC().Year(); checkSerial(e.SerialNumber) != nil || checkSerial(n) != nil || ReasonName(e.ReasonCode) == "" || y < 0 || y > 9999 {
			return // refused by SignCRL, or an ASN.1 time neither encoding writes (TestCRLTimesOutOfRange)
		}
		c := crlCase{name: "fuzz", number: n, this: testNow, next: testNow.Add(time.Hour), entries: []x509.RevocationListEntry{e, e}}
		want, _ := createdTBS(t, r, c)
		got, err := crlTBS(sig.algID, r.cert.RawSubject, r.cert.SubjectKeyId, c.number, c.this, c.next, c.entries)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("crlTBS = %x, %v\nwant %x", got, err, want)
		}
	})
}
