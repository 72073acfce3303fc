package api

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"
)

// signedOCSP is a Revocation whose OCSP answer is a real signed response with the
// given thisUpdate and nextUpdate.
type signedOCSP struct {
	fakeLog
	der []byte
}

func (s signedOCSP) OCSP(context.Context, []byte) ([]byte, error) { return s.der, nil }

func newSignedOCSP(t *testing.T, this, next time.Time) signedOCSP {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test issuer"},
		NotBefore: this.Add(-time.Hour), NotAfter: next.Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	issuer, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := ocsp.CreateResponse(issuer, issuer, ocsp.Response{Status: ocsp.Good, SerialNumber: big.NewInt(42),
		ThisUpdate: this, NextUpdate: next}, k)
	if err != nil {
		t.Fatal(err)
	}
	return signedOCSP{der: resp}
}

// distributionHarness is newHarness with a TLS configuration (so the main handler
// sends HSTS), a fixed clock and a signed OCSP response valid for an hour from
// thisUpdate, plus a second test server on the distribution handler.
func distributionHarness(t *testing.T, this, next, now time.Time) (*harness, *harness) {
	t.Helper()
	h := newHarness(t, func(c *Config, d *Deps) {
		c.TLS = true
		d.Revocation = newSignedOCSP(t, this, next)
		d.Now = func() time.Time { return now }
	})
	dist := *h
	dist.srv = httptest.NewServer(h.s.DistributionHandler())
	t.Cleanup(dist.srv.Close)
	return h, &dist
}

func TestDistributionHandlerRoutes(t *testing.T) {
	now := time.Date(2026, 12, 3, 8, 0, 0, 0, time.UTC)
	main, dist := distributionHarness(t, now, now.Add(time.Hour), now)
	ocspReq := []byte{0x30, 0x03, 0x0a, 0x01, 0x00}
	served := []struct {
		method, path string
		body         []byte
		hdr          []string
		wantType     string
	}{
		{"GET", "/v1/crl", nil, nil, "application/pkix-crl"},
		{"HEAD", "/v1/crl", nil, nil, "application/pkix-crl"},
		{"GET", "/v1/ca/bundle", nil, nil, "application/pem-certificate-chain"},
		{"HEAD", "/v1/ca/bundle", nil, nil, "application/pem-certificate-chain"},
		{"GET", "/v1/ocsp/MAMKAQA=", nil, nil, "application/ocsp-response"},
		{"HEAD", "/v1/ocsp/MAMKAQA=", nil, nil, "application/ocsp-response"},
		{"POST", "/v1/ocsp", ocspReq, []string{"Content-Type", "application/ocsp-request"}, "application/ocsp-response"},
	}
	for _, c := range served {
		t.Run("served "+c.method+" "+c.path, func(t *testing.T) {
			dist.t = t
			var body any
			if c.body != nil {
				body = c.body
			}
			r := dist.do(c.method, c.path, "", body, c.hdr...)
			if r.status != http.StatusOK || r.header.Get("Content-Type") != c.wantType {
				t.Fatalf("got %d %q, want 200 %q", r.status, r.header.Get("Content-Type"), c.wantType)
			}
			if r.header.Get("X-Request-ID") == "" || r.header.Get("X-Content-Type-Options") != "nosniff" {
				t.Errorf("request ID %q, nosniff %q: the middleware chain is missing", r.header.Get("X-Request-ID"), r.header.Get("X-Content-Type-Options"))
			}
			if got := r.header.Get("Strict-Transport-Security"); got != "" {
				t.Errorf("Strict-Transport-Security %q over plain http", got)
			}
			if r.header.Get("RateLimit-Limit") == "" {
				t.Error("no RateLimit-Limit: the public rate limit is not applied")
			}
		})
	}
	notServed := []struct{ method, path string }{
		{"GET", "/v1/agents"},
		{"POST", "/v1/agents"},
		{"GET", "/v1/agents/bot.alice"},
		{"POST", "/v1/verify"},
		{"GET", "/v1/ca/spiffe-bundle"},
		{"GET", "/v1/log/checkpoint"},
		{"GET", "/v1/admin/audit"},
		{"GET", "/healthz"},
		{"GET", "/readyz"},
		{"GET", "/metrics"},
		{"GET", "/openapi.json"},
		{"GET", "/"},
	}
	for _, c := range notServed {
		t.Run("not served "+c.method+" "+c.path, func(t *testing.T) {
			dist.t = t
			r := dist.do(c.method, c.path, keyAdmin, nil)
			if r.status != http.StatusNotFound {
				t.Fatalf("got %d, want 404", r.status)
			}
			if e := r.errBody(t); e.Code != CodeNotFound || e.RequestID == "" {
				t.Errorf("error body %+v", e)
			}
		})
	}
	t.Run("the main handler still sends HSTS", func(t *testing.T) {
		main.t = t
		if r := main.do("GET", "/v1/crl", "", nil); r.header.Get("Strict-Transport-Security") == "" {
			t.Error("no Strict-Transport-Security on the https handler")
		}
	})
}

func TestOCSPGetCaching(t *testing.T) {
	this := time.Date(2026, 12, 3, 8, 0, 0, 0, time.UTC)
	next := this.Add(time.Hour)
	now := this.Add(10 * time.Minute)
	main, dist := distributionHarness(t, this, next, now)
	for _, h := range []*harness{main, dist} {
		name := "https handler"
		if h == dist {
			name = "distribution handler"
		}
		t.Run(name, func(t *testing.T) {
			h.t = t
			r := h.do("GET", "/v1/ocsp/MAMKAQA=", "", nil)
			if r.status != http.StatusOK {
				t.Fatalf("GET: %d", r.status)
			}
			want := map[string]string{
				"Cache-Control": "public, max-age=3000, no-transform, must-revalidate",
				"Last-Modified": "Thu, 03 Dec 2026 08:00:00 GMT",
				"Expires":       "Thu, 03 Dec 2026 09:00:00 GMT",
			}
			for k, v := range want {
				if got := r.header.Get(k); got != v {
					t.Errorf("%s = %q, want %q", k, got, v)
				}
			}
			etag := r.header.Get("ETag")
			if len(etag) != 66 || !strings.HasPrefix(etag, `"`) || !strings.HasSuffix(etag, `"`) {
				t.Fatalf("ETag = %q, want a quoted SHA-256", etag)
			}
			for _, inm := range []string{etag, `"other", ` + etag, "W/" + etag, "*"} {
				nm := h.do("GET", "/v1/ocsp/MAMKAQA=", "", nil, "If-None-Match", inm)
				if nm.status != http.StatusNotModified || len(nm.body) != 0 {
					t.Errorf("If-None-Match %s: %d with %d bytes, want 304 and no body", inm, nm.status, len(nm.body))
				}
				if nm.header.Get("ETag") != etag || nm.header.Get("Cache-Control") != want["Cache-Control"] {
					t.Errorf("304 headers: ETag %q, Cache-Control %q", nm.header.Get("ETag"), nm.header.Get("Cache-Control"))
				}
			}
			if other := h.do("GET", "/v1/ocsp/MAMKAQA=", "", nil, "If-None-Match", `"other"`); other.status != http.StatusOK || !bytes.Equal(other.body, r.body) {
				t.Errorf("If-None-Match of another ETag: %d, want 200 and the response", other.status)
			}
			post := h.do("POST", "/v1/ocsp", "", []byte{0x30, 0x00}, "Content-Type", "application/ocsp-request", "If-None-Match", etag)
			if post.status != http.StatusOK || post.header.Get("Cache-Control") != "no-store" || post.header.Get("ETag") != "" {
				t.Errorf("POST: %d, Cache-Control %q, ETag %q; want 200, no-store and no ETag", post.status, post.header.Get("Cache-Control"), post.header.Get("ETag"))
			}
		})
	}
	t.Run("a response past its nextUpdate, or an error response, is not cacheable", func(t *testing.T) {
		_, stale := distributionHarness(t, this, next, next.Add(time.Second))
		stale.t = t
		if r := stale.do("GET", "/v1/ocsp/MAMKAQA=", "", nil); r.header.Get("Cache-Control") != "no-store" || r.header.Get("ETag") != "" {
			t.Errorf("stale: Cache-Control %q, ETag %q", r.header.Get("Cache-Control"), r.header.Get("ETag"))
		}
		dist.t = t
		r := dist.do("GET", "/v1/ocsp/!!!", "", nil)
		if !bytes.Equal(r.body, ocsp.MalformedRequestErrorResponse) || r.header.Get("Cache-Control") != "no-store" || r.header.Get("ETag") != "" {
			t.Errorf("malformed: Cache-Control %q, ETag %q", r.header.Get("Cache-Control"), r.header.Get("ETag"))
		}
	})
}
