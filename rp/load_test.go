package rp_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/note"

	"github.com/agent-trust-registry/atr/ca"
	"github.com/agent-trust-registry/atr/registry/translog"
	"github.com/agent-trust-registry/atr/rp"
)

func writeFile(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestParseCABundle(t *testing.T) {
	p := newTestPKI(t, "Test", "")
	for _, tt := range []struct {
		name         string
		data         []byte
		roots, inter int
		wantErr      bool
	}{
		{"root and issuing CA", ca.EncodeCertificatesPEM(p.issuing, p.root), 1, 1, false},
		{"root alone", ca.EncodeCertificatesPEM(p.root), 1, 0, false},
		{"no root", ca.EncodeCertificatesPEM(p.issuing), 0, 0, true},
		{"not PEM", []byte("garbage"), 0, 0, true},
		{"trailing text", append(ca.EncodeCertificatesPEM(p.root), "x"...), 0, 0, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			roots, inter, err := rp.ParseCABundle(tt.data)
			if (err != nil) != tt.wantErr || len(roots) != tt.roots || len(inter) != tt.inter {
				t.Errorf("ParseCABundle = %d roots, %d intermediates, %v; want %d, %d, error %v", len(roots), len(inter), err, tt.roots, tt.inter, tt.wantErr)
			}
		})
	}
}

func TestParseCRL(t *testing.T) {
	p := newTestPKI(t, "Test", "")
	crl := p.leafCRL(t, 1)
	for _, tt := range []struct {
		name    string
		data    []byte
		wantErr bool
	}{
		{"DER", crl.Raw, false},
		{"PEM", pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: crl.Raw}), false},
		{"PEM of another type", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: crl.Raw}), true},
		{"two PEM blocks", append(pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: crl.Raw}), pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: crl.Raw})...), true},
		{"garbage", []byte("not a crl"), true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := rp.ParseCRL(tt.data)
			if (err != nil) != tt.wantErr {
				t.Fatalf("ParseCRL: %v, want error %v", err, tt.wantErr)
			}
			if err == nil && got.Number.Cmp(crl.Number) != 0 {
				t.Errorf("CRL number %v", got.Number)
			}
		})
	}
}

func TestParseLogKey(t *testing.T) {
	const o = "test.local/log"
	ec := mustKey(t)
	edPub, _, _ := ed25519.GenerateKey(rand.Reader)
	pemOf := func(pub any) []byte {
		der, err := x509.MarshalPKIXPublicKey(pub)
		if err != nil {
			t.Fatal(err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	}
	ecVkey, err := translog.VerifierKey(o, ec.Public())
	if err != nil {
		t.Fatal(err)
	}
	_, edVkey, err := note.GenerateKey(rand.Reader, o)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name        string
		data        []byte
		wantErr     bool
		origin      string // Origin()
		verifiers   int    // len of Verifiers(o) names, -1: error
		verifierErr bool   // Verifier(o)
	}{
		{"ECDSA PEM", pemOf(ec.Public()), false, "", 1, false},
		{"Ed25519 PEM", pemOf(edPub), false, "", 1, true},
		{"ECDSA and Ed25519 verifier keys", []byte(ecVkey + "\n" + edVkey + "\n"), false, o, 2, false},
		{"Ed25519 verifier key alone", []byte(edVkey), false, "", 1, true},
		{"two PEM blocks", append(pemOf(ec.Public()), pemOf(ec.Public())...), true, "", 0, false},
		{"private key PEM", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1}}), true, "", 0, false},
		{"garbage", []byte("not a key"), true, "", 0, false},
		{"empty", nil, true, "", 0, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			k, err := rp.ParseLogKey(tt.data)
			if (err != nil) != tt.wantErr {
				t.Fatalf("ParseLogKey: %v, want error %v", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			if got := k.Origin(); got != tt.origin {
				t.Errorf("Origin() = %q, want %q", got, tt.origin)
			}
			if _, err := k.Verifiers(o); err != nil {
				t.Errorf("Verifiers: %v", err)
			}
			if _, err := k.Verifier(o); (err != nil) != tt.verifierErr {
				t.Errorf("Verifier: %v, want error %v", err, tt.verifierErr)
			}
		})
	}
}

func TestLoadWitnessPolicy(t *testing.T) {
	dir := t.TempDir()
	w1, w2, w3 := newWitness(t, "w1.example"), newWitness(t, "w2.example"), newWitness(t, "w3.example")
	file := writeFile(t, dir, "witnesses", []byte("# the witnesses\n"+w2.vkey+"\n\n  "+w3.vkey+"  \n"))
	for _, tt := range []struct {
		name      string
		values    []string
		threshold int
		wantKeys  int
		wantThr   int
		wantErr   bool // a *PolicyConfigError
	}{
		{"none", nil, -1, 0, 0, false},
		{"one key, all", []string{w1.vkey}, -1, 1, 1, false},
		{"a key and a file, 2 of 3", []string{w1.vkey, file}, 2, 3, 2, false},
		{"threshold above the keys", []string{w1.vkey}, 2, 0, 0, true},
		{"a key twice", []string{w1.vkey, w1.vkey}, 1, 0, 0, true},
		{"not a key", []string{"nonsense"}, -1, 0, 0, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p, err := rp.LoadWitnessPolicy(tt.values, tt.threshold)
			var pe *rp.PolicyConfigError
			if tt.wantErr {
				if !errors.As(err, &pe) {
					t.Fatalf("LoadWitnessPolicy = %v, want a *PolicyConfigError", err)
				}
				return
			}
			if err != nil || len(p.Keys) != tt.wantKeys || p.Threshold != tt.wantThr {
				t.Errorf("LoadWitnessPolicy = %d keys, threshold %d, %v; want %d, %d", len(p.Keys), p.Threshold, err, tt.wantKeys, tt.wantThr)
			}
		})
	}
}

func TestLoadKnown(t *testing.T) {
	p := newTestPKI(t, "Test", "")
	a, b := p.leaf(t, leafOpts{}), p.leaf(t, leafOpts{})
	fa, fb := ca.Fingerprint(a), ca.Fingerprint(b)
	colons := func(s string) string {
		var parts []string
		for i := 0; i < len(s); i += 2 {
			parts = append(parts, strings.ToUpper(s[i:i+2]))
		}
		return strings.Join(parts, ":")
	}
	dir := t.TempDir()
	pemDir := filepath.Join(dir, "certs")
	if err := os.Mkdir(pemDir, 0o700); err != nil {
		t.Fatal(err)
	}
	writeFile(t, pemDir, "a.pem", ca.EncodeCertificatesPEM(a))
	writeFile(t, pemDir, "b.pem", ca.EncodeCertificatesPEM(b))
	writeFile(t, pemDir, "ignored.txt", []byte("not read"))
	for _, tt := range []struct {
		name    string
		path    string
		want    []string
		wantErr bool
	}{
		{"no file", "", nil, false},
		{"fingerprints", writeFile(t, dir, "fps", []byte("# mine\n"+fa+"\n\nsha256:"+colons(fb)+"\n")), []string{fa, fb}, false},
		{"a PEM file", writeFile(t, dir, "certs.pem", ca.EncodeCertificatesPEM(a, b)), []string{fa, fb}, false},
		{"a directory of PEM files", pemDir, []string{fa, fb}, false},
		{"a short fingerprint", writeFile(t, dir, "short", []byte(fa[:62]+"\n")), nil, true},
		{"not hex", writeFile(t, dir, "nothex", []byte(strings.Repeat("zz", 32)+"\n")), nil, true},
		{"missing", filepath.Join(dir, "missing"), nil, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got, err := rp.LoadKnown(tt.path)
			if (err != nil) != tt.wantErr {
				t.Fatalf("LoadKnown: %v, want error %v", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			if len(got) != len(tt.want) {
				t.Errorf("got %d fingerprints, want %d", len(got), len(tt.want))
			}
			for _, fp := range tt.want {
				if !got[fp] {
					t.Errorf("%s missing", fp)
				}
			}
		})
	}
}

type fakeIndexer struct {
	t     *testing.T
	k     monitorKeys
	lie   bool
	asked []string
}

func (f *fakeIndexer) VRFIndex(_ context.Context, name string) (rp.Watched, error) {
	f.asked = append(f.asked, name)
	if f.lie {
		name = "other." + name
	}
	return f.k.watched(f.t, name), nil
}

func TestResolveWatched(t *testing.T) {
	ctx := context.Background()
	k := newMonitorKeys(t)
	state := rp.MonitorState{Watched: []rp.Watched{k.watched(t, "acme")}}
	for _, tt := range []struct {
		name      string
		names     []string
		indexer   bool
		lie       bool
		want      []string
		wantAsked int
		wantErr   error
	}{
		{"from the state, no indexer", []string{"acme"}, false, false, []string{"acme"}, 0, nil},
		{"normalized and deduplicated", []string{"ACME", "acme", "Bot.Acme"}, true, false, []string{"acme", "bot.acme"}, 1, nil},
		{"a new name without an indexer", []string{"acme", "zzz.acme"}, false, false, nil, 0, rp.ErrWatchIndex},
		{"an invalid name", []string{"not/a name"}, true, false, nil, 0, rp.ErrWatchName},
		{"the server answers for another name", []string{"bot.acme"}, true, true, nil, 1, rp.ErrMonitor},
	} {
		t.Run(tt.name, func(t *testing.T) {
			idx := &fakeIndexer{t: t, k: k, lie: tt.lie}
			var ix rp.VRFIndexer
			if tt.indexer {
				ix = idx
			}
			got, err := rp.ResolveWatched(ctx, ix, tt.names, state)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("ResolveWatched = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, w := range got {
				names = append(names, w.Name)
				m := rp.Monitor{VRFKey: &k.vrf.PublicKey, TrustDomain: monitorTD}
				if err := m.CheckWatched(w); err != nil {
					t.Errorf("CheckWatched(%s): %v", w.Name, err)
				}
			}
			if strings.Join(names, " ") != strings.Join(tt.want, " ") || len(idx.asked) != tt.wantAsked {
				t.Errorf("names %q, asked %q; want %q, %d asked", names, idx.asked, tt.want, tt.wantAsked)
			}
		})
	}
}
