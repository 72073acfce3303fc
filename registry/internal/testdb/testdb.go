// Package testdb gives tests a fresh, real database: a SQLite file in
// t.TempDir() or a new PostgreSQL database on 127.0.0.1:5432 that is dropped
// when the test ends.
//
// PostgreSQL is found through ATR_TEST_POSTGRES_URL (an admin connection URL,
// default postgres://postgres@127.0.0.1:5432/test?sslmode=disable). When it is
// unreachable the test is skipped, except with CI=true where it fails.
package testdb

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	_ "github.com/lib/pq" // driver "postgres"
)

// DefaultAdminURL is the PostgreSQL used when ATR_TEST_POSTGRES_URL is unset.
const DefaultAdminURL = "postgres://postgres@127.0.0.1:5432/test?sslmode=disable"

// Names lists the databases tests run on.
func Names() []string { return []string{"sqlite", "postgres"} }

// URL returns a fresh database URL for the named database ("sqlite" or
// "postgres").
func URL(t testing.TB, name string) string {
	t.Helper()
	switch name {
	case "sqlite":
		return SQLiteURL(t)
	case "postgres":
		return PostgresURL(t)
	}
	t.Fatalf("testdb: unknown database %q", name)
	return ""
}

// SQLiteURL returns a sqlite:// URL of a new file in t.TempDir().
func SQLiteURL(t testing.TB) string {
	t.Helper()
	return "sqlite://" + filepath.Join(t.TempDir(), "atr.db")
}

// PostgresURL creates a new database and returns its URL; the database is
// dropped (WITH (FORCE)) in t.Cleanup.
func PostgresURL(t testing.TB) string {
	t.Helper()
	admin := os.Getenv("ATR_TEST_POSTGRES_URL")
	if admin == "" {
		admin = DefaultAdminURL
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	db, err := sql.Open("postgres", admin)
	if err == nil {
		err = db.PingContext(ctx)
	}
	if err != nil {
		if db != nil {
			db.Close()
		}
		if os.Getenv("CI") == "true" {
			t.Fatalf("testdb: PostgreSQL is required in CI but unreachable at %s: %v", redactURL(admin), err)
		}
		t.Skipf("testdb: PostgreSQL unreachable at %s (start it with: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start): %v", redactURL(admin), err)
	}
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatalf("testdb: random name: %v", err)
	}
	name := "atr_test_" + hex.EncodeToString(b[:])
	if _, err := db.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
		db.Close()
		t.Fatalf("testdb: CREATE DATABASE %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := db.ExecContext(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Errorf("testdb: DROP DATABASE %s: %v", name, err)
		}
		db.Close()
	})
	u, err := url.Parse(admin)
	if err != nil {
		t.Fatalf("testdb: parsing admin url: %v", err)
	}
	u.Path = "/" + name
	return u.String()
}

func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparsable url)"
	}
	return u.Redacted()
}
