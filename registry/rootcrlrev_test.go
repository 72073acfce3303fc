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
			inRead, release := make(chan struct{}), make(chan struct{})
			var hold atomic.Bool
			e.cur.notify.afterQuery = func() {
				if hold.CompareAndSwap(true, false) {
					close(inRead)
					<-release
				}
			}
			startNotifier(t, e.cur)
			e.registerWith(t, e.cur, "second.acme") // the root CRLs loaded at the live revision
			hold.Store(true)
			e.cur.notify.wake()
			<-inRead
			defer close(release)
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
			inRead, release := make(chan struct{}), make(chan struct{})
			var hold atomic.Bool
			e.old.notify.afterQuery = func() {
				if hold.CompareAndSwap(true, false) {
					close(inRead)
					<-release
				}
			}
			startNotifier(t, e.old)
			e.registerWith(t, e.old, "live.acme")
			// The notifier's next read is held: only the publication itself
			// can tell the registry.
			hold.Store(true)
			e.old.notify.wake()
			<-inRead
			if _, err := e.store.PublishRootCRL(ctx, e.signRootCRL(t, 1, e.inter), []*x509.Certificate{e.root}); err != nil {
				close(release)
				t.Fatal(err)
			}
			_, err := e.old.Register(ctx, SystemActor(), RegisterRequest{Name: "late.acme", CSR: newTestCSR(t)})
			close(release)
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
