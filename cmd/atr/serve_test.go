package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agent-trust-registry/atr/hsm"
	"github.com/agent-trust-registry/atr/hsm/hsmtest"
)

// ceremonies runs root, intermediate, log-key, log-key-ed25519, vrf-key, jwt-key and
// card-key on fresh tokens.
func ceremonies(t *testing.T) *devTokens {
	t.Helper()
	d := newDevTokens(t)
	for _, c := range []string{"root", "intermediate", "log-key", "log-key-ed25519", "vrf-key", "jwt-key", "card-key"} {
		d.mustAtr(t, "ceremony", c, "--operator", "tester")
	}
	return d
}

// startServe runs `atr serve` in-process on a free port and returns its
// address and a stop function that cancels it and returns its exit status.
func startServe(t *testing.T, d *devTokens, extra ...string) (string, func() int) {
	t.Helper()
	return startServeWith(t, d, nil, extra...)
}

// startServeWith is startServe with a hook that adjusts the app first.
func startServeWith(t *testing.T, d *devTokens, adjust func(*app), extra ...string) (string, func() int) {
	t.Helper()
	a, _, errb := testApp(d.env)
	if adjust != nil {
		adjust(a)
	}
	ready := make(chan string, 1)
	a.ready = ready
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan int, 1)
	go func() { done <- a.run(ctx, append([]string{"serve", "--listen", "127.0.0.1:0"}, extra...)) }()
	select {
	case addr := <-ready:
		var once sync.Once
		code := 0
		stop := func() int {
			once.Do(func() { cancel(); code = <-done })
			return code
		}
		t.Cleanup(func() { stop() })
		return addr, stop
	case code := <-done:
		cancel()
		t.Fatalf("serve exited with %d before listening: %s", code, errb)
	case <-time.After(60 * time.Second):
		cancel()
		t.Fatalf("serve did not start: %s", errb)
	}
	return "", nil
}

func TestServe(t *testing.T) {
	d := ceremonies(t)
	addr, stop := startServe(t, d)
	root, err := os.ReadFile(filepath.Join(d.dir, "ca", "root.pem"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(root)

	t.Run("healthcheck", func(t *testing.T) {
		code, out, errb := d.atr(t, "healthcheck", "--listen", addr)
		if code != 0 || !strings.Contains(out, "healthy") {
			t.Fatalf("healthcheck: exit %d, stdout %q, stderr %q", code, out, errb)
		}
	})
	t.Run("healthcheck fails against a dead port", func(t *testing.T) {
		if code, _, _ := d.atr(t, "healthcheck", "--listen", "127.0.0.1:1", "--timeout", "2s"); code != 1 {
			t.Errorf("healthcheck of a closed port: exit %d, want 1", code)
		}
	})
	t.Run("served chain verifies against the root for localhost and 127.0.0.1", func(t *testing.T) {
		for _, name := range []string{"localhost", "127.0.0.1"} {
			conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, ServerName: name})
			if err != nil {
				t.Fatalf("TLS to %s as %s: %v", addr, name, err)
			}
			st := conn.ConnectionState()
			conn.Close()
			if st.Version != tls.VersionTLS13 {
				t.Errorf("negotiated %x, want TLS 1.3", st.Version)
			}
			leaf := st.PeerCertificates[0]
			if leaf.NotAfter.Sub(leaf.NotBefore) > 25*time.Hour {
				t.Errorf("server certificate lifetime %v, want about a day", leaf.NotAfter.Sub(leaf.NotBefore))
			}
		}
	})
	t.Run("TLS 1.2 accepted, TLS 1.1 refused", func(t *testing.T) {
		conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, ServerName: "localhost", MaxVersion: tls.VersionTLS12})
		if err != nil {
			t.Fatalf("TLS 1.2: %v", err)
		}
		conn.Close()
		if conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, ServerName: "localhost", MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11}); err == nil {
			conn.Close()
			t.Error("TLS 1.1 handshake succeeded")
		}
	})
	t.Run("client certificate from another CA is refused", func(t *testing.T) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "forged"},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
			URIs: []*url.URL{{Scheme: "spiffe", Host: "atr.local", Path: "/agent/forged"}}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
		if err != nil {
			t.Fatal(err)
		}
		// GetClientCertificate sends it even though the server asks for other CAs.
		forged := &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
		conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, ServerName: "localhost",
			GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return forged, nil }})
		if err == nil {
			conn.SetDeadline(time.Now().Add(5 * time.Second))
			_, err = conn.Write([]byte("GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n"))
			if err == nil {
				_, err = conn.Read(make([]byte, 1))
			}
			conn.Close()
		}
		if err == nil {
			t.Error("the server accepted a client certificate that does not chain to the token's roots")
		}
	})
	t.Run("bundle", func(t *testing.T) {
		c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}, Timeout: 10 * time.Second}
		resp, err := c.Get("https://" + addr + "/v1/ca/bundle")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("GET /v1/ca/bundle: %s", resp.Status)
		}
	})
	if code := stop(); code != 0 {
		t.Errorf("serve exited with %d after cancellation, want 0", code)
	}
}

func TestServeRefusesWithoutLogKey(t *testing.T) {
	d := newDevTokens(t)
	d.mustAtr(t, "ceremony", "root", "--operator", "tester")
	d.mustAtr(t, "ceremony", "intermediate", "--operator", "tester")
	code, _, errb := d.atr(t, "serve", "--listen", "127.0.0.1:0")
	if code != 1 || !strings.Contains(errb, "log-key") {
		t.Errorf("serve without a log key: exit %d, stderr %s; want 1 and a hint to run the log-key ceremony", code, errb)
	}
}

func TestServeRefusesWithoutVRFKey(t *testing.T) {
	d := newDevTokens(t)
	for _, c := range []string{"root", "intermediate", "log-key"} {
		d.mustAtr(t, "ceremony", c, "--operator", "tester")
	}
	code, _, errb := d.atr(t, "serve", "--listen", "127.0.0.1:0")
	if code != 1 || !strings.Contains(errb, "vrf-key") {
		t.Errorf("serve without a VRF key: exit %d, stderr %s; want 1 and a hint to run the vrf-key ceremony", code, errb)
	}
	// A key under the VRF label that is not an acceptable VRF key (the
	// ECDSA log key) is refused too.
	code, _, errb = d.atr(t, "serve", "--listen", "127.0.0.1:0", "--vrf-key", "pkcs11:token="+d.issuing.TokenLabel+";object="+defaultLogKeyLabel)
	if code != 1 || !strings.Contains(errb, "VRF key") {
		t.Errorf("serve with the log key as VRF key: exit %d, stderr %s; want 1 and a VRF key error", code, errb)
	}
}

// TestServeRefusesOneKeyInTwoRoles: the log, JWT-SVID and agent-card keys
// must be distinct keys (a card key among the JWT authorities would let a
// card signature pass for a token).
func TestServeRefusesOneKeyInTwoRoles(t *testing.T) {
	d := ceremonies(t)
	uri := func(label string) string { return "pkcs11:token=" + d.issuing.TokenLabel + ";object=" + label }
	for _, tt := range []struct {
		name string
		args []string
		want string
	}{
		{"card key is the JWT key", []string{"--card-key", uri(defaultJWTKeyLabel)}, "the JWT-SVID key and the agent-card key are the same key"},
		{"JWT key is the log key", []string{"--jwt-key", uri(defaultLogKeyLabel)}, "the log key and the JWT-SVID key are the same key"},
		{"previous JWT key is the card key", []string{"--jwt-previous-keys", uri(defaultCardKeyLabel)}, "previous JWT-SVID key 1 and the agent-card key are the same key"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			code, _, errb := d.atr(t, append([]string{"serve", "--listen", "127.0.0.1:0"}, tt.args...)...)
			if code != 1 || !strings.Contains(errb, tt.want) {
				t.Errorf("exit %d, stderr %s; want 1 and %q", code, errb, tt.want)
			}
		})
	}
}

func TestServeRefusesWithoutIntermediate(t *testing.T) {
	d := newDevTokens(t)
	d.mustAtr(t, "ceremony", "root", "--operator", "tester")
	code, _, errb := d.atr(t, "serve", "--listen", "127.0.0.1:0")
	if code != 1 || !strings.Contains(errb, "root certificate") {
		t.Errorf("serve on a token without CA certificates: exit %d, stderr %s", code, errb)
	}
}

// TestIssuingKeyURI selects the issuing key by URI and refuses a URI that
// names a key without an intermediate certificate (the log key).
func TestIssuingKeyURI(t *testing.T) {
	d := ceremonies(t)
	tok := hsmtest.Open(t, d.issuing)
	ctx := context.Background()
	u := hsm.URI{Token: d.issuing.TokenLabel, Object: defaultIssuingLabel}
	m, err := loadCA(ctx, Config{PKCS11Token: d.issuing.TokenLabel, IssuingKey: u.String()}, tok, time.Now())
	if err != nil || m.issuing.Label != defaultIssuingLabel {
		t.Fatalf("loadCA by URI: %v, label %q", err, m.issuing.Label)
	}
	u.Object = defaultLogKeyLabel
	if _, err := loadCA(ctx, Config{PKCS11Token: d.issuing.TokenLabel, IssuingKey: u.String()}, tok, time.Now()); err == nil {
		t.Error("loadCA accepted the log key as the issuing key")
	}
}
