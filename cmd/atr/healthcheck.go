package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"
)

func runHealthcheck(ctx context.Context, a *app, args []string) error {
	fs := a.newFlagSet("healthcheck", "healthcheck [flags]",
		`GET /healthz of the server at ATR_LISTEN (a wildcard listen address is
reached via 127.0.0.1) over TLS, trusting DATA_DIR/ca/bundle.pem. Exits 0
when the server answers 200 and 1 otherwise. Needs no curl: this is the
container image's HEALTHCHECK.`,
		`atr healthcheck --data-dir ./var --listen 127.0.0.1:8443 && echo healthy`)
	bundle := fs.String("ca-bundle", "", "PEM file of the CA certificates to trust (default DATA_DIR/ca/bundle.pem)")
	timeout := fs.Duration("timeout", 5*time.Second, "give up after this long")
	cfg, err := a.loadConfig(fs, optCommon|optListen, args)
	if err != nil {
		return err
	}
	if *bundle == "" {
		*bundle = filepath.Join(cfg.DataDir, caDirName, bundlePEMName)
	}
	url, client, err := healthClient(cfg, *bundle, *timeout)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("building the request: %w", err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("unhealthy: %w", err)
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("unhealthy: %s answered %s", url, resp.Status)
	}
	fmt.Fprintf(a.stdout, "healthy: %s\n", url)
	return nil
}

// healthClient returns the /healthz URL for cfg.Listen and a client that
// trusts only the CA bundle.
func healthClient(cfg Config, bundleFile string, timeout time.Duration) (string, *http.Client, error) {
	host, port, err := net.SplitHostPort(cfg.Listen)
	if err != nil {
		return "", nil, fmt.Errorf("listen address %q: %w", cfg.Listen, err)
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	tr := &http.Transport{Proxy: nil, TLSHandshakeTimeout: timeout, DisableKeepAlives: true}
	scheme := "http"
	if !cfg.InsecureHTTP {
		scheme = "https"
		pemData, err := os.ReadFile(bundleFile)
		if err != nil {
			return "", nil, fmt.Errorf("reading the CA bundle: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pemData) {
			return "", nil, fmt.Errorf("the CA bundle %s holds no certificate", bundleFile)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12, ServerName: host}
	}
	return scheme + "://" + net.JoinHostPort(host, port) + "/healthz", &http.Client{Transport: tr, Timeout: timeout}, nil
}
