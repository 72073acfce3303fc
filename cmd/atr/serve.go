package main

import (
	"cmp"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/agent-trust-registry/atr/hsm"
)

// HTTP server limits.
const (
	readHeaderTimeout = 10 * time.Second
	readTimeout       = 30 * time.Second
	writeTimeout      = 60 * time.Second
	idleTimeout       = 120 * time.Second
	maxHeaderBytes    = 32 << 10
	shutdownTimeout   = 30 * time.Second
)

// caMaterial is what serve loads from the online token at start-up.
type caMaterial struct {
	signer        *hsm.Signer
	issuing       hsm.TokenCertificate
	roots         []*x509.Certificate // self-signed certificates on the token: the trust anchors
	intermediates []*x509.Certificate // every intermediate on the token, newest first
	chain         []*x509.Certificate // above the issuing certificate: its root
	// previous are the earlier issuing CAs still valid whose keys are on the
	// token: each keeps answering CRL and OCSP for the leaves it issued.
	previous []previousCA
}

// previousCA is an intermediate replaced by a rotation, with its key.
type previousCA struct {
	signer *hsm.Signer
	cert   *x509.Certificate
}

// loadCA finds the issuing key and certificates on the online token: the
// configured ATR_ISSUING_KEY, or the newest valid intermediate whose key is
// on the token; the key must pass hsm CheckKey (matching public key,
// sensitive, never extractable).
func loadCA(ctx context.Context, cfg Config, tok *hsm.Token, now time.Time) (*caMaterial, error) {
	certs, err := tok.Certificates(ctx)
	if err != nil {
		return nil, fmt.Errorf("listing the certificates on token %q: %w", cfg.PKCS11Token, err)
	}
	roots, intermediates := splitCAs(certs)
	if len(roots) == 0 {
		return nil, fmt.Errorf("token %q holds no root certificate (run the ceremonies: scripts/ceremony/root.sh, intermediate.sh)", cfg.PKCS11Token)
	}
	m := &caMaterial{roots: certsOf(roots), intermediates: certsOf(intermediates)}
	if cfg.IssuingKey != "" {
		u, err := hsm.ParseURI(cfg.IssuingKey)
		if err != nil {
			return nil, fmt.Errorf("issuing key: %w", err)
		}
		if u.Token == "" {
			u.Token = cfg.PKCS11Token
		}
		s, err := tok.Signer(ctx, u)
		if err != nil {
			return nil, fmt.Errorf("issuing key %s: %w", u, err)
		}
		for _, c := range intermediates {
			if samePublicKey(s.Public(), c.Cert.PublicKey) {
				m.signer, m.issuing = s, c
				break
			}
		}
		if m.signer == nil {
			return nil, fmt.Errorf("issuing key %s: no intermediate certificate on the token matches it", u)
		}
		if err := tok.CheckKey(ctx, s, m.issuing.Cert); err != nil {
			return nil, fmt.Errorf("issuing key %s: %w", u, err)
		}
	} else {
		m.signer, m.issuing, err = findCAKey(ctx, tok, cfg.PKCS11Token, "", intermediates, now)
		if err != nil {
			return nil, fmt.Errorf("finding the issuing key: %w (run scripts/ceremony/intermediate.sh)", err)
		}
	}
	for _, r := range m.roots {
		if m.issuing.Cert.CheckSignatureFrom(r) == nil {
			m.chain = []*x509.Certificate{r}
			break
		}
	}
	if m.chain == nil {
		return nil, fmt.Errorf("the issuing certificate %q was not signed by any root on token %q", m.issuing.Label, cfg.PKCS11Token)
	}
	if m.previous, err = previousCAs(ctx, cfg, tok, intermediates, m.issuing, now); err != nil {
		return nil, err
	}
	return m, nil
}

// previousCAs finds, among the intermediates on the token other than the
// issuing one, those still valid at now whose private key is on the token:
// their leaves may still be valid, so their CRLs and OCSP answers go on.
func previousCAs(ctx context.Context, cfg Config, tok *hsm.Token, intermediates []hsm.TokenCertificate, issuing hsm.TokenCertificate, now time.Time) ([]previousCA, error) {
	var out []previousCA
	for _, c := range intermediates {
		if c.Cert.Equal(issuing.Cert) || now.After(c.Cert.NotAfter) || now.Before(c.Cert.NotBefore) {
			continue
		}
		s, err := tok.Signer(ctx, hsm.URI{Token: cfg.PKCS11Token, Object: c.Label, ID: c.ID})
		if errors.Is(err, hsm.ErrKeyNotFound) {
			continue // its key was destroyed: nothing can sign for it
		}
		if err != nil {
			return nil, fmt.Errorf("finding the key of the earlier intermediate %q: %w", c.Label, err)
		}
		if !samePublicKey(s.Public(), c.Cert.PublicKey) {
			continue
		}
		if err := tok.CheckKey(ctx, s, c.Cert); err != nil {
			return nil, fmt.Errorf("checking the key of the earlier intermediate %q: %w", c.Label, err)
		}
		out = append(out, previousCA{signer: s, cert: c.Cert})
	}
	return out, nil
}

func (m *caMaterial) rootPool() *x509.CertPool {
	p := x509.NewCertPool()
	for _, r := range m.roots {
		p.AddCert(r)
	}
	return p
}

func runServe(ctx context.Context, a *app, args []string) error {
	fs := a.newFlagSet("serve", "serve [flags]",
		`Run the registry. Logs into the online (issuing) token only, checks the
issuing key (public key matches its certificate, sensitive, never
extractable), migrates the database, reconciles issuances left pending by a
crash, and serves the REST API over HTTPS (TLS 1.2+) with a server
certificate issued by the intermediate and renewed without a restart (or the
operator's --tls-cert/--tls-key). Plain HTTP only with --insecure-http.
With --http-listen, a second, plain-http listener serves only the CRL, OCSP
and the CA bundle, and new certificates name its URLs (--http-public-url).
Stops gracefully on SIGTERM or SIGINT.`,
		`ATR_DATA_DIR=./var ATR_LISTEN=127.0.0.1:8443 atr serve
atr serve --database-url postgres://atr@db:5432/atr --public-url https://atr.example.org --listen :8443`)
	cfg, err := a.loadConfig(fs, optCommon|optToken|optDatabase|optServe, args)
	if err != nil {
		return err
	}
	log := newLogger(a.stderr, cfg.LogLevel)
	if err := a.useDevSoftHSMConf(cfg, log); err != nil {
		return err
	}

	tok, err := openIssuingToken(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer tok.Close()
	m, err := loadCA(ctx, cfg, tok, a.now())
	if err != nil {
		return err
	}
	log.WithFields(logrus.Fields{"issuing_key": m.signer.URI().String(), "issuing_not_after": m.issuing.Cert.NotAfter.UTC().Format(time.RFC3339), "roots": len(m.roots)}).Info("issuing key checked")
	if err := writeBundleIfMissing(cfg, m, a.now()); err != nil {
		log.WithError(err).Warn("could not write the CA bundle file for healthcheck")
	}

	apiSrv, reg, closeHandler, err := buildHandler(ctx, cfg, tok, m, a.now, log)
	if err != nil {
		return err
	}
	defer closeHandler()

	newServer := func(h http.Handler) *http.Server {
		return &http.Server{
			Handler:           h,
			ReadHeaderTimeout: cmp.Or(a.readHeaderTimeout, readHeaderTimeout),
			ReadTimeout:       readTimeout,
			WriteTimeout:      writeTimeout,
			IdleTimeout:       idleTimeout,
			MaxHeaderBytes:    maxHeaderBytes,
			ErrorLog:          newStdLogger(log.WithField("component", "http")),
			BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
		}
	}
	srv := newServer(apiSrv.Handler())
	if !cfg.InsecureHTTP {
		var certs certSource
		if cfg.TLSCert != "" {
			certs, err = newOperatorFiles(cfg.TLSCert, cfg.TLSKey, a.now, log.WithField("component", "tls"))
		} else {
			dns, ips, nerr := serverNames(cfg)
			if nerr != nil {
				return nerr
			}
			certs, err = newSelfIssued(ctx, reg, dns, ips, a.now, log.WithField("component", "tls"))
		}
		if err != nil {
			return err
		}
		srv.TLSConfig = tlsConfig(certs, m.rootPool())
	} else {
		log.Warn("serving plain HTTP (--insecure-http): only behind a TLS-terminating proxy")
	}

	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", cfg.Listen, err)
	}
	// The plain-http distribution listener (CRL, OCSP, CA bundle), when configured.
	var distSrv *http.Server
	var distLn net.Listener
	if cfg.HTTPListen != "" {
		if distLn, err = net.Listen("tcp", cfg.HTTPListen); err != nil {
			ln.Close()
			return fmt.Errorf("listening on %s (http distribution): %w", cfg.HTTPListen, err)
		}
		distSrv = newServer(apiSrv.DistributionHandler())
	}
	servers := []*http.Server{srv}
	errc := make(chan error, 2)
	go func() {
		if srv.TLSConfig != nil {
			errc <- srv.ServeTLS(ln, "", "")
		} else {
			errc <- srv.Serve(ln)
		}
	}()
	scheme := "https"
	if cfg.InsecureHTTP {
		scheme = "http"
	}
	if distSrv != nil {
		servers = append(servers, distSrv)
		go func() { errc <- distSrv.Serve(distLn) }()
		log.WithFields(logrus.Fields{"listen": distLn.Addr().String(), "scheme": "http", "public_url": cfg.HTTPPublicURL}).Info("atr serving CRL, OCSP and CA certificates over http")
	}
	log.WithFields(logrus.Fields{"listen": ln.Addr().String(), "scheme": scheme, "public_url": cfg.PublicURL}).Info("atr serving")
	if a.ready != nil {
		a.ready <- ln.Addr().String()
	}

	select {
	case err := <-errc:
		for _, s := range servers {
			s.Close()
		}
		return fmt.Errorf("serving: %w", err)
	case <-ctx.Done():
	}
	log.Info("shutting down: draining in-flight requests")
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer cancel()
	var shutdownErr error
	for _, s := range servers {
		if err := s.Shutdown(sctx); err != nil && shutdownErr == nil {
			shutdownErr = fmt.Errorf("shutting down: %w", err)
		}
	}
	if shutdownErr != nil {
		return shutdownErr
	}
	for range servers {
		if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("serving: %w", err)
		}
	}
	log.Info("stopped")
	return nil
}

// writeBundleIfMissing leaves DATA_DIR/ca/bundle.pem for healthcheck when a
// ceremony run elsewhere did not (e.g. in a container). It is public data.
func writeBundleIfMissing(cfg Config, m *caMaterial, now time.Time) error {
	p := filepath.Join(cfg.DataDir, caDirName, bundlePEMName)
	if _, err := os.Stat(p); err == nil {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(p), publicDirMode); err != nil {
		return fmt.Errorf("creating %s: %w", filepath.Dir(p), err)
	}
	return writeFileAtomic(p, bundlePEM(m.roots, m.intermediates, now), publicFileMode)
}
