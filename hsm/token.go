package hsm

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/ThalesGroup/crypto11"
	"github.com/miekg/pkcs11"
	"github.com/sirupsen/logrus"
)

// Backoff between rebuild attempts while the token is broken.
const (
	minRebuildBackoff = 50 * time.Millisecond
	maxRebuildBackoff = 5 * time.Second
	healthProbeLabel  = "atr-health-probe"
)

// Token is an open, logged-in PKCS#11 token. All methods are safe for
// concurrent use. A Token repairs itself: when the token reports lost
// sessions or device errors it is marked unhealthy, every operation fails
// with ErrUnavailable, and a background goroutine rebuilds the crypto11
// context until it succeeds or Close is called.
type Token struct {
	cfg Config
	log *logrus.Entry

	// createMu serializes check-then-create (GenerateKey, ImportCertificate)
	// so that two callers cannot both pass the "label is free" check.
	createMu sync.Mutex

	mu      sync.RWMutex // guards the fields below; held for reading while the token is used
	state   *tokenState  // nil while broken or rebuilding
	gen     uint64       // bumped whenever state is replaced; Signers re-find keys on change
	healthy bool
	lastErr error // why the token is unhealthy (never contains the PIN)
	fatal   error // a rebuild failed in a way retrying cannot fix (bad or locked PIN)
	closed  bool

	kick chan struct{} // wakes the rebuilder; buffered, never blocks
	stop context.CancelFunc
	done chan struct{} // closed when the rebuilder exits
}

// tokenState is one generation of connections to the token: the crypto11
// context (login, session pool, keys, signing) and a raw miekg/pkcs11 handle
// on the same, already initialized module for object listing, attribute
// reads and health probes. Sessions of one process share the login state,
// so raw sessions see the private objects crypto11 logged in to.
type tokenState struct {
	c11    *crypto11.Context
	raw    *pkcs11.Ctx
	slot   uint
	label  string
	serial string

	// kept are the raw sessions kept open across operations (an
	// Ed25519Signer's); close closes them, so that closing a Token or
	// replacing its state leaves no session, and no login, behind.
	keptMu sync.Mutex
	kept   map[pkcs11.SessionHandle]bool
}

// openKept opens a read-only raw session that stays open until closeKept or
// close.
func (st *tokenState) openKept() (pkcs11.SessionHandle, error) {
	sh, err := st.raw.OpenSession(st.slot, pkcs11.CKF_SERIAL_SESSION)
	if err != nil {
		return 0, err
	}
	st.keptMu.Lock()
	if st.kept == nil {
		st.kept = make(map[pkcs11.SessionHandle]bool)
	}
	st.kept[sh] = true
	st.keptMu.Unlock()
	return sh, nil
}

// closeKept closes a session from openKept. A session the token already
// lost (CKR_SESSION_HANDLE_INVALID, CKR_SESSION_CLOSED) is only forgotten:
// its handle may name another session by now.
func (st *tokenState) closeKept(sh pkcs11.SessionHandle, cause error) {
	st.keptMu.Lock()
	delete(st.kept, sh)
	st.keptMu.Unlock()
	if isP11(cause, pkcs11.CKR_SESSION_HANDLE_INVALID) || isP11(cause, pkcs11.CKR_SESSION_CLOSED) {
		return
	}
	_ = st.raw.CloseSession(sh)
}

// Open loads the PKCS#11 module, finds the token by label or serial, logs in
// and returns the Token. It fails when the token is missing, when more than
// one token carries the label, or when login fails. Zero MaxSessions and
// PoolWaitTimeout get DefaultMaxSessions and DefaultPoolWaitTimeout. ctx is
// checked before starting; PKCS#11 calls themselves cannot be cancelled.
func Open(ctx context.Context, cfg Config, log *logrus.Entry) (*Token, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("hsm: opening token: %w", err)
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if log == nil {
		return nil, errors.New("hsm: opening token: nil logger")
	}
	cfg = cfg.withDefaults()
	st, err := connectRetrying(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("hsm: opening %s: %w", cfg.tokenName(), err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	t := &Token{
		cfg:     cfg,
		log:     log.WithField("token", st.label),
		state:   st,
		gen:     1,
		healthy: true,
		kick:    make(chan struct{}, 1),
		stop:    stop,
		done:    make(chan struct{}),
	}
	go t.run(runCtx)
	t.log.WithField("serial", st.serial).Info("hsm: token open")
	return t, nil
}

// openAttempts bounds connectRetrying; the waits between attempts double
// from openBackoff.
const (
	openAttempts = 5
	openBackoff  = 100 * time.Millisecond
)

// connectRetrying is connect with a few retries for transient device errors
// at start-up: SoftHSM2 answers CKR_GENERAL_ERROR while another process
// rewrites a token file it is reading (replicas starting together on one
// token directory), and network HSMs report CKR_DEVICE_ERROR while a
// connection is being set up. Anything else — a wrong PIN above all, which
// must never be retried into a lockout — fails at once.
func connectRetrying(ctx context.Context, cfg Config) (*tokenState, error) {
	wait := openBackoff
	for attempt := 1; ; attempt++ {
		st, err := connect(cfg)
		if err == nil || attempt == openAttempts || !transientOpenError(err) {
			return st, err
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("%w (after: %v)", ctx.Err(), err)
		case <-time.After(wait):
		}
		wait *= 2
	}
}

// transientOpenError reports whether an error opening the token may go
// away by itself. Besides device errors, SoftHSM2 briefly lists no token
// at all while another process rewrites the token directory; crypto11 then
// says it "could not find PKCS#11 token" (an unexported error, matched by
// its text) or the slot reports CKR_TOKEN_NOT_PRESENT.
func transientOpenError(err error) bool {
	return isP11(err, pkcs11.CKR_GENERAL_ERROR) || isP11(err, pkcs11.CKR_DEVICE_ERROR) || tokenMissing(err)
}

// tokenMissing reports whether err says the selected token is not there.
func tokenMissing(err error) bool {
	return isP11(err, pkcs11.CKR_TOKEN_NOT_PRESENT) || strings.Contains(err.Error(), "could not find PKCS#11 token")
}

// finalizeModule finalizes the module through a handle of our own (the
// library is shared with crypto11).
func finalizeModule(module string) {
	if r := pkcs11.New(module); r != nil {
		_ = r.Finalize()
		r.Destroy()
	}
}

// connect builds one tokenState. It never logs and its errors never contain
// the PIN.
func connect(cfg Config) (*tokenState, error) {
	c11cfg := &crypto11.Config{
		Path:            cfg.Module,
		TokenLabel:      cfg.TokenLabel,
		TokenSerial:     cfg.TokenSerial,
		Pin:             cfg.PIN,
		MaxSessions:     cfg.MaxSessions,
		PoolWaitTimeout: cfg.PoolWaitTimeout,
	}
	c11, err := crypto11.Configure(c11cfg)
	if isP11(err, pkcs11.CKR_CRYPTOKI_NOT_INITIALIZED) {
		// Someone finalized the module while another crypto11 context still
		// references it, so crypto11 will not initialize it again. Do it
		// through our own handle (the library is shared) and retry.
		if r := pkcs11.New(cfg.Module); r != nil {
			_ = r.Initialize()
			r.Destroy()
		}
		c11, err = crypto11.Configure(c11cfg)
	}
	if err != nil {
		return nil, fmt.Errorf("configuring crypto11: %w", err)
	}
	raw := pkcs11.New(cfg.Module)
	if raw == nil {
		_ = c11.Close()
		return nil, fmt.Errorf("loading module %s", cfg.Module)
	}
	if err := raw.Initialize(); err != nil && !isP11(err, pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED) {
		raw.Destroy()
		_ = c11.Close()
		return nil, fmt.Errorf("initializing module: %w", err)
	}
	st := &tokenState{c11: c11, raw: raw}
	if err := st.findSlot(cfg); err != nil {
		st.close()
		return nil, err
	}
	return st, nil
}

// findSlot finds the one slot whose token matches cfg; two tokens with the
// same label make the selection ambiguous and are refused.
func (st *tokenState) findSlot(cfg Config) error {
	slots, err := st.raw.GetSlotList(true)
	if err != nil {
		return fmt.Errorf("listing slots: %w", err)
	}
	n := 0
	for _, s := range slots {
		ti, err := st.raw.GetTokenInfo(s)
		if err != nil {
			return fmt.Errorf("reading token info: %w", err)
		}
		if (cfg.TokenLabel != "" && ti.Label == cfg.TokenLabel) ||
			(cfg.TokenSerial != "" && ti.SerialNumber == cfg.TokenSerial) {
			n++
			st.slot, st.label, st.serial = s, ti.Label, ti.SerialNumber
		}
	}
	switch {
	case n == 0:
		return pkcs11.Error(pkcs11.CKR_TOKEN_NOT_PRESENT)
	case n > 1:
		return fmt.Errorf("%d tokens match; the selection is ambiguous", n)
	}
	return nil
}

// close releases st. The raw handle is never finalized: the module is shared
// with crypto11 (which finalizes it when its last context closes).
func (st *tokenState) close() {
	if st == nil {
		return
	}
	st.keptMu.Lock()
	for sh := range st.kept {
		_ = st.raw.CloseSession(sh)
	}
	st.kept = nil
	st.keptMu.Unlock()
	st.raw.Destroy()
	_ = st.c11.Close()
}

// Label is the label of the open token.
func (t *Token) Label() string {
	t.mu.RLock()
	defer t.mu.RUnlock()
	if t.state != nil {
		return t.state.label
	}
	return t.cfg.TokenLabel
}

// Close logs out, closes the sessions and stops the rebuilder. Signers of
// this Token fail with ErrUnavailable afterwards. Close is idempotent.
func (t *Token) Close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	st := t.state
	t.state = nil
	t.healthy = false
	t.gen++
	t.mu.Unlock()
	t.stop()
	<-t.done
	st.close()
	t.log.Info("hsm: token closed")
	return nil
}

// usableLocked returns the current state or an error wrapping
// ErrUnavailable. t.mu must be held.
func (t *Token) usableLocked() (*tokenState, uint64, error) {
	switch {
	case t.closed:
		return nil, 0, unavailable(t.cfg.tokenName()+" is closed", nil)
	case t.fatal != nil:
		return nil, 0, unavailable(t.cfg.tokenName()+" cannot be recovered", t.fatal)
	case !t.healthy || t.state == nil:
		return nil, 0, unavailable(t.cfg.tokenName()+" is recovering", t.lastErr)
	}
	return t.state, t.gen, nil
}

// nudge wakes the rebuilder without blocking.
func (t *Token) nudge() {
	select {
	case t.kick <- struct{}{}:
	default:
	}
}

// fail records that generation gen of the token is broken and wakes the
// rebuilder. Reports from an older generation are ignored. t.mu must NOT be
// held.
func (t *Token) fail(gen uint64, cause error) {
	t.mu.Lock()
	if !t.closed && t.gen == gen && t.healthy {
		t.healthy = false
		t.lastErr = cause
		t.log.WithError(cause).Warn("hsm: token unhealthy; rebuilding the PKCS#11 context")
	}
	t.mu.Unlock()
	t.nudge()
}

// run is the rebuilder goroutine.
func (t *Token) run(ctx context.Context) {
	defer close(t.done)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.kick:
		}
		backoff := minRebuildBackoff
		for !t.rebuild() {
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, maxRebuildBackoff)
		}
	}
}

// rebuild replaces a broken state with a fresh one. It returns false when it
// should be retried.
func (t *Token) rebuild() bool {
	t.mu.Lock()
	if t.closed || t.healthy || t.fatal != nil {
		t.mu.Unlock()
		return true
	}
	old := t.state
	t.state = nil
	t.gen++
	t.mu.Unlock()

	// Nobody holds t.mu, so nobody uses old any more: every user of a state
	// holds t.mu for reading, and we took it for writing above.
	old.close()
	st, err := connect(t.cfg)

	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		st.close()
		return true
	}
	if err != nil {
		t.lastErr = err
		if isP11(err, pkcs11.CKR_PIN_INCORRECT) || isP11(err, pkcs11.CKR_PIN_LOCKED) ||
			isP11(err, pkcs11.CKR_PIN_EXPIRED) || isP11(err, pkcs11.CKR_PIN_INVALID) {
			t.fatal = err
			t.log.WithError(err).Error("hsm: token login refused while recovering; not retrying (a retry could lock the token)")
			return true
		}
		if tokenMissing(err) {
			// The module lists no such token: its configuration (the token
			// directory, the HSM partition) changed under it. A module reads
			// its configuration at C_Initialize, so finalize it; the next
			// attempt initializes it afresh and sees the token once it is
			// back. Other contexts in this process recover the same way.
			finalizeModule(t.cfg.Module)
		}
		t.log.WithError(err).Warn("hsm: rebuilding the PKCS#11 context failed; retrying")
		return false
	}
	t.state = st
	t.gen++
	t.healthy = true
	t.lastErr = nil
	t.log.Info("hsm: token recovered")
	return true
}

// Healthy returns nil when the token is usable: logged in, and a session
// from crypto11's pool answers a cheap object search. Otherwise it returns an
// error wrapping ErrUnavailable (and starts a rebuild when needed).
func (t *Token) Healthy(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("hsm: health check: %w", err)
	}
	t.mu.RLock()
	st, gen, err := t.usableLocked()
	if err != nil {
		t.mu.RUnlock()
		t.nudge()
		return err
	}
	err = st.probe()
	t.mu.RUnlock()
	if err != nil {
		t.fail(gen, err)
		return unavailable("health check of "+t.cfg.tokenName(), err)
	}
	return nil
}

// probe checks the login state through a raw session and a pool session
// through crypto11.
func (st *tokenState) probe() error {
	err := st.withSession(func(sh pkcs11.SessionHandle) error {
		info, err := st.raw.GetSessionInfo(sh)
		if err != nil {
			return err
		}
		if info.State != pkcs11.CKS_RO_USER_FUNCTIONS && info.State != pkcs11.CKS_RW_USER_FUNCTIONS {
			return pkcs11.Error(pkcs11.CKR_USER_NOT_LOGGED_IN)
		}
		return nil
	})
	if err != nil {
		return err
	}
	_, err = st.c11.FindCertificate(nil, []byte(healthProbeLabel), nil)
	return err
}

// withSession runs f with a fresh raw read-only session.
func (st *tokenState) withSession(f func(pkcs11.SessionHandle) error) error {
	sh, err := st.raw.OpenSession(st.slot, pkcs11.CKF_SERIAL_SESSION)
	if err != nil {
		return err
	}
	defer func() { _ = st.raw.CloseSession(sh) }()
	return f(sh)
}

// use runs f with the current state under the read lock and turns token
// trouble into ErrUnavailable plus a rebuild. what names the operation.
func (t *Token) use(ctx context.Context, what string, f func(st *tokenState, gen uint64) error) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("hsm: %s: %w", what, err)
	}
	t.mu.RLock()
	st, gen, err := t.usableLocked()
	if err != nil {
		t.mu.RUnlock()
		t.nudge()
		return fmt.Errorf("hsm: %s: %w", what, err)
	}
	err = f(st, gen)
	t.mu.RUnlock()
	if err != nil && (tokenTrouble(err) || errors.Is(err, ErrUnavailable)) {
		t.fail(gen, err)
		if errors.Is(err, ErrUnavailable) {
			return err
		}
		return unavailable(what, err)
	}
	return err
}
