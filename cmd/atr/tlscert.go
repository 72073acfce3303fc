package main

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/url"
	"os"
	"sync"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/agent-trust-registry/atr/ca"
	"github.com/agent-trust-registry/atr/registry"
)

// Server certificate policy: the server's own TLS certificate is issued by
// the intermediate for serverCertLifetime and replaced once two thirds of
// its life have passed, without a restart.
const (
	serverCertLifetime  = 24 * time.Hour
	operatorReloadEvery = time.Minute
	// serverCertTimeout bounds one issuance of the server certificate (the
	// token signs, the database commits twice); handshakes wait meanwhile.
	serverCertTimeout = 15 * time.Second
)

// certSource is what tls.Config.GetCertificate calls.
type certSource interface {
	GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error)
}

// serverCertIssuer issues the server's TLS certificate through the issuance
// pipeline: *registry.Registry (record before sign, lint, transparency log,
// audit). Nothing in cmd/atr signs with the issuing key itself.
type serverCertIssuer interface {
	IssueServerCertificate(ctx context.Context, pub crypto.PublicKey, dns []string, ips []net.IP, lifetime time.Duration) (*registry.ServerCertificate, error)
}

// selfIssued serves the server's TLS certificate, issued by the registry
// (IssueServerCertificate) under the intermediate, and renews it once two
// thirds of its life have passed. The TLS private key is an in-memory ECDSA
// P-256 key, regenerated on every renewal; only its public key goes to the
// registry, and the CA key stays on the token.
type selfIssued struct {
	issuer serverCertIssuer
	dns    []string
	ips    []net.IP
	now    func() time.Time
	log    *logrus.Entry

	mu      sync.Mutex
	current *tls.Certificate
	renewAt time.Time
}

// newSelfIssued issues the first certificate (on ctx) so that serve fails
// at start-up, not on the first handshake.
func newSelfIssued(ctx context.Context, issuer serverCertIssuer, dns []string, ips []net.IP, now func() time.Time, log *logrus.Entry) (*selfIssued, error) {
	s := &selfIssued{issuer: issuer, dns: dns, ips: ips, now: now, log: log}
	if _, err := s.get(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// GetCertificate returns the current certificate, renewing it first when it
// is due. The renewal is the server's work, not the client's: it runs on
// the handshake's context without its cancellation (bounded by
// serverCertTimeout), so a client that hangs up does not abandon it.
func (s *selfIssued) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	ctx := context.Background() // tests call it without a ClientHelloInfo; crypto/tls never does
	if hello != nil {
		ctx = context.WithoutCancel(hello.Context())
	}
	return s.get(ctx)
}

func (s *selfIssued) get(ctx context.Context) (*tls.Certificate, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	if s.current != nil && now.Before(s.renewAt) {
		return s.current, nil
	}
	c, sc, err := s.issue(ctx)
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
	s.log.WithFields(logrus.Fields{"serial": sc.Serial, "fingerprint": sc.FingerprintSHA256, "log_index": sc.LogIndex,
		"not_after": c.Leaf.NotAfter.UTC().Format(time.RFC3339), "dns": s.dns, "ips": fmt.Sprint(s.ips)}).Info("issued the server TLS certificate")
	return c, nil
}

// issue generates a fresh key and has the registry issue its certificate.
func (s *selfIssued) issue(ctx context.Context) (*tls.Certificate, *registry.ServerCertificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generating the server TLS key: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, serverCertTimeout)
	defer cancel()
	sc, err := s.issuer.IssueServerCertificate(ctx, key.Public(), s.dns, s.ips, serverCertLifetime)
	if err != nil {
		return nil, nil, fmt.Errorf("issuing the server certificate: %w", err)
	}
	chain := [][]byte{sc.Certificate.Raw}
	for _, c := range sc.Chain {
		chain = append(chain, c.Raw)
	}
	return &tls.Certificate{Certificate: chain, PrivateKey: key, Leaf: sc.Certificate}, sc, nil
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
// host name, the public URL's host and the operator's extra names. A DNS
// name is kept in its ca.NormalizeAgentName form (lowercase, DNS-label
// rules) when it has one, and dropped otherwise; the result passes
// ca.ValidateServerNames, the rule the registry issues by.
func serverNames(cfg Config) ([]string, []net.IP, error) {
	var (
		dns  []string
		ips  []net.IP
		seen = map[string]bool{}
	)
	add := func(n string) {
		if ip := net.ParseIP(n); ip != nil {
			if k := ip.String(); !ip.IsUnspecified() && !seen[k] {
				seen[k] = true
				ips = append(ips, ip)
			}
			return
		}
		if d, err := ca.NormalizeAgentName(n); err == nil && !seen[d] {
			seen[d] = true
			dns = append(dns, d)
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
		add(h)
	}
	if u, err := url.Parse(cfg.PublicURL); err == nil {
		add(u.Hostname())
	}
	for _, n := range cfg.TLSNames {
		add(n)
	}
	if err := ca.ValidateServerNames(dns, ips); err != nil {
		return nil, nil, fmt.Errorf("names for the server certificate: %w", err)
	}
	return dns, ips, nil
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
