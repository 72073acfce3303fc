package translog

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"math/big"
	"net/url"
	"sync"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/tlog"
)

const receiptTD = "example.org"

var (
	receiptKeyOnce sync.Once
	receiptKey     *rsa.PrivateKey
)

// receiptVRFKey is a software RSA-3072 key, generated once (the token-backed
// VRF is tested in vrf_test.go).
func receiptVRFKey(t *testing.T) *rsa.PrivateKey {
	t.Helper()
	receiptKeyOnce.Do(func() {
		k, err := rsa.GenerateKey(rand.Reader, 3072)
		if err != nil {
			panic(err)
		}
		receiptKey = k
	})
	return receiptKey
}

// agentCertDER makes a certificate with the SPIFFE ID of name.
func agentCertDER(t *testing.T, name string) []byte {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse("spiffe://" + receiptTD + "/agent/" + name)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), URIs: []*url.URL{u}, NotBefore: testTime, NotAfter: testTime.Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.Public(), k)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// openedFor builds a v2 register entry and its opening for name.
func openedFor(t *testing.T, key crypto.Signer, name string, index int64) (Entry, Opened) {
	t.Helper()
	der := agentCertDER(t, name)
	fp := sha256.Sum256(der)
	e := Entry{Version: EntryVersion, Type: EventRegister, Time: testTime, Fingerprint: hex.EncodeToString(fp[:]), IssuerKeyID: testSKI}
	o := Opened{LeafIndex: index, Name: name, Certificate: der}
	for _, n := range NameSuffixes(name) {
		ix, proof, err := VRFProve(key, receiptTD, n)
		if err != nil {
			t.Fatal(err)
		}
		e.NameIndexes = append(e.NameIndexes, hex.EncodeToString(ix[:]))
		o.VRFProofs = append(o.VRFProofs, proof)
	}
	return e, o
}

func TestOpenedCheck(t *testing.T) {
	key := receiptVRFKey(t)
	e, o := openedFor(t, key, "bot.billing.acme", 3)
	if _, err := o.Check(e, key.Public(), receiptTD); err != nil {
		t.Fatalf("Check of a genuine opening: %v", err)
	}

	other, _ := openedFor(t, key, "bot.payroll.acme", 3)
	otherKey, err := rsa.GenerateKey(rand.Reader, 3072)
	if err != nil {
		t.Fatal(err)
	}
	tests := map[string]func() (Entry, Opened, crypto.PublicKey, string){
		"another certificate": func() (Entry, Opened, crypto.PublicKey, string) {
			o2 := o
			o2.Certificate = agentCertDER(t, o.Name)
			return e, o2, key.Public(), receiptTD
		},
		"another name": func() (Entry, Opened, crypto.PublicKey, string) {
			o2 := o
			o2.Name = "bot.payroll.acme"
			return e, o2, key.Public(), receiptTD
		},
		"another entry":        func() (Entry, Opened, crypto.PublicKey, string) { return other, o, key.Public(), receiptTD },
		"another trust domain": func() (Entry, Opened, crypto.PublicKey, string) { return e, o, key.Public(), "example.com" },
		"another VRF key":      func() (Entry, Opened, crypto.PublicKey, string) { return e, o, otherKey.Public(), receiptTD },
		"proofs swapped": func() (Entry, Opened, crypto.PublicKey, string) {
			o2 := o
			o2.VRFProofs = [][]byte{o.VRFProofs[1], o.VRFProofs[0], o.VRFProofs[2]}
			return e, o2, key.Public(), receiptTD
		},
		"full-name proof only (a forged namespace index would go unchecked)": func() (Entry, Opened, crypto.PublicKey, string) {
			o2 := o
			o2.VRFProofs = o.VRFProofs[:1]
			e2 := e
			e2.NameIndexes = append(append([]string(nil), e.NameIndexes[:2]...), testIx[0])
			return e2, o2, key.Public(), receiptTD
		},
		"no proof": func() (Entry, Opened, crypto.PublicKey, string) {
			o2 := o
			o2.VRFProofs = nil
			return e, o2, key.Public(), receiptTD
		},
		"a proof too many": func() (Entry, Opened, crypto.PublicKey, string) {
			o2 := o
			o2.VRFProofs = append(append([][]byte(nil), o.VRFProofs...), o.VRFProofs[0])
			return e, o2, key.Public(), receiptTD
		},
		"an index altered": func() (Entry, Opened, crypto.PublicKey, string) {
			e2 := e
			e2.NameIndexes = append([]string{testIx[0]}, e.NameIndexes[1:]...)
			return e2, o, key.Public(), receiptTD
		},
		"a v1 entry": func() (Entry, Opened, crypto.PublicKey, string) {
			e2 := e
			e2.Version = EntryVersion1
			return e2, o, key.Public(), receiptTD
		},
	}
	for name, mk := range tests {
		t.Run(name, func(t *testing.T) {
			e, o, pub, td := mk()
			if _, err := o.Check(e, pub, td); !errors.Is(err, ErrOpening) {
				t.Errorf("Check = %v, want ErrOpening", err)
			}
		})
	}
	t.Run("every bit of every proof", func(t *testing.T) {
		for i := range o.VRFProofs {
			for bit := 0; bit < len(o.VRFProofs[i])*8; bit += 97 { // a spread of bits; vrf_test flips them all
				o2 := o
				o2.VRFProofs = append([][]byte(nil), o.VRFProofs...)
				p := append([]byte(nil), o.VRFProofs[i]...)
				p[bit/8] ^= 1 << (bit % 8)
				o2.VRFProofs[i] = p
				if _, err := o2.Check(e, key.Public(), receiptTD); !errors.Is(err, ErrOpening) {
					t.Fatalf("proof %d bit %d flipped: Check = %v, want ErrOpening", i, bit, err)
				}
			}
		}
	})
}

func TestReceiptEncoding(t *testing.T) {
	key := receiptVRFKey(t)
	e, o := openedFor(t, key, "bot.acme", 0)
	leaf, err := e.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	r := Receipt{LeafIndex: 0, Leaf: leaf, Opened: o, InclusionProof: []tlog.Hash{{1}, {2}}, Checkpoint: []byte("example.org/log\n1\nAAAA\n\n— example.org/log AAAA\n"), Witnessed: false}
	b, err := r.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseReceipt(b)
	if err != nil {
		t.Fatalf("ParseReceipt: %v", err)
	}
	b2, err := got.Marshal()
	if err != nil || string(b2) != string(b) {
		t.Fatalf("round trip differs: %v", err)
	}
	if _, err := ParseReceipt(append(append([]byte(" \n"), b...), '\n')); err != nil {
		t.Errorf("ParseReceipt of a receipt file with a final newline: %v", err)
	}
	bad := map[string]string{
		"unknown field":   string(b[:len(b)-1]) + `,"x":1}`,
		"another format":  replaceOnce(string(b), ReceiptFormat, "atr-receipt/v9"),
		"trailing data":   string(b) + "{}",
		"whitespace":      replaceOnce(string(b), `,"leaf"`, `, "leaf"`),
		"short hash":      replaceOnce(string(b), `"inclusion_proof":["`, `"inclusion_proof":["AAAA","`),
		"index mismatch":  replaceOnce(string(b), `"leaf_index":0,"leaf"`, `"leaf_index":1,"leaf"`),
		"opened unknown":  replaceOnce(string(b), `"opened":{"v":1`, `"opened":{"v":1,"x":2`),
		"opened version":  replaceOnce(string(b), `"opened":{"v":1`, `"opened":{"v":2`),
		"not json":        "receipt",
		"empty":           "",
		"duplicate field": replaceOnce(string(b), `"witnessed":false`, `"witnessed":false,"witnessed":true`),
	}
	for name, in := range bad {
		t.Run(name, func(t *testing.T) {
			if _, err := ParseReceipt([]byte(in)); !errors.Is(err, ErrInvalid) {
				t.Errorf("ParseReceipt = %v, want ErrInvalid", err)
			}
		})
	}
}

func replaceOnce(s, old, new string) string {
	i := len(s)
	for j := 0; j+len(old) <= len(s); j++ {
		if s[j:j+len(old)] == old {
			i = j
			break
		}
	}
	if i == len(s) {
		return s + "\x00not found"
	}
	return s[:i] + new + s[i+len(old):]
}

func FuzzParseReceipt(f *testing.F) {
	f.Add([]byte(`{"format":"atr-receipt/v1","leaf_index":0,"leaf":"AA==","opened":{"v":1,"leaf_index":0,"name":"a","certificate":"MAA=","vrf_proofs":["AA=="]},"inclusion_proof":[],"checkpoint":"x","witnessed":false}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := ParseReceipt(data)
		if err != nil {
			return
		}
		b, err := r.Marshal()
		if err != nil || string(b) != string(data) {
			t.Fatalf("ParseReceipt accepted %q, which re-marshals to %q, %v", data, b, err)
		}
	})
}

// TestReceiptMarshalIsWireReceipt: Receipt.Marshal writes the bytes
// json.Marshal writes for the whole wireReceipt (Marshal joins two objects
// around the opened entry instead), with and without proof hashes and
// cosignatures, and with checkpoint text that encoding/json escapes.
func TestReceiptMarshalIsWireReceipt(t *testing.T) {
	key := receiptVRFKey(t)
	e, o := openedFor(t, key, "bot.acme", 3)
	leaf, err := e.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []Receipt{
		{LeafIndex: 3, Leaf: leaf, Opened: o, InclusionProof: []tlog.Hash{{1}, {2}}, Checkpoint: []byte("example.org/log\n4\nAAAA\n\n— example.org/log AAAA\n")},
		{LeafIndex: 3, Leaf: leaf, Opened: o, Checkpoint: []byte("a<b>&c\u2028\n"), Witnessed: true},
	} {
		got, err := r.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		opened, err := r.Opened.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		proof := make([][]byte, len(r.InclusionProof))
		for i := range r.InclusionProof {
			proof[i] = r.InclusionProof[i][:]
		}
		want, err := json.Marshal(wireReceipt{Format: ReceiptFormat, LeafIndex: r.LeafIndex, Leaf: r.Leaf, Opened: opened,
			InclusionProof: proof, Checkpoint: string(r.Checkpoint), Witnessed: r.Witnessed})
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != string(want) {
			t.Errorf("Marshal:\n%s\nwant\n%s", got, want)
		}
	}
}

// TestReceiptWithProof: a receipt re-made against another checkpoint with
// EncodedReceipt.WithProof is byte for byte what Marshal writes for it, and
// the receipt it was made from is left as it was.
func TestReceiptWithProof(t *testing.T) {
	key := receiptVRFKey(t)
	e, o := openedFor(t, key, "bot.acme", 3)
	leaf, err := e.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	base := Receipt{LeafIndex: 3, Leaf: leaf, Opened: o, InclusionProof: []tlog.Hash{{1}}, Checkpoint: []byte("example.org/log\n4\nAAAA\n\n— example.org/log AAAA\n")}
	enc, err := base.Encode()
	if err != nil {
		t.Fatal(err)
	}
	before := string(enc.Data)
	for _, tc := range []struct {
		name       string
		proof      []tlog.Hash
		checkpoint string
		witnessed  bool
	}{
		{"longer proof", []tlog.Hash{{1}, {2}, {3}}, "example.org/log\n9\nBBBB\n\n— example.org/log BBBB\n", false},
		{"no proof, cosigned", nil, "example.org/log\n4\nAAAA\n\n— example.org/log AAAA\n— witness CCCC\n", true},
		{"escaped checkpoint", []tlog.Hash{{9}}, "a<b>&c\u2028\n", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := enc.WithProof(tc.proof, []byte(tc.checkpoint), tc.witnessed)
			if err != nil {
				t.Fatal(err)
			}
			r := base
			r.InclusionProof, r.Checkpoint, r.Witnessed = tc.proof, []byte(tc.checkpoint), tc.witnessed
			want, err := r.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			if string(got.Data) != string(want) {
				t.Errorf("WithProof:\n%s\nwant\n%s", got.Data, want)
			}
			if _, err := ParseReceipt(got.Data); err != nil {
				t.Errorf("ParseReceipt(WithProof): %v", err)
			}
			again, err := got.WithProof(base.InclusionProof, base.Checkpoint, false)
			if err != nil || string(again.Data) != before {
				t.Errorf("WithProof back to the first checkpoint differs: %v", err)
			}
			if string(enc.Data) != before {
				t.Fatal("WithProof changed the receipt it was made from")
			}
		})
	}
	if _, err := (EncodedReceipt{}).WithProof(nil, []byte("x"), false); !errors.Is(err, ErrInvalid) {
		t.Errorf("WithProof of a zero EncodedReceipt = %v, want ErrInvalid", err)
	}
	if _, err := enc.WithProof(nil, nil, false); !errors.Is(err, ErrInvalid) {
		t.Errorf("WithProof without a checkpoint = %v, want ErrInvalid", err)
	}
}
