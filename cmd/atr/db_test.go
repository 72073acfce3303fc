package main

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	_ "github.com/lib/pq"
)

// postgresURL creates a fresh PostgreSQL database for the test and drops it
// afterwards. PostgreSQL missing is a skip locally and a failure in CI.
func postgresURL(t *testing.T) string {
	t.Helper()
	admin := os.Getenv("ATR_TEST_POSTGRES_URL")
	if admin == "" {
		admin = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	db, err := sql.Open("postgres", admin)
	if err == nil {
		err = db.PingContext(ctx)
	}
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("PostgreSQL is required in CI: %v", err)
		}
		t.Skipf("PostgreSQL unreachable: %v", err)
	}
	b := make([]byte, 8)
	rand.Read(b)
	name := "atr_cmd_test_" + hex.EncodeToString(b)
	if _, err := db.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("CREATE DATABASE: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		db.ExecContext(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)")
		db.Close()
	})
	return strings.Replace(admin, "/test?", "/"+name+"?", 1)
}

func TestMigrateAndAPIKey(t *testing.T) {
	for _, db := range []string{"sqlite", "postgres"} {
		t.Run(db, func(t *testing.T) {
			dir := t.TempDir()
			env := map[string]string{"ATR_DATA_DIR": dir, "ATR_LOG_LEVEL": "warn"}
			if db == "postgres" {
				env["ATR_DATABASE_URL"] = postgresURL(t)
			}
			run := func(args ...string) (int, string, string) {
				a, out, errb := testApp(env)
				return a.run(context.Background(), args), out.String(), errb.String()
			}
			if code, out, errb := run("migrate"); code != 0 || !strings.Contains(out, "schema version") {
				t.Fatalf("migrate: exit %d, stdout %q, stderr %q", code, out, errb)
			}
			if code, out, _ := run("migrate"); code != 0 || !strings.Contains(out, "applied 0") {
				t.Errorf("second migrate: exit %d, stdout %q; want nothing applied", code, out)
			}
			if db == "sqlite" {
				if _, err := os.Stat(filepath.Join(dir, "atr.db")); err != nil {
					t.Errorf("default database not in the data dir: %v", err)
				}
			}

			// Printed once on stdout.
			code, out, errb := run("apikey", "create", "--owner", "team-a", "--namespace", "acme", "--scopes", "agents:read,agents:write", "--expires-in", "24h")
			if code != 0 || !strings.HasPrefix(out, "atr_") {
				t.Fatalf("apikey create: exit %d, stdout %q, stderr %q", code, out, errb)
			}
			if strings.Contains(errb, strings.TrimSpace(out)) {
				t.Error("the API key also went to stderr (the log)")
			}

			// Written to a new 0600 file, never over an existing one.
			keyFile := filepath.Join(dir, "admin.apikey")
			if code, _, errb := run("apikey", "create", "--owner", "admin", "--namespace", "admin", "--scopes", "admin", "--out", keyFile); code != 0 {
				t.Fatalf("apikey create --out: exit %d, stderr %q", code, errb)
			}
			fi, err := os.Stat(keyFile)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm() != 0o600 {
				t.Errorf("%s mode %v, want 0600", keyFile, fi.Mode().Perm())
			}
			before, _ := os.ReadFile(keyFile)
			if code, _, _ := run("apikey", "create", "--owner", "admin", "--namespace", "admin", "--scopes", "admin", "--out", keyFile); code == 0 {
				t.Error("apikey create overwrote an existing --out file")
			}
			if after, _ := os.ReadFile(keyFile); string(after) != string(before) {
				t.Error("the key file changed")
			}

			for _, bad := range [][]string{
				{"apikey", "create", "--namespace", "acme", "--scopes", "admin"},
				{"apikey", "create", "--owner", "x", "--scopes", "admin"},
				{"apikey", "create", "--owner", "x", "--namespace", "acme"},
			} {
				if code, _, _ := run(bad...); code != 2 {
					t.Errorf("%v: exit %d, want 2", bad, code)
				}
			}
			if code, _, _ := run("apikey", "create", "--owner", "x", "--namespace", "acme", "--scopes", "root"); code != 1 {
				t.Errorf("unknown scope: exit %d, want 1", code)
			}
		})
	}
}
