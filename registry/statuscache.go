package registry

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// Verify status cache. Relying parties verify the same agent certificates
// again and again (an agent presents its certificate on every connection),
// and the status lookup by fingerprint is the one database read of Verify.
// The contract is that a revocation is reflected by verify within one second
// on every replica, and that a verify reads nothing when nothing changed.
// Each entry is tagged with the revocation revision read before its row.
// While the change notifier is live (notify.go), an entry is served with no
// age limit and no database read as long as the revision has not moved —
// on any replica — or has moved only by supersedes of other certificates
// (supersedes.go), and is then tagged with the current revision; when it is
// not live (not started, its connection lost, or a change not read yet) an
// entry is served for at most the TTL after it was read or last found
// current. A replica that itself revokes drops its cache at once, and one
// that rotates drops the superseded certificate's entry, so its own answers
// are never stale. The mTLS renewal path never uses it.
const (
	// DefaultStatusCacheTTL is how long a replica may answer Verify from a
	// status it read earlier.
	DefaultStatusCacheTTL = 500 * time.Millisecond
	// MaxStatusCacheTTL keeps the cache inside the one-second contract.
	MaxStatusCacheTTL = time.Second
	// statusCacheSize bounds the number of cached statuses.
	statusCacheSize = 1 << 16
)

type statusCache struct {
	ttl time.Duration
	mu  sync.Mutex
	m   map[string]statusEntry
	gen uint64 // bumped by clear and evict: a read that began before a local change is not stored
	// hits and reads count verifyStatus's answers from the cache and from
	// the database (atr_verify_status_lookups_total).
	hits, reads atomic.Int64
}

type statusEntry struct {
	row certRow   // ByFingerprint's: without DER
	at  time.Time // when the row was read, or last found current at a live revision
	seq int64     // the revocation revision read before the row, or that revision
}

func newStatusCache(ttl time.Duration) *statusCache {
	return &statusCache{ttl: ttl, m: make(map[string]statusEntry)}
}

// get returns a fresh cached row and, on a miss, the generation to pass to
// put. seq and live are the notifier's revision: with live, an entry of the
// same revision is fresh at any age, and so is one of an earlier revision
// that unchanged (nil: none) reports the certificate kept since
// (supersedes.go); any other is not.
func (c *statusCache) get(fp string, now time.Time, seq int64, live bool, unchanged func(fp string, since int64) bool) (*certRow, uint64) {
	if c.ttl <= 0 {
		return nil, 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[fp]
	if ok && live && (e.seq == seq || unchanged != nil && unchanged(fp, e.seq)) {
		if e.seq != seq || now.Sub(e.at) >= c.ttl/2 {
			// Known current at seq, live: as good as a read now. Without
			// this, an entry older than the TTL would be read again
			// whenever the revision is briefly not live — after each of
			// this replica's own rotations, until its notifier's read.
			e.seq, e.at = seq, now
			c.m[fp] = e
		}
		row := e.row
		return &row, c.gen
	}
	if ok && !live && now.Sub(e.at) < c.ttl && !now.Before(e.at) {
		row := e.row
		return &row, c.gen
	}
	return nil, c.gen
}

func (c *statusCache) put(fp string, row *certRow, at time.Time, gen uint64, seq int64) {
	if c.ttl <= 0 {
		return
	}
	r := *row
	r.DER = nil
	c.mu.Lock()
	defer c.mu.Unlock()
	if gen != c.gen {
		return // a local revocation or rotation committed meanwhile
	}
	if _, ok := c.m[fp]; !ok && len(c.m) >= statusCacheSize {
		for k, e := range c.m {
			if at.Sub(e.at) >= c.ttl {
				delete(c.m, k)
			}
		}
		if len(c.m) >= statusCacheSize {
			return
		}
	}
	c.m[fp] = statusEntry{row: r, at: at, seq: seq}
}

// evict forgets the cached status of the certificate with fingerprint fp,
// and keeps any read that began before from being stored; called after
// this replica committed (or may have committed) a change of that
// certificate's status alone (a rotation superseding it).
func (c *statusCache) evict(fp string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	delete(c.m, fp)
}

// clear forgets every cached status; called after this replica commits a
// change of certificate status.
func (c *statusCache) clear() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.gen++
	clear(c.m)
}

// verifyStatus is the certificate store's ByFingerprint through the status
// cache.
func (r *Registry) verifyStatus(ctx context.Context, fp string) (*certRow, error) {
	now := r.now()
	seq, live := r.notify.revocationSeq() // before the row: see statusEntry.seq
	cached, gen := r.status.get(fp, now, seq, live, r.notify.sup.fingerprintUnchanged)
	if cached != nil {
		r.status.hits.Add(1)
		return cached, nil
	}
	r.status.reads.Add(1)
	row, err := certs(r.store.db).ByFingerprint(ctx, fp)
	if err != nil {
		return nil, err
	}
	r.status.put(fp, row, now, gen, seq)
	return row, nil
}
