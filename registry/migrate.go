package registry

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"
)

//go:embed migrations/sqlite/*.sql migrations/postgres/*.sql
var migrationFS embed.FS // read-only: embedded at build time

// migrationLockID is the PostgreSQL advisory lock that serializes Migrate
// across replicas starting at the same time ("ATR-MIGR").
const migrationLockID = 0x4154522d4d494752

// Migration is one embedded schema version.
type Migration struct {
	Version int
	Name    string
	SQL     string
}

// Migrations lists the embedded migrations of a dialect in version order.
// File names are NNN_name.sql.
func Migrations(d Dialect) ([]Migration, error) {
	dir := "migrations/" + string(d)
	entries, err := fs.ReadDir(migrationFS, dir)
	if err != nil {
		return nil, fmt.Errorf("registry: reading migrations for %s: %w", d, err)
	}
	var out []Migration
	for _, e := range entries {
		name := e.Name()
		if e.IsDir() || !strings.HasSuffix(name, ".sql") {
			continue
		}
		num, rest, ok := strings.Cut(strings.TrimSuffix(name, ".sql"), "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v <= 0 || rest == "" {
			return nil, fmt.Errorf("registry: migration file %q: want NNN_name.sql", name)
		}
		body, err := fs.ReadFile(migrationFS, path.Join(dir, name))
		if err != nil {
			return nil, fmt.Errorf("registry: reading migration %q: %w", name, err)
		}
		out = append(out, Migration{Version: v, Name: rest, SQL: string(body)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Version < out[j].Version })
	for i := 1; i < len(out); i++ {
		if out[i].Version == out[i-1].Version {
			return nil, fmt.Errorf("registry: duplicate migration version %d", out[i].Version)
		}
	}
	return out, nil
}

// Migrate applies every embedded migration not yet recorded in
// schema_migrations, each in its own transaction together with its
// schema_migrations row. It is idempotent and safe to run from several
// replicas at once (PostgreSQL: advisory transaction lock; SQLite: BEGIN
// IMMEDIATE). It returns the number of migrations applied.
func (s *Store) Migrate(ctx context.Context) (int, error) {
	migs, err := Migrations(s.dialect)
	if err != nil {
		return 0, err
	}
	create := `CREATE TABLE IF NOT EXISTS schema_migrations (
		version    INTEGER PRIMARY KEY,
		name       TEXT NOT NULL,
		applied_at TIMESTAMP NOT NULL)`
	if s.dialect == Postgres {
		create = strings.Replace(create, "TIMESTAMP", "TIMESTAMPTZ", 1)
	}
	if err := s.inTx(ctx, "migrate: schema_migrations", func(tx *sqlx.Tx) error {
		if err := s.lockMigrations(ctx, tx); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, create)
		return dbErr("migrate: creating schema_migrations", err)
	}); err != nil {
		return 0, err
	}
	applied := 0
	for _, m := range migs {
		did := false
		err := s.inTx(ctx, fmt.Sprintf("migrate %03d", m.Version), func(tx *sqlx.Tx) error {
			if err := s.lockMigrations(ctx, tx); err != nil {
				return err
			}
			var n int
			if err := tx.GetContext(ctx, &n, tx.Rebind(`SELECT COUNT(*) FROM schema_migrations WHERE version = ?`), m.Version); err != nil {
				return dbErr("migrate: reading schema_migrations", err)
			}
			if n > 0 {
				return nil
			}
			if _, err := tx.ExecContext(ctx, m.SQL); err != nil {
				return dbErr(fmt.Sprintf("migrate: applying %03d_%s", m.Version, m.Name), err)
			}
			if _, err := tx.ExecContext(ctx, tx.Rebind(`INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)`),
				m.Version, m.Name, dbTime(time.Now())); err != nil {
				return dbErr("migrate: recording version", err)
			}
			did = true
			return nil
		})
		if err != nil {
			return applied, err
		}
		if did {
			applied++
			s.log.WithField("version", m.Version).WithField("migration", m.Name).Info("applied migration")
		}
	}
	return applied, nil
}

// SchemaVersion returns the highest applied migration version (0 if none).
func (s *Store) SchemaVersion(ctx context.Context) (int, error) {
	var v *int
	if err := s.db.GetContext(ctx, &v, `SELECT MAX(version) FROM schema_migrations`); err != nil {
		return 0, dbErr("schema version", err)
	}
	if v == nil {
		return 0, nil
	}
	return *v, nil
}

func (s *Store) lockMigrations(ctx context.Context, tx *sqlx.Tx) error {
	if s.dialect != Postgres {
		return nil // BEGIN IMMEDIATE already holds the write lock
	}
	_, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(migrationLockID))
	return dbErr("migrate: lock", err)
}
