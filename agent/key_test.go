package agent

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"strings"
	"testing"

	"github.com/agent-trust-registry/atr/api/client"
	"github.com/agent-trust-registry/atr/ca"
)

func TestGenerateKeyRoundTrip(t *testing.T) {
	for _, tt := range []struct{ typ, want string }{
		{"", KeyP256}, {KeyP256, KeyP256}, {KeyP384, KeyP384}, {KeyEd25519, KeyEd25519}, {KeyRSA, KeyRSA},
	} {
		t.Run(tt.want+"/"+tt.typ, func(t *testing.T) {
			k, err := GenerateKey(tt.typ)
			if err != nil {
				t.Fatal(err)
			}
			if got := KeyType(k); got != tt.want {
				t.Errorf("KeyType = %s, want %s", got, tt.want)
			}
			data, err := MarshalKey(k)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(string(data), "-----BEGIN PRIVATE KEY-----") {
				t.Errorf("not PKCS#8 PEM: %.40q", data)
			}
			back, err := ParseKey(data)
			if err != nil {
				t.Fatal(err)
			}
			if !back.Public().(interface{ Equal(crypto.PublicKey) bool }).Equal(k.Public()) {
				t.Error("the parsed key is not the generated one")
			}
			csr, err := NewCSR(k)
			if err != nil {
				t.Fatal(err)
			}
			req, err := ca.ParseCSR(csr)
			if err != nil {
				t.Fatalf("the registry's CSR parser refuses NewCSR's request: %v", err)
			}
			if r := req.Request(); len(r.URIs) != 0 || len(r.DNSNames) != 0 || r.Subject.CommonName != "" {
				t.Errorf("CSR carries names: %+v", r.Subject)
			}
		})
	}
	if _, err := GenerateKey("rsa1024"); !errors.Is(err, ErrUnknownKeyType) {
		t.Errorf("GenerateKey(rsa1024): %v, want ErrUnknownKeyType", err)
	}
}

func TestParseKey(t *testing.T) {
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	sec1, _ := x509.MarshalECPrivateKey(ec)
	small, _ := rsa.GenerateKey(rand.Reader, 1024)
	rsa2048, _ := rsa.GenerateKey(rand.Reader, 2048)
	pkcs8 := func(k any) []byte {
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	}
	ok := pkcs8(ec)
	for _, tt := range []struct {
		name    string
		data    []byte
		wantErr string
	}{
		{"PKCS#8", ok, ""},
		{"SEC 1", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1}), ""},
		{"PKCS#1 RSA-2048", pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rsa2048)}), ""},
		{"trailing white space", append(append([]byte(nil), ok...), "\n\n"...), ""},
		{"no PEM", []byte("hello"), "no PEM"},
		{"trailing data", append(append([]byte(nil), ok...), "junk"...), "trailing data"},
		{"two keys", append(append([]byte(nil), ok...), ok...), "trailing data"},
		{"a certificate", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1}}), "not a private key"},
		{"garbage DER", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1, 2}}), "parsing"},
		{"RSA-1024 refused by the key policy", pkcs8(small), "RSA"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseKey(tt.data)
			if tt.wantErr == "" && err != nil {
				t.Fatalf("err %v, want nil", err)
			}
			if tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("err %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestFingerprintsAndMatch(t *testing.T) {
	c := newTestCA(t, "test.local")
	k, _ := GenerateKey(KeyP256)
	other, _ := GenerateKey(KeyP256)
	leaf := c.Issue(t, k, "bot.acme")
	h := sha256.Sum256(leaf.Raw)
	if got, want := ca.Fingerprint(leaf), hex.EncodeToString(h[:]); got != want {
		t.Errorf("Fingerprint = %s, want %s", got, want)
	}
	spki := sha256.Sum256(leaf.RawSubjectPublicKeyInfo)
	if got, err := ca.PublicKeyFingerprint(k.Public()); err != nil || got != hex.EncodeToString(spki[:]) {
		t.Errorf("PublicKeyFingerprint = %s, %v; want %x (the certificate's SPKI)", got, err, spki)
	}
	for _, tt := range []struct {
		name string
		k    crypto.Signer
		want bool
	}{{"own key", k, true}, {"other key", other, false}} {
		if got := KeyMatches(tt.k, leaf); got != tt.want {
			t.Errorf("%s: KeyMatches = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestCheckIssued(t *testing.T) {
	c := newTestCA(t, "test.local")
	other := newTestCA(t, "test.local")
	k, _ := GenerateKey(KeyP256)
	stranger, _ := GenerateKey(KeyP256)
	leaf := c.Issue(t, k, "bot.acme")
	answer := func(leaf *x509.Certificate, chain ...*x509.Certificate) *client.Certificate {
		return &client.Certificate{Certificate: string(ca.EncodeCertificatesPEM(leaf)), Chain: string(ca.EncodeCertificatesPEM(chain...))}
	}
	for _, tt := range []struct {
		name    string
		ans     *client.Certificate
		want    string
		wantErr string
	}{
		{"good", answer(leaf, c.Issuing), "bot.acme", ""},
		{"any name", answer(leaf, c.Issuing), "", ""},
		{"no chain", answer(leaf), "bot.acme", ""},
		{"another key", answer(c.Issue(t, stranger, "bot.acme"), c.Issuing), "bot.acme", "another key"},
		{"another agent", answer(leaf, c.Issuing), "evil.acme", "names agent"},
		{"a chain that did not sign it", answer(leaf, other.Issuing), "bot.acme", "does not sign"},
		{"garbage", &client.Certificate{Certificate: "nope"}, "bot.acme", "certificate"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			iss, err := CheckIssued(k, tt.ans, tt.want)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !iss.Leaf.Equal(leaf) || string(iss.LeafPEM) != string(ca.EncodeCertificatesPEM(leaf)) {
				t.Error("Issued does not hold the certificate")
			}
		})
	}
}

func TestAgentIdentity(t *testing.T) {
	c := newTestCA(t, "test.local")
	k, _ := GenerateKey(KeyP256)
	leaf := c.Issue(t, k, "bot.acme")
	name, td, err := ca.AgentIdentity(leaf)
	if err != nil || name != "bot.acme" || td != "test.local" {
		t.Errorf("AgentName = %q, %q, %v; want bot.acme, test.local", name, td, err)
	}
	if _, _, err := ca.AgentIdentity(c.Issuing); err == nil {
		t.Error("AgentName of a CA certificate without URI SAN succeeded")
	}
}
