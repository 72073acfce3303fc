package main

import (
	"cmp"
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/agent-trust-registry/atr/agent"
	"github.com/agent-trust-registry/atr/api"
	"github.com/agent-trust-registry/atr/ca"
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
// intermediate ca.SelectIssuing chooses (the newest valid one issued by a
// root on the token whose key is on the token), or, with ATR_ISSUING_KEY,
// the same choice among the intermediates of that key; the key must pass
// hsm CheckKey (matching public key, sensitive, never extractable). The
// earlier intermediates ca.PreviousIssuing keeps answering come with it.
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
	keys := newTokenKeys(ctx, tok, cfg.PKCS11Token, intermediates)
	find := keys.find
	what := "finding the issuing key"
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
		find = func(*x509.Certificate) (crypto.Signer, error) { return s, nil } // ca keeps only its intermediates
		what = fmt.Sprintf("issuing key %s", u)
	}
	sel, root, err := ca.SelectIssuing(m.roots, m.intermediates, now, find)
	if err != nil {
		return nil, fmt.Errorf("%s: %w (run scripts/ceremony/intermediate.sh)", what, err)
	}
	if m.signer, m.issuing, err = keys.checked(sel); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	m.chain = []*x509.Certificate{root}
	prev, err := ca.PreviousIssuing(m.roots, m.intermediates, sel.Cert, now, keys.find)
	if err != nil {
		return nil, fmt.Errorf("finding the keys of earlier intermediates: %w", err)
	}
	for _, p := range prev {
		s, _, err := keys.checked(p)
		if err != nil {
			return nil, fmt.Errorf("earlier intermediate: %w", err)
		}
		m.previous = append(m.previous, previousCA{signer: s, cert: p.Cert})
	}
	return m, nil
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
With --debug-listen (loopback only), a third serves Go's runtime profiles
for performance work: go tool pprof http://127.0.0.1:6060/debug/pprof/profile
Stops gracefully on SIGTERM or SIGINT.`,
		`ATR_DATA_DIR=./var ATR_LISTEN=127.0.0.1:8443 atr serve
atr serve --database-url postgres://atr@db:5432/atr --public-url https://atr.example.org --listen :8443
atr serve --debug-listen 127.0.0.1:6060   # then: curl -o trace.out 'http://127.0.0.1:6060/debug/pprof/trace?seconds=2'`)
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
		var getCert func(*tls.ClientHelloInfo) (*tls.Certificate, error)
		if cfg.TLSCert != "" {
			files, err := api.NewCertificateFiles(cfg.TLSCert, cfg.TLSKey, a.now, log.WithField("component", "tls"))
			if err != nil {
				return err
			}
			getCert = files.GetCertificate
		} else {
			dns, ips, err := serverNames(cfg)
			if err != nil {
				return err
			}
			self, err := reg.ServerTLS(ctx, dns, ips)
			if err != nil {
				return err
			}
			getCert = self.GetCertificate
		}
		srv.TLSConfig = api.TLSConfig(getCert, m.rootPool())
	} else {
		log.Warn("serving plain HTTP (--insecure-http): only behind a TLS-terminating proxy")
	}

	ln, err := a.listenTCP(cfg.Listen)
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
	// The loopback debug listener (Go's profiles), when configured.
	var debugSrv *http.Server
	var debugLn net.Listener
	if cfg.DebugListen != "" {
		if debugLn, err = listenDebug(cfg.DebugListen); err != nil {
			ln.Close()
			if distLn != nil {
				distLn.Close()
			}
			return fmt.Errorf("listening on %s (debug): %w", cfg.DebugListen, err)
		}
		debugSrv = newDebugServer(log)
	}
	servers := []*http.Server{srv}
	errc := make(chan error, 3)
	go func() {
		// One write an answer over HTTP/1.1, with TLS or behind a
		// TLS-terminating proxy (api/coalesce.go).
		if srv.TLSConfig != nil {
			errc <- srv.ServeTLS(api.CoalescingListener(ln), "", "")
		} else {
			errc <- srv.Serve(api.CoalescingListener(ln))
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
	if debugSrv != nil {
		servers = append(servers, debugSrv)
		go func() { errc <- debugSrv.Serve(debugLn) }()
		log.WithField("listen", debugLn.Addr().String()).Warn("debug listener serving Go's runtime profiles under /debug/pprof/ over plain http, without authentication (loopback only)")
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
		if s == debugSrv {
			// A profile runs for its seconds, whatever Shutdown waits for:
			// the debug listener's requests are cut, not drained.
			s.Close()
			continue
		}
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
	return agent.WriteFile(p, ca.EncodeCertificatesPEM(ca.Bundle(m.roots, m.intermediates, now)...), publicFileMode, true)
}
