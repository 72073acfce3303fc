package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	neturl "net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

func runHealthcheck(ctx context.Context, a *app, args []string) error {
	fs := a.newFlagSet("healthcheck", "healthcheck [--server URL | --listen HOST:PORT] [flags]",
		`GET /healthz of the registry and exit 0 when it answers 200, 1 otherwise.
Needs no curl: this is the container image's HEALTHCHECK.

The server is --server (ATR_SERVER), a base URL such as https://atr.example.org:8443,
when set; otherwise the local server at --listen (ATR_LISTEN; a wildcard
address is reached via 127.0.0.1). A flag on the command line wins over the
environment. Over TLS the server must chain to --ca-bundle (ATR_CA_BUNDLE;
default DATA_DIR/ca/bundle.pem, or with --server the system roots when that
file does not exist).`,
		`atr healthcheck --data-dir ./var --listen 127.0.0.1:8443 && echo healthy
ATR_SERVER=https://127.0.0.1:8443 ATR_CA_BUNDLE=./var/ca/bundle.pem atr healthcheck`)
	var o agentOpts
	o.bind(fs, a.lookupEnv, afServer|afCABundle)
	fs.Lookup("ca-bundle").Usage = "PEM file of the CA certificates to trust (default DATA_DIR/ca/bundle.pem) (env ATR_CA_BUNDLE)"
	timeout := fs.Duration("timeout", 5*time.Second, "give up after this long")
	cfg, err := a.loadConfigUsage(fs, optCommon|optListen, map[string]string{
		"listen":        "host:port of the local server to check, when --server is not set",
		"insecure-http": "the local server speaks plain HTTP (it runs with --insecure-http)",
	}, args)
	if err != nil {
		return err
	}
	onCommandLine := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { onCommandLine[f.Name] = true })
	useServer := o.server != "" && (onCommandLine["server"] || !onCommandLine["listen"])
	var (
		url    string
		client *http.Client
	)
	if useServer {
		url, client, err = serverHealthClient(o.server, o.caBundle, filepath.Join(cfg.DataDir, caDirName, bundlePEMName), *timeout)
	} else {
		bundle := o.caBundle
		if bundle == "" {
			bundle = filepath.Join(cfg.DataDir, caDirName, bundlePEMName)
		}
		url, client, err = healthClient(cfg, bundle, *timeout)
	}
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

// serverHealthClient returns the /healthz URL under the base URL server and a
// client trusting bundleFile, else defaultBundle when it exists, else the
// system roots.
func serverHealthClient(server, bundleFile, defaultBundle string, timeout time.Duration) (string, *http.Client, error) {
	u, err := neturl.Parse(strings.TrimRight(server, "/"))
	if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") || u.RawQuery != "" || u.Fragment != "" {
		return "", nil, usagef("--server %q: want https://host[:port]", server)
	}
	tr := &http.Transport{Proxy: nil, TLSHandshakeTimeout: timeout, DisableKeepAlives: true}
	if u.Scheme == "https" {
		if bundleFile == "" {
			if _, err := os.Stat(defaultBundle); err == nil {
				bundleFile = defaultBundle
			}
		}
		tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
		if bundleFile != "" {
			pool, err := loadCertPool(bundleFile)
			if err != nil {
				return "", nil, err
			}
			tr.TLSClientConfig.RootCAs = pool
		}
	}
	return u.String() + "/healthz", &http.Client{Transport: tr, Timeout: timeout}, nil
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
