package registry

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"runtime/metrics"
	"strings"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/agent-trust-registry/atr/registry/internal/testdb"
)

// goroutinesCreated is the number of goroutines the process has created.
func goroutinesCreated(t *testing.T) uint64 {
	t.Helper()
	s := []metrics.Sample{{Name: "/sched/goroutines-created:goroutines"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		t.Fatalf("runtime/metrics has no %s", s[0].Name)
	}
	return s[0].Value.Uint64()
}

// TestSQLiteExecOnCallersGoroutine: a statement under a context that can
// end (a request's) runs on the caller's goroutine — mattn/go-sqlite3 on
// its own starts a goroutine for every such Exec and BEGIN, which the
// group commit's writer then waits for behind the request goroutines — and
// a context that ended before the statement still refuses it.
func TestSQLiteExecOnCallersGoroutine(t *testing.T) {
	s := openMigratedStore(t, "sqlite")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	conn, err := s.db.Connx(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	const n = 200
	before := goroutinesCreated(t)
	for range n / 2 {
		tx, err := conn.BeginTxx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.ExecContext(ctx, `SAVEPOINT x`); err != nil {
			t.Fatal(err)
		}
		if err := tx.Rollback(); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := conn.ExecContext(ctx, `CREATE TEMP TABLE t (i INTEGER)`); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if _, err := conn.ExecContext(ctx, `INSERT INTO t VALUES (?)`, i); err != nil {
			t.Fatal(err)
		}
	}
	// database/sql itself watches each transaction's context (one
	// goroutine per BEGIN): n/2 of them.
	if created := goroutinesCreated(t) - before; created > n/2+n/8 {
		t.Errorf("%d BEGINs and %d Execs created %d goroutines; want at most %d (one per transaction, none per statement)", n/2, n+n/2, created, n/2+n/8)
	}

	ended, end := context.WithCancel(ctx)
	end()
	if _, err := conn.ExecContext(ended, `INSERT INTO t VALUES (-1)`); !errors.Is(err, context.Canceled) {
		t.Errorf("Exec under an ended context: %v; want context.Canceled", err)
	}
	if _, err := conn.BeginTxx(ended, nil); !errors.Is(err, context.Canceled) {
		t.Errorf("Begin under an ended context: %v; want context.Canceled", err)
	}
	var rows, neg int
	if err := conn.GetContext(ctx, &rows, `SELECT count(*) FROM t`); err != nil || rows != n {
		t.Errorf("rows = %d, %v; want %d", rows, err, n)
	}
	if err := conn.GetContext(ctx, &neg, `SELECT count(*) FROM t WHERE i < 0`); err != nil || neg != 0 {
		t.Errorf("rows the ended context wrote = %d, %v; want 0", neg, err)
	}
}

// sqliteTempFiles returns the SQLite temporary files this process holds
// open: unlinked as soon as they are opened, they read as
// "/var/tmp/etilqs_… (deleted)", or "/var/tmp/#inode (deleted)" where
// SQLite opened them with O_TMPFILE.
func sqliteTempFiles(t *testing.T) []string {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	var out []string
	for _, fd := range fds {
		target, err := os.Readlink(filepath.Join("/proc/self/fd", fd.Name()))
		base := filepath.Base(target)
		if err == nil && strings.HasSuffix(target, "(deleted)") && (strings.HasPrefix(base, "etilqs_") || strings.HasPrefix(base, "#")) {
			out = append(out, target)
		}
	}
	return out
}

// TestSQLiteTempStoreInMemory: a transaction's statement and savepoint
// journals stay in memory. SQLite's default spills one past 64 KiB to an
// unlinked file under /var/tmp, with two write(2)s per page: under load
// that was twice the WAL's writes, all of them on the one writer
// (docs/performance-history.md, thirteenth pass).
func TestSQLiteTempStoreInMemory(t *testing.T) {
	s := openMigratedStore(t, "sqlite")
	ctx := context.Background()
	conn, err := s.db.Connx(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, `CREATE TABLE journal_probe (i INTEGER PRIMARY KEY, b BLOB)`); err != nil {
		t.Fatal(err)
	}
	blob := make([]byte, 1000)
	for i := range 400 {
		if _, err := conn.ExecContext(ctx, `INSERT INTO journal_probe VALUES (?, ?)`, i, blob); err != nil {
			t.Fatal(err)
		}
	}
	tx, err := conn.BeginTxx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	// ~100 pages changed under a savepoint: each goes to the savepoint's
	// journal before it changes.
	for _, q := range []string{`SAVEPOINT probe`, `UPDATE journal_probe SET b = zeroblob(1001)`, `RELEASE probe`} {
		if _, err := tx.ExecContext(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	if files := sqliteTempFiles(t); len(files) > 0 {
		t.Errorf("SQLite holds temporary files open inside a transaction: %v; want its journals in memory (PRAGMA temp_store = MEMORY)", files)
	}
	var store int
	if err := tx.GetContext(ctx, &store, `PRAGMA temp_store`); err != nil || store != 2 {
		t.Errorf("PRAGMA temp_store = %d, %v; want 2 (MEMORY)", store, err)
	}
}

// TestSQLiteWALCheckpointedOffTheWriter: the Store's checkpointer copies
// the WAL back after the writer's commits — SQLite's default had the group
// commit's writer copy a thousand pages back into the database file inside
// a commit every few batches; its own checkpoint now waits for 4,000 pages,
// more than this test writes.
func TestSQLiteWALCheckpointedOffTheWriter(t *testing.T) {
	s, path := openWALProbe(t, true)
	ctx := context.Background()
	var auto int
	if err := s.inTx(ctx, "probe", func(tx *sqlx.Tx) error {
		return tx.GetContext(ctx, &auto, `PRAGMA wal_autocheckpoint`)
	}); err != nil || auto != walAutoCheckpointPages {
		t.Errorf("the writer's PRAGMA wal_autocheckpoint = %d, %v; want %d (its own checkpoint only as a backstop)", auto, err, walAutoCheckpointPages)
	}
	fileSize := func() int64 {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Size()
	}
	before := fileSize()
	// 4 MiB through the writer: 1,000 pages in the WAL, which only a
	// checkpoint copies into the database file.
	blob := make([]byte, 4000)
	for k := range 8 {
		if err := s.inTx(ctx, "probe", func(tx *sqlx.Tx) error {
			for i := range 128 {
				if _, err := tx.ExecContext(ctx, `INSERT INTO wal_probe VALUES (?, ?)`, k*128+i, blob); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	const want = 3 << 20 // of the 4 MiB: margin for pages reused from the free list
	deadline := time.Now().Add(10 * time.Second)
	for fileSize()-before < want && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if grown := fileSize() - before; grown < want {
		t.Errorf("the database file grew by %d bytes after 4 MiB of commits; want at least %d (the checkpointer copies the WAL back)", grown, want)
	}
}

// TestSQLiteWALBoundedUnderSustainedCommits: under back-to-back commits the
// WAL still starts over. SQLite starts it over only when a write
// transaction begins with all of it copied back, which passive checkpoints
// beside a busy writer never leave it; the writer's own checkpoint, at
// walAutoCheckpointPages, is the backstop (a review of the checkpointer
// measured 62 MiB of WAL after 3 s of such commits without it).
func TestSQLiteWALBoundedUnderSustainedCommits(t *testing.T) {
	s, path := openWALProbe(t, false)
	ctx := context.Background()
	// 96 commits of 128 rewritten pages: 48 MiB through the WAL.
	blob := make([]byte, 4000)
	var peak int64
	for k := range 96 {
		blob[0] = byte(k)
		if err := s.inTx(ctx, "probe", func(tx *sqlx.Tx) error {
			for i := range 128 {
				if _, err := tx.ExecContext(ctx, `INSERT OR REPLACE INTO wal_probe VALUES (?, ?)`, i, blob); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if fi, err := os.Stat(path + "-wal"); err == nil {
			peak = max(peak, fi.Size())
		}
	}
	// The backstop's 4,000 pages and a few commits over: about 17 MiB.
	const limit = 24 << 20
	if peak > limit {
		t.Errorf("the WAL reached %d bytes under 48 MiB of back-to-back commits; want at most %d (it starts over)", peak, limit)
	}
}

// TestSQLiteWALCheckpointRetriedWhenIdle: a checkpoint that could not copy
// everything — a reader still on an older snapshot — is tried again once
// the reader is gone, without waiting for another commit.
func TestSQLiteWALCheckpointRetriedWhenIdle(t *testing.T) {
	s, path := openWALProbe(t, false)
	ctx := context.Background()
	reader, err := s.db.Connx(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	var n int
	if _, err := reader.ExecContext(ctx, `BEGIN DEFERRED`); err != nil {
		t.Fatal(err)
	}
	if err := reader.GetContext(ctx, &n, `SELECT count(*) FROM wal_probe`); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	before := fi.Size()
	blob := make([]byte, 4000)
	if err := s.inTx(ctx, "probe", func(tx *sqlx.Tx) error {
		for i := range 256 {
			if _, err := tx.ExecContext(ctx, `INSERT INTO wal_probe VALUES (?, ?)`, i, blob); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// The commit's checkpoint runs while the reader holds its snapshot.
	time.Sleep(2 * walCheckpointEvery)
	if _, err := reader.ExecContext(ctx, `COMMIT`); err != nil {
		t.Fatal(err)
	}
	const want = 768 << 10 // of the 1 MiB committed
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if fi, err := os.Stat(path); err == nil && fi.Size()-before >= want {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Errorf("the database file did not grow by %d bytes within 10 s of the reader's end with no further commit; want the checkpoint tried again", want)
}

// openWALProbe opens an SQLite Store on a fresh file, migrated when
// migrate is set, with the table wal_probe (i INTEGER PRIMARY KEY, b BLOB)
// created through the writer, and returns it and the file's path.
func openWALProbe(t *testing.T, migrate bool) (*Store, string) {
	t.Helper()
	url := testdb.SQLiteURL(t)
	s, err := Open(context.Background(), url, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	ctx := context.Background()
	if migrate {
		if _, err := s.Migrate(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.inTx(ctx, "probe", func(tx *sqlx.Tx) error {
		_, err := tx.ExecContext(ctx, `CREATE TABLE wal_probe (i INTEGER PRIMARY KEY, b BLOB)`)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return s, strings.TrimPrefix(url, "sqlite://")
}
