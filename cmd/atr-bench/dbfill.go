package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
	_ "github.com/mattn/go-sqlite3" // SQLite driver "sqlite3"
)

// The registry's SQLite connection parameters (registry/store.go), so that
// the bench's direct writes are as durable as the server's.
const sqliteParams = "_journal_mode=WAL&_synchronous=FULL&_foreign_keys=on&_busy_timeout=30000&_txlock=immediate"

// openDB opens the server's database directly (for bulk loading and for the
// DB-backed transparency-log measurement).
func openDB(ctx context.Context, dbURL string) (*sqlx.DB, bool, error) {
	if strings.HasPrefix(dbURL, "postgres://") || strings.HasPrefix(dbURL, "postgresql://") {
		db, err := sqlx.ConnectContext(ctx, "postgres", dbURL)
		return db, true, err
	}
	p := strings.TrimPrefix(strings.TrimPrefix(dbURL, "sqlite:"), "file:")
	if strings.HasPrefix(p, "///") {
		p = p[2:]
	}
	if i := strings.IndexByte(p, '?'); i >= 0 {
		p = p[:i]
	}
	db, err := sqlx.ConnectContext(ctx, "sqlite3", "file:"+p+"?"+sqliteParams)
	if err != nil {
		return nil, false, err
	}
	db.SetMaxOpenConns(1)
	return db, false, nil
}

// filler is one bulk load of agents (with one certificate each) written
// straight into the registry's tables in one transaction.
type filler struct {
	db       *sqlx.DB
	postgres bool
	batch    int
}

type fillRow struct {
	name, serial, fp string
}

// fill inserts n agents named f<batch>-<i>.bench owned by owner, each with
// one certificate: active/issued, or revoked (keyCompromise) when revoked is
// set. der is stored as every row's certificate body (see
// docs/performance.md: the rows are not real certificates; their serials
// and fingerprints are unique and random).
func (f *filler) fill(ctx context.Context, n int, owner string, revoked bool, der []byte) (time.Duration, error) {
	f.batch++
	t0 := time.Now()
	var hi [8]byte
	if _, err := rand.Read(hi[:]); err != nil {
		return 0, err
	}
	hi[0] |= 0x80
	prefix := hex.EncodeToString(hi[:])
	row := func(i int) fillRow {
		var lo [8]byte
		binary.BigEndian.PutUint64(lo[:], uint64(i))
		serial := prefix + hex.EncodeToString(lo[:])
		sum := sha256.Sum256([]byte(serial))
		return fillRow{name: fmt.Sprintf("f%d-%08d.bench", f.batch, i), serial: serial, fp: hex.EncodeToString(sum[:])}
	}
	now := time.Now().UTC().Truncate(time.Microsecond)
	agentStatus, certStatus := "active", "issued"
	var reason, revokedAt any
	if revoked {
		agentStatus, certStatus, reason, revokedAt = "revoked", "revoked", "keyCompromise", now
	}
	tx, err := f.db.BeginTxx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("bulk load: begin: %w", err)
	}
	defer tx.Rollback()
	agentCols := []string{"name", "owner", "status", "capabilities", "metadata", "current_serial", "created_at", "updated_at"}
	certCols := []string{"serial", "agent_name", "fingerprint_sha256", "status", "revocation_reason", "revoked_at", "der", "not_before", "not_after", "created_at", "issuer_key_id"}
	// Every row the server issues names its issuing CA, and a CRL lists only
	// its own CA's rows: rows whose der is a real leaf name that leaf's
	// issuer (its authority key id), the others the empty issuer, which the
	// server records for a row whose DER does not parse (no CA). A row with
	// no issuer at all (NULL) would be the server's to fill from its DER at
	// its next maintenance tick (registry.BackfillIssuers), one write each.
	issuer := ""
	if c, err := x509.ParseCertificate(der); err == nil && len(c.AuthorityKeyId) > 0 {
		issuer = hex.EncodeToString(c.AuthorityKeyId)
	}
	prep := func(table string, cols []string) (*sqlx.Stmt, error) {
		if f.postgres {
			return tx.PreparexContext(ctx, pq.CopyIn(table, cols...))
		}
		q := "INSERT INTO " + table + " (" + strings.Join(cols, ", ") + ") VALUES (" + strings.TrimSuffix(strings.Repeat("?, ", len(cols)), ", ") + ")"
		return tx.PreparexContext(ctx, q)
	}
	as, err := prep("agents", agentCols)
	if err != nil {
		return 0, fmt.Errorf("bulk load: prepare agents: %w", err)
	}
	for i := range n {
		r := row(i)
		if _, err := as.ExecContext(ctx, r.name, owner, agentStatus, "[]", "{}", r.serial, now, now); err != nil {
			return 0, fmt.Errorf("bulk load: agent %d: %w", i, err)
		}
	}
	if f.postgres {
		if _, err := as.ExecContext(ctx); err != nil {
			return 0, fmt.Errorf("bulk load: copy agents: %w", err)
		}
	}
	as.Close()
	cs, err := prep("certificates", certCols)
	if err != nil {
		return 0, fmt.Errorf("bulk load: prepare certificates: %w", err)
	}
	for i := range n {
		r := row(i)
		if _, err := cs.ExecContext(ctx, r.serial, r.name, r.fp, certStatus, reason, revokedAt, der, now.Add(-time.Minute), now.Add(24*time.Hour), now, issuer); err != nil {
			return 0, fmt.Errorf("bulk load: certificate %d: %w", i, err)
		}
	}
	if f.postgres {
		if _, err := cs.ExecContext(ctx); err != nil {
			return 0, fmt.Errorf("bulk load: copy certificates: %w", err)
		}
	}
	cs.Close()
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("bulk load: commit: %w", err)
	}
	// Fresh planner statistics, as an operator would after a bulk load.
	if _, err := f.db.ExecContext(ctx, "ANALYZE"); err != nil {
		return 0, fmt.Errorf("bulk load: analyze: %w", err)
	}
	return time.Since(t0), nil
}

func (f *filler) countAgents(ctx context.Context) (int, error) {
	var n int
	err := f.db.GetContext(ctx, &n, "SELECT COUNT(*) FROM agents")
	return n, err
}

// deleteCertificate removes a certificate row so that a genuine,
// chain-valid certificate becomes unknown to the registry.
func (f *filler) deleteCertificate(ctx context.Context, serial string) error {
	_, err := f.db.ExecContext(ctx, f.db.Rebind("DELETE FROM certificates WHERE serial = ?"), serial)
	return err
}
