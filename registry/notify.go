package registry

// Change notification between replicas (issue 13): the notifier tells the
// code of this process, within moments, that the transparency log grew
// (log_head.size), that a revocation-relevant change committed
// (revocation_state.seq, which triggers bump in the same transaction as
// every change to a certificate's status, reason, revocation time or grace
// end: migrations 002), that a root CRL was published
// (revocation_state.root_crl_seq: migration 010), or that an API key
// changed (api_key_state.seq, bumped likewise by every revocation or other
// change of a key: migrations 012), whichever replica made it.
//
//   - PostgreSQL: triggers (migration 009) NOTIFY atr_log and
//     atr_revocation with the new value when the transaction commits; a
//     dedicated lib/pq Listener connection per replica receives them (and
//     atr_api_keys, migration 012, and atr_root_crls, migration 014) and
//     reads the values (a notification's
//     payload is never taken as one: see notified). The
//     Listener reconnects by itself; after every (re)connection the values
//     are read again, so a notification lost while disconnected delays a
//     change, never hides it. A safety read every notifyPollPostgres and a
//     Ping every notifyPingInterval catch a connection that died silently.
//   - SQLite: no NOTIFY. A transaction committed through this process's
//     Store wakes the notifier at once (Store.onCommit), and one small query
//     every notifyPollSQLite sees the commits of other processes on the
//     same file.
//
// The API for the rest of the package is small:
//
//	r.notify.logSize()            latest known tree size
//	r.notify.revocationSeq()      latest known revocation seq, and whether it is live
//	r.notify.apiKeyGen()          the API keys' revision's generation, and whether it is live
//	r.notify.rootCRLSeq()         latest known root CRL seq, and whether it is live
//	r.notify.changed()            a channel closed at the next change of any value
//	r.notify.waitLogSize(ctx, n)  blocks until the tree size exceeds n
//	r.notify.waitRevocationSeq(ctx, s) blocks until the seq differs from s
//
// A cache of revocation answers (OCSP, Verify) may skip its database read
// while revocationSeq() reports live and the seq it read with is unchanged:
// every revocation-relevant commit changes the seq, and the notifier learns
// of it within one notification (PostgreSQL: the revision is not live from
// the notification until the read it asks for), one commit (SQLite, same
// process) or notifyPollSQLite (SQLite, another process). When live is
// false (notifier not started, stopped, a notification not yet followed by
// a read, or its connection lost and not yet re-read) the cache must read.
// The cache of API keys (apikeys.go) follows the same rule with apiKeyGen,
// whose liveness this process's rotations do not clear.

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lib/pq"
	"github.com/sirupsen/logrus"
)

// The PostgreSQL notification channels of migrations 009 and 012. Their
// payload, the new value in decimal, is ignored: any database login may
// NOTIFY (notified).
const (
	notifyChannelLog        = "atr_log"
	notifyChannelRevocation = "atr_revocation"
	notifyChannelAPIKeys    = "atr_api_keys"
	notifyChannelRootCRLs   = "atr_root_crls"
)

const (
	// notifyPollSQLite is how often the SQLite notifier reads its values:
	// the delay with which it sees a commit of another process.
	notifyPollSQLite = 250 * time.Millisecond
	// notifyPollPostgres is the PostgreSQL notifier's safety read.
	notifyPollPostgres = 5 * time.Second
	// notifyPingInterval is how often the LISTEN connection is pinged
	// (lib/pq's advice: a silently dead connection is found only by use).
	notifyPingInterval = 30 * time.Second
	// notifyReadTimeout bounds one read of the values: a read that hangs
	// makes them not live instead of leaving them live.
	notifyReadTimeout = 5 * time.Second
	// notifyConnectTimeout bounds Start's wait for the LISTEN connection.
	notifyConnectTimeout = 10 * time.Second
	// Reconnection back-off of the LISTEN connection.
	notifyMinReconnect = 100 * time.Millisecond
	notifyMaxReconnect = 10 * time.Second
)

// errNotifierStopped is returned by the wait methods of a notifier that is
// not running.
var errNotifierStopped = fmt.Errorf("registry: change notification is not running: %w", ErrUnavailable)

// notifier tracks log_head.size, revocation_state.seq,
// revocation_state.root_crl_seq and api_key_state.seq of its Store and
// wakes waiters when any changes. The zero values before start are 0 and
// not live. It is safe for concurrent use.
type notifier struct {
	store *Store
	log   *logrus.Entry

	size, seq, keys, crls atomic.Int64
	// keysGen counts the changes of keys this notifier saw (any change,
	// up or down): what the cache of API keys stamps its entries with. It
	// never repeats, whatever the database's seq does (a restored
	// database, a forged notification).
	keysGen atomic.Int64
	// live: the values are current within the notification delay (see the
	// file comment); false before start, after stop, after a failed read,
	// and on PostgreSQL from the loss of the LISTEN connection until the
	// first read after it is back.
	live atomic.Bool
	// keysLive is live for the API keys' revision: as live, but not
	// cleared by this process's revocation-relevant changes (ownChange),
	// only by its changes of keys (ownKeyChange) and by an atr_api_keys
	// notification, which is taken as "read now", never as a value.
	keysLive atomic.Bool
	// crlsLive is live for the root CRLs' revision (root_crl_seq), as
	// keysLive is for the keys': a rotation or revocation moves seq, never
	// root_crl_seq, so it does not clear it; a root CRL published through
	// this Store (publishingRootCRL) or an atr_root_crls notification
	// (ownRootCRLChange) does, until a read that began after it. Every issuance checks its issuing
	// CA against the root CRLs (issuerRevoked): with crlsLive it reads
	// nothing while a fleet's rotations keep live false.
	crlsLive atomic.Bool

	mu      sync.Mutex
	gen     chan struct{} // closed and replaced at every change, and at stop
	running bool
	// up: the LISTEN connection is up and listening (always true on
	// SQLite); epoch counts its losses, so that a read that overlapped one
	// does not make the values live.
	up    bool
	epoch uint64
	// keyEpoch counts the losses of the LISTEN connection, the key changes
	// of this process and the atr_api_keys notifications: a read that
	// overlapped one does not make keysLive.
	keyEpoch uint64
	// crlEpoch is keyEpoch for crlsLive: losses of the LISTEN connection,
	// root CRLs published through this Store, atr_root_crls notifications.
	crlEpoch uint64
	// publishing counts the root CRLs being published through this Store
	// (PublishRootCRL, between its hooks): while any is, no read makes the
	// revocation or root CRL revision live, so neither is live from before
	// the publication's commit until a read after it.
	publishing int
	cancel     context.CancelFunc
	done       chan struct{} // closed when run has returned

	kick   chan struct{} // buffered(1): read the values now
	events chan pq.ListenerEventType
	hook   *func() // installed as Store.onCommit (SQLite)
	// dropCRLHook takes publishingRootCRL off the Store's root CRL hooks.
	dropCRLHook func()
	// poll overrides the periodic read's interval (tests); zero means
	// notifyPollSQLite or notifyPollPostgres.
	poll time.Duration
	// afterQuery, when set, runs in read between the query and recording
	// what it read (tests: a notification arriving during a read).
	afterQuery func()
	// sup is which certificates the revisions read since the first one
	// superseded (supersedes.go): what lets a cached status outlive a
	// revision that did not change it.
	sup *supersedeLog
}

func newNotifier(s *Store, log *logrus.Entry) *notifier {
	return &notifier{store: s, log: log, gen: make(chan struct{}), kick: make(chan struct{}, 1), sup: newSupersedeLog()}
}

// logSize returns the latest known tree size (log_head.size).
func (n *notifier) logSize() int64 { return n.size.Load() }

// revocationSeq returns the latest known revocation_state.seq and whether
// it is live (see the file comment for what a cache may conclude from it).
func (n *notifier) revocationSeq() (seq int64, live bool) {
	// live first: a value read after a true live flag is at least as new as
	// the read that set it.
	live = n.live.Load()
	return n.seq.Load(), live
}

// apiKeyGen returns the generation of the API keys' revision (keysGen)
// and whether it is live: a cache entry stamped with a generation may be
// used while this returns that generation, live.
func (n *notifier) apiKeyGen() (gen int64, live bool) {
	live = n.keysLive.Load()
	return n.keysGen.Load(), live
}

// rootCRLSeq returns the latest known root_crl_seq and whether it is live
// (crlsLive): root CRLs loaded at that revision are current.
func (n *notifier) rootCRLSeq() (seq int64, live bool) {
	live = n.crlsLive.Load()
	return n.crls.Load(), live
}

// changed returns a channel that is closed at the next change of the tree
// size, the revocation seq or the API key seq, or when the notifier stops. Take it
// before checking the values, then wait on it:
//
//	ch := n.changed()
//	if n.logSize() > have { … }
//	<-ch
func (n *notifier) changed() <-chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.gen
}

// isRunning reports whether the notifier is started and not stopped.
func (n *notifier) isRunning() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.running
}

// waitLogSize blocks until the tree size exceeds have, and returns it. It
// fails when ctx ends or the notifier is not running.
func (n *notifier) waitLogSize(ctx context.Context, have int64) (int64, error) {
	return n.wait(ctx, func() (int64, bool) { s := n.size.Load(); return s, s > have })
}

// waitRevocationSeq blocks until the revocation seq differs from have, and
// returns it. It fails when ctx ends or the notifier is not running.
func (n *notifier) waitRevocationSeq(ctx context.Context, have int64) (int64, error) {
	return n.wait(ctx, func() (int64, bool) { s := n.seq.Load(); return s, s != have })
}

func (n *notifier) wait(ctx context.Context, cond func() (int64, bool)) (int64, error) {
	for {
		n.mu.Lock()
		ch, running := n.gen, n.running
		n.mu.Unlock()
		if !running {
			return 0, errNotifierStopped
		}
		if v, ok := cond(); ok {
			return v, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return 0, fmt.Errorf("registry: waiting for a change: %w", ctx.Err())
		}
	}
}

// broadcastLocked wakes every waiter. n.mu must be held.
func (n *notifier) broadcastLocked() {
	close(n.gen)
	n.gen = make(chan struct{})
}

// set records values read from the database (the only source of values:
// a notification's payload is ignored) and wakes waiters on a change.
func (n *notifier) set(size, seq, keys, crls int64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.size.Load() == size && n.seq.Load() == seq && n.keys.Load() == keys && n.crls.Load() == crls {
		return
	}
	if n.keys.Load() != keys {
		n.keysGen.Add(1)
	}
	n.size.Store(size)
	n.seq.Store(seq)
	n.keys.Store(keys)
	n.crls.Store(crls)
	n.broadcastLocked()
}

// read reads the four values with one query and records them. The values
// become live when the read worked and, on PostgreSQL, the LISTEN
// connection was up for the whole read (a read that starts after LISTEN
// sees every change whose notification could have been missed).
func (n *notifier) read(ctx context.Context) error {
	n.mu.Lock()
	epoch, keyEpoch, crlEpoch, up := n.epoch, n.keyEpoch, n.crlEpoch, n.up
	n.mu.Unlock()
	var row struct {
		Size int64 `db:"size"`
		Seq  int64 `db:"seq"`
		Keys int64 `db:"keys"`
		CRLs int64 `db:"crls"`
	}
	ctx, cancel := context.WithTimeout(ctx, notifyReadTimeout)
	defer cancel()
	err := n.store.db.GetContext(ctx, &row,
		`SELECT (SELECT size FROM log_head WHERE id = $1) AS size, r.seq AS seq, r.root_crl_seq AS crls, `+
			`(SELECT seq FROM api_key_state WHERE id = $1) AS keys FROM revocation_state r WHERE r.id = $1`, singletonID)
	if err != nil {
		n.live.Store(false)
		n.keysLive.Store(false)
		n.crlsLive.Store(false)
		return dbErr("notify: reading log size, revocation seq, root CRL seq and api key seq", err)
	}
	// The supersedes of the revisions not seen yet, read after the
	// revision: each committed with its revision, so every one up to
	// row.Seq is there (or was pruned, which advance takes as a change).
	var sup []supersededChange
	if after, ok := n.sup.wants(row.Seq); ok {
		if sup, err = n.readSupersedes(ctx, after, row.Seq); err != nil {
			n.live.Store(false)
			n.keysLive.Store(false)
			n.crlsLive.Store(false)
			return err
		}
	}
	if n.afterQuery != nil {
		n.afterQuery()
	}
	n.sup.advance(row.Seq, sup) // before set: the log never lags the revision
	n.set(row.Size, row.Seq, row.Keys, row.CRLs)
	n.mu.Lock()
	n.live.Store(up && n.up && epoch == n.epoch && n.running && n.publishing == 0)
	n.keysLive.Store(up && n.up && keyEpoch == n.keyEpoch && n.running)
	n.crlsLive.Store(up && n.up && crlEpoch == n.crlEpoch && n.running && n.publishing == 0)
	n.mu.Unlock()
	return nil
}

// ownChange is called by this process right after it committed a
// revocation-relevant change (a revocation, a rotation), and for an
// atr_revocation notification: until the next read
// the values are not live, so no cache answers from the seq it had before —
// not even for the microseconds before the notification arrives — and a read
// that overlapped the commit cannot make them live again.
func (n *notifier) ownChange() {
	n.mu.Lock()
	n.epoch++
	n.live.Store(false)
	n.mu.Unlock()
	n.wake()
}

// ownKeyChange is ownChange for a change of an API key (its revocation),
// and for an atr_api_keys notification: the keys' revision is not live
// until a read that began after it.
func (n *notifier) ownKeyChange() {
	n.mu.Lock()
	n.keyEpoch++
	n.keysLive.Store(false)
	n.mu.Unlock()
	n.wake()
}

// ownRootCRLChange is ownChange for an atr_root_crls notification: the
// root CRLs' revision is not live until a read that began after it.
func (n *notifier) ownRootCRLChange() {
	n.mu.Lock()
	n.crlEpoch++
	n.crlsLive.Store(false)
	n.mu.Unlock()
	n.wake()
}

// publishingRootCRL brackets a root CRL published through this notifier's
// Store (the Store's root CRL hooks): called with true before its
// transaction, it makes the revocation and root CRL revisions not live
// until it is called with false after the transaction and a read has
// begun after that. A root CRL moves both revisions (migrations 007, 010).
func (n *notifier) publishingRootCRL(begin bool) {
	n.mu.Lock()
	if begin {
		n.publishing++
	} else {
		n.publishing--
	}
	n.epoch++
	n.crlEpoch++
	n.live.Store(false)
	n.crlsLive.Store(false)
	n.mu.Unlock()
	if !begin {
		n.wake()
	}
}

// connection records a state change of the LISTEN connection.
func (n *notifier) connection(up bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if !up && n.up {
		n.epoch++
		n.keyEpoch++
		n.crlEpoch++
		n.live.Store(false)
		n.keysLive.Store(false)
		n.crlsLive.Store(false)
	}
	n.up = up
}

// isUp reports whether the LISTEN connection is up (always on SQLite).
func (n *notifier) isUp() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.up
}

// wake asks run to read the values now; it never blocks.
func (n *notifier) wake() {
	select {
	case n.kick <- struct{}{}:
	default:
	}
}

// start reads the values, connects the LISTEN connection (PostgreSQL) or
// installs the commit hook (SQLite), and runs until ctx ends or stop.
func (n *notifier) start(ctx context.Context) error {
	n.mu.Lock()
	if n.running || n.done != nil {
		n.mu.Unlock()
		return errors.New("registry: change notification: already started")
	}
	ctx, cancel := context.WithCancel(ctx)
	n.running, n.cancel, n.done = true, cancel, make(chan struct{})
	n.up = n.store.dialect != Postgres
	n.mu.Unlock()

	var listener *pq.Listener
	if n.store.dialect == Postgres {
		var err error
		if listener, err = n.listen(ctx); err != nil {
			n.finish(nil)
			return err
		}
	} else {
		n.hook = new(func())
		*n.hook = n.wake
		n.store.onCommit.CompareAndSwap(nil, n.hook) // a second notifier on the Store polls only
	}
	n.dropCRLHook = n.store.addRootCRLHook(n.publishingRootCRL)
	// The first read, after LISTEN: nothing committed after it goes unseen.
	if err := n.read(ctx); err != nil {
		n.finish(listener)
		return fmt.Errorf("registry: starting change notification: %w", err)
	}
	go n.run(ctx, listener)
	return nil
}

// listen opens the LISTEN connection and waits until it listens on its
// channels.
func (n *notifier) listen(ctx context.Context) (*pq.Listener, error) {
	n.events = make(chan pq.ListenerEventType, 8)
	l := pq.NewListener(listenerURL(n.store.url), notifyMinReconnect, notifyMaxReconnect, func(ev pq.ListenerEventType, _ error) {
		// Called on lib/pq's goroutine: record and pass on, never block.
		switch ev {
		case pq.ListenerEventConnected, pq.ListenerEventReconnected:
			n.connection(true)
		case pq.ListenerEventDisconnected:
			n.connection(false)
		}
		select {
		case n.events <- ev:
		default:
		}
	})
	tctx, cancel := context.WithTimeout(ctx, notifyConnectTimeout)
	defer cancel()
	for !n.isUp() {
		select {
		case ev := <-n.events:
			if ev == pq.ListenerEventConnectionAttemptFailed {
				l.Close()
				return nil, fmt.Errorf("registry: change notification: connecting: %w", ErrUnavailable)
			}
		case <-tctx.Done():
			l.Close()
			return nil, fmt.Errorf("registry: change notification: connecting: %w: %v", ErrUnavailable, tctx.Err())
		}
	}
	for _, ch := range []string{notifyChannelLog, notifyChannelRevocation, notifyChannelAPIKeys, notifyChannelRootCRLs} {
		// lib/pq registers the channel before it waits for a connection and
		// LISTENs again after every reconnection; net.ErrClosed without
		// Close means it was registered while the connection was down.
		if err := l.Listen(ch); err != nil && !errors.Is(err, pq.ErrChannelAlreadyOpen) && !errors.Is(err, net.ErrClosed) {
			l.Close()
			return nil, dbErr("notify: listen "+ch, err)
		}
	}
	return l, nil
}

// notifyApplicationName names the LISTEN connection in pg_stat_activity.
const notifyApplicationName = "atr-notify"

// listenerURL is the database URL with application_name set to
// notifyApplicationName, unless the operator chose one.
func listenerURL(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil {
		return dsn // Open accepted it; lib/pq will say what is wrong
	}
	q := u.Query()
	if q.Get("application_name") != "" {
		return dsn
	}
	q.Set("application_name", notifyApplicationName)
	u.RawQuery = q.Encode()
	return u.String()
}

// run is the notifier's loop: wake-ups, periodic reads and pings, until
// ctx ends. Notifications are taken on a goroutine of their own
// (takeNotes), never behind a read: one that arrives while a read runs
// moves the epoch before that read ends, so that read cannot make live the
// revision the notification announces as moved.
func (n *notifier) run(ctx context.Context, l *pq.Listener) {
	defer n.finish(l)
	poll := cmp.Or(n.poll, notifyPollSQLite)
	var ping <-chan time.Time
	if l != nil {
		poll = cmp.Or(n.poll, notifyPollPostgres)
		t := time.NewTicker(notifyPingInterval)
		defer t.Stop()
		ping = t.C
		go n.takeNotes(l.NotificationChannel())
	}
	tick := time.NewTicker(poll)
	defer tick.Stop()
	failing := false // a failed read is logged once, until one works again
	readNow := func() {
		err := n.read(ctx)
		switch {
		case err != nil && !failing && ctx.Err() == nil:
			failing = true
			n.log.WithError(err).Warn("change notification: reading log size, revocation seq, root CRL seq and api key seq")
		case err == nil && failing:
			failing = false
			n.log.Info("change notification: reading again")
		}
	}
	for {
		select {
		case <-ctx.Done():
			return
		case ev := <-n.events:
			switch ev {
			case pq.ListenerEventDisconnected:
				n.log.Warn("change notification: LISTEN connection lost; reconnecting")
			case pq.ListenerEventReconnected:
				n.log.Info("change notification: LISTEN connection back")
				readNow()
			}
		case <-n.kick:
			readNow()
		case <-tick.C:
			readNow()
		case <-ping:
			go func() {
				if err := l.Ping(); err != nil && ctx.Err() == nil {
					n.log.WithError(err).Debug("change notification: ping of the LISTEN connection failed")
				}
			}()
		}
	}
}

// takeNotes applies the notifications of notes until the Listener closes
// it (finish).
func (n *notifier) takeNotes(notes <-chan *pq.Notification) {
	for note := range notes {
		if note == nil {
			// lib/pq: reconnected; anything may have been missed.
			n.wake()
			continue
		}
		n.notified(note)
	}
}

// notified applies one PostgreSQL notification. Any database login may
// NOTIFY, so a payload is never taken as a value — a forged revision would
// let a cache answer from an entry stamped with it after a real change
// whose smaller value was then ignored — only as news that the value
// moved: the notifier reads the values (one small query), and a revision a
// cache relies on is not live until that read.
func (n *notifier) notified(note *pq.Notification) {
	switch note.Channel {
	case notifyChannelLog:
		n.wake()
	case notifyChannelRevocation:
		n.ownChange()
	case notifyChannelAPIKeys:
		n.ownKeyChange()
	case notifyChannelRootCRLs:
		n.ownRootCRLChange()
	}
}

// finish releases what start took and wakes every waiter for good.
func (n *notifier) finish(l *pq.Listener) {
	if n.hook != nil {
		n.store.onCommit.CompareAndSwap(n.hook, nil)
	}
	if n.dropCRLHook != nil {
		n.dropCRLHook()
	}
	if l != nil {
		l.Close()
		// Let lib/pq's goroutine run to its end (it may be about to hand over
		// a notification).
		go func() {
			for range l.NotificationChannel() {
			}
		}()
	}
	n.mu.Lock()
	n.running, n.up = false, false
	n.live.Store(false)
	n.keysLive.Store(false)
	n.crlsLive.Store(false)
	n.broadcastLocked()
	done := n.done
	n.mu.Unlock()
	select {
	case <-done:
	default:
		close(done)
	}
}

// stop ends the notifier and waits until its loop has returned.
func (n *notifier) stop() {
	n.mu.Lock()
	cancel, done := n.cancel, n.done
	n.mu.Unlock()
	if cancel == nil {
		return
	}
	cancel()
	<-done
}

// Start runs the registry's change notification (see notify.go) until ctx
// ends or Close: it is what LogEvents waits on, and what tells this
// replica of the log growing and of revocations made by any replica. It
// reads the current values first; a database that cannot be read or
// listened to is ErrUnavailable. A Registry is started at most once.
func (r *Registry) Start(ctx context.Context) error {
	if err := r.notify.start(ctx); err != nil {
		return err
	}
	return nil
}

// Close stops what Start started and waits for it, and takes back its seal
// of the Store's batches (Store.sealLog); the Store stays open
// (its owner closes it). It is safe to call more than once, or without
// Start.
func (r *Registry) Close() error {
	r.notify.stop()
	r.store.sealLog.CompareAndSwap(r.seal, nil)
	return nil
}

// epochs returns epoch and keyEpoch (tests).
func (n *notifier) epochs() (epoch, keyEpoch, crlEpoch uint64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.epoch, n.keyEpoch, n.crlEpoch
}
