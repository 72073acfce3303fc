package registry

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/agent-trust-registry/atr/registry/internal/testdb"
)

// TestAPIKeyCache: with the change notifier running, a key that keeps
// authenticating is read from the database once — the api_keys table is
// renamed away while it must come from memory, so a read would fail — and
// a revocation is refused at once by the replica that made it and, without
// any cache aging, by another replica (another process's Store on the same
// database). A key's bookkeeping (last_used_at) does not move the API keys'
// revision; a revocation does.
func TestAPIKeyCache(t *testing.T) {
	for _, db := range testdb.Names() {
		t.Run(db, func(t *testing.T) {
			ctx := context.Background()
			url := testdb.URL(t, db)
			clock := &keyTestClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
			replica := func() *Registry {
				st, err := Open(ctx, url, testLogger(t))
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { st.Close() })
				if _, err := st.Migrate(ctx); err != nil {
					t.Fatal(err)
				}
				r, err := New(Config{Store: st, TrustDomain: "agents.atr.test", Now: clock.Now, Log: testLogger(t)})
				if err != nil {
					t.Fatal(err)
				}
				if err := r.Start(ctx); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { r.Close() })
				return r
			}
			a, b := replica(), replica()
			admin := SystemActor()
			k1, key1, err := a.CreateAPIKey(ctx, admin, "acme", "acme", []string{ScopeAgentsWrite}, 0)
			if err != nil {
				t.Fatal(err)
			}
			k2, key2, err := a.CreateAPIKey(ctx, admin, "acme", "acme", []string{ScopeAgentsWrite}, 0)
			if err != nil {
				t.Fatal(err)
			}
			seq := func() int64 { return apiKeyStateSeq(t, a.store) }
			waitFor := func(what string, ok func() bool) time.Duration {
				t.Helper()
				start := time.Now()
				deadline := start.Add(15 * time.Second) // hang guard, not a timing assertion
				for !ok() {
					if time.Now().After(deadline) {
						t.Fatalf("never: %s", what)
					}
					time.Sleep(5 * time.Millisecond)
				}
				return time.Since(start)
			}
			for _, r := range []*Registry{a, b} {
				waitFor("the notifier is live", func() bool { _, live := r.notify.apiKeyGen(); return live })
			}
			before := seq()
			for _, key := range []string{key1, key2} {
				if act, err := a.Authenticate(ctx, key); err != nil || act.Owner != "acme" {
					t.Fatalf("Authenticate: %+v, %v", act, err)
				}
			}
			if _, err := b.Authenticate(ctx, key1); err != nil {
				t.Fatal(err)
			}
			if got := seq(); got != before {
				t.Errorf("api_key_state.seq moved %d → %d when last_used_at was written", before, got)
			}
			rename := func(from, to string) {
				t.Helper()
				if _, err := a.store.db.ExecContext(ctx, `ALTER TABLE `+from+` RENAME TO `+to); err != nil {
					t.Fatal(err)
				}
			}
			rename("api_keys", "api_keys_hidden")
			for range 100 {
				for _, key := range []string{key1, key2} {
					if act, err := a.Authenticate(ctx, key); err != nil || act.KeyID == "" || len(act.Scopes) != 1 {
						t.Fatalf("a key authenticated before, while nothing changed: %+v, %v", act, err)
					}
				}
			}
			rename("api_keys_hidden", "api_keys")

			// Revoked on b: refused by a, which holds it cached, once a's
			// notifier heard of it.
			if _, err := a.Authenticate(ctx, key1); err != nil {
				t.Fatal(err)
			}
			if err := b.RevokeAPIKey(ctx, admin, k1.ID); err != nil {
				t.Fatal(err)
			}
			if got := seq(); got <= before {
				t.Errorf("api_key_state.seq %d after a revocation, want above %d", got, before)
			}
			took := waitFor("replica a refuses a key replica b revoked", func() bool {
				_, err := a.Authenticate(ctx, key1)
				return errors.Is(err, ErrUnauthenticated)
			})
			t.Logf("%s: replica a refused the key %v after replica b revoked it", db, took)
			// Revoked on a: refused by a at once.
			if _, err := a.Authenticate(ctx, key2); err != nil {
				t.Fatal(err)
			}
			if err := a.RevokeAPIKey(ctx, admin, k2.ID); err != nil {
				t.Fatal(err)
			}
			if _, err := a.Authenticate(ctx, key2); !errors.Is(err, ErrUnauthenticated) {
				t.Errorf("a key a revoked, on a right after: %v, want ErrUnauthenticated", err)
			}
		})
	}
}

// TestAPIKeyCacheNeedsALiveNotifier: a registry whose notifier is not
// running reads the key at every request (it could not learn of a
// revocation elsewhere), and a wrong secret drops the key from the cache so
// that the next right one reads the row again and resets its failure count.
func TestAPIKeyCacheNeedsALiveNotifier(t *testing.T) {
	for _, db := range testdb.Names() {
		t.Run(db, func(t *testing.T) {
			ctx := context.Background()
			r, _ := newKeyRegistry(t, db) // not started
			_, key, err := r.CreateAPIKey(ctx, SystemActor(), "acme", "acme", []string{ScopeAgentsRead}, 0)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := r.Authenticate(ctx, key); err != nil {
				t.Fatal(err)
			}
			if len(r.keys.m) != 0 {
				t.Errorf("%d keys cached without a live notifier, want none", len(r.keys.m))
			}
			if _, err := r.store.db.ExecContext(ctx, `ALTER TABLE api_keys RENAME TO api_keys_hidden`); err != nil {
				t.Fatal(err)
			}
			if _, err := r.Authenticate(ctx, key); err == nil {
				t.Error("authenticated without reading the key, with the notifier stopped")
			}
			if _, err := r.store.db.ExecContext(ctx, `ALTER TABLE api_keys_hidden RENAME TO api_keys`); err != nil {
				t.Fatal(err)
			}

			if err := r.Start(ctx); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { r.Close() })
			deadline := time.Now().Add(15 * time.Second) // hang guard
			for _, live := r.notify.apiKeyGen(); !live; _, live = r.notify.apiKeyGen() {
				if time.Now().After(deadline) {
					t.Fatal("the notifier did not become live")
				}
				time.Sleep(5 * time.Millisecond)
			}
			if _, err := r.Authenticate(ctx, key); err != nil {
				t.Fatal(err)
			}
			id, _ := ParseAPIKeyID(key)
			if _, ok := r.keys.m[id]; !ok {
				t.Fatal("the key is not cached with a live notifier")
			}
			wrong := key[:len(key)-64] + "0000000000000000000000000000000000000000000000000000000000000000"
			if _, err := r.Authenticate(ctx, wrong); !errors.Is(err, ErrUnauthenticated) {
				t.Fatalf("wrong secret: %v", err)
			}
			if _, ok := r.keys.m[id]; ok {
				t.Error("the key stayed cached after a wrong secret")
			}
			if _, err := r.Authenticate(ctx, key); err != nil {
				t.Fatal(err)
			}
			var failed int
			if err := r.store.db.GetContext(ctx, &failed, r.store.db.Rebind(`SELECT failed_attempts FROM api_keys WHERE id = ?`), id); err != nil || failed != 0 {
				t.Errorf("failed_attempts %d, %v after the right secret, want 0", failed, err)
			}
		})
	}
}

// TestAPIKeySeqTriggers: every change of what a key authenticates as —
// each watched column, a deletion (and on PostgreSQL a TRUNCATE) — moves
// api_key_state.seq, whoever writes it; a key's bookkeeping does not.
func TestAPIKeySeqTriggers(t *testing.T) {
	for _, db := range testdb.Names() {
		t.Run(db, func(t *testing.T) {
			ctx := context.Background()
			r, _ := newKeyRegistry(t, db)
			if _, _, err := r.CreateAPIKey(ctx, SystemActor(), "acme", "acme", []string{ScopeAgentsRead}, 0); err != nil {
				t.Fatal(err)
			}
			seq := func() int64 { return apiKeyStateSeq(t, r.store) }
			now := time.Now().UTC()
			for _, tc := range []struct {
				set   string
				arg   any
				moves bool
			}{
				{"hash", []byte("another hash"), true},
				{"owner", "other", true},
				{"namespace", "other", true},
				{"scopes", `["admin"]`, true},
				{"expires_at", now.Add(time.Hour), true},
				{"revoked_at", now, true},
				{"last_used_at", now, false},
				{"failed_attempts", 3, false},
				{"id", "0123456789abcdef", true},
			} {
				before := seq()
				if _, err := r.store.db.ExecContext(ctx, r.store.db.Rebind(`UPDATE api_keys SET `+tc.set+` = ?`), tc.arg); err != nil {
					t.Fatalf("%s: %v", tc.set, err)
				}
				if moved := seq() != before; moved != tc.moves {
					t.Errorf("UPDATE of %s: seq moved %t, want %t", tc.set, moved, tc.moves)
				}
			}
			deletes := []string{`DELETE FROM api_keys`}
			if db == "postgres" {
				deletes = append(deletes, `TRUNCATE api_keys`)
			}
			for _, q := range deletes {
				if _, _, err := r.CreateAPIKey(ctx, SystemActor(), "acme", "acme", []string{ScopeAgentsRead}, 0); err != nil {
					t.Fatal(err)
				}
				before := seq()
				if _, err := r.store.db.ExecContext(ctx, q); err != nil {
					t.Fatalf("%s: %v", q, err)
				}
				if seq() == before {
					t.Errorf("%s: seq did not move", q)
				}
			}
		})
	}
}

// TestNotificationsAreNotValues: any PostgreSQL login may NOTIFY, so a
// notification on atr_log, atr_revocation, atr_api_keys or atr_root_crls only makes the
// notifier read the values again; a forged payload never becomes a value
// (else a status or a key cached under a forged revision would stay usable
// after a real change, whose smaller value would be ignored, until the next
// periodic read — and again after the next forged notification).
func TestNotificationsAreNotValues(t *testing.T) {
	ctx := context.Background()
	r, _ := newKeyRegistry(t, "postgres")
	if err := r.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	const forged = 1000000
	epoch0, keyEpoch0, crlEpoch0 := r.notify.epochs()
	gen0, _ := r.notify.apiKeyGen()
	for _, ch := range []string{notifyChannelAPIKeys, notifyChannelLog, notifyChannelRevocation, notifyChannelRootCRLs} {
		if _, err := r.store.db.ExecContext(ctx, `SELECT pg_notify($1, $2)`, ch, fmt.Sprint(forged)); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(15 * time.Second) // hang guard, not a timing assertion
	for {
		if size, seq, keys, crls := r.notify.size.Load(), r.notify.seq.Load(), r.notify.keys.Load(), r.notify.crls.Load(); size == forged || seq == forged || keys == forged || crls == forged {
			t.Fatalf("a forged notification became a value: size %d, revocation seq %d, api key seq %d, root CRL seq %d", size, seq, keys, crls)
		}
		// Heard (the revisions not live), then read (live again).
		epoch, keyEpoch, crlEpoch := r.notify.epochs()
		_, live := r.notify.revocationSeq()
		gen, keysLive := r.notify.apiKeyGen()
		_, crlsLive := r.notify.rootCRLSeq()
		if epoch > epoch0 && keyEpoch > keyEpoch0 && crlEpoch > crlEpoch0 && live && keysLive && crlsLive {
			if gen != gen0 {
				t.Errorf("a forged notification moved the keys' generation %d → %d", gen0, gen)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the notifications were never heard and read: a notification did not make the notifier read")
		}
		time.Sleep(time.Millisecond)
	}
	if got, seq := r.notify.keys.Load(), apiKeyStateSeq(t, r.store); got != seq {
		t.Errorf("the notifier holds api key seq %d; the database %d", got, seq)
	}
}

// apiKeyStateSeq reads api_key_state.seq from st's database.
func apiKeyStateSeq(t *testing.T, st *Store) int64 {
	t.Helper()
	var s int64
	if err := st.db.Get(&s, `SELECT seq FROM api_key_state WHERE id = 1`); err != nil {
		t.Fatal(err)
	}
	return s
}

// TestNotificationDuringARead: a notification that arrives while the
// notifier reads is taken at once, not after the read, so that read —
// which may have begun before the change it announces committed — does not
// make the revisions live: a cache could otherwise answer from the values
// it read until the next read.
func TestNotificationDuringARead(t *testing.T) {
	ctx := context.Background()
	r, _ := newKeyRegistry(t, "postgres")
	hold, release := holdReads(t, r)
	if err := r.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	hold()                                // a read, held after its query
	guard := time.After(15 * time.Second) // hang guard, not a timing assertion
	epoch0, keyEpoch0, crlEpoch0 := r.notify.epochs()
	for _, ch := range []string{notifyChannelRevocation, notifyChannelAPIKeys, notifyChannelRootCRLs} {
		if _, err := r.store.db.ExecContext(ctx, `SELECT pg_notify($1, '1')`, ch); err != nil {
			t.Fatal(err)
		}
	}
	for {
		if epoch, keyEpoch, crlEpoch := r.notify.epochs(); epoch > epoch0 && keyEpoch > keyEpoch0 && crlEpoch > crlEpoch0 {
			break
		}
		select {
		case <-guard:
			t.Fatal("the notifications were not taken while a read ran")
		case <-time.After(time.Millisecond):
		}
	}
	// The held read records its values but must not make them live; the
	// read the notifications asked for does. That read is held too, after
	// its query, so that what the held read left is seen before it: before,
	// a read that ran within the test's first poll after the release made
	// the check fail on a busy machine. (The notifier took the hook's value
	// before the held read's hook closed inRead, which hold received, and
	// takes it again only after release: replacing it here races nothing.)
	held := r.notify.afterQuery
	var follow atomic.Bool
	followIn, followOut := make(chan struct{}), make(chan struct{})
	var once sync.Once
	releaseFollow := func() { once.Do(func() { close(followOut) }) }
	t.Cleanup(releaseFollow)
	r.notify.afterQuery = func() {
		held()
		if follow.CompareAndSwap(true, false) {
			close(followIn)
			<-followOut
		}
	}
	follow.Store(true)
	release()
	select {
	case <-followIn:
	case <-guard:
		t.Fatal("the notifications asked for no read after the held one")
	}
	_, live := r.notify.revocationSeq()
	_, keysLive := r.notify.apiKeyGen()
	_, crlsLive := r.notify.rootCRLSeq()
	if live || keysLive || crlsLive {
		t.Errorf("the held read, which began before the notifications, made revisions live (revocation %v, api keys %v, root CRLs %v)", live, keysLive, crlsLive)
	}
	releaseFollow()
	for {
		_, live := r.notify.revocationSeq()
		_, keysLive := r.notify.apiKeyGen()
		_, crlsLive := r.notify.rootCRLSeq()
		if live && keysLive && crlsLive {
			break
		}
		select {
		case <-guard:
			t.Fatal("never live again")
		case <-time.After(time.Millisecond):
		}
	}
}
