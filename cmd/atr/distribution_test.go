package main

import (
	"bytes"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"io"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"
)

// requireOpenSSL skips without openssl, except in CI, where it fails.
func requireOpenSSL(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("openssl"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("openssl is required in CI")
		}
		t.Skip("openssl not installed")
	}
}

// openssl runs openssl and returns its combined output; a non-zero exit fails t.
func openssl(t *testing.T, args ...string) string {
	t.Helper()
	out, err := exec.Command("openssl", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("openssl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func TestConfigHTTPDistribution(t *testing.T) {
	tests := []struct {
		name            string
		mutate          func(c *Config)
		wantErr         string
		wantRevocations string // revocationBase after Complete
	}{
		{"off: CRL and OCSP under the https public URL", func(c *Config) {}, "", "https://127.0.0.1:8443"},
		{"on: derived http URL", func(c *Config) { c.HTTPListen = "127.0.0.1:8080" }, "", "http://127.0.0.1:8080"},
		{"on: explicit http URL", func(c *Config) {
			c.HTTPListen, c.HTTPPublicURL = "0.0.0.0:8080", "http://pki.example.org/"
		}, "", "http://pki.example.org"},
		{"bad http listen", func(c *Config) { c.HTTPListen = "127.0.0.1" }, "ATR_HTTP_LISTEN", ""},
		{"http listen equals listen", func(c *Config) { c.HTTPListen = c.Listen }, "also the listen address", ""},
		{"https http public URL", func(c *Config) {
			c.HTTPListen, c.HTTPPublicURL = "127.0.0.1:8080", "https://pki.example.org"
		}, "scheme must be http", ""},
		{"http public URL with query", func(c *Config) {
			c.HTTPListen, c.HTTPPublicURL = "127.0.0.1:8080", "http://pki.example.org/?x=1"
		}, "query", ""},
		{"http public URL without http listen", func(c *Config) { c.HTTPPublicURL = "http://pki.example.org" }, "needs an http listen address", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := DefaultConfig()
			tt.mutate(&c)
			c.Complete()
			err := c.Validate()
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("Validate() = %v, want nil", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("Validate() = %v, want an error containing %q", err, tt.wantErr)
			}
			if tt.wantErr == "" {
				if got := c.revocationBase(); got != tt.wantRevocations {
					t.Errorf("revocationBase() = %q, want %q", got, tt.wantRevocations)
				}
			}
		})
	}
	t.Run("flag and environment", func(t *testing.T) {
		a, _, _ := testApp(map[string]string{"ATR_HTTP_LISTEN": "127.0.0.1:8080"})
		fs := a.newFlagSet("serve", "serve", "", "")
		cfg, err := a.loadConfig(fs, optCommon|optToken|optDatabase|optServe, []string{"--http-public-url", "http://pki.example.org"})
		if err != nil {
			t.Fatal(err)
		}
		if cfg.HTTPListen != "127.0.0.1:8080" || cfg.HTTPPublicURL != "http://pki.example.org" {
			t.Errorf("HTTPListen %q, HTTPPublicURL %q", cfg.HTTPListen, cfg.HTTPPublicURL)
		}
	})
	t.Run("serve --help names both", func(t *testing.T) {
		a, out, _ := testApp(nil)
		a.run(t.Context(), []string{"serve", "--help"})
		for _, s := range []string{"--http-listen", "ATR_HTTP_LISTEN", "--http-public-url", "ATR_HTTP_PUBLIC_URL"} {
			if !strings.Contains(out.String(), s) {
				t.Errorf("serve --help does not mention %s", s)
			}
		}
	})
}

// TestServeHTTPDistribution runs serve with --http-listen: a new agent
// certificate names the http CRL and OCSP URLs, openssl fetches and checks
// both over plain http (before and after a revocation), OCSP GET answers are
// cacheable with an ETag, and the http listener serves nothing else.
func TestServeHTTPDistribution(t *testing.T) {
	requireOpenSSL(t)
	d := ceremonies(t)
	apiKey := filepath.Join(d.dir, "team.apikey")
	d.mustAtr(t, "apikey", "create", "--owner", "billing-team", "--namespace", "acme", "--scopes", "agents:read,agents:write",
		"--expires-in", "24h", "--out", apiKey)
	httpAddr := freeAddr(t)
	addr, stop := startServe(t, d, "--http-listen", httpAddr)
	base := "http://" + httpAddr

	bundle := filepath.Join(d.dir, "ca", "bundle.pem")
	cl := *d
	cl.env = maps.Clone(d.env)
	cl.env["ATR_SERVER"], cl.env["ATR_CA_BUNDLE"] = "https://"+addr, bundle
	dir := t.TempDir()
	key, certPath := filepath.Join(dir, "bot.key"), filepath.Join(dir, "bot.pem")
	cl.mustAtr(t, "agent", "keygen", "--key", key)
	cl.mustAtr(t, "agent", "register", "--name", "bot.acme", "--api-key-file", apiKey, "--key", key, "--cert", certPath)
	certPEM, err := os.ReadFile(certPath)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(certPEM)
	if blk == nil {
		t.Fatalf("no PEM in %s", certPath)
	}
	leaf, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := leaf.OCSPServer, []string{base + "/v1/ocsp"}; !slices.Equal(got, want) {
		t.Fatalf("OCSP AIA %q, want %q", got, want)
	}
	issuerPath := filepath.Join(d.dir, "ca", "intermediate.pem")
	// The issuing certificate of this leaf is the one in intermediate.pem.
	issuerPEM, err := os.ReadFile(issuerPath)
	if err != nil {
		t.Fatal(err)
	}
	iblk, _ := pem.Decode(issuerPEM)
	issuer, err := x509.ParseCertificate(iblk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if err := leaf.CheckSignatureFrom(issuer); err != nil {
		t.Fatalf("the leaf is not signed by %s: %v", issuerPath, err)
	}
	// The CRL of the leaf's own issuer, named by its subject key identifier.
	if got, want := leaf.CRLDistributionPoints, []string{base + "/v1/crl/" + hex.EncodeToString(issuer.SubjectKeyId)}; !slices.Equal(got, want) {
		t.Fatalf("CRL distribution points %q, want %q", got, want)
	}

	ocspCheck := func(t *testing.T, want string) {
		t.Helper()
		out := openssl(t, "ocsp", "-issuer", issuerPath, "-cert", certPath, "-url", leaf.OCSPServer[0], "-CAfile", bundle, "-timeout", "30")
		if !strings.Contains(out, "Response verify OK") || !strings.Contains(out, certPath+": "+want) {
			t.Fatalf("openssl ocsp over http: want %q and a verified response:\n%s", want, out)
		}
	}
	crlCheck := func(t *testing.T) string {
		t.Helper()
		resp, err := http.Get(leaf.CRLDistributionPoints[0])
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		der, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/pkix-crl" {
			t.Fatalf("GET %s: %d %q %v", leaf.CRLDistributionPoints[0], resp.StatusCode, resp.Header.Get("Content-Type"), err)
		}
		p := filepath.Join(t.TempDir(), "crl.der")
		writeTestFile(t, p, der, 0o644)
		out := openssl(t, "crl", "-inform", "DER", "-in", p, "-CAfile", bundle, "-noout")
		if !strings.Contains(out, "verify OK") {
			t.Fatalf("openssl crl: %s", out)
		}
		return openssl(t, "crl", "-inform", "DER", "-in", p, "-noout", "-text")
	}

	t.Run("openssl ocsp over http: good", func(t *testing.T) { ocspCheck(t, "good") })
	t.Run("openssl crl from the CDP over http verifies", func(t *testing.T) { crlCheck(t) })
	t.Run("OCSP GET is cacheable until nextUpdate, with an ETag and 304", func(t *testing.T) {
		req, err := ocsp.CreateRequest(leaf, issuer, nil)
		if err != nil {
			t.Fatal(err)
		}
		u := leaf.OCSPServer[0] + "/" + base64.StdEncoding.EncodeToString(req)
		resp, err := http.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		r, err := ocsp.ParseResponseForCert(body, leaf, issuer)
		if err != nil || r.Status != ocsp.Good {
			t.Fatalf("OCSP GET: %v, status %v", err, r)
		}
		cc, etag := resp.Header.Get("Cache-Control"), resp.Header.Get("ETag")
		if !strings.HasPrefix(cc, "public, max-age=") || !strings.Contains(cc, "no-transform") || etag == "" {
			t.Fatalf("Cache-Control %q, ETag %q", cc, etag)
		}
		if exp, err := http.ParseTime(resp.Header.Get("Expires")); err != nil || !exp.Equal(r.NextUpdate) {
			t.Errorf("Expires %q (%v), want nextUpdate %v", resp.Header.Get("Expires"), err, r.NextUpdate)
		}
		hreq, _ := http.NewRequest("GET", u, nil)
		hreq.Header.Set("If-None-Match", etag)
		nm, err := http.DefaultClient.Do(hreq)
		if err != nil {
			t.Fatal(err)
		}
		nm.Body.Close()
		if nm.StatusCode != http.StatusNotModified {
			t.Errorf("If-None-Match: %d, want 304", nm.StatusCode)
		}
	})
	t.Run("the http listener serves nothing else", func(t *testing.T) {
		for _, p := range []string{"/v1/ca/bundle"} {
			resp, err := http.Get(base + p)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || !bytes.Contains(b, []byte("BEGIN CERTIFICATE")) {
				t.Errorf("GET %s: %d", p, resp.StatusCode)
			}
			if resp.Header.Get("Strict-Transport-Security") != "" {
				t.Errorf("GET %s over http sends HSTS", p)
			}
		}
		for _, p := range []string{"/healthz", "/v1/agents", "/v1/log/checkpoint", "/metrics"} {
			resp, err := http.Get(base + p)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusNotFound {
				t.Errorf("GET %s over http: %d, want 404", p, resp.StatusCode)
			}
		}
	})
	t.Run("a revocation shows on both channels over http", func(t *testing.T) {
		cl.mustAtr(t, "agent", "revoke", "--cert", certPath, "--reason", "keyCompromise", "--api-key-file", apiKey)
		ocspCheck(t, "revoked")
		serial := strings.ToUpper(leaf.SerialNumber.Text(16))
		// The CRL is re-signed on a revocation; allow the maintenance loop a moment.
		deadline := time.Now().Add(60 * time.Second)
		for text := crlCheck(t); !strings.Contains(strings.ToUpper(text), serial); text = crlCheck(t) {
			if time.Now().After(deadline) {
				t.Fatalf("serial %s not in the CRL:\n%s", serial, text)
			}
			time.Sleep(500 * time.Millisecond)
		}
	})
	if code := stop(); code != 0 {
		t.Errorf("serve exited with %d after cancellation, want 0", code)
	}
}
