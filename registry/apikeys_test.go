package registry

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agent-trust-registry/atr/registry/internal/testdb"
)

type keyTestClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *keyTestClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *keyTestClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// newKeyRegistry is a Registry without a CA: enough for API keys and audit.
func newKeyRegistry(t *testing.T, dbName string) (*Registry, *keyTestClock) {
	t.Helper()
	clock := &keyTestClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
	r, err := New(Config{Store: openMigratedStore(t, dbName), TrustDomain: "agents.atr.test", Now: clock.Now, Log: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	return r, clock
}

var apiKeyFormat = regexp.MustCompile(`^atr_[0-9a-f]{16}_[0-9a-f]{64}$`)

// TestAPIKeys replays SEC-001, SEC-023 and SEC-028.
func TestAPIKeys(t *testing.T) {
	for _, dbName := range testdb.Names() {
		t.Run(dbName, func(t *testing.T) {
			ctx := context.Background()
			r, clock := newKeyRegistry(t, dbName)
			k, key, err := r.CreateAPIKey(ctx, SystemActor(), "acme", "Acme", []string{ScopeAgentsWrite, ScopeAgentsRead, ScopeAgentsWrite}, time.Hour)
			if err != nil {
				t.Fatalf("CreateAPIKey: %v", err)
			}
			if !apiKeyFormat.MatchString(key) || !strings.Contains(key, k.ID) {
				t.Errorf("key %q does not match atr_<16 hex>_<64 hex> with id %s", key, k.ID)
			}
			if k.Namespace != "acme" || strings.Join(k.Scopes, ",") != "agents:read,agents:write" {
				t.Errorf("key = %+v; want normalized namespace and deduplicated scopes", k)
			}

			// Stored only as SHA-256: no column holds the secret.
			var row apiKeyRow
			if err := r.store.db.GetContext(ctx, &row, r.store.db.Rebind(`SELECT `+apiKeyColumns+` FROM api_keys WHERE id = ?`), k.ID); err != nil {
				t.Fatal(err)
			}
			want := sha256.Sum256([]byte(key))
			if string(row.Hash) != string(want[:]) {
				t.Errorf("stored hash is not SHA-256(key)")
			}
			secret := key[len("atr_")+17:]
			var dump []string
			if err := r.store.db.SelectContext(ctx, &dump, `SELECT id || owner || namespace || scopes || created_by FROM api_keys`); err != nil {
				t.Fatal(err)
			}
			var audits []string
			if err := r.store.db.SelectContext(ctx, &audits, `SELECT metadata || target FROM audit_events`); err != nil {
				t.Fatal(err)
			}
			if strings.Contains(strings.Join(append(dump, audits...), "\n"), secret) {
				t.Error("the secret is stored in clear")
			}

			a, err := r.Authenticate(ctx, key)
			if err != nil || a.KeyID != k.ID || a.Owner != "acme" || a.Namespace != "acme" {
				t.Fatalf("Authenticate = %+v, %v", a, err)
			}

			// Every failure is the same ErrUnauthenticated.
			other, _, _ := r.CreateAPIKey(ctx, SystemActor(), "other", "other", []string{ScopeAgentsRead}, time.Hour)
			flip := []byte(key)
			flip[len(flip)-1] ^= 1
			if flip[len(flip)-1] > 'f' || (flip[len(flip)-1] > '9' && flip[len(flip)-1] < 'a') {
				flip[len(flip)-1] = '0'
			}
			bad := []string{"", "admin", "test", "Bearer " + key, key + "0", strings.ToUpper(key), string(flip),
				"atr_ffffffffffffffff_" + secret, "atr_" + other.ID + "_" + secret}
			for _, b := range bad {
				if _, err := r.Authenticate(ctx, b); !errors.Is(err, ErrUnauthenticated) || err.Error() != "registry: authenticate: unauthenticated" {
					t.Errorf("Authenticate(%.30q) = %v; want the one ErrUnauthenticated", b, err)
				}
			}

			// Persistence across restart (SEC-028).
			r2, err := New(Config{Store: r.store, TrustDomain: "agents.atr.test", Now: clock.Now, Log: testLogger(t)})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := r2.Authenticate(ctx, key); err != nil {
				t.Errorf("Authenticate after restart: %v", err)
			}

			// Expiry.
			clock.Advance(2 * time.Hour)
			if _, err := r.Authenticate(ctx, key); !errors.Is(err, ErrUnauthenticated) {
				t.Errorf("expired key: %v; want ErrUnauthenticated", err)
			}
		})
	}
}

func TestAPIKeyRevocationNoKeyLockout(t *testing.T) {
	for _, dbName := range testdb.Names() {
		t.Run(dbName, func(t *testing.T) {
			ctx := context.Background()
			r, clock := newKeyRegistry(t, dbName)
			admin := SystemActor()
			k, key, err := r.CreateAPIKey(ctx, admin, "acme", "acme", []string{ScopeAgentsWrite}, 0)
			if err != nil {
				t.Fatal(err)
			}
			// Key IDs are public (the transparency log names them): a flood
			// of wrong secrets for the admin's key ID must not lock the
			// admin out. Wrong secrets are refused and counted; the right
			// one keeps working (brute force is stopped per IP in api).
			wrong := "atr_" + k.ID + "_" + strings.Repeat("0", 64)
			for range 3 * DefaultMaxAuthFailures {
				if _, err := r.Authenticate(ctx, wrong); !errors.Is(err, ErrUnauthenticated) {
					t.Fatalf("wrong secret: %v; want ErrUnauthenticated", err)
				}
			}
			var failed int
			if err := r.store.db.GetContext(ctx, &failed, r.store.db.Rebind(`SELECT failed_attempts FROM api_keys WHERE id = ?`), k.ID); err != nil || failed != 3*DefaultMaxAuthFailures {
				t.Errorf("failed_attempts = %d, %v; want %d", failed, err, 3*DefaultMaxAuthFailures)
			}
			if _, err := r.Authenticate(ctx, key); err != nil {
				t.Errorf("right key after a flood of wrong secrets for its ID: %v; want it accepted", err)
			}
			// last_used_at is written at most once a minute.
			got, _ := r.GetAPIKey(ctx, admin, k.ID)
			first := *got.LastUsedAt
			clock.Advance(10 * time.Second)
			r.Authenticate(ctx, key)
			if got, _ = r.GetAPIKey(ctx, admin, k.ID); !got.LastUsedAt.Equal(first) {
				t.Errorf("last_used_at moved after 10s: %v → %v", first, got.LastUsedAt)
			}
			clock.Advance(time.Minute)
			r.Authenticate(ctx, key)
			if got, _ = r.GetAPIKey(ctx, admin, k.ID); !got.LastUsedAt.After(first) {
				t.Errorf("last_used_at not updated after a minute")
			}

			// Only admins manage keys.
			owner, _ := r.Authenticate(ctx, key)
			if _, _, err := r.CreateAPIKey(ctx, *owner, "acme", "acme", []string{ScopeAdmin}, 0); !errors.Is(err, ErrForbidden) {
				t.Errorf("owner creating a key: %v; want ErrForbidden", err)
			}
			if err := r.RevokeAPIKey(ctx, *owner, k.ID); !errors.Is(err, ErrForbidden) {
				t.Errorf("owner revoking a key: %v; want ErrForbidden", err)
			}
			for _, tc := range []struct {
				owner, ns string
				scopes    []string
				exp       time.Duration
			}{
				{"", "acme", []string{ScopeAgentsRead}, 0},
				{"bad owner", "acme", []string{ScopeAgentsRead}, 0},
				{"acme", "", []string{ScopeAgentsWrite}, 0},
				{"acme", "../x", []string{ScopeAgentsWrite}, 0},
				{"acme", "acme", nil, 0},
				{"acme", "acme", []string{"root"}, 0},
				{"acme", "acme", []string{ScopeAgentsRead}, -time.Second},
				{"acme", "acme", []string{ScopeAgentsRead}, 3 * 365 * 24 * time.Hour},
			} {
				if _, _, err := r.CreateAPIKey(ctx, admin, tc.owner, tc.ns, tc.scopes, tc.exp); !errors.Is(err, ErrInvalid) {
					t.Errorf("CreateAPIKey(%q, %q, %v, %v) = %v; want ErrInvalid", tc.owner, tc.ns, tc.scopes, tc.exp, err)
				}
			}

			if err := r.RevokeAPIKey(ctx, admin, k.ID); err != nil {
				t.Fatalf("RevokeAPIKey: %v", err)
			}
			if err := r.RevokeAPIKey(ctx, admin, k.ID); err != nil {
				t.Errorf("second RevokeAPIKey: %v; want idempotent", err)
			}
			if err := r.RevokeAPIKey(ctx, admin, "ffffffffffffffff"); !errors.Is(err, ErrNotFound) {
				t.Errorf("RevokeAPIKey(unknown): %v; want ErrNotFound", err)
			}
			if _, err := r.Authenticate(ctx, key); !errors.Is(err, ErrUnauthenticated) {
				t.Errorf("revoked key: %v; want ErrUnauthenticated", err)
			}

			// Creation and revocation are audited with log indexes and logged.
			events, _, err := r.ListAudit(ctx, admin, "", 0)
			if err != nil {
				t.Fatal(err)
			}
			var created, revoked bool
			for _, e := range events {
				switch {
				case e.Action == ActionAPIKeyCreate && e.Target == k.ID:
					created = e.LogIndex == nil && e.Actor == "system" && e.Metadata["owner"] == "acme"
				case e.Action == ActionAPIKeyRevoke && e.Target == k.ID && e.Result == ResultSuccess:
					revoked = e.LogIndex == nil
				}
			}
			if !created || !revoked {
				t.Errorf("audit: created %v revoked %v; want both audited, without a log index", created, revoked)
			}
			// API key events are not public log events (issue 12: the public log names
			// no key ID and no owner).
			var logged int
			if err := r.store.db.GetContext(ctx, &logged, `SELECT COUNT(*) FROM log_entries`); err != nil || logged != 0 {
				t.Errorf("log entries = %d, %v; want 0", logged, err)
			}
		})
	}
}

// TestAuditRedaction replays SEC-012: secrets in audit metadata are removed
// before they are stored; events carry actor, owner, request id and ip
// (SEC-008).
func TestAuditRedaction(t *testing.T) {
	for _, dbName := range testdb.Names() {
		t.Run(dbName, func(t *testing.T) {
			ctx := context.Background()
			r, _ := newKeyRegistry(t, dbName)
			a := Actor{KeyID: "0123456789abcdef", Owner: "acme", Scopes: []string{ScopeAdmin}, IP: "198.51.100.7", RequestID: "req-42"}
			md := map[string]string{
				"csr":   "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIBkg\n-----END EC PRIVATE KEY-----",
				"pin":   "987654",
				"note":  "Authorization: Bearer sekrit-token",
				"other": "atr_0123456789abcdef_" + strings.Repeat("a", 64),
			}
			if err := r.writeAudit(ctx, r.store.db, a, "test.action", "target", ResultSuccess, md, nil); err != nil {
				t.Fatal(err)
			}
			events, _, err := r.ListAudit(ctx, a, "", 0)
			if err != nil || len(events) != 1 {
				t.Fatalf("ListAudit = %d, %v", len(events), err)
			}
			e := events[0]
			if e.Actor != "key:0123456789abcdef" || e.ActorOwner != "acme" || e.RequestID != "req-42" || e.IP != "198.51.100.7" {
				t.Errorf("event actor fields = %+v", e)
			}
			var raw string
			if err := r.store.db.GetContext(ctx, &raw, `SELECT metadata FROM audit_events`); err != nil {
				t.Fatal(err)
			}
			for _, s := range []string{"MHcCAQEEIBkg", "987654", "sekrit-token", strings.Repeat("a", 64)} {
				if strings.Contains(raw, s) {
					t.Errorf("audit metadata stores secret %q: %s", s, raw)
				}
			}
			if _, _, err := r.ListAudit(ctx, Actor{KeyID: "0123456789abcdef", Owner: "acme", Scopes: []string{ScopeAgentsWrite}}, "", 0); !errors.Is(err, ErrForbidden) {
				t.Errorf("non-admin ListAudit: %v; want ErrForbidden", err)
			}
			if _, _, err := r.ListAudit(ctx, a, "bad!", 0); !errors.Is(err, ErrInvalid) {
				t.Errorf("ListAudit(bad cursor): %v; want ErrInvalid", err)
			}
		})
	}
}

// TestReconcileSettlesPending: a pending row whose certificate was stored
// becomes issued, one without becomes abandoned (audited), young rows are
// left alone, and nothing is signed.
func TestReconcileSettlesPending(t *testing.T) {
	for _, dbName := range testdb.Names() {
		t.Run(dbName, func(t *testing.T) {
			ctx := context.Background()
			r, clock := newKeyRegistry(t, dbName)
			db := r.store.db
			now := dbTime(clock.Now())
			mustExec := func(q string, args ...any) {
				t.Helper()
				if _, err := db.ExecContext(ctx, db.Rebind(q), args...); err != nil {
					t.Fatalf("%s: %v", q, err)
				}
			}
			mustExec(`INSERT INTO agents (name, owner, status, current_serial, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)`, "a.acme", "acme", AgentActive, "aa", now, now)
			mustExec(`INSERT INTO certificates (serial, agent_name, fingerprint_sha256, status, der, not_before, not_after, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
				"aa", "a.acme", strings.Repeat("0", 64), CertIssued, []byte{1}, now, now, now)
			for _, p := range []struct{ serial, agent string }{{"aa", "a.acme"}, {"bb", "b.acme"}} {
				mustExec(`INSERT INTO pending_issuances (serial, agent_name, owner, kind, tbs, state, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
					p.serial, p.agent, "acme", "register", []byte{2}, pendingPending, now, now)
			}
			if n, err := r.Reconcile(ctx); err != nil || n != 0 {
				t.Errorf("Reconcile of young rows = %d, %v; want 0", n, err)
			}
			clock.Advance(DefaultPendingTimeout + time.Second)
			if n, err := r.Reconcile(ctx); err != nil || n != 2 {
				t.Fatalf("Reconcile = %d, %v; want 2", n, err)
			}
			rows, err := r.store.PendingIssuances(ctx)
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]string{}
			for _, p := range rows {
				got[p.Serial] = p.State
			}
			if got["aa"] != pendingIssued || got["bb"] != pendingAbandoned {
				t.Errorf("states = %v; want aa issued, bb abandoned", got)
			}
			if n, err := r.Reconcile(ctx); err != nil || n != 0 {
				t.Errorf("second Reconcile = %d, %v; want 0", n, err)
			}
			var abandoned int
			if err := db.GetContext(ctx, &abandoned, db.Rebind(`SELECT COUNT(*) FROM audit_events WHERE action = ? AND result = ?`), ActionReconcile, ResultAbandoned); err != nil || abandoned != 1 {
				t.Errorf("abandoned audit events = %d, %v; want 1", abandoned, err)
			}
		})
	}
}

// TestListAPIKeys (issue 11 item 13): admins page through every key, ordered
// by id, without secrets or hashes; others are refused; a bad cursor is
// ErrInvalid, never a database error.
func TestListAPIKeys(t *testing.T) {
	for _, dbName := range testdb.Names() {
		t.Run(dbName, func(t *testing.T) {
			ctx := context.Background()
			r, _ := newKeyRegistry(t, dbName)
			admin := SystemActor()
			secrets := map[string]string{} // id → key
			for i := range 5 {
				k, key, err := r.CreateAPIKey(ctx, admin, "acme", "acme", []string{ScopeAgentsRead}, time.Hour)
				if err != nil {
					t.Fatalf("CreateAPIKey %d: %v", i, err)
				}
				secrets[k.ID] = key
			}
			if err := r.RevokeAPIKey(ctx, admin, firstKey(secrets)); err != nil {
				t.Fatal(err)
			}
			var got []APIKey
			cursor, pages := "", 0
			for {
				page, next, err := r.ListAPIKeys(ctx, admin, cursor, 2)
				if err != nil {
					t.Fatalf("ListAPIKeys(%q): %v", cursor, err)
				}
				if len(page) > 2 {
					t.Fatalf("page of %d keys, want at most 2", len(page))
				}
				got = append(got, page...)
				pages++
				if next == "" {
					break
				}
				cursor = next
			}
			if len(got) != len(secrets) || pages != 3 {
				t.Fatalf("got %d keys in %d pages, want %d in 3", len(got), pages, len(secrets))
			}
			revoked := 0
			for i, k := range got {
				if i > 0 && got[i-1].ID >= k.ID {
					t.Errorf("keys out of order: %s then %s", got[i-1].ID, k.ID)
				}
				key, ok := secrets[k.ID]
				if !ok {
					t.Errorf("unknown key %s listed", k.ID)
				}
				if k.Owner != "acme" || k.Namespace != "acme" || len(k.Scopes) != 1 || k.ExpiresAt == nil {
					t.Errorf("key %+v: want owner, namespace, scopes and expiry", k)
				}
				if k.RevokedAt != nil {
					revoked++
				}
				dump := fmt.Sprintf("%+v", k)
				h := sha256.Sum256([]byte(key))
				if strings.Contains(dump, key[len("atr_")+17:]) || strings.Contains(dump, fmt.Sprintf("%x", h[:])) {
					t.Errorf("listing reveals the secret or its hash: %s", dump)
				}
			}
			if revoked != 1 {
				t.Errorf("%d revoked keys listed, want 1", revoked)
			}

			owner, err := r.Authenticate(ctx, secrets[lastKey(secrets)])
			if err != nil {
				t.Fatal(err)
			}
			for _, tc := range []struct {
				name   string
				actor  Actor
				cursor string
				limit  int
				want   error
			}{
				{"owner refused", *owner, "", 0, ErrForbidden},
				{"cursor not base64", admin, "!!", 0, ErrInvalid},
				{"cursor not an id", admin, "MjE0NzQ4MzY0OA", 0, ErrInvalid},
				{"negative limit", admin, "", -1, ErrInvalid},
			} {
				t.Run(tc.name, func(t *testing.T) {
					if _, _, err := r.ListAPIKeys(ctx, tc.actor, tc.cursor, tc.limit); !errors.Is(err, tc.want) {
						t.Errorf("ListAPIKeys = %v, want %v", err, tc.want)
					}
				})
			}
		})
	}
}

func firstKey(m map[string]string) string {
	var ids []string
	for id := range m {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids[0]
}

func lastKey(m map[string]string) string {
	var ids []string
	for id := range m {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids[len(ids)-1]
}
