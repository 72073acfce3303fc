package registry

import (
	"context"
	"crypto/x509"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agent-trust-registry/atr/registry/internal/testdb"
)

// startNotifier starts r's change notification and waits until the root
// CRLs' revision is live (a hang guard, not a timing assertion).
func startNotifier(t *testing.T, r *Registry) {
	t.Helper()
	if err := r.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.notify.stop() })
	waitUntil(t, "the root CRLs' revision is live", func() bool { _, live := r.notify.rootCRLSeq(); return live })
}

// holdReads makes r's notifier hold its next read after its query once
// hold is called, until the test ends or release is called; hold returns
// once the held read is under way. Set before startNotifier.
func holdReads(t *testing.T, r *Registry) (hold, release func()) {
	t.Helper()
	inRead, released := make(chan struct{}), make(chan struct{})
	var holding atomic.Bool
	r.notify.afterQuery = func() {
		if holding.CompareAndSwap(true, false) {
			close(inRead)
			<-released
		}
	}
	var once sync.Once
	release = func() { once.Do(func() { close(released) }) }
	// Registered after startNotifier's cleanup (which stops the notifier),
	// so it runs first: a test that fails while a read is held ends.
	hold = func() {
		t.Cleanup(release)
		holding.Store(true)
		r.notify.wake()
		<-inRead
	}
	return hold, release
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("never: %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestIssuanceReadsNoRootCRLRevision (issue 14, twenty-first pass): every
// issuance checks its issuing CA against the root CRLs (issuerRevoked).
// Every rotation and revocation moves the revocation revision, which is then
// not live until the notifier has read it again; in that window — under a
// fleet's rotations, most of the time on PostgreSQL: 0.5 reads of
// revocation_state per rotation, and 0.1 more of root_crl_seq — each
// issuance read the row itself. The root CRLs' own revision, which only a
// root CRL's publication moves, now stays live (crlsLive), and an issuance
// reads nothing. Here the notifier's read is held while the revocation
// revision is not live, as right after a rotation.
func TestIssuanceReadsNoRootCRLRevision(t *testing.T) {
	for _, db := range testdb.Names() {
		t.Run(db, func(t *testing.T) {
			e := newRotatedEnv(t, db)
			e.registerWith(t, e.cur, "first.acme") // loads the root CRLs
			hold, _ := holdReads(t, e.cur)
			startNotifier(t, e.cur)
			e.registerWith(t, e.cur, "second.acme") // the root CRLs loaded at the live revision
			hold()
			e.cur.notify.ownChange() // what a rotation does after its commit
			if _, live := e.cur.notify.revocationSeq(); live {
				t.Fatal("the revocation revision is live after a change: the test holds nothing")
			}
			var (
				mu    sync.Mutex
				reads []string
			)
			h := func(q string) {
				if strings.Contains(q, "revocation_state") {
					mu.Lock()
					reads = append(reads, strings.Join(strings.Fields(q), " "))
					mu.Unlock()
				}
			}
			if !statementHook.CompareAndSwap(nil, &h) {
				t.Fatal("another test holds the statement hook")
			}
			e.registerWith(t, e.cur, "third.acme")
			statementHook.Store(nil)
			if len(reads) > 0 {
				t.Errorf("an issuance read the revocation state while only the revocation revision was not live:\n%s", strings.Join(reads, "\n"))
			}
		})
	}
}

// TestRootCRLSeenByAStartedRegistry: with the root CRLs' revision live, a
// root CRL still reaches the next issuance. Published through the
// registry's own Store, it clears the revision before its commit (the
// Store's root CRL hooks), so the very next issuance under the revoked
// intermediate is refused. Published by another process (another Store on
// the same database) it is seen once the notifier has read the new
// revision: on PostgreSQL at its atr_root_crls notification, on SQLite at
// its next poll.
func TestRootCRLSeenByAStartedRegistry(t *testing.T) {
	for _, db := range testdb.Names() {
		t.Run(db, func(t *testing.T) {
			ctx := context.Background()
			e := newRotatedEnv(t, db)
			e.registerWith(t, e.old, "before.acme")
			hold, release := holdReads(t, e.old)
			startNotifier(t, e.old)
			e.registerWith(t, e.old, "live.acme")
			// The notifier's next read is held: only the publication itself
			// can tell the registry.
			hold()
			if _, err := e.store.PublishRootCRL(ctx, e.signRootCRL(t, 1, e.inter), []*x509.Certificate{e.root}); err != nil {
				t.Fatal(err)
			}
			_, err := e.old.Register(ctx, SystemActor(), RegisterRequest{Name: "late.acme", CSR: newTestCSR(t)})
			release()
			if !errors.Is(err, ErrUnavailable) {
				t.Fatalf("issuance right after a root CRL revoked its intermediate: %v, want ErrUnavailable", err)
			}

			// Another process lifts it: a root CRL that no longer lists it.
			other, err := Open(ctx, e.url, e.log)
			if err != nil {
				t.Fatal(err)
			}
			defer other.Close()
			if _, err := other.PublishRootCRL(ctx, e.signRootCRL(t, 2), []*x509.Certificate{e.root}); err != nil {
				t.Fatal(err)
			}
			var want int64
			if err := e.store.db.GetContext(ctx, &want, `SELECT root_crl_seq FROM revocation_state WHERE id = 1`); err != nil {
				t.Fatal(err)
			}
			waitUntil(t, "the notifier reads the other process's root CRL", func() bool {
				seq, live := e.old.notify.rootCRLSeq()
				return live && seq == want
			})
			e.registerWith(t, e.old, "after.acme")
		})
	}
}

// TestRootCRLNotLiveWhilePublished: the notifier reads while a root CRL is
// being published through its Store — here from a hook that runs right
// after the notifier's own, before the transaction — and that read must not
// make the revisions live: it may have read them before the commit. Before,
// the hook only cleared them and woke the notifier, whose read made them
// live again with the values before the root CRL until after the commit.
func TestRootCRLNotLiveWhilePublished(t *testing.T) {
	for _, db := range testdb.Names() {
		t.Run(db, func(t *testing.T) {
			ctx := context.Background()
			e := newRotatedEnv(t, db)
			reads := atomic.Int64{}
			e.old.notify.afterQuery = func() { reads.Add(1) }
			startNotifier(t, e.old)
			var liveInTx, crlsLiveInTx atomic.Bool
			remove := e.store.addRootCRLHook(func(begin bool) {
				if !begin {
					return
				}
				n := reads.Load()
				e.old.notify.wake()
				waitUntil(t, "a read during the publication", func() bool { return reads.Load() > n })
				_, live := e.old.notify.revocationSeq()
				_, crlsLive := e.old.notify.rootCRLSeq()
				liveInTx.Store(live)
				crlsLiveInTx.Store(crlsLive)
			})
			defer remove()
			if _, err := e.store.PublishRootCRL(ctx, e.signRootCRL(t, 1, e.inter), []*x509.Certificate{e.root}); err != nil {
				t.Fatal(err)
			}
			if liveInTx.Load() || crlsLiveInTx.Load() {
				t.Errorf("a read during a root CRL's publication made the revisions live (revocation %v, root CRLs %v)", liveInTx.Load(), crlsLiveInTx.Load())
			}
			waitUntil(t, "live again after the publication", func() bool {
				_, live := e.old.notify.revocationSeq()
				_, crlsLive := e.old.notify.rootCRLSeq()
				return live && crlsLive
			})
			if _, err := e.old.Register(ctx, SystemActor(), RegisterRequest{Name: "late.acme", CSR: newTestCSR(t)}); !errors.Is(err, ErrUnavailable) {
				t.Fatalf("issuance after a root CRL revoked its intermediate: %v, want ErrUnavailable", err)
			}
		})
	}
}

// TestRootCRLNotifiedOnItsOwnChannel (PostgreSQL): a root CRL published by
// another process reaches a started registry through atr_root_crls
// (migration 014) before any periodic read. The notifier's read is held, so
// the notification alone must make the root CRLs' revision not live; then
// the next issuance under the revoked intermediate reads the database and
// is refused.
func TestRootCRLNotifiedOnItsOwnChannel(t *testing.T) {
	ctx := context.Background()
	e := newRotatedEnv(t, "postgres")
	e.registerWith(t, e.old, "before.acme")
	hold, release := holdReads(t, e.old)
	startNotifier(t, e.old)
	e.registerWith(t, e.old, "live.acme")
	hold()
	other, err := Open(ctx, e.url, e.log)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if _, err := other.PublishRootCRL(ctx, e.signRootCRL(t, 1, e.inter), []*x509.Certificate{e.root}); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the atr_root_crls notification makes the root CRLs' revision not live", func() bool {
		_, live := e.old.notify.rootCRLSeq()
		return !live
	})
	_, err = e.old.Register(ctx, SystemActor(), RegisterRequest{Name: "late.acme", CSR: newTestCSR(t)})
	release()
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("issuance after another process's root CRL revoked its intermediate: %v, want ErrUnavailable", err)
	}
}
