package api

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"github.com/agent-trust-registry/atr/registry"
	"github.com/agent-trust-registry/atr/registry/registrytest"
	"github.com/agent-trust-registry/atr/registry/translog"
)

// TestPublicLogRevealsNoTenant is issue 12's first acceptance test: agents are registered
// in two namespaces, some rotated and some revoked; then every public byte of the log is
// downloaded without credentials (checkpoint, every entry, every hash tile and entry
// bundle) and none of it holds an agent name or namespace, an owner, an API key ID, or an
// agent certificate (DER, base64 or PEM). On the old log format each of these leaked.
func TestPublicLogRevealsNoTenant(t *testing.T) {
	for _, db := range registrytest.Databases() {
		t.Run(db, func(t *testing.T) {
			ctx := context.Background()
			f := registrytest.NewFixture(t, registrytest.WithDatabase(db))
			if _, err := f.Registry.RecordCACertificates(ctx, append(f.Verifier.Roots(), f.Intermediate)); err != nil {
				t.Fatal(err)
			}
			owners := map[string]string{"zebracorp-team": "zebracorp", "quokkaworks-team": "quokkaworks"}
			var secrets []string // strings no public byte may contain
			var certs [][]byte
			var issued []*registry.Issued
			for owner, ns := range owners {
				secrets = append(secrets, owner, ns)
				key := f.NewAPIKey(owner, ns, registry.ScopeAgentsWrite)
				a, err := f.Registry.Authenticate(ctx, key)
				if err != nil {
					t.Fatal(err)
				}
				secrets = append(secrets, a.KeyID)
				for i, name := range []string{"payroll-bot", "billing.finance", "scraper"} {
					full := name + "." + ns
					secrets = append(secrets, full, strings.Split(name, ".")[0])
					csr, _ := f.NewCSR()
					iss, err := f.Registry.Register(ctx, *a, registry.RegisterRequest{Name: full, CSR: csr})
					if err != nil {
						t.Fatalf("register %s: %v", full, err)
					}
					issued = append(issued, iss)
					switch i {
					case 1:
						csr, _ := f.NewCSR()
						rot, err := f.Registry.Rotate(ctx, *a, full, csr)
						if err != nil {
							t.Fatalf("rotate %s: %v", full, err)
						}
						issued = append(issued, rot)
					case 2:
						if _, err := f.Registry.Revoke(ctx, *a, full, "keyCompromise"); err != nil {
							t.Fatalf("revoke %s: %v", full, err)
						}
					}
				}
			}
			for _, iss := range issued {
				b, _ := pem.Decode([]byte(iss.CertificatePEM))
				certs = append(certs, b.Bytes)
				if iss.Receipt == nil {
					t.Errorf("issuance of %s came without a receipt", iss.Agent.Name)
				}
			}

			s, err := New(Config{TrustDomain: registrytest.TrustDomain},
				Deps{Lifecycle: f.Registry, Auth: f.Registry, Admin: f.Registry, Log: f.Registry, Now: f.Clock.Now}, testLogger(io.Discard))
			if err != nil {
				t.Fatal(err)
			}
			srv := httptest.NewServer(s.Handler())
			defer srv.Close()
			var public bytes.Buffer
			get := func(path string) []byte {
				t.Helper()
				resp, err := srv.Client().Get(srv.URL + path)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				b, _ := io.ReadAll(resp.Body)
				if resp.StatusCode != http.StatusOK {
					t.Fatalf("GET %s: %d %s", path, resp.StatusCode, b)
				}
				public.Write(b)
				public.WriteByte('\n')
				return b
			}
			cp := get("/v1/log/checkpoint")
			lines := strings.Split(string(cp), "\n")
			size, err := strconv.ParseInt(lines[1], 10, 64)
			if err != nil || size == 0 {
				t.Fatalf("checkpoint %q: size %v", cp, err)
			}
			get(fmt.Sprintf("/v1/log/entries?start=0&end=%d", size))
			get("/v1/log/key")
			get("/v1/log/vkey")
			for level, width := 0, size; width > 0; level, width = level+1, width/256 {
				for n := int64(0); n*256 < width; n++ {
					w := min(width-n*256, 256)
					full := translog.Tile{Level: level, N: n, Width: int(w)}
					get("/v1/log/" + full.Path())
					if level == 0 {
						get("/v1/log/" + translog.Tile{Level: translog.EntriesLevel, N: n, Width: int(w)}.Path())
					}
				}
			}
			all := public.Bytes()
			for _, secret := range secrets {
				if bytes.Contains(all, []byte(secret)) {
					t.Errorf("the public log contains %q", secret)
				}
			}
			for i, der := range certs {
				b64 := base64.StdEncoding.EncodeToString(der)
				for _, probe := range [][]byte{der[len(der)/2 : len(der)/2+32], []byte(b64[40:100]), []byte(b64[100:164])} {
					if bytes.Contains(all, probe) {
						t.Errorf("the public log contains agent certificate %d (DER, base64 or PEM line)", i)
					}
				}
				leaf, err := x509.ParseCertificate(der)
				if err != nil {
					t.Fatal(err)
				}
				if bytes.Contains(all, []byte(leaf.URIs[0].String())) {
					t.Errorf("the public log contains the SPIFFE ID %s", leaf.URIs[0])
				}
			}
			// The CA certificates stay public (ceremony entries), so the download is real.
			if !bytes.Contains(all, []byte(base64.StdEncoding.EncodeToString(f.Intermediate.Raw)[40:100])) {
				t.Errorf("the intermediate's ceremony entry is not in the public download: the test read too little")
			}
		})
	}
}
