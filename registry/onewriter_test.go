package registry_test

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"strings"
	"sync"
	"testing"

	sqlite3 "github.com/mattn/go-sqlite3"
	"golang.org/x/crypto/ocsp"

	"github.com/agent-trust-registry/atr/registry"
	"github.com/agent-trust-registry/atr/registry/registrytest"
)

// TestSQLiteWritesRunOnTheWriter: on SQLite every row the registry writes is
// written by the group commit's one writer, on its one connection — also
// the writes beside an issuance (an API key's last use and its failed
// attempts, audit events of refusals and of abandoned issuances, the
// abandoned pending row, a stored OCSP response, a CA's CRL state). A write
// on a pooled connection takes SQLite's write lock behind the writer's
// back: it polls in SQLite's busy handler while the writer runs batches
// back to back (up to the 5 s busy timeout; seconds of latency at high
// load), and the writer's next BEGIN sleeps in the busy handler while it
// holds the lock. Before, all of these ran on pooled connections.
func TestSQLiteWritesRunOnTheWriter(t *testing.T) {
	var (
		mu     sync.Mutex
		writes = map[*sqlite3.SQLiteConn]map[string]int{} // connection → table → rows
	)
	var path string // set once the fixture exists; connections before are its own
	registry.SetSQLiteConnectHook(t, func(dsn string, conn *sqlite3.SQLiteConn) {
		conn.RegisterUpdateHook(func(_ int, _, table string, _ int64) {
			mu.Lock()
			defer mu.Unlock()
			if path == "" || !strings.Contains(dsn, path) {
				return
			}
			if writes[conn] == nil {
				writes[conn] = map[string]int{}
			}
			writes[conn][table]++
		})
	})
	f := registrytest.NewFixture(t, registrytest.WithDatabase("sqlite"))
	mu.Lock()
	path = strings.TrimPrefix(f.DatabaseURL, "sqlite://")
	mu.Unlock()
	ctx := context.Background()

	// An API key's first use (last_used_at), and a wrong secret for it.
	key := f.NewAPIKey("alice", "alice", registry.ScopeAgentsWrite)
	a, err := f.Registry.Authenticate(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	wrong := key[:len(key)-1] + map[bool]string{true: "1", false: "0"}[strings.HasSuffix(key, "0")]
	if _, err := f.Registry.Authenticate(ctx, wrong); !errors.Is(err, registry.ErrUnauthenticated) {
		t.Fatalf("wrong secret: %v, want ErrUnauthenticated", err)
	}
	// An issuance (the writer's own work), then its OCSP response and the CRL.
	csr, _ := f.NewCSR()
	iss, err := f.Registry.Register(ctx, *a, registry.RegisterRequest{Name: "w1.alice", CSR: csr})
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode([]byte(iss.CertificatePEM))
	if block == nil {
		t.Fatal("no certificate PEM")
	}
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	req, err := ocsp.CreateRequest(leaf, f.Intermediate, &ocsp.RequestOptions{Hash: crypto.SHA256})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Registry.OCSP(ctx, req); err != nil {
		t.Fatalf("OCSP: %v", err)
	}
	if _, _, err := f.Registry.CRL(ctx); err != nil {
		t.Fatalf("CRL: %v", err)
	}
	// A refusal (audited), and an issuance whose signature fails (its
	// pending row abandoned, audited).
	bob := f.Owner("bob", "bob")
	if _, err := f.Registry.GetAgent(ctx, bob, "w1.alice"); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("another owner's agent: %v, want ErrNotFound", err)
	}
	f.OnSign(func() error { return registrytest.ErrInjected })
	csr2, _ := f.NewCSR()
	if _, err := f.Registry.Register(ctx, *a, registry.RegisterRequest{Name: "w2.alice", CSR: csr2}); err == nil {
		t.Fatal("an issuance whose signature failed succeeded")
	}
	f.OnSign(nil)

	mu.Lock()
	defer mu.Unlock()
	var writer *sqlite3.SQLiteConn
	for conn, tables := range writes {
		if tables["log_entries"] > 0 {
			writer = conn
		}
	}
	if writer == nil {
		t.Fatalf("no connection appended to the log: %v", writes)
	}
	for _, table := range []string{"api_keys", "audit_events", "pending_issuances", "certificates", "ocsp_responses", "crl_issuers"} {
		if writes[writer][table] == 0 {
			t.Errorf("the writer wrote no %s row (the test did not exercise it): %v", table, writes[writer])
		}
	}
	for conn, tables := range writes {
		if conn != writer {
			t.Errorf("rows written beside the writer, on a pooled connection: %v", tables)
		}
	}
}
