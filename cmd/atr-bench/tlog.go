package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/agent-trust-registry/atr/registry/translog"
)

// memHashes is an in-memory translog.HashStore (a slice indexed by tlog's
// stored-hash index). It is what the 1,000,000-entry points use.
type memHashes struct{ h []tlog.Hash }

func (m *memHashes) ReadHashes(_ context.Context, idx []int64) ([]tlog.Hash, error) {
	out := make([]tlog.Hash, len(idx))
	for i, x := range idx {
		if x < 0 || x >= int64(len(m.h)) {
			return nil, fmt.Errorf("memHashes: index %d of %d", x, len(m.h))
		}
		out[i] = m.h[x]
	}
	return out, nil
}

func (m *memHashes) WriteHashes(_ context.Context, start int64, hs []tlog.Hash) error {
	if start != int64(len(m.h)) {
		return fmt.Errorf("memHashes: write at %d, have %d", start, len(m.h))
	}
	m.h = append(m.h, hs...)
	return nil
}

// dbHashes is a translog.HashStore over one table, with the same queries
// as the registry's log_hashes store (registry/log.go): one IN query per
// read, one multi-row INSERT per write. q is a transaction for appends and
// the database itself for proofs (stored hashes are immutable).
type dbHashes struct {
	q interface {
		sqlx.QueryerContext
		sqlx.ExecerContext
		Rebind(string) string
	}
	table string
}

func (d *dbHashes) ReadHashes(ctx context.Context, idx []int64) ([]tlog.Hash, error) {
	if len(idx) == 0 {
		return nil, nil
	}
	query, args, err := sqlx.In("SELECT idx, hash FROM "+d.table+" WHERE idx IN (?)", idx)
	if err != nil {
		return nil, err
	}
	rows, err := d.q.QueryxContext(ctx, d.q.Rebind(query), args...)
	if err != nil {
		return nil, fmt.Errorf("reading hashes: %w", err)
	}
	defer rows.Close()
	found := make(map[int64]tlog.Hash, len(idx))
	for rows.Next() {
		var i int64
		var raw []byte
		if err := rows.Scan(&i, &raw); err != nil {
			return nil, err
		}
		found[i] = tlog.Hash(raw)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	out := make([]tlog.Hash, len(idx))
	for i, x := range idx {
		h, ok := found[x]
		if !ok {
			return nil, fmt.Errorf("hash %d missing", x)
		}
		out[i] = h
	}
	return out, nil
}

func (d *dbHashes) WriteHashes(ctx context.Context, start int64, hs []tlog.Hash) error {
	if len(hs) == 0 {
		return nil
	}
	var b strings.Builder
	b.WriteString("INSERT INTO " + d.table + " (idx, hash) VALUES ")
	args := make([]any, 0, 2*len(hs))
	for i, h := range hs {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("(?, ?)")
		args = append(args, start+int64(i), h[:])
	}
	_, err := d.q.ExecContext(ctx, d.q.Rebind(b.String()), args...)
	return err
}

func leafFor(i int64) []byte { return []byte(fmt.Sprintf(`{"v":1,"type":"bench","i":%d}`, i)) }

// appendAndRoot is what the registry does per log entry: Append, then
// RootHash of the new tree.
func appendAndRoot(ctx context.Context, s translog.HashStore, n int64) error {
	if err := translog.Append(ctx, s, n, leafFor(n)); err != nil {
		return err
	}
	_, err := translog.RootHash(ctx, s, n+1)
	return err
}

type tlogPoint struct {
	size       int64
	perOp      time.Duration // Append + RootHash per entry at this size
	appendOnly time.Duration // Append alone per entry (mem only)
	proofs     Stats         // inclusion proofs at this size (last mem size; db)
}

// memReps windows of k appends are timed at each size; the fastest window
// counts (the machine is shared: slower windows measure the neighbours).
const memReps = 3

// measureMemLog grows an in-memory log through sizes (ascending) and, at
// each, times windows of k appends (Append + RootHash, and Append alone);
// at the last size it also times proofs inclusion proofs of random entries.
func measureMemLog(ctx context.Context, sizes []int64, k int, proofs int) ([]tlogPoint, error) {
	// Preallocated: growing a 64 MB slice inside a timed window would be
	// charged to the appends that happen to trigger the copy.
	maxSize := sizes[len(sizes)-1] + int64(2*memReps*k)
	m := &memHashes{h: make([]tlog.Hash, 0, 2*maxSize+64)}
	var n int64
	var out []tlogPoint
	window := func(withRoot bool) (time.Duration, error) {
		start := time.Now()
		for range k {
			var err error
			if withRoot {
				err = appendAndRoot(ctx, m, n)
			} else {
				err = translog.Append(ctx, m, n, leafFor(n))
			}
			if err != nil {
				return 0, err
			}
			n++
		}
		return time.Since(start) / time.Duration(k), nil
	}
	for _, size := range sizes {
		for ; n < size; n++ {
			if err := translog.Append(ctx, m, n, leafFor(n)); err != nil {
				return nil, err
			}
		}
		p := tlogPoint{size: size}
		for rep := range memReps {
			w, err := window(true)
			if err != nil {
				return nil, err
			}
			a, err := window(false)
			if err != nil {
				return nil, err
			}
			if rep == 0 || w < p.perOp {
				p.perOp = w
			}
			if rep == 0 || a < p.appendOnly {
				p.appendOnly = a
			}
		}
		out = append(out, p)
	}
	last := &out[len(out)-1]
	r := rand.New(rand.NewPCG(1, 2))
	last.proofs = runN(ctx, proofs, 1, func(ctx context.Context, _ int) error {
		_, err := translog.InclusionProof(ctx, m, r.Int64N(n), n)
		return err
	})
	return out, nil
}

// measureDBLog builds a log of size entries in a table of the server's
// database (one transaction), then times k appends of one durable
// transaction each and proofs inclusion proofs.
func measureDBLog(ctx context.Context, db *sqlx.DB, postgres bool, size int64, k, proofs int) (tlogPoint, error) {
	table := "bench_log_hashes_" + randHex(4)
	// As log_hashes is keyed (migration 011): SQLite's rowid, PostgreSQL's bigint.
	key, blob := "INTEGER", "BLOB"
	if postgres {
		key, blob = "BIGINT", "BYTEA"
	}
	if _, err := db.ExecContext(ctx, "CREATE TABLE "+table+" (idx "+key+" PRIMARY KEY, hash "+blob+" NOT NULL)"); err != nil {
		return tlogPoint{}, fmt.Errorf("creating %s: %w", table, err)
	}
	defer db.ExecContext(context.WithoutCancel(ctx), "DROP TABLE "+table)
	inTx := func(f func(s *dbHashes) error) error {
		tx, err := db.BeginTxx(ctx, nil)
		if err != nil {
			return err
		}
		defer tx.Rollback()
		if err := f(&dbHashes{q: tx, table: table}); err != nil {
			return err
		}
		return tx.Commit()
	}
	var n int64
	if err := inTx(func(s *dbHashes) error {
		for ; n < size; n++ {
			if err := translog.Append(ctx, s, n, leafFor(n)); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		return tlogPoint{}, fmt.Errorf("building the DB log: %w", err)
	}
	start := time.Now()
	for range k {
		if err := inTx(func(s *dbHashes) error { return appendAndRoot(ctx, s, n) }); err != nil {
			return tlogPoint{}, err
		}
		n++
	}
	p := tlogPoint{size: size, perOp: time.Since(start) / time.Duration(k)}
	r := rand.New(rand.NewPCG(3, 4))
	ro := &dbHashes{q: db, table: table}
	p.proofs = runN(ctx, proofs, 1, func(ctx context.Context, _ int) error {
		_, err := translog.InclusionProof(ctx, ro, r.Int64N(n), n)
		return err
	})
	return p, nil
}

func humanCount(n int64) string {
	switch {
	case n >= 1_000_000 && n%1_000_000 == 0:
		return fmt.Sprintf("%dM", n/1_000_000)
	case n >= 1000 && n%1000 == 0:
		return fmt.Sprintf("%dk", n/1000)
	}
	return strings.TrimSpace(fmt.Sprint(n))
}
