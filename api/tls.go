package api

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
)

// CertificateFilesReload is how often CertificateFiles checks its files for
// changes.
const CertificateFilesReload = time.Minute

// CertificateFiles serves an operator-supplied certificate chain and key (PEM
// files), reloading them (at most once per CertificateFilesReload) when the
// files change, so that an external renewer needs no restart. A reload that
// fails keeps the current certificate. Use GetCertificate as
// tls.Config.GetCertificate.
type CertificateFiles struct {
	certFile, keyFile string
	now               func() time.Time
	log               *logrus.Entry

	mu        sync.Mutex
	current   *tls.Certificate
	modTime   time.Time
	checkedAt time.Time
}

// NewCertificateFiles loads certFile and keyFile (failing now, not on the
// first handshake) and warns when the key file is readable by others.
func NewCertificateFiles(certFile, keyFile string, now func() time.Time, log *logrus.Entry) (*CertificateFiles, error) {
	o := &CertificateFiles{certFile: certFile, keyFile: keyFile, now: now, log: log}
	if fi, err := os.Stat(keyFile); err == nil && fi.Mode().Perm()&0o077 != 0 {
		log.WithField("file", keyFile).Warn("the TLS key file is readable by group or others; use mode 0600")
	}
	if _, err := o.get(); err != nil {
		return nil, err
	}
	return o, nil
}

// GetCertificate returns the current certificate, reloaded when due.
func (o *CertificateFiles) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return o.get()
}

func (o *CertificateFiles) get() (*tls.Certificate, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	now := o.now()
	if o.current != nil && now.Sub(o.checkedAt) < CertificateFilesReload {
		return o.current, nil
	}
	o.checkedAt = now
	mt, err := newestModTime(o.certFile, o.keyFile)
	if err == nil && o.current != nil && !mt.After(o.modTime) {
		return o.current, nil
	}
	c, err := tls.LoadX509KeyPair(o.certFile, o.keyFile)
	if err != nil {
		if o.current != nil {
			o.log.WithError(err).Warn("reloading the TLS certificate failed; serving the current one")
			return o.current, nil
		}
		return nil, fmt.Errorf("api: loading the TLS certificate %s and key %s: %w", o.certFile, o.keyFile, err)
	}
	o.current, o.modTime = &c, mt
	o.log.WithFields(logrus.Fields{"cert": o.certFile, "not_after": c.Leaf.NotAfter.UTC().Format(time.RFC3339)}).Info("loaded the operator TLS certificate")
	return o.current, nil
}

func newestModTime(files ...string) (time.Time, error) {
	var t time.Time
	for _, f := range files {
		fi, err := os.Stat(f)
		if err != nil {
			return time.Time{}, err
		}
		if fi.ModTime().After(t) {
			t = fi.ModTime()
		}
	}
	return t, nil
}

// TLSConfig is the server's TLS configuration: TLS 1.2 or later, AEAD
// ECDHE suites only for TLS 1.2 (TLS 1.3 suites are fixed by Go), and client
// certificates requested and, when given, verified against the token-held
// roots (mTLS renewal).
func TLSConfig(getCertificate func(*tls.ClientHelloInfo) (*tls.Certificate, error), clientRoots *x509.CertPool) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		CipherSuites: []uint16{
			tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
			tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
		},
		GetCertificate: getCertificate,
		ClientAuth:     tls.VerifyClientCertIfGiven,
		ClientCAs:      clientRoots,
		NextProtos:     []string{"h2", "http/1.1"},
		// A connection from CoalescingListener whose client offers "h2"
		// (which the server then picks) writes straight through.
		GetConfigForClient: markHTTP2,
	}
}
