package registry

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/agent-trust-registry/atr/ca"
	"github.com/agent-trust-registry/atr/registry/apikey"
)

// API key format (package registry/apikey owns it): "atr_" + 16 lowercase hex
// digits of id + "_" + 64 lowercase hex digits of secret (256 random bits).
// Only SHA-256(key) is stored.
const (
	apiKeyPrefix      = apikey.Prefix
	apiKeyIDBytes     = apikey.IDLen / 2
	apiKeySecBytes    = apikey.SecretLen / 2
	lastUsedPrecision = time.Minute
	maxOwnerLen       = 128
)

// ParseAPIKeyID returns the id part of a well-formed API key (safe to log).
func ParseAPIKeyID(key string) (string, bool) {
	id, err := apikey.Parse(key)
	return id, err == nil
}

func hashAPIKey(key string) []byte {
	h := sha256.Sum256([]byte(key))
	return h[:]
}

// newAPIKey returns a fresh id and key from r.
func newAPIKey(r io.Reader) (id, key string, err error) {
	b := make([]byte, apiKeyIDBytes+apiKeySecBytes)
	if _, err := io.ReadFull(r, b); err != nil {
		return "", "", fmt.Errorf("registry: generating api key: %w", err)
	}
	id = hex.EncodeToString(b[:apiKeyIDBytes])
	return id, apiKeyPrefix + id + "_" + hex.EncodeToString(b[apiKeyIDBytes:]), nil
}

type apiKeyRow struct {
	ID             string     `db:"id"`
	Hash           []byte     `db:"hash"`
	Owner          string     `db:"owner"`
	Namespace      string     `db:"namespace"`
	Scopes         string     `db:"scopes"`
	CreatedAt      time.Time  `db:"created_at"`
	ExpiresAt      *time.Time `db:"expires_at"`
	RevokedAt      *time.Time `db:"revoked_at"`
	LastUsedAt     *time.Time `db:"last_used_at"`
	FailedAttempts int        `db:"failed_attempts"`
	LockedUntil    *time.Time `db:"locked_until"`
}

func (row apiKeyRow) apiKey() (*APIKey, error) {
	k := &APIKey{ID: row.ID, Owner: row.Owner, Namespace: row.Namespace, CreatedAt: row.CreatedAt.UTC(),
		ExpiresAt: utcPtr(row.ExpiresAt), RevokedAt: utcPtr(row.RevokedAt), LastUsedAt: utcPtr(row.LastUsedAt)}
	if err := json.Unmarshal([]byte(row.Scopes), &k.Scopes); err != nil {
		return nil, fmt.Errorf("registry: api key %s: decoding scopes: %v", row.ID, err)
	}
	return k, nil
}

func utcPtr(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}

const apiKeyColumns = `id, hash, owner, namespace, scopes, created_at, expires_at, revoked_at, last_used_at, failed_attempts, locked_until`

// dummyHash is compared against when the key id is unknown, so that unknown
// and known ids cost the same.
var dummyHash = make([]byte, sha256.Size) // read-only

// Authenticate checks a presented API key and returns its Actor (without IP
// and RequestID, which the caller adds). Every failure — malformed, unknown
// id, wrong secret, expired, revoked — is the same ErrUnauthenticated. The
// secret is compared in constant time against the stored SHA-256. Wrong
// secrets are counted and reported (SEC-023) but never lock the key out: the
// right secret always works (see recordAuthFailure). last_used_at is updated
// at most once a minute.
//
// The key's row comes from the cache of keys (keyCache) while the API keys'
// revision it was read under is current and live, else from the database:
// a key revoked on any replica is refused here from its notification on
// (PostgreSQL: the keys' revision is not live until the notifier read it
// again), at once (this process) or within notifyPollSQLite (another
// process on the same SQLite file).
func (r *Registry) Authenticate(ctx context.Context, presentedKey string) (*Actor, error) {
	fail := func(id, why string) (*Actor, error) {
		r.log.WithField("key_id", id).WithField("reason", why).Warn("api key authentication failed")
		return nil, wrap("authenticate", ErrUnauthenticated)
	}
	presented := hashAPIKey(presentedKey)
	id, ok := ParseAPIKeyID(presentedKey)
	if !ok {
		subtle.ConstantTimeCompare(presented, dummyHash)
		return fail("", "malformed key")
	}
	// The revision first: a row read after it is at least as new.
	rev, live := r.notify.apiKeyGen()
	e, cached := r.keys.get(id, rev, live)
	if !cached {
		var row apiKeyRow
		err := r.store.db.GetContext(ctx, &row, r.store.db.Rebind(`SELECT `+apiKeyColumns+` FROM api_keys WHERE id = ?`), id)
		if err != nil {
			subtle.ConstantTimeCompare(presented, dummyHash)
			if err := dbErr("authenticate", err); !errors.Is(err, ErrNotFound) {
				return nil, err // database down: not the caller's fault
			}
			return fail(id, "unknown key id")
		}
		e = keyEntry{row: row, rev: rev}
	}
	row := e.row
	now := r.now()
	match := subtle.ConstantTimeCompare(presented, row.Hash) == 1
	switch {
	case !match:
		// Its failure count moves: the next right secret reads the row
		// again, and resets it.
		r.keys.drop(id)
		r.recordAuthFailure(ctx, row)
		return fail(id, "wrong secret")
	case row.RevokedAt != nil:
		return fail(id, "revoked")
	case row.ExpiresAt != nil && !now.Before(*row.ExpiresAt):
		return fail(id, "expired")
	}
	if row.FailedAttempts > 0 || row.LastUsedAt == nil || now.Sub(*row.LastUsedAt) >= lastUsedPrecision {
		if err := r.store.execStatement(ctx, "authenticate: last used",
			`UPDATE api_keys SET last_used_at = ?, failed_attempts = 0 WHERE id = ?`, dbTime(now), id); err != nil {
			r.log.WithError(err).WithField("key_id", id).Warn("updating api key last use")
		} else {
			used := dbTime(now)
			e.row.LastUsedAt, e.row.FailedAttempts = &used, 0
			cached = false // the entry changed: store it again
		}
	}
	if e.key == nil {
		k, err := row.apiKey()
		if err != nil {
			return nil, err
		}
		e.key = k
	}
	if !cached && live {
		r.keys.put(id, e)
	}
	k := e.key
	return &Actor{KeyID: k.ID, Owner: k.Owner, Namespace: k.Namespace, Scopes: slices.Clone(k.Scopes)}, nil
}

// maxCachedKeys bounds the cache of API keys; past it the cache starts
// again empty (a deployment has far fewer keys in use).
const maxCachedKeys = 4096

// keyCache holds the API keys Authenticate read, each stamped with the
// generation of the API keys' revision (api_key_state.seq, migration 012)
// it was read under (notifier.apiKeyGen: it moves whenever the notifier
// sees the seq move, and never repeats). An entry is used only while the
// notifier reports that generation, live (notify.go): every change of a
// key bumps the seq in the same transaction, on any replica. Only keys
// that exist are kept; an unknown id is read every time.
type keyCache struct {
	mu sync.RWMutex
	m  map[string]keyEntry
}

// keyEntry is a key's row as read, its parse, and the generation it was
// read under.
type keyEntry struct {
	row apiKeyRow
	key *APIKey
	rev int64
}

// get returns id's entry when it was read under generation rev, and rev
// is live.
func (c *keyCache) get(id string, rev int64, live bool) (keyEntry, bool) {
	if !live {
		return keyEntry{}, false
	}
	c.mu.RLock()
	e, ok := c.m[id]
	c.mu.RUnlock()
	return e, ok && e.rev == rev
}

func (c *keyCache) put(id string, e keyEntry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.m[id]; !ok && len(c.m) >= maxCachedKeys || c.m == nil {
		c.m = make(map[string]keyEntry)
	}
	c.m[id] = e
}

func (c *keyCache) drop(id string) {
	c.mu.Lock()
	delete(c.m, id)
	c.mu.Unlock()
}

// recordAuthFailure counts wrong secrets presented for a key. It never
// locks the key: key IDs are public (they are in the transparency log), so a
// per-key lockout would let anyone keep any key — the admin's included —
// locked, while a 256-bit secret cannot be guessed anyway. Brute force is
// stopped per client IP in the api layer (rate limit and lockout); here a
// key that keeps receiving wrong secrets is reported in the log.
func (r *Registry) recordAuthFailure(ctx context.Context, row apiKeyRow) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := r.store.execStatement(ctx, "authenticate: failure count",
		`UPDATE api_keys SET failed_attempts = failed_attempts + 1 WHERE id = ?`, row.ID); err != nil {
		r.log.WithError(err).WithField("key_id", row.ID).Warn("recording api key failure")
		return
	}
	if n := row.FailedAttempts + 1; n%r.cfg.MaxAuthFailures == 0 {
		r.log.WithField("key_id", row.ID).WithField("failed_attempts", n).Warn("api key keeps receiving wrong secrets: someone may be attacking it")
	}
}

// validOwner: 1–128 characters from [A-Za-z0-9._@:-].
func validOwner(s string) bool {
	if s == "" || len(s) > maxOwnerLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("._@:-", c) >= 0) {
			return false
		}
	}
	return true
}

func normalizeScopes(scopes []string) ([]string, error) {
	if len(scopes) == 0 {
		return nil, invalid("at least one scope is required", nil)
	}
	out := make([]string, 0, len(scopes))
	for _, s := range scopes {
		switch s {
		case ScopeAgentsRead, ScopeAgentsWrite, ScopeAdmin:
		default:
			return nil, invalid(fmt.Sprintf("unknown scope %q", clip(s)), nil)
		}
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	slices.Sort(out)
	return out, nil
}

// CreateAPIKey creates an API key for owner, limited to names inside
// namespace and to scopes, expiring after expiresIn (0 → 90 days, at most two
// years). Only admins (or SystemActor) may call it. An empty namespace is
// allowed only for admin keys and covers every name. The key is returned once
// and only its hash is stored. The creation is audited and logged.
func (r *Registry) CreateAPIKey(ctx context.Context, a Actor, owner, namespace string, scopes []string, expiresIn time.Duration) (*APIKey, string, error) {
	if !a.IsAdmin() {
		return nil, "", r.deny(ctx, a, ActionAPIKeyCreate, owner, wrap("create api key", ErrForbidden))
	}
	if !validOwner(owner) {
		return nil, "", invalid("owner must be 1-128 characters of [A-Za-z0-9._@:-]", nil)
	}
	scopes, err := normalizeScopes(scopes)
	if err != nil {
		return nil, "", err
	}
	if namespace == "" {
		if !slices.Contains(scopes, ScopeAdmin) {
			return nil, "", invalid("namespace is required for non-admin keys", nil)
		}
	} else if namespace, err = ca.NormalizeAgentName(namespace); err != nil {
		return nil, "", invalid("namespace", err)
	}
	switch {
	case expiresIn == 0:
		expiresIn = DefaultAPIKeyLifetime
	case expiresIn < 0 || expiresIn > MaxAPIKeyLifetime:
		return nil, "", invalid("expires_in must be between 0 and two years", nil)
	}
	id, key, err := newAPIKey(r.rand)
	if err != nil {
		return nil, "", err
	}
	now := r.now()
	expires := dbTime(now.Add(expiresIn))
	scopesJSON, _ := json.Marshal(scopes)
	err = r.store.inTx(ctx, "create api key", func(tx *sqlx.Tx) error {
		if _, err := tx.ExecContext(ctx, tx.Rebind(`INSERT INTO api_keys
			(id, hash, owner, namespace, scopes, created_by, created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`),
			id, hashAPIKey(key), owner, namespace, string(scopesJSON), a.label(), dbTime(now), expires); err != nil {
			return dbErr("create api key: insert", err)
		}
		// Not a log event: a public leaf naming key IDs and owners would tell an
		// anonymous reader who has keys (issue 12); the audit trail records it.
		return r.writeAudit(ctx, tx, a, ActionAPIKeyCreate, id, ResultSuccess, map[string]string{
			"owner": owner, "namespace": namespace, "scopes": strings.Join(scopes, " "), "expires_at": expires.Format(time.RFC3339),
		}, nil)
	})
	if err != nil {
		return nil, "", err
	}
	r.log.WithFields(map[string]any{"key_id": id, "owner": owner, "actor": a.label(), "request_id": a.RequestID}).Info("api key created")
	return &APIKey{ID: id, Owner: owner, Namespace: namespace, Scopes: scopes, CreatedAt: dbTime(now), ExpiresAt: &expires}, key, nil
}

// RevokeAPIKey revokes the key with the given id (admin only). Revoking a
// revoked key is a no-op; an unknown id is ErrNotFound.
func (r *Registry) RevokeAPIKey(ctx context.Context, a Actor, id string) error {
	if !a.IsAdmin() {
		return r.deny(ctx, a, ActionAPIKeyRevoke, id, wrap("revoke api key", ErrForbidden))
	}
	if !apikey.ValidID(id) {
		return wrap("revoke api key", ErrNotFound)
	}
	now := r.now()
	noop := false
	err := r.store.inTx(ctx, "revoke api key", func(tx *sqlx.Tx) error {
		var revoked []sql.NullTime
		if err := tx.SelectContext(ctx, &revoked, tx.Rebind(`SELECT revoked_at FROM api_keys WHERE id = ?`+forUpdate(r.store.dialect)), id); err != nil {
			return dbErr("revoke api key: read", err)
		}
		if len(revoked) == 0 {
			return wrap("revoke api key", ErrNotFound)
		}
		if revoked[0].Valid {
			noop = true
			return nil
		}
		if _, err := tx.ExecContext(ctx, tx.Rebind(`UPDATE api_keys SET revoked_at = ? WHERE id = ?`), dbTime(now), id); err != nil {
			return dbErr("revoke api key: update", err)
		}
		return r.writeAudit(ctx, tx, a, ActionAPIKeyRevoke, id, ResultSuccess, nil, nil)
	})
	// The revocation committed, or may have (a lost acknowledgement):
	// no request of this process may authenticate from what it cached
	// before — not even until the notifier reads the new revision.
	if !noop && !errors.Is(err, ErrNotFound) {
		r.keys.drop(id)
		r.notify.ownKeyChange()
	}
	if err != nil {
		return err
	}
	if noop {
		r.auditBestEffort(ctx, a, ActionAPIKeyRevoke, id, ResultNoop, nil)
	}
	return nil
}

// ActionAPIKeyList is the audit action of a refused ListAPIKeys.
const ActionAPIKeyList = "apikey.list"

// GetAPIKey returns the key with the given id (admin only).
func (r *Registry) GetAPIKey(ctx context.Context, a Actor, id string) (*APIKey, error) {
	if !a.IsAdmin() {
		return nil, r.deny(ctx, a, "apikey.get", id, wrap("get api key", ErrForbidden))
	}
	var row apiKeyRow
	if err := r.store.db.GetContext(ctx, &row, r.store.db.Rebind(`SELECT `+apiKeyColumns+` FROM api_keys WHERE id = ?`), id); err != nil {
		return nil, dbErr("get api key", err)
	}
	return row.apiKey()
}

// ListAPIKeys returns one page of API keys (admin only), ordered by id, and the
// cursor of the next page ("" on the last). cursor is the previous page's
// next cursor ("" for the first page); limit follows the paging rules (0 → 50,
// at most 100). Secrets are never stored and hashes are never returned.
func (r *Registry) ListAPIKeys(ctx context.Context, a Actor, cursor string, limit int) ([]APIKey, string, error) {
	if !a.IsAdmin() {
		return nil, "", r.deny(ctx, a, ActionAPIKeyList, "", wrap("list api keys", ErrForbidden))
	}
	limit, err := pageLimit(limit)
	if err != nil {
		return nil, "", err
	}
	after := ""
	if cursor != "" {
		raw, err := base64.RawURLEncoding.DecodeString(cursor)
		if err != nil || !apikey.ValidID(string(raw)) {
			return nil, "", invalid("cursor", nil)
		}
		after = string(raw)
	}
	var rows []apiKeyRow
	if err := r.store.db.SelectContext(ctx, &rows, r.store.db.Rebind(
		`SELECT `+apiKeyColumns+` FROM api_keys WHERE id > ? ORDER BY id LIMIT ?`), after, limit+1); err != nil {
		return nil, "", dbErr("list api keys", err)
	}
	return page(rows, limit, func(row apiKeyRow) string { return row.ID }, apiKeyRow.apiKey)
}

// forUpdate is " FOR UPDATE" on PostgreSQL (row lock until commit); SQLite's
// BEGIN IMMEDIATE already serializes writers.
func forUpdate(d Dialect) string {
	if d == Postgres {
		return " FOR UPDATE"
	}
	return ""
}
