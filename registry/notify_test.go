package registry_test

import (
	"context"
	"database/sql"
	"errors"
	"testing"
	"time"

	"github.com/agent-trust-registry/atr/registry"
	"github.com/agent-trust-registry/atr/registry/registrytest"
)

// hangGuard bounds every wait of these tests; the house rule is no timed
// assertions, so it only turns a hang into a failure.
const hangGuard = 15 * time.Second

// replica opens a second Store and Registry on the fixture's database: on
// PostgreSQL another replica, on SQLite another process on the same file
// (its own connection pool, no shared commit hook).
func replica(t *testing.T, f *registrytest.Fixture) *registry.Registry {
	t.Helper()
	s, err := registry.Open(context.Background(), f.DatabaseURL, f.Log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	cfg := f.Config
	cfg.Store = s
	r, err := registry.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// start starts r's change notification for the rest of the test.
func start(t *testing.T, r *registry.Registry) {
	t.Helper()
	if err := r.Start(t.Context()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { r.Close() })
}

// TestNotifier: the change notifier of a replica learns of the log growing
// and of revocations made through another replica on the same database
// (PostgreSQL: LISTEN/NOTIFY, with the periodic read switched off so that
// only a notification can deliver; SQLite: the periodic read), and of its
// own commits at once (SQLite: the commit hook, periodic read off).
func TestNotifier(t *testing.T) {
	eachDB(t, func(t *testing.T, f *registrytest.Fixture) {
		ctx, cancel := context.WithTimeout(t.Context(), hangGuard)
		defer cancel()
		own := f.Registry
		own.SetNotifyPoll(time.Hour) // only notifications and commits wake it
		other := replica(t, f)
		if f.Database == "postgres" {
			other.SetNotifyPoll(time.Hour) // only NOTIFY can tell it
		}
		start(t, own)
		start(t, other)
		if err := own.Start(ctx); err == nil {
			t.Error("a second Start succeeded")
		}
		size0, seq0, live := other.NotifyState()
		if !live {
			t.Fatal("a started notifier is not live")
		}

		owner := f.Owner("acme", "acme")
		register(t, f, owner, "bot.acme")
		for name, r := range map[string]*registry.Registry{"own": own, "other": other} {
			got, err := r.WaitLogSize(ctx, size0)
			if err != nil || got <= size0 {
				t.Fatalf("%s replica: log size after a registration: %d, %v; want > %d", name, got, err, size0)
			}
		}
		// A registration is no revocation; a rotation supersedes, a revocation
		// revokes: each changes the seq, which both replicas learn.
		if _, seq, _ := other.NotifyState(); seq != seq0 {
			t.Errorf("revocation seq moved from %d to %d on a registration", seq0, seq)
		}
		if _, err := own.Revoke(ctx, owner, "bot.acme", "keyCompromise"); err != nil {
			t.Fatal(err)
		}
		for name, r := range map[string]*registry.Registry{"own": own, "other": other} {
			got, err := r.WaitRevocationSeq(ctx, seq0)
			if err != nil || got == seq0 {
				t.Fatalf("%s replica: revocation seq after a revocation: %d, %v; want ≠ %d", name, got, err, seq0)
			}
			// Live again once a read follows the change (a replica's own
			// revocation makes it not live until then).
			for {
				if _, _, live := r.NotifyState(); live {
					break
				}
				select {
				case <-ctx.Done():
					t.Fatalf("%s replica: not live again after a change", name)
				case <-time.After(10 * time.Millisecond):
				}
			}
		}

		// Close wakes waiters and makes the values not live.
		done := make(chan error, 1)
		go func() {
			_, err := other.WaitLogSize(ctx, 1<<40)
			done <- err
		}()
		other.Close()
		select {
		case err := <-done:
			if !errors.Is(err, registry.ErrUnavailable) {
				t.Errorf("wait after Close: %v, want ErrUnavailable", err)
			}
		case <-ctx.Done():
			t.Fatal("a waiter was not woken by Close")
		}
		if _, _, live := other.NotifyState(); live {
			t.Error("a closed notifier is live")
		}
		if _, err := other.WaitRevocationSeq(ctx, 0); !errors.Is(err, registry.ErrUnavailable) {
			t.Errorf("wait on a closed notifier: %v, want ErrUnavailable", err)
		}
	})
}

// TestNotifierReconnects: when the LISTEN connection is cut (PostgreSQL:
// pg_terminate_backend of the notifier's connection) and the revocation
// seq changes around that moment, the notifier still learns the new value:
// lib/pq reconnects and the notifier reads both values again, so nothing
// is missed even with its periodic read switched off.
func TestNotifierReconnects(t *testing.T) {
	f := registrytest.NewFixture(t, registrytest.WithDatabase("postgres"))
	ctx, cancel := context.WithTimeout(t.Context(), hangGuard)
	defer cancel()
	r := f.Registry
	r.SetNotifyPoll(time.Hour)
	start(t, r)
	db, err := sql.Open("postgres", f.DatabaseURL)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for round := range 3 {
		_, seq, _ := r.NotifyState()
		var killed int
		if err := db.QueryRowContext(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
			WHERE datname = current_database() AND application_name = $1`, registry.NotifyApplicationName).Scan(&killed); err != nil {
			t.Fatal(err)
		}
		if killed != 1 {
			t.Fatalf("round %d: terminated %d LISTEN connections, want 1", round, killed)
		}
		if _, err := db.ExecContext(ctx, `UPDATE revocation_state SET seq = seq + 1 WHERE id = 1`); err != nil {
			t.Fatal(err)
		}
		got, err := r.WaitRevocationSeq(ctx, seq)
		if err != nil || got != seq+1 {
			t.Fatalf("round %d: seq after a change during a reconnection: %d, %v; want %d", round, got, err, seq+1)
		}
		// Live again once the connection is back and read.
		for {
			if _, _, live := r.NotifyState(); live {
				break
			}
			select {
			case <-ctx.Done():
				t.Fatalf("round %d: the notifier did not become live again", round)
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
}
