package registry_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jmoiron/sqlx"
	"golang.org/x/crypto/ocsp"

	"github.com/agent-trust-registry/atr/ca"
	"github.com/agent-trust-registry/atr/registry"
	"github.com/agent-trust-registry/atr/registry/registrytest"
)

// TestSerialSpellingMatchesOpenSSL replays issue 11 item 6: serials were unpadded hex
// (big.Int.Text(16)) in the API and the log, while openssl prints two digits per byte,
// so for about 1 certificate in 16 (a leading zero nibble) an exact comparison failed.
// Certificates are issued until one has a leading zero nibble; its serial in the issuance
// answer and in verify must equal openssl's spelling in lower case (log entries carry no
// serial since entry version 2).
// Then that row is put back in the old spelling and migration 004 must repair it.
func TestSerialSpellingMatchesOpenSSL(t *testing.T) {
	if _, err := exec.LookPath("openssl"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("openssl is required in CI")
		}
		t.Skip("openssl not installed")
	}
	eachDB(t, func(t *testing.T, f *registrytest.Fixture) {
		ctx := context.Background()
		owner := f.Owner("acme", "acme")
		var iss *registry.Issued
		for i := 0; i < 400 && iss == nil; i++ {
			got := register(t, f, owner, "bot"+strings.Repeat("x", i%5)+string(rune('a'+i%26))+".acme")
			certs, err := ca.ParseCertificatesPEM([]byte(got.CertificatePEM), 1)
			if err != nil {
				t.Fatal(err)
			}
			if len(certs[0].SerialNumber.Text(16))%2 == 1 {
				iss = got
			}
		}
		if iss == nil {
			t.Fatal("no serial with a leading zero nibble in 400 issuances (probability 16^-400·15^400 ≈ 1e-11)")
		}
		pemFile := filepath.Join(t.TempDir(), "leaf.pem")
		if err := os.WriteFile(pemFile, []byte(iss.CertificatePEM), 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command("openssl", "x509", "-in", pemFile, "-noout", "-serial").CombinedOutput()
		if err != nil {
			t.Fatalf("openssl: %v\n%s", err, out)
		}
		want := strings.ToLower(strings.TrimSpace(strings.TrimPrefix(string(out), "serial=")))
		if iss.Certificate.Serial != want {
			t.Errorf("issuance answer serial %q, openssl says %q", iss.Certificate.Serial, want)
		}
		if res := verifyPEM(t, f, iss.CertificatePEM); res.Serial != want {
			t.Errorf("verify serial %q, openssl says %q", res.Serial, want)
		}

		// A row from before migration 004, in the old spelling, is repaired by it.
		db := openRaw(t, f)
		old := strings.TrimPrefix(want, "0")
		for _, q := range []string{
			`UPDATE agents SET current_serial = ? WHERE current_serial = ?`,
			`UPDATE certificates SET serial = ? WHERE serial = ?`,
		} {
			if _, err := db.Exec(db.Rebind(q), old, want); err != nil {
				t.Fatal(err)
			}
		}
		// A replica older than migration 004, still running during a rolling upgrade,
		// writes that spelling: OCSP on a new replica must still find the certificate
		// (security review of EXT-06).
		certs, err := ca.ParseCertificatesPEM([]byte(iss.CertificatePEM), 1)
		if err != nil {
			t.Fatal(err)
		}
		req, err := ocsp.CreateRequest(certs[0], f.Intermediate, nil)
		if err != nil {
			t.Fatal(err)
		}
		der, err := f.Registry.OCSP(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := ocsp.ParseResponseForCert(der, certs[0], f.Intermediate)
		if err != nil {
			t.Fatalf("OCSP response: %v", err)
		}
		if resp.Status != ocsp.Good {
			t.Errorf("OCSP for a row in the old spelling: status %d, want good (%d)", resp.Status, ocsp.Good)
		}

		migs, err := registry.Migrations(f.Store.Dialect())
		if err != nil {
			t.Fatal(err)
		}
		var m004 *registry.Migration
		for i := range migs {
			if migs[i].Version == 4 {
				m004 = &migs[i]
			}
		}
		if m004 == nil {
			t.Fatal("no migration 004")
		}
		if _, err := db.Exec(m004.SQL); err != nil {
			t.Fatalf("migration 004: %v", err)
		}
		var got []string
		if err := db.Select(&got, `SELECT serial FROM certificates UNION ALL SELECT current_serial FROM agents`); err != nil {
			t.Fatal(err)
		}
		for _, s := range got {
			if c, err := ca.CanonicalSerial(s); err != nil || c != s {
				t.Errorf("after migration 004 a stored serial is %q, want the canonical %q", s, c)
			}
		}
		if res := verifyPEM(t, f, iss.CertificatePEM); res.Status != registry.CertIssued || !res.Verified {
			t.Errorf("after migration 004: verify = %+v, want verified", res)
		}
	})
}

func openRaw(t *testing.T, f *registrytest.Fixture) *sqlx.DB {
	t.Helper()
	driver, dsn := "sqlite3", strings.TrimPrefix(f.DatabaseURL, "sqlite://")
	if f.Database == "postgres" {
		driver, dsn = "postgres", f.DatabaseURL
	}
	db, err := sqlx.Open(driver, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}
