package main

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/agent-trust-registry/atr/ca"
)

// Server certificate policy: the server's own TLS certificate is issued by
// the intermediate for serverCertLifetime and replaced once two thirds of
// its life have passed, without a restart.
const (
	serverCertLifetime  = 24 * time.Hour
	operatorReloadEvery = time.Minute
)

// certSource is what tls.Config.GetCertificate calls.
type certSource interface {
	GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error)
}

// selfIssued issues the server's TLS certificate from the intermediate and
// renews it before it expires. The TLS private key is an in-memory ECDSA
// P-256 key, regenerated on every renewal; the CA key stays on the token.
type selfIssued struct {
	signer crypto.Signer     // the issuing key on the token
	issuer *x509.Certificate // the intermediate
	chain  [][]byte          // DER of the intermediate (what clients need after the leaf)
	dns    []string
	ips    []net.IP
	now    func() time.Time
	log    *logrus.Entry

	mu      sync.Mutex
	current *tls.Certificate
	renewAt time.Time
}

func newSelfIssued(signer crypto.Signer, issuer *x509.Certificate, dns []string, ips []net.IP, now func() time.Time, log *logrus.Entry) (*selfIssued, error) {
	s := &selfIssued{signer: signer, issuer: issuer, chain: [][]byte{issuer.Raw}, dns: dns, ips: ips, now: now, log: log}
	if _, err := s.get(); err != nil { // fail at start-up, not on the first handshake
		return nil, err
	}
	return s, nil
}

func (s *selfIssued) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) { return s.get() }

func (s *selfIssued) get() (*tls.Certificate, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	if s.current != nil && now.Before(s.renewAt) {
		return s.current, nil
	}
	c, err := s.issue(now)
	if err != nil {
		if s.current != nil && now.Before(s.current.Leaf.NotAfter) {
			s.log.WithError(err).Warn("renewing the server certificate failed; serving the current one")
			s.renewAt = now.Add(time.Minute) // retry soon, not on every handshake
			return s.current, nil
		}
		return nil, err
	}
	s.current = c
	life := c.Leaf.NotAfter.Sub(c.Leaf.NotBefore)
	s.renewAt = c.Leaf.NotBefore.Add(life * 2 / 3)
	s.log.WithFields(logrus.Fields{"serial": ca.FormatSerial(c.Leaf.SerialNumber), "not_after": c.Leaf.NotAfter.UTC().Format(time.RFC3339), "dns": s.dns, "ips": fmt.Sprint(s.ips)}).Info("issued the server TLS certificate")
	return c, nil
}

func (s *selfIssued) issue(now time.Time) (*tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating the server TLS key: %w", err)
	}
	life := serverCertLifetime
	if until := s.issuer.NotAfter.Sub(now); until < life {
		life = until - time.Minute
	}
	if life < 10*time.Minute {
		return nil, fmt.Errorf("the intermediate expires at %s: too soon to issue a server certificate (rotate the intermediate)", s.issuer.NotAfter.UTC().Format(time.RFC3339))
	}
	tmpl, err := ca.ServerTemplate(s.dns, s.ips, life, now)
	if err != nil {
		return nil, fmt.Errorf("building the server certificate template: %w", err)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, s.issuer, key.Public(), s.signer)
	if err != nil {
		return nil, fmt.Errorf("signing the server certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parsing the server certificate: %w", err)
	}
	if err := leaf.CheckSignatureFrom(s.issuer); err != nil {
		return nil, fmt.Errorf("the token produced a bad server certificate signature: %w", err)
	}
	return &tls.Certificate{Certificate: append([][]byte{der}, s.chain...), PrivateKey: key, Leaf: leaf}, nil
}

// operatorFiles serves an operator-supplied certificate and key, reloading
// them (at most once a minute) when the files change, so that an external
// renewer needs no restart.
type operatorFiles struct {
	certFile, keyFile string
	now               func() time.Time
	log               *logrus.Entry

	mu        sync.Mutex
	current   *tls.Certificate
	modTime   time.Time
	checkedAt time.Time
}

func newOperatorFiles(certFile, keyFile string, now func() time.Time, log *logrus.Entry) (*operatorFiles, error) {
	o := &operatorFiles{certFile: certFile, keyFile: keyFile, now: now, log: log}
	if fi, err := os.Stat(keyFile); err == nil && fi.Mode().Perm()&0o077 != 0 {
		log.WithField("file", keyFile).Warn("the TLS key file is readable by group or others; use mode 0600")
	}
	if _, err := o.get(); err != nil {
		return nil, err
	}
	return o, nil
}

func (o *operatorFiles) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return o.get()
}

func (o *operatorFiles) get() (*tls.Certificate, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	now := o.now()
	if o.current != nil && now.Sub(o.checkedAt) < operatorReloadEvery {
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
		return nil, fmt.Errorf("loading --tls-cert/--tls-key: %w", err)
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

// serverNames are the names the self-issued certificate covers: the listen
// host (unless it is a wildcard address), localhost, 127.0.0.1, ::1, the
// host name, the public URL's host and the operator's extra names.
func serverNames(cfg Config) ([]string, []net.IP, error) {
	var (
		dns  []string
		ips  []net.IP
		seen = map[string]bool{}
	)
	add := func(n string) {
		if n == "" || seen[n] {
			return
		}
		seen[n] = true
		if ip := net.ParseIP(n); ip != nil {
			if !ip.IsUnspecified() {
				ips = append(ips, ip)
			}
			return
		}
		if checkTrustDomain(n) == nil {
			dns = append(dns, n)
		}
	}
	host, _, err := net.SplitHostPort(cfg.Listen)
	if err != nil {
		return nil, nil, fmt.Errorf("listen address %q: %w", cfg.Listen, err)
	}
	add(host)
	add("localhost")
	add("127.0.0.1")
	add("::1")
	if h, err := os.Hostname(); err == nil {
		add(toLowerASCII(h))
	}
	if u, err := url.Parse(cfg.PublicURL); err == nil {
		add(toLowerASCII(u.Hostname()))
	}
	for _, n := range cfg.TLSNames {
		add(toLowerASCII(n))
	}
	if len(dns) == 0 && len(ips) == 0 {
		return nil, nil, errors.New("no names for the server certificate")
	}
	return dns, ips, nil
}

func toLowerASCII(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'A' && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// tlsConfig is the server's TLS configuration: TLS 1.2 or later, AEAD
// ECDHE suites only for TLS 1.2 (TLS 1.3 suites are fixed by Go), and client
// certificates requested and, when given, verified against the token-held
// roots (mTLS renewal).
func tlsConfig(certs certSource, clientRoots *x509.CertPool) *tls.Config {
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
		GetCertificate: certs.GetCertificate,
		ClientAuth:     tls.VerifyClientCertIfGiven,
		ClientCAs:      clientRoots,
		NextProtos:     []string{"h2", "http/1.1"},
	}
}
