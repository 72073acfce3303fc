package api

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
)

// writeKeyPair writes a fresh self-signed certificate and its key to
// certFile and keyFile, with the given modification time, and returns the
// certificate's serial.
func writeKeyPair(t *testing.T, certFile, keyFile string, serial int64, mtime time.Time) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: "operator"},
		DNSNames: []string{"atr.example"}, NotBefore: mtime.Add(-time.Hour), NotAfter: mtime.Add(24 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []struct {
		path, typ string
		der       []byte
	}{{certFile, "CERTIFICATE", der}, {keyFile, "PRIVATE KEY", kder}} {
		if err := os.WriteFile(f.path, pem.EncodeToMemory(&pem.Block{Type: f.typ, Bytes: f.der}), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(f.path, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
}

// TestCertificateFiles: an operator's certificate is served, replaced after
// its files change (at most once per CertificateFilesReload), kept when a
// reload fails, and refused at start-up when it cannot be loaded.
func TestCertificateFiles(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	now := start
	clock := func() time.Time { return now }
	log := logrus.New()
	log.SetOutput(io.Discard)

	if _, err := NewCertificateFiles(certFile, keyFile, clock, logrus.NewEntry(log)); err == nil {
		t.Fatal("NewCertificateFiles without files succeeded")
	}
	writeKeyPair(t, certFile, keyFile, 1, start)
	files, err := NewCertificateFiles(certFile, keyFile, clock, logrus.NewEntry(log))
	if err != nil {
		t.Fatal(err)
	}
	serial := func() int64 {
		t.Helper()
		c, err := files.GetCertificate(&tls.ClientHelloInfo{})
		if err != nil {
			t.Fatal(err)
		}
		return c.Leaf.SerialNumber.Int64()
	}
	if got := serial(); got != 1 {
		t.Fatalf("serving serial %d, want 1", got)
	}
	// Renewed on disk: not looked at before the reload interval, then served.
	writeKeyPair(t, certFile, keyFile, 2, start.Add(time.Second))
	now = start.Add(CertificateFilesReload / 2)
	if got := serial(); got != 1 {
		t.Errorf("before the reload interval: serial %d, want 1", got)
	}
	now = start.Add(CertificateFilesReload + time.Second)
	if got := serial(); got != 2 {
		t.Errorf("after the files changed: serial %d, want 2", got)
	}
	// A half-written renewal (garbage) keeps the current certificate.
	if err := os.WriteFile(certFile, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(certFile, start.Add(time.Hour), start.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	now = now.Add(2 * CertificateFilesReload)
	if got := serial(); got != 2 {
		t.Errorf("after a failed reload: serial %d, want the current 2", got)
	}
}

func TestTLSConfig(t *testing.T) {
	c := TLSConfig(func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return nil, nil }, x509.NewCertPool())
	if c.MinVersion != tls.VersionTLS12 || c.ClientAuth != tls.VerifyClientCertIfGiven || c.GetCertificate == nil || c.ClientCAs == nil {
		t.Errorf("TLSConfig = %+v", c)
	}
	for _, s := range c.CipherSuites {
		for _, insecure := range tls.InsecureCipherSuites() {
			if s == insecure.ID {
				t.Errorf("insecure suite %s", insecure.Name)
			}
		}
	}
}
