package rp

// follow.go: a relying party's live view of the log (GET /v1/log/events),
// verified event by event, and the revocation set it yields.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/agent-trust-registry/atr/registry/translog"
)

// ErrFollow is wrapped by every refusal of an event by a Follower (a
// *FollowError): the log or the connection to it served something that
// does not verify.
var ErrFollow = errors.New("rp: log event refused")

// FollowReason is the stable cause of a refused event.
type FollowReason string

// Reasons of refused events, in the order Follower checks them.
const (
	// FollowMalformed: the event does not parse (SSE framing, JSON, id and
	// index disagree, its type is not its leaf's).
	FollowMalformed FollowReason = "malformed"
	// FollowOutOfOrder: the event's index is not the next one expected: a
	// leaf skipped (a gap), repeated or reordered.
	FollowOutOfOrder FollowReason = "out_of_order"
	// FollowLeaf: the leaf is not a canonical log entry, or is a version 1
	// leaf after a version 2 one.
	FollowLeaf FollowReason = "leaf"
	// FollowLogSignature: the checkpoint is not validly signed by the log
	// key, or is of another log (origin).
	FollowLogSignature FollowReason = "log_signature"
	// FollowWitnessPolicy: no checkpoint covering the event met the witness
	// policy within FollowerConfig.WitnessWait.
	FollowWitnessPolicy FollowReason = "witness_policy"
	// FollowConsistency: the checkpoint is not consistent with one verified
	// before (a fork or a bad consistency proof), or the log claims fewer
	// leaves than were verified (a rollback).
	FollowConsistency FollowReason = "consistency"
	// FollowInclusion: the inclusion proof does not prove the leaf at its
	// index in the checkpoint's tree.
	FollowInclusion FollowReason = "inclusion"
)

// FollowError is a refused event with its evidence. It wraps ErrFollow and
// Err.
type FollowError struct {
	Reason FollowReason
	// Index is the event's index (or -1 when it has none); Want the index
	// expected next.
	Index, Want int64
	// Event is the event as received (its "id:", "event:" and "data:"
	// lines), nil when the refusal is not about one event.
	Event []byte
	// Checkpoint is the signed checkpoint the event came with; Previous a
	// verified one it is inconsistent with; Proof the consistency proof
	// served between them (FollowConsistency).
	Checkpoint, Previous []byte
	Proof                tlog.TreeProof
	Err                  error
}

func (e *FollowError) Error() string {
	msg := fmt.Sprintf("rp: log event refused: %s (index %d, expected %d)", e.Reason, e.Index, e.Want)
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

// Unwrap returns ErrFollow and the detail.
func (e *FollowError) Unwrap() []error { return []error{ErrFollow, e.Err} }

// FollowerConfig configures a Follower. URL and LogVerifiers are required.
type FollowerConfig struct {
	// URL is the registry's base URL, e.g. "https://atr.example.org".
	URL string
	// Client makes the requests; nil means http.DefaultClient. Its Timeout
	// must be zero: a stream lasts; IdleTimeout detects a dead one.
	Client *http.Client
	// LogVerifiers are the log's checkpoint keys (ParseLogVerifiers).
	LogVerifiers note.Verifiers
	// Origin is the log's checkpoint origin; "" accepts the origin of the
	// first verified checkpoint and then holds to it.
	Origin string
	// Witnesses, when its Threshold is above 0, must be met by the
	// checkpoint of every event. Checkpoints are cosigned some seconds
	// after they are signed: an event whose checkpoint is not cosigned yet
	// is fetched again (a new connection from the same index) until one
	// is, for at most WitnessWait, then refused (FollowWitnessPolicy).
	// Events then arrive seconds later than without a policy.
	Witnesses WitnessPolicy
	// WitnessWait: see Witnesses. Zero means one minute.
	WitnessWait time.Duration
	// From is the first leaf index to follow. The revocation set is
	// complete only when following from 0.
	From int64
	// IdleTimeout: a connection on which nothing (not even a ping, sent
	// every 15 s) arrived for this long is dropped and made again. Zero
	// means 45 s.
	IdleTimeout time.Duration
	// MaxBackoff bounds the wait between reconnections. Zero means 30 s.
	MaxBackoff time.Duration
	// Retried, when set, is called with every failure Run retries (a lost
	// connection, a server error, a checkpoint not cosigned yet), before it
	// waits: for logs and alerts.
	Retried func(err error)
}

// FollowedEvent is a verified event.
type FollowedEvent struct {
	Index int64
	Entry translog.Entry
	Leaf  []byte
	// Checkpoint is the verified checkpoint whose tree includes the leaf.
	Checkpoint translog.Checkpoint
}

// Revocation is what the log says of a revoked certificate.
type Revocation struct {
	Reason string // RFC 5280 reason name
	Index  int64  // the revoke leaf
	Time   time.Time
}

// Follower follows the log's event stream (GET /v1/log/events, Run) and
// verifies every event before it counts: its checkpoint is signed by the
// log key (and meets the witness policy), consistent with every checkpoint
// verified before (GET /v1/log/proof/consistency), and includes the leaf
// at its index (the inclusion proof); indexes follow one another with no
// gap or repetition. From the verified leaves it keeps the revocation set
// (Revoked) and what rotations superseded (Superseded). After a lost
// connection it resumes at the next index (Last-Event-ID), so nothing is
// skipped; what does not verify stops Run with a *FollowError.
//
// Run is called once at a time; the query methods are safe to call from
// other goroutines meanwhile.
type Follower struct {
	cfg    FollowerConfig
	client *http.Client

	mu         sync.Mutex
	next       int64
	origin     string
	cp         *translog.Checkpoint // the largest verified checkpoint
	cpNote     []byte
	seenV2     bool
	revoked    map[string]Revocation
	superseded map[string]string
}

// NewFollower checks cfg and returns a Follower positioned at cfg.From.
func NewFollower(cfg FollowerConfig) (*Follower, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("rp: follower: URL %q: want http(s)://host[:port]", cfg.URL)
	}
	if cfg.LogVerifiers == nil {
		return nil, errors.New("rp: follower: log verifiers are required")
	}
	if err := cfg.Witnesses.Validate(); err != nil {
		return nil, err
	}
	if cfg.From < 0 {
		return nil, fmt.Errorf("rp: follower: From %d", cfg.From)
	}
	cfg.URL = strings.TrimRight(cfg.URL, "/")
	if cfg.WitnessWait <= 0 {
		cfg.WitnessWait = time.Minute
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = 45 * time.Second
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 30 * time.Second
	}
	c := cfg.Client
	if c == nil {
		c = http.DefaultClient
	}
	return &Follower{cfg: cfg, client: c, next: cfg.From, origin: cfg.Origin,
		revoked: map[string]Revocation{}, superseded: map[string]string{}}, nil
}

// normalizeFingerprint accepts upper case and colons.
func normalizeFingerprint(fp string) string {
	return strings.ToLower(strings.ReplaceAll(strings.TrimPrefix(fp, "sha256:"), ":", ""))
}

// Revoked reports whether a verified revoke leaf names the certificate with
// this SHA-256 fingerprint (hex; colons and case ignored), and its reason.
func (f *Follower) Revoked(fingerprint string) (bool, string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	r, ok := f.revoked[normalizeFingerprint(fingerprint)]
	return ok, r.Reason
}

// Revocation returns the revocation of a certificate, if any.
func (f *Follower) Revocation(fingerprint string) (Revocation, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	r, ok := f.revoked[normalizeFingerprint(fingerprint)]
	return r, ok
}

// Superseded reports whether a verified rotate leaf replaced the
// certificate with this fingerprint, and by which (its fingerprint). A
// superseded certificate keeps verifying for the registry's rotation grace
// period; the log does not say how long that is.
func (f *Follower) Superseded(fingerprint string) (bool, string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	by, ok := f.superseded[normalizeFingerprint(fingerprint)]
	return ok, by
}

// LastIndex is the index of the last verified event (From-1 before the
// first).
func (f *Follower) LastIndex() int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.next - 1
}

// Checkpoint returns the largest verified checkpoint (false before the
// first event).
func (f *Follower) Checkpoint() (translog.Checkpoint, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.cp == nil {
		return translog.Checkpoint{}, false
	}
	return *f.cp, true
}

// Run follows the stream until ctx ends (it returns ctx's error), an event
// is refused (a *FollowError), or handle returns an error (returned as it
// is). handle, when not nil, is called with every verified event in index
// order, after the event counted (Revoked already reflects it). A lost
// connection, a server error or a refusal to serve more streams (429, 503)
// is retried with back-off (at least a Retry-After), from the next index.
func (f *Follower) Run(ctx context.Context, handle func(FollowedEvent) error) error {
	backoff := 250 * time.Millisecond
	var waitingSince time.Time // for a witnessed checkpoint of the next event
	var waitingAt int64 = -1
	for {
		progressed, err := f.stream(ctx, handle)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var fe *FollowError
		var he handlerError
		var retry retryError
		switch {
		case errors.As(err, &fe):
			return err
		case errors.As(err, &he):
			return he.err
		case errors.As(err, &retry) && retry.notWitnessed != nil:
			next := f.LastIndex() + 1
			if waitingAt != next {
				waitingAt, waitingSince = next, time.Now()
			}
			if time.Since(waitingSince) > f.cfg.WitnessWait {
				return retry.notWitnessed
			}
		case errors.As(err, &retry):
		case err != nil:
			return err
		}
		if f.cfg.Retried != nil {
			f.cfg.Retried(err)
		}
		if progressed {
			backoff = 250 * time.Millisecond
		}
		wait := backoff
		if retry.after > wait {
			wait = retry.after
		}
		wait = min(wait, f.cfg.MaxBackoff)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		backoff = min(2*backoff, f.cfg.MaxBackoff)
	}
}

// retryError is a failure worth a new connection.
type retryError struct {
	err   error
	after time.Duration // the server's Retry-After
	// notWitnessed is the refusal to return once WitnessWait is over.
	notWitnessed *FollowError
}

func (e retryError) Error() string { return "rp: follower: " + e.err.Error() }

// handlerError carries handle's error out of stream.
type handlerError struct{ err error }

func (e handlerError) Error() string { return e.err.Error() }

// maxEventLine bounds one line of the stream (an event's data: a leaf, a
// checkpoint of at most translog.MaxCheckpointSize and a proof).
const maxEventLine = 256 << 10

// stream makes one connection and handles its events until it ends. It
// reports whether at least one event was verified.
func (f *Follower) stream(ctx context.Context, handle func(FollowedEvent) error) (progressed bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	next := f.LastIndex() + 1
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, f.cfg.URL+"/v1/log/events?from="+strconv.FormatInt(next, 10), nil)
	if err != nil {
		return false, fmt.Errorf("rp: follower: %w", err)
	}
	req.Header.Set("Accept", "text/event-stream")
	if next > 0 {
		req.Header.Set("Last-Event-ID", strconv.FormatInt(next-1, 10))
	}
	resp, err := f.client.Do(req)
	if err != nil {
		return false, retryError{err: err}
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusNotFound && next > 0:
		// The log claims fewer leaves than were verified (a rollback), or
		// this replica does not serve the stream yet (a rolling upgrade):
		// an unsigned answer proves neither, so try again (Retried sees it).
		return false, retryError{err: fmt.Errorf("GET /v1/log/events from %d: %s (the log claims fewer leaves than were verified, or the server does not serve events)", next, resp.Status)}
	case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500:
		return false, retryError{err: fmt.Errorf("GET /v1/log/events: %s", resp.Status), after: retryAfter(resp.Header)}
	case resp.StatusCode != http.StatusOK:
		return false, fmt.Errorf("rp: follower: GET /v1/log/events: %s", resp.Status)
	case !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream"):
		return false, fmt.Errorf("rp: follower: GET /v1/log/events: Content-Type %q", resp.Header.Get("Content-Type"))
	}
	// A connection on which nothing arrives for IdleTimeout is dead.
	idle := time.AfterFunc(f.cfg.IdleTimeout, cancel)
	defer idle.Stop()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), maxEventLine)
	var block []string
	for sc.Scan() {
		idle.Reset(f.cfg.IdleTimeout)
		line := sc.Text()
		if line != "" {
			block = append(block, line)
			continue
		}
		ev, ok := parseSSE(block)
		block = block[:0]
		if !ok {
			continue // comments, retry: nothing to dispatch
		}
		fev, err := f.accept(ctx, ev)
		if err != nil {
			return progressed, err
		}
		progressed = true
		if handle != nil {
			if err := handle(*fev); err != nil {
				return progressed, handlerError{err}
			}
		}
	}
	err = sc.Err()
	if errors.Is(err, bufio.ErrTooLong) {
		return progressed, &FollowError{Reason: FollowMalformed, Index: -1, Want: f.LastIndex() + 1,
			Err: fmt.Errorf("a stream line longer than %d bytes", maxEventLine)}
	}
	if err == nil {
		err = io.EOF
	}
	return progressed, retryError{err: fmt.Errorf("the stream ended: %w", err)}
}

func retryAfter(h http.Header) time.Duration {
	if s, err := strconv.Atoi(h.Get("Retry-After")); err == nil && s > 0 {
		return time.Duration(s) * time.Second
	}
	return 0
}

// sseEvent is one dispatched Server-Sent Event.
type sseEvent struct {
	id, typ, data string
	hasID         bool
	raw           []byte
}

// parseSSE reads one block of lines (text/event-stream): fields id, event,
// data (several data lines are joined by newlines); comments and unknown
// fields are ignored. ok is false when the block holds no data.
func parseSSE(lines []string) (ev sseEvent, ok bool) {
	var data []string
	for _, line := range lines {
		if strings.HasPrefix(line, ":") {
			continue
		}
		field, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch field {
		case "id":
			ev.id, ev.hasID = value, true
		case "event":
			ev.typ = value
		case "data":
			data = append(data, value)
		default:
			continue
		}
		ev.raw = append(append(ev.raw, line...), '\n')
	}
	if data == nil {
		return ev, false
	}
	ev.data = strings.Join(data, "\n")
	return ev, true
}

// followWire is the data of an event (api: logEventData).
type followWire struct {
	Index          int64    `json:"index"`
	Type           string   `json:"type"`
	Leaf           []byte   `json:"leaf"`
	Checkpoint     string   `json:"checkpoint"`
	InclusionProof [][]byte `json:"inclusion_proof"`
}

// accept verifies one event and, when it verifies, counts it.
func (f *Follower) accept(ctx context.Context, ev sseEvent) (*FollowedEvent, error) {
	f.mu.Lock()
	want, origin, prev, prevNote, seenV2 := f.next, f.origin, f.cp, f.cpNote, f.seenV2
	f.mu.Unlock()
	refuse := func(reason FollowReason, index int64, cp []byte, err error) *FollowError {
		return &FollowError{Reason: reason, Index: index, Want: want, Event: ev.raw, Checkpoint: cp, Err: err}
	}

	// Step 1: the event parses, and its id, index, type and leaf agree.
	var w followWire
	dec := json.NewDecoder(strings.NewReader(ev.data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&w); err != nil || dec.More() {
		return nil, refuse(FollowMalformed, -1, nil, fmt.Errorf("data: %v", err))
	}
	if id, err := strconv.ParseInt(ev.id, 10, 64); !ev.hasID || err != nil || id != w.Index {
		return nil, refuse(FollowMalformed, w.Index, nil, fmt.Errorf("id %q is not the index %d", ev.id, w.Index))
	}

	// Step 2: it is the next leaf: nothing skipped, repeated or reordered.
	if w.Index != want {
		kind := "a gap"
		if w.Index < want {
			kind = "a repeated or earlier index"
		}
		return nil, refuse(FollowOutOfOrder, w.Index, nil, fmt.Errorf("%s: got index %d, want %d", kind, w.Index, want))
	}
	e, err := translog.ParseEntry(w.Leaf)
	if err != nil {
		return nil, refuse(FollowLeaf, w.Index, nil, err)
	}
	if string(e.Type) != w.Type || ev.typ != w.Type {
		return nil, refuse(FollowMalformed, w.Index, nil, fmt.Errorf("event %q and type %q, the leaf is a %s entry", ev.typ, w.Type, e.Type))
	}
	if e.Version == translog.EntryVersion1 && seenV2 {
		return nil, refuse(FollowLeaf, w.Index, nil, errors.New("a version 1 leaf after a version 2 leaf"))
	}

	// Step 3: the checkpoint is the log's (and witnessed as required); the
	// one verified last needs no second look.
	note := []byte(w.Checkpoint)
	same := prev != nil && bytes.Equal(note, prevNote)
	var cp translog.Checkpoint
	if same {
		cp = *prev
	} else {
		cp, err = VerifyCheckpoint(note, f.cfg.LogVerifiers, f.cfg.Witnesses)
		switch {
		case errors.Is(err, ErrWitnessPolicy):
			// Not cosigned yet, most likely: fetch it again later.
			return nil, retryError{err: err, notWitnessed: refuse(FollowWitnessPolicy, w.Index, note, err)}
		case err != nil:
			return nil, refuse(FollowLogSignature, w.Index, note, err)
		}
	}
	if origin != "" && cp.Origin != origin {
		return nil, refuse(FollowLogSignature, w.Index, note, fmt.Errorf("checkpoint of log %q, want %q", cp.Origin, origin))
	}

	// Step 4: it is consistent with the checkpoints verified before.
	if prev != nil && !same {
		if err := f.consistent(ctx, *prev, cp); err != nil {
			var fe *FollowError
			if errors.As(err, &fe) {
				fe.Index, fe.Want, fe.Event, fe.Checkpoint, fe.Previous = w.Index, want, ev.raw, note, prevNote
			}
			return nil, err
		}
	}

	// Step 5: the leaf is in the checkpoint's tree at its index.
	if w.Index >= cp.Size {
		return nil, refuse(FollowInclusion, w.Index, note, fmt.Errorf("index %d outside the tree of size %d", w.Index, cp.Size))
	}
	proof := make(tlog.RecordProof, len(w.InclusionProof))
	for i, h := range w.InclusionProof {
		if len(h) != tlog.HashSize {
			return nil, refuse(FollowMalformed, w.Index, note, fmt.Errorf("inclusion proof hash %d has %d bytes", i, len(h)))
		}
		proof[i] = tlog.Hash(h)
	}
	if err := translog.CheckInclusion(proof, cp.Size, cp.Hash, w.Index, translog.LeafHash(w.Leaf)); err != nil {
		return nil, refuse(FollowInclusion, w.Index, note, err)
	}

	// It counts.
	f.mu.Lock()
	defer f.mu.Unlock()
	f.next = w.Index + 1
	f.origin = cp.Origin
	if f.cp == nil || cp.Size >= f.cp.Size {
		c := cp
		f.cp, f.cpNote = &c, note
	}
	if e.Version == translog.EntryVersion {
		f.seenV2 = true
	}
	switch {
	case e.Type == translog.EventRevoke && e.Fingerprint != "":
		if _, dup := f.revoked[e.Fingerprint]; !dup {
			f.revoked[e.Fingerprint] = Revocation{Reason: e.Reason, Index: w.Index, Time: e.Time}
		}
	case e.Type == translog.EventRotate && e.Previous != "":
		f.superseded[e.Previous] = e.Fingerprint
	}
	return &FollowedEvent{Index: w.Index, Entry: e, Leaf: w.Leaf, Checkpoint: cp}, nil
}

// consistent checks that two verified checkpoints of one log describe one
// tree: equal roots for equal sizes, else a consistency proof from the
// registry between the smaller and the larger.
func (f *Follower) consistent(ctx context.Context, a, b translog.Checkpoint) error {
	if a.Size == b.Size {
		if a.Hash != b.Hash {
			return &FollowError{Reason: FollowConsistency, Err: fmt.Errorf("fork: two trees of size %d (roots %s and %s)", a.Size, a.Hash, b.Hash)}
		}
		return nil
	}
	old, nw := a, b
	if old.Size > nw.Size {
		old, nw = nw, old
	}
	if old.Size == 0 {
		return nil // every tree extends the empty one
	}
	p, err := f.consistencyProof(ctx, old.Size, nw.Size)
	if err != nil {
		return err
	}
	if err := translog.CheckConsistency(p, nw.Size, nw.Hash, old.Size, old.Hash); err != nil {
		return &FollowError{Reason: FollowConsistency, Proof: p,
			Err: fmt.Errorf("the tree of size %d does not extend the one of size %d: %v", nw.Size, old.Size, err)}
	}
	return nil
}

// consistencyProof fetches GET /v1/log/proof/consistency. A failure to
// fetch it is worth a retry; a malformed answer is not.
func (f *Follower) consistencyProof(ctx context.Context, oldSize, newSize int64) (tlog.TreeProof, error) {
	u := fmt.Sprintf("%s/v1/log/proof/consistency?old=%d&new=%d", f.cfg.URL, oldSize, newSize)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("rp: follower: %w", err)
	}
	resp, err := f.client.Do(req)
	if err != nil {
		return nil, retryError{err: fmt.Errorf("fetching a consistency proof: %w", err)}
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, retryError{err: fmt.Errorf("fetching a consistency proof: %s", resp.Status), after: retryAfter(resp.Header)}
	}
	var w struct {
		Old   int64    `json:"old"`
		New   int64    `json:"new"`
		Proof [][]byte `json:"proof"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&w); err != nil {
		return nil, retryError{err: fmt.Errorf("reading a consistency proof: %w", err)}
	}
	if w.Old != oldSize || w.New != newSize {
		return nil, &FollowError{Reason: FollowConsistency, Err: fmt.Errorf("asked for the proof %d→%d, got %d→%d", oldSize, newSize, w.Old, w.New)}
	}
	p := make(tlog.TreeProof, len(w.Proof))
	for i, h := range w.Proof {
		if len(h) != tlog.HashSize {
			return nil, &FollowError{Reason: FollowConsistency, Err: fmt.Errorf("consistency proof hash %d has %d bytes", i, len(h))}
		}
		p[i] = tlog.Hash(h)
	}
	return p, nil
}
