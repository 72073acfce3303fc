package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/agent-trust-registry/atr/api/client"
	"github.com/agent-trust-registry/atr/ca"
	"github.com/agent-trust-registry/atr/registry/translog"
)

// TestServeTLSCertificateInLog: the TLS certificate `atr serve` presents is
// in its transparency log, as a server_cert entry with its fingerprint and
// DER (a CA records everything it signs, its own server certificate
// included).
func TestServeTLSCertificateInLog(t *testing.T) {
	d := ceremonies(t)
	addr, _ := startServe(t, d)
	root, err := os.ReadFile(filepath.Join(d.dir, "ca", "root.pem"))
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(root)
	conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, ServerName: "localhost"})
	if err != nil {
		t.Fatalf("TLS to %s: %v", addr, err)
	}
	leaf := conn.ConnectionState().PeerCertificates[0]
	conn.Close()
	sum := sha256.Sum256(leaf.Raw)
	fp := hex.EncodeToString(sum[:])
	if len(leaf.URIs) != 0 {
		t.Errorf("the server certificate carries URI SANs %v; want none", leaf.URIs)
	}

	c, err := client.New("https://"+addr, client.WithRootCAs(pool))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	// A checkpoint is signed at most once a second: wait for one that
	// covers the server certificate's entry.
	deadline := time.Now().Add(15 * time.Second)
	for {
		signed, err := c.Checkpoint(ctx)
		if err != nil {
			t.Fatalf("GET /v1/log/checkpoint: %v", err)
		}
		text, _, ok := bytes.Cut(signed, []byte("\n\n"))
		if !ok {
			t.Fatalf("checkpoint %q is not a signed note", signed)
		}
		cp, err := translog.ParseCheckpoint(append(text, '\n'))
		if err != nil {
			t.Fatalf("checkpoint: %v", err)
		}
		var found []int64
		for start := int64(0); start < cp.Size; {
			page, err := c.LogEntries(ctx, start, cp.Size)
			if err != nil {
				t.Fatalf("GET /v1/log/entries: %v", err)
			}
			if len(page.Entries) == 0 {
				t.Fatalf("GET /v1/log/entries?start=%d returned nothing", start)
			}
			for i, raw := range page.Entries {
				e, err := translog.ParseEntry(raw)
				if err != nil {
					t.Fatalf("entry %d: %v", page.Start+int64(i), err)
				}
				if e.Fingerprint == fp {
					if e.Type != translog.EventServerCert || !bytes.Equal(e.Certificate, leaf.Raw) {
						t.Errorf("entry %d with the server certificate's fingerprint = %+v; want server_cert with its DER", page.Start+int64(i), e)
					}
					found = append(found, page.Start+int64(i))
				}
			}
			start += int64(len(page.Entries))
		}
		if len(found) == 1 {
			return
		}
		if len(found) > 1 {
			t.Fatalf("the server certificate is in the log %d times (%v); want once", len(found), found)
		}
		if time.Now().After(deadline) {
			t.Fatalf("the server certificate (SHA-256 %s) is not in the log of size %d", fp, cp.Size)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestServerNames: the self-issued certificate's names are normalized the
// way the registry issues them (ca.NormalizeAgentName), names it would
// refuse are dropped rather than failing every issuance, and IPs are kept
// once, never the unspecified address.
func TestServerNames(t *testing.T) {
	host, _ := os.Hostname()
	tests := []struct {
		name    string
		cfg     Config
		wantDNS []string // besides localhost and the host name
		wantIPs []string
	}{
		{"wildcard listen", Config{Listen: "0.0.0.0:8443"}, nil, []string{"127.0.0.1", "::1"}},
		{"listen IP and public URL", Config{Listen: "10.1.2.3:8443", PublicURL: "https://ATR.Example.org:8443"}, []string{"atr.example.org"}, []string{"10.1.2.3", "127.0.0.1", "::1"}},
		{"extra names, some unusable", Config{Listen: "127.0.0.1:8443", TLSNames: []string{"Reg.Example.COM", "bad_name.example", "::1", "192.0.2.7", "reg.example.com"}},
			[]string{"reg.example.com"}, []string{"127.0.0.1", "::1", "192.0.2.7"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dns, ips, err := serverNames(tt.cfg)
			if err != nil {
				t.Fatal(err)
			}
			want := map[string]bool{"localhost": true}
			if h, err := ca.NormalizeAgentName(host); err == nil {
				want[h] = true
			}
			for _, d := range tt.wantDNS {
				want[d] = true
			}
			got := map[string]bool{}
			for _, d := range dns {
				if got[d] {
					t.Errorf("DNS name %q twice", d)
				}
				got[d] = true
			}
			if !maps.Equal(got, want) {
				t.Errorf("DNS names %v; want %v", dns, want)
			}
			var gotIPs []string
			for _, ip := range ips {
				gotIPs = append(gotIPs, ip.String())
			}
			if !slices.Equal(gotIPs, tt.wantIPs) {
				t.Errorf("IPs %v; want %v", gotIPs, tt.wantIPs)
			}
			if err := ca.ValidateServerNames(dns, ips); err != nil {
				t.Errorf("the registry would refuse them: %v", err)
			}
		})
	}
	if _, _, err := serverNames(Config{Listen: "no-port"}); err == nil {
		t.Error("a listen address without a port accepted")
	}
}
