package api

// GET /v1/log/events: the transparency log as Server-Sent Events, so that a
// relying party learns of a revocation within about a second without
// polling. Public, like the rest of the log (its version 2 leaves are
// blinded). One event per leaf, in index order, none skipped:
//
//	id: 42
//	event: revoke
//	data: {"index":42,"type":"revoke","leaf":"<base64>","checkpoint":"<signed note>","inclusion_proof":["<base64>",…]}
//
// A client resumes with ?from=<index> or, after a disconnection, with the
// Last-Event-ID header (the last id it received; the stream goes on at the
// next index). Comment lines (": ping") keep idle connections open.

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/agent-trust-registry/atr/registry"
)

// LogEventSource serves GET /v1/log/events. *registry.Registry implements
// it (after Start); a TransparencyLog without it answers 501 there.
type LogEventSource interface {
	// LogSize is the current number of leaves.
	LogSize(ctx context.Context) (int64, error)
	// LogEvents returns the leaves from index from on (at most limit), each
	// with a signed checkpoint covering it and its inclusion proof, waiting
	// while there is none; ErrNotFound past the log.
	LogEvents(ctx context.Context, from int64, limit int) ([]registry.LogEvent, error)
}

// Limits of the event stream.
const (
	// defaultMaxEventStreams caps the concurrent streams of one server;
	// beyond it a new stream is answered 503 with Retry-After.
	defaultMaxEventStreams = 256
	// defaultMaxEventStreamsPerClient caps the concurrent streams of one
	// client address (limitKey); beyond it, 429 with Retry-After.
	defaultMaxEventStreamsPerClient = 8
	// eventHeartbeat is the longest silence on a stream: a ": ping" comment
	// is sent when no event was.
	eventHeartbeat = 15 * time.Second
	// eventWriteTimeout is the write deadline of each event or ping (the
	// server's WriteTimeout would cut the stream otherwise).
	eventWriteTimeout = 30 * time.Second
	// eventRetry is the reconnection delay suggested to clients.
	eventRetry = 2 * time.Second
	// eventRefusedRetryAfter is the Retry-After (seconds) of a refused stream.
	eventRefusedRetryAfter = 5
)

// eventStreams counts the open streams, in total and per client. The zero
// value uses the default limits.
type eventStreams struct {
	mu        sync.Mutex
	total     int
	perClient map[string]int
	// max, maxPerClient and heartbeat override the defaults (tests).
	max, maxPerClient int
	heartbeat         time.Duration
}

// acquire takes a stream slot for client, or refuses with the error to
// answer; release gives it back.
func (e *eventStreams) acquire(client string) (release func(), err error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	maxTotal, maxClient := e.max, e.maxPerClient
	if maxTotal <= 0 {
		maxTotal = defaultMaxEventStreams
	}
	if maxClient <= 0 {
		maxClient = defaultMaxEventStreamsPerClient
	}
	if e.total >= maxTotal {
		return nil, &apiError{Status: http.StatusServiceUnavailable, Code: CodeUnavailable, Message: "too many event streams; retry later",
			cause: fmt.Errorf("event streams: %d open, the limit", e.total)}
	}
	if e.perClient[client] >= maxClient {
		return nil, &apiError{Status: http.StatusTooManyRequests, Code: CodeRateLimited, Message: "too many event streams from this client",
			cause: fmt.Errorf("event streams: %d open for one client, the limit", e.perClient[client])}
	}
	if e.perClient == nil {
		e.perClient = map[string]int{}
	}
	e.total++
	e.perClient[client]++
	var once sync.Once
	return func() {
		once.Do(func() {
			e.mu.Lock()
			defer e.mu.Unlock()
			e.total--
			if e.perClient[client]--; e.perClient[client] <= 0 {
				delete(e.perClient, client)
			}
		})
	}, nil
}

// logEventData is the data line of one event (JSON).
type logEventData struct {
	Index int64  `json:"index"`
	Type  string `json:"type"`
	Leaf  []byte `json:"leaf"` // base64 in JSON
	// Checkpoint is the signed note (log signatures, then witness
	// cosignatures) of a tree that includes the leaf.
	Checkpoint     string   `json:"checkpoint"`
	InclusionProof [][]byte `json:"inclusion_proof"` // 32-byte hashes, base64 in JSON
}

// eventsFrom is the first index the client wants: the one after
// Last-Event-ID when the header is present, else ?from (default 0).
func eventsFrom(r *http.Request) (int64, error) {
	if id := r.Header.Get("Last-Event-ID"); id != "" {
		n, err := strconv.ParseInt(id, 10, 64)
		if err != nil || n < 0 || n == math.MaxInt64 {
			return 0, errInvalid("Last-Event-ID: the index of the last event received")
		}
		return n + 1, nil
	}
	if r.URL.Query().Has("from") {
		return int64Param(r, "from")
	}
	return 0, nil
}

// handleLogEvents serves GET /v1/log/events (see the file comment).
func (s *Server) handleLogEvents(w http.ResponseWriter, r *http.Request) error {
	src, ok := s.deps.Log.(LogEventSource)
	if s.deps.Log == nil || !ok {
		return errNotImplemented
	}
	from, err := eventsFrom(r)
	if err != nil {
		return err
	}
	size, err := src.LogSize(r.Context())
	if err != nil {
		return fmt.Errorf("api: log events: %w", err)
	}
	if from > size {
		return &apiError{Status: http.StatusNotFound, Code: CodeNotFound, Message: "from is beyond the end of the log",
			cause: fmt.Errorf("log events from %d, tree size %d", from, size)}
	}
	ri := infoFrom(r.Context())
	release, err := s.events.acquire(limitKey(ri.ip))
	if err != nil {
		w.Header().Set("Retry-After", strconv.Itoa(eventRefusedRetryAfter))
		return err
	}
	defer release()

	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("X-Accel-Buffering", "no") // proxies must not buffer the stream
	if r.Method == http.MethodHead {
		w.WriteHeader(http.StatusOK)
		return nil
	}
	rc := http.NewResponseController(w)
	// The request has no body: no read deadline (ReadTimeout), so that the
	// connection's background read sees the client go away for as long as
	// the stream lasts and cancels the request context.
	_ = rc.SetReadDeadline(time.Time{})
	ctx, stop := streamContext(r.Context())
	defer stop()
	log := ri.logger(s.log)
	w.WriteHeader(http.StatusOK)
	write := func(b []byte) bool {
		if err := rc.SetWriteDeadline(time.Now().Add(eventWriteTimeout)); err != nil && !errors.Is(err, http.ErrNotSupported) {
			return false
		}
		if _, err := w.Write(b); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	if !write(fmt.Appendf(nil, ": log events from %d\nretry: %d\n\n", from, eventRetry.Milliseconds())) {
		return nil
	}
	heartbeat := cmp.Or(s.events.heartbeat, eventHeartbeat)
	for {
		wctx, cancel := context.WithTimeout(ctx, heartbeat)
		evs, err := src.LogEvents(wctx, from, registry.MaxLogEventsPerRead)
		idle := err != nil && wctx.Err() != nil
		cancel()
		switch {
		case ctx.Err() != nil:
			return nil // the client went away, or the server stops
		case idle:
			if !write([]byte(": ping\n\n")) {
				return nil
			}
			continue
		case err != nil:
			// Nothing can be said in-band after the 200: end the stream; the
			// client resumes with Last-Event-ID.
			log.WithError(err).Warn("log event stream ended")
			return nil
		}
		for _, ev := range evs {
			b, err := formatLogEvent(ev)
			if err != nil {
				log.WithError(err).Error("log event stream: encoding an event")
				return nil
			}
			if !write(b) {
				return nil
			}
			from = ev.Index + 1
		}
	}
}

// formatLogEvent is one event in the text/event-stream format.
func formatLogEvent(ev registry.LogEvent) ([]byte, error) {
	d := logEventData{Index: ev.Index, Type: ev.Type, Leaf: ev.Leaf, Checkpoint: string(ev.Checkpoint), InclusionProof: hashes(ev.InclusionProof)}
	b, err := json.Marshal(d)
	if err != nil {
		return nil, err
	}
	// JSON escapes every line break, and the type is one of a fixed set of
	// words: neither can end a field early.
	out := fmt.Appendf(nil, "id: %d\nevent: %s\ndata: ", ev.Index, sseField(ev.Type))
	out = append(out, b...)
	return append(out, "\n\n"...), nil
}

// sseField keeps only the characters an event type may hold.
func sseField(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_') {
			return "unknown"
		}
	}
	if s == "" {
		return "unknown"
	}
	return s
}

// streamContext is the context of a long stream: the request's values, and
// cancelled when the request's context is cancelled (the client went away)
// but not when it merely passes the handler timeout (HandlerTimeout bounds
// ordinary requests, not streams). Call stop when done.
func streamContext(req context.Context) (ctx context.Context, stop func()) {
	ctx, cancel := context.WithCancel(context.WithoutCancel(req))
	unhook := context.AfterFunc(req, func() {
		if !errors.Is(req.Err(), context.DeadlineExceeded) {
			cancel()
		}
	})
	return ctx, func() { unhook(); cancel() }
}
