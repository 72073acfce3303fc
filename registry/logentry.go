package registry

import (
	"context"
	"crypto"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/jmoiron/sqlx"

	"github.com/agent-trust-registry/atr/registry/translog"
)

// This file writes the public, blinded log leaves of agent events (entry
// version 2, docs/transparency.md) and their private openings.

// maxCachedNames bounds the VRF proof cache (about 0.5 KiB a name with an
// RSA-3072 key); past it the least recently used name is evicted.
const maxCachedNames = 10_000

// nameProofs are the VRF indexes (hex) and proofs of an agent name and each
// of its parent suffixes, longest first.
type nameProofs struct {
	indexes []string
	proofs  [][]byte
}

// add appends the VRF of the next (shorter) suffix.
func (np *nameProofs) add(out vrfOutput) {
	np.indexes = append(np.indexes, hex.EncodeToString(out.index[:]))
	np.proofs = append(np.proofs, out.proof)
}

// vrfOutput is the VRF of one name.
type vrfOutput struct {
	index [32]byte
	proof []byte
}

// vrfCache remembers the VRF of each name and suffix it has computed or
// recalled: the output never changes for a key, each costs an RSA signature
// on the token (or, recalled from a log opening, an RSA verification), and
// sibling names (x1.team.acme, x2.team.acme) share their suffixes. It holds
// the maxCachedNames most recently used names (TestVRFCacheKeepsRecentNames):
// a fleet of up to that many agents rotates without an RSA operation. The
// zero value is ready to use.
type vrfCache struct {
	once  sync.Once
	names *lru.Cache[string, vrfOutput]
}

func (c *vrfCache) cache() *lru.Cache[string, vrfOutput] {
	c.once.Do(func() {
		// lru.New fails only for a size below one.
		c.names, _ = lru.New[string, vrfOutput](maxCachedNames)
	})
	return c.names
}

// get returns the cached VRF of name.
func (c *vrfCache) get(name string) (vrfOutput, bool) { return c.cache().Get(name) }

// put caches the VRF of name.
func (c *vrfCache) put(name string, out vrfOutput) { c.cache().Add(name, out) }

// vrfOf computes (or recalls) the VRF of one normalized name. It calls the
// token, so callers compute it before opening a transaction.
func (r *Registry) vrfOf(name string) (vrfOutput, error) {
	if r.cfg.VRFSigner == nil {
		return vrfOutput{}, fmt.Errorf("registry: no VRF key configured: %w", ErrUnavailable)
	}
	if out, ok := r.vrf.get(name); ok {
		return out, nil
	}
	ix, proof, err := translog.VRFProve(r.cfg.VRFSigner, r.cfg.TrustDomain, name)
	if err != nil {
		return vrfOutput{}, fmt.Errorf("registry: VRF of %s: %v: %w", name, err, ErrUnavailable)
	}
	out := vrfOutput{index: ix, proof: proof}
	r.vrf.put(name, out)
	return out, nil
}

// recallStoredProofs caches the VRF proofs of an existing agent's name and
// suffixes from its newest log opening. The cache holds 10,000 names;
// without this a fleet larger than that — or any fleet after a restart, or
// on another replica — paid an RSA signature on the token for every
// rotation and revocation. An opening whose MAC checks under this process's
// key (openingMACKey) was stored by a holder of the VRF key with proofs it
// had made or checked, so its proofs are taken as they are; any other —
// stored before migration 013, damaged, or under another key or trust
// domain — has each proof checked against the current VRF key, an RSA
// verification, and one that fails (made under an earlier key, or a damaged
// row) is skipped and computed again on the token. A failed read costs
// nothing but the saving.
func (r *Registry) recallStoredProofs(ctx context.Context, name string) {
	if r.cfg.VRFSigner == nil {
		return
	}
	if _, ok := r.vrf.get(name); ok {
		return
	}
	var row struct {
		Opened string `db:"opened"`
		MAC    []byte `db:"opened_mac"`
	}
	err := r.store.db.GetContext(ctx, &row, r.store.db.Rebind(
		`SELECT opened, opened_mac FROM log_openings WHERE agent_name = ? ORDER BY idx DESC LIMIT 1`), name)
	if err != nil {
		return // sql.ErrNoRows (no opening yet) or a read error: compute on the token
	}
	o, err := translog.ParseOpened([]byte(row.Opened))
	suffixes := translog.NameSuffixes(name)
	if err != nil || o.Name != name || len(o.VRFProofs) != len(suffixes) {
		return
	}
	k := r.openingMACKey()
	sealed := k != nil && len(row.MAC) == sha256.Size && hmac.Equal(row.MAC, openingMAC(k, name, []byte(row.Opened)))
	pub := r.cfg.VRFSigner.Public()
	for i, n := range suffixes {
		if _, ok := r.vrf.get(n); ok {
			continue
		}
		var ix [32]byte
		if sealed {
			ix = sha256.Sum256(o.VRFProofs[i]) // the index of a proof (translog.VRFVerify)
		} else if ix, err = r.verifyProof(pub, r.cfg.TrustDomain, n, o.VRFProofs[i]); err != nil {
			r.log.WithError(err).WithField("agent", name).Debug("stored VRF proof not valid under the current key; computing it again")
			return
		}
		r.vrf.put(n, vrfOutput{index: ix, proof: o.VRFProofs[i]})
	}
}

// openingMACPurpose is the translog.VRFSecret purpose of the openings' MAC
// key.
const openingMACPurpose = "opening"

// openingMACRetry is how long after the token refused the MAC key's
// derivation the next issuance asks again.
const openingMACRetry = 10 * time.Second

// openingKey holds the MAC key of the log openings this process stores
// (log_openings.opened_mac): the VRF key's secret for openingMACPurpose
// (translog.VRFSecret), one RSA signature on the token per process, the
// same on every replica of one token and trust domain. The zero value holds
// no key.
type openingKey struct {
	key  atomic.Pointer[macKey]
	mu   sync.Mutex
	next time.Time // under mu: no derivation before this, after a refusal
}

// macKey is the openings' MAC key and the VRF public key it was derived
// under.
type macKey struct {
	secret [32]byte
	pub    crypto.PublicKey
}

// openingMACKey returns the openings' MAC key, derived on the token the
// first time. It returns nil without a VRF key, while another caller
// derives it (nothing waits for the token), and for openingMACRetry after
// the token refused: openings stored meanwhile have no MAC, and recalled
// ones are verified.
//
// The key is used only while the VRF signer's public key is the one it was
// derived under: a signer whose key changed (hsm.Signer refuses to) would
// otherwise have openings with proofs under one key stored with a MAC of
// another's secret.
func (r *Registry) openingMACKey() *[32]byte {
	if r.cfg.VRFSigner == nil {
		return nil
	}
	if k := r.openKey.key.Load(); k != nil {
		return k.current(r.cfg.VRFSigner.Public())
	}
	if !r.openKey.mu.TryLock() {
		return nil
	}
	defer r.openKey.mu.Unlock()
	if k := r.openKey.key.Load(); k != nil {
		return k.current(r.cfg.VRFSigner.Public())
	}
	if now := time.Now(); now.Before(r.openKey.next) {
		return nil
	}
	pub := r.cfg.VRFSigner.Public()
	secret, err := translog.VRFSecret(r.cfg.VRFSigner, r.cfg.TrustDomain, openingMACPurpose)
	if err != nil {
		r.openKey.next = time.Now().Add(openingMACRetry)
		r.log.WithError(err).Warn("deriving the MAC key of log openings on the token; stored openings have no MAC and recalled proofs are verified until it succeeds")
		return nil
	}
	k := &macKey{secret: secret, pub: pub}
	r.openKey.key.Store(k)
	return k.current(pub)
}

// current returns the secret while pub is the key k was derived under.
func (k *macKey) current(pub crypto.PublicKey) *[32]byte {
	if p, ok := pub.(interface{ Equal(crypto.PublicKey) bool }); !ok || !p.Equal(k.pub) {
		return nil
	}
	return &k.secret
}

// openingMAC is the MAC of an opening as stored: HMAC-SHA256 under key of
// "atr-opening-mac-v1" || 0x00 || agent || 0x00 || opened (agent names hold
// no zero byte).
func openingMAC(key *[32]byte, agent string, opened []byte) []byte {
	m := hmac.New(sha256.New, key[:])
	m.Write([]byte("atr-opening-mac-v1\x00"))
	m.Write([]byte(agent))
	m.Write([]byte{0})
	m.Write(opened)
	return m.Sum(nil)
}

// nameProofs computes (or recalls) the VRF proofs of name and its suffixes.
// known says name is an existing agent's, whose log openings hold them.
func (r *Registry) nameProofs(ctx context.Context, name string, known bool) (nameProofs, error) {
	r.openingMACKey() // before the opening is stored with its MAC, outside any transaction
	if known {
		r.recallStoredProofs(ctx, name)
	}
	var np nameProofs
	for _, n := range translog.NameSuffixes(name) {
		out, err := r.vrfOf(n)
		if err != nil {
			return nameProofs{}, err
		}
		np.add(out)
	}
	return np, nil
}

// cachedNameProofs returns the proofs of name when the cache holds those of
// name and of every suffix.
func (r *Registry) cachedNameProofs(name string) (nameProofs, bool) {
	var np nameProofs
	for _, n := range translog.NameSuffixes(name) {
		out, ok := r.vrf.get(n)
		if !ok {
			return nameProofs{}, false
		}
		np.add(out)
	}
	return np, true
}

// nameProofsAsync starts nameProofs on its own goroutine and returns the
// function that waits for it and stores the proofs in out. Call the
// function before reading out; if it is never called the result is dropped.
func (r *Registry) nameProofsAsync(ctx context.Context, name string, known bool, out *nameProofs) func() error {
	if np, ok := r.cachedNameProofs(name); ok {
		// Nothing to compute (a rotation, mostly): no goroutine to start
		// and wake. The openings' MAC key, if the token refused it before,
		// is asked for again (at most every openingMACRetry).
		if r.openKey.key.Load() == nil {
			r.openingMACKey()
		}
		return func() error {
			*out = np
			return nil
		}
	}
	type result struct {
		np  nameProofs
		err error
	}
	done := make(chan result, 1)
	go func() {
		np, err := r.nameProofs(ctx, name, known)
		done <- result{np, err}
	}()
	return func() error {
		res := <-done
		*out = res.np
		return res.err
	}
}

// agentEvent is one agent event for the log.
type agentEvent struct {
	typ      translog.EventType
	time     time.Time
	name     string
	cert     *x509.Certificate
	proofs   nameProofs
	previous string // rotate: the replaced certificate's fingerprint
	reason   string // revoke
	card     string // agent_card: SHA-256 of the card's canonical form, hex
}

// loggedLeaf is a leaf this process appended: its bytes and its opening, from
// which a fresh issuance's receipt is made without reading them back.
type loggedLeaf struct {
	data       []byte
	opened     translog.Opened
	openedJSON []byte
}

// appendAgentEvent appends the blinded leaf of ev in tx and stores its
// opening beside it (with the leaf, in one statement on PostgreSQL).
func (r *Registry) appendAgentEvent(ctx context.Context, tx *sqlx.Tx, ev agentEvent) (loggedLeaf, error) {
	leaf, p, err := r.planAgentEvent(ctx, tx, ev)
	if err != nil {
		return loggedLeaf{}, err
	}
	if err := execPlan(ctx, tx, "log: appending", []guard{p.head}, p.stmts); err != nil {
		return loggedLeaf{}, err
	}
	p.written()
	return leaf, nil
}

// planAgentEvent works out the append of ev's blinded leaf and its opening
// in tx (planAppend), for a caller that runs the plan's statements with its
// own (execPlan) and then p.written.
func (r *Registry) planAgentEvent(ctx context.Context, tx *sqlx.Tx, ev agentEvent) (loggedLeaf, *appendPlan, error) {
	fp := sha256.Sum256(ev.cert.Raw)
	var (
		o      translog.Opened
		opened []byte
	)
	p, err := r.tlog.planAppend(ctx, tx, translog.Entry{
		Version:     translog.EntryVersion,
		Type:        ev.typ,
		Time:        ev.time,
		Fingerprint: hex.EncodeToString(fp[:]),
		IssuerKeyID: hex.EncodeToString(ev.cert.AuthorityKeyId),
		NameIndexes: ev.proofs.indexes,
		Previous:    ev.previous,
		Reason:      ev.reason,
		CardDigest:  ev.card,
	}, func(idx int64) (opening, error) {
		o = translog.Opened{LeafIndex: idx, Name: ev.name, Certificate: ev.cert.Raw, VRFProofs: ev.proofs.proofs}
		var err error
		if opened, err = o.Marshal(); err != nil {
			return opening{}, fmt.Errorf("registry: log: opening of leaf %d: %w", idx, err)
		}
		op := opening{agent: ev.name, json: opened}
		if k := r.openKey.key.Load(); k != nil && r.cfg.VRFSigner != nil {
			if secret := k.current(r.cfg.VRFSigner.Public()); secret != nil {
				op.mac = openingMAC(secret, ev.name, opened)
			}
		}
		return op, nil
	})
	if err != nil {
		return loggedLeaf{}, nil, err
	}
	return loggedLeaf{data: p.data, opened: o, openedJSON: opened}, p, nil
}
