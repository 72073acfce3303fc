package api

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/agent-trust-registry/atr/registry"
	"github.com/agent-trust-registry/atr/registry/registrytest"
	"github.com/agent-trust-registry/atr/registry/translog"
)

// eventsHangGuard bounds the waits of these tests (no timed assertions:
// it only turns a hang into a failure).
const eventsHangGuard = 15 * time.Second

// fakeEvents is a LogEventSource over an in-memory list of leaves.
type fakeEvents struct {
	fakeLog
	mu     sync.Mutex
	events []registry.LogEvent
	grown  chan struct{} // closed and replaced by add
	calls  int
}

func newFakeEvents(n int) *fakeEvents {
	f := &fakeEvents{grown: make(chan struct{})}
	for range n {
		f.add()
	}
	return f
}

func (f *fakeEvents) add() {
	f.mu.Lock()
	defer f.mu.Unlock()
	i := int64(len(f.events))
	f.events = append(f.events, registry.LogEvent{Index: i, Type: "revoke", Leaf: []byte(fmt.Sprintf("leaf %d", i)),
		Checkpoint: []byte("example.org/log\n" + strconv.FormatInt(i+1, 10) + "\nAAAA\n\n— sig\n")})
	close(f.grown)
	f.grown = make(chan struct{})
}

func (f *fakeEvents) LogSize(context.Context) (int64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return int64(len(f.events)), nil
}

func (f *fakeEvents) LogEvents(ctx context.Context, from int64, limit int) ([]registry.LogEvent, error) {
	for {
		f.mu.Lock()
		f.calls++
		n, grown := int64(len(f.events)), f.grown
		if from < n {
			out := append([]registry.LogEvent(nil), f.events[from:min(n, from+int64(limit))]...)
			f.mu.Unlock()
			return out, nil
		}
		f.mu.Unlock()
		if from > n {
			return nil, registry.ErrNotFound
		}
		select {
		case <-grown:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// sseEvent is one event (or comment block) read from a stream.
type sseEvent struct {
	id, typ, data string
	comments      []string
}

// sseReader reads a text/event-stream body.
type sseReader struct{ sc *bufio.Scanner }

func newSSEReader(r io.Reader) *sseReader {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	return &sseReader{sc}
}

// next returns the next block (up to a blank line).
func (r *sseReader) next() (sseEvent, error) {
	var ev sseEvent
	seen := false
	for r.sc.Scan() {
		line := r.sc.Text()
		if line == "" {
			if seen {
				return ev, nil
			}
			continue
		}
		seen = true
		field, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch field {
		case "":
			ev.comments = append(ev.comments, value)
		case "id":
			ev.id = value
		case "event":
			ev.typ = value
		case "data":
			ev.data = value
		}
	}
	if err := r.sc.Err(); err != nil {
		return ev, err
	}
	return ev, io.EOF
}

// nextEvent skips comment-only blocks.
func (r *sseReader) nextEvent() (sseEvent, error) {
	for {
		ev, err := r.next()
		if err != nil || ev.id != "" {
			return ev, err
		}
	}
}

// openEvents starts GET path on srv with the given headers; the stream is
// closed when the test ends.
func openEvents(t *testing.T, c *http.Client, url string, hdr ...string) *http.Response {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	t.Cleanup(cancel)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}

// TestLogEventsHandler: the stream's framing, resumption (from and
// Last-Event-ID, which wins), refusals, and limits, over the fake source.
func TestLogEventsHandler(t *testing.T) {
	src := newFakeEvents(5)
	h := newHarness(t, func(_ *Config, d *Deps) { d.Log = src })
	url := h.srv.URL + "/v1/log/events"

	t.Run("framing and order", func(t *testing.T) {
		resp := openEvents(t, h.srv.Client(), url)
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
			t.Fatalf("status %d, Content-Type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		if resp.Header.Get("X-Request-ID") == "" || resp.Header.Get("Cache-Control") != "no-store" {
			t.Errorf("headers: %v", resp.Header)
		}
		r := newSSEReader(resp.Body)
		first, err := r.next()
		if err != nil || len(first.comments) == 0 || first.id != "" {
			t.Fatalf("first block %+v, %v: want a comment and a retry field", first, err)
		}
		for i := range 5 {
			ev, err := r.nextEvent()
			if err != nil {
				t.Fatal(err)
			}
			var d logEventData
			if err := json.Unmarshal([]byte(ev.data), &d); err != nil {
				t.Fatalf("event %d data %q: %v", i, ev.data, err)
			}
			if ev.id != strconv.Itoa(i) || ev.typ != "revoke" || d.Index != int64(i) || d.Type != "revoke" ||
				string(d.Leaf) != fmt.Sprintf("leaf %d", i) || !strings.HasPrefix(d.Checkpoint, "example.org/log\n") {
				t.Errorf("event %d: id %q type %q data %+v", i, ev.id, ev.typ, d)
			}
		}
		// A leaf appended later arrives on the open stream.
		src.add()
		if ev, err := r.nextEvent(); err != nil || ev.id != "5" {
			t.Errorf("after an append: %+v, %v; want id 5", ev, err)
		}
	})
	t.Run("resume", func(t *testing.T) {
		for _, tt := range []struct {
			name  string
			query string
			hdr   []string
			want  string
		}{
			{"from", "?from=3", nil, "3"},
			{"Last-Event-ID", "", []string{"Last-Event-ID", "2"}, "3"},
			{"Last-Event-ID wins over from", "?from=0", []string{"Last-Event-ID", "4"}, "5"},
			{"from the end", "?from=6", nil, ""},
		} {
			t.Run(tt.name, func(t *testing.T) {
				resp := openEvents(t, h.srv.Client(), url+tt.query, tt.hdr...)
				if resp.StatusCode != 200 {
					t.Fatalf("status %d", resp.StatusCode)
				}
				if tt.want == "" {
					return
				}
				ev, err := newSSEReader(resp.Body).nextEvent()
				if err != nil || ev.id != tt.want {
					t.Errorf("first event %+v, %v; want id %s", ev, err, tt.want)
				}
			})
		}
	})
	t.Run("refusals", func(t *testing.T) {
		for _, tt := range []struct {
			path string
			hdr  []string
			want int
			code string
		}{
			{"/v1/log/events?from=-1", nil, 400, CodeInvalidRequest},
			{"/v1/log/events?from=x", nil, 400, CodeInvalidRequest},
			{"/v1/log/events", []string{"Last-Event-ID", "abc"}, 400, CodeInvalidRequest},
			{"/v1/log/events", []string{"Last-Event-ID", "-3"}, 400, CodeInvalidRequest},
			{"/v1/log/events", []string{"Last-Event-ID", "9223372036854775807"}, 400, CodeInvalidRequest},
			{"/v1/log/events?from=1000", nil, 404, CodeNotFound},
			{"/v1/log/events", []string{"Last-Event-ID", "999"}, 404, CodeNotFound},
		} {
			r := h.do("GET", tt.path, "", nil, tt.hdr...)
			if r.status != tt.want || r.errBody(t).Code != tt.code {
				t.Errorf("GET %s %v: %d %s, want %d %s", tt.path, tt.hdr, r.status, r.body, tt.want, tt.code)
			}
		}
		if r := h.do("HEAD", "/v1/log/events", "", nil); r.status != 200 || len(r.body) != 0 || r.header.Get("Content-Type") != "text/event-stream" {
			t.Errorf("HEAD: %d %q %v", r.status, r.body, r.header)
		}
		if r := h.do("POST", "/v1/log/events", "", nil); r.status != 405 {
			t.Errorf("POST: %d, want 405", r.status)
		}
	})
	t.Run("not implemented without a source", func(t *testing.T) {
		h := newHarness(t, nil) // fakeLog has no LogEvents
		if r := h.do("GET", "/v1/log/events", "", nil); r.status != 501 {
			t.Errorf("status %d %s, want 501", r.status, r.body)
		}
	})
}

// TestLogEventsLimits: streams beyond the per-client cap are 429 and
// beyond the server's cap 503, both with Retry-After; a closed stream gives
// its slot back.
func TestLogEventsLimits(t *testing.T) {
	src := newFakeEvents(1)
	h := newHarness(t, func(c *Config, d *Deps) {
		d.Log = src
		c.TrustedProxies = []string{"127.0.0.1/32", "::1/128"} // X-Forwarded-For names the client
	})
	h.s.events.max, h.s.events.maxPerClient = 3, 2
	url := h.srv.URL + "/v1/log/events"
	open := func(client string) *http.Response {
		t.Helper()
		return openEvents(t, h.srv.Client(), url, "X-Forwarded-For", client)
	}
	a1, a2 := open("192.0.2.1"), open("192.0.2.1")
	for _, r := range []*http.Response{a1, a2} {
		if r.StatusCode != 200 {
			t.Fatalf("stream within the limits: %d", r.StatusCode)
		}
	}
	if r := open("192.0.2.1"); r.StatusCode != 429 || r.Header.Get("Retry-After") == "" {
		t.Errorf("third stream of one client: %d, Retry-After %q; want 429 with Retry-After", r.StatusCode, r.Header.Get("Retry-After"))
	}
	if r := open("192.0.2.2"); r.StatusCode != 200 {
		t.Fatalf("another client's first stream: %d", r.StatusCode)
	}
	if r := open("192.0.2.3"); r.StatusCode != 503 || r.Header.Get("Retry-After") == "" {
		t.Errorf("stream beyond the server's cap: %d, Retry-After %q; want 503 with Retry-After", r.StatusCode, r.Header.Get("Retry-After"))
	}
	// Closing a stream frees its slot (the handler notices the client is gone).
	a1.Body.Close()
	ctx, cancel := context.WithTimeout(t.Context(), eventsHangGuard)
	defer cancel()
	for {
		r := open("192.0.2.3")
		if r.StatusCode == 200 {
			break
		}
		r.Body.Close()
		select {
		case <-ctx.Done():
			t.Fatal("a closed stream's slot was never given back")
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// TestLogEventsOutlivesTimeouts: a stream is not cut by the http.Server's
// ReadTimeout and WriteTimeout nor by the API's HandlerTimeout; idle, it
// carries pings.
func TestLogEventsOutlivesTimeouts(t *testing.T) {
	src := newFakeEvents(1)
	s, err := New(Config{TrustDomain: "example.org", HandlerTimeout: 300 * time.Millisecond},
		Deps{Lifecycle: newFake(t), Auth: newFake(t), Admin: newFake(t), Log: src}, testLogger(io.Discard))
	if err != nil {
		t.Fatal(err)
	}
	s.events.heartbeat = 100 * time.Millisecond
	srv := httptest.NewUnstartedServer(s.Handler())
	srv.Config.ReadTimeout, srv.Config.WriteTimeout = 300*time.Millisecond, 300*time.Millisecond
	srv.EnableHTTP2 = true
	srv.StartTLS()
	t.Cleanup(srv.Close)
	for _, proto := range []string{"HTTP/1.1", "HTTP/2.0"} {
		t.Run(proto, func(t *testing.T) {
			c := srv.Client()
			if proto == "HTTP/1.1" {
				c = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: c.Transport.(*http.Transport).TLSClientConfig.RootCAs}}}
			}
			resp := openEvents(t, c, srv.URL+"/v1/log/events")
			if resp.Proto != proto {
				t.Fatalf("protocol %s, want %s", resp.Proto, proto)
			}
			r := newSSEReader(resp.Body)
			if ev, err := r.nextEvent(); err != nil || ev.id != "0" {
				t.Fatalf("first event %+v, %v", ev, err)
			}
			// Well past every timeout: pings, then a new event.
			until := time.Now().Add(time.Second)
			pings := 0
			for time.Now().Before(until) {
				ev, err := r.next()
				if err != nil {
					t.Fatalf("stream cut after %d pings: %v", pings, err)
				}
				if len(ev.comments) > 0 && ev.comments[0] == "ping" {
					pings++
				}
			}
			src.add()
			for {
				ev, err := r.next()
				if err != nil {
					t.Fatalf("stream cut before the new event: %v", err)
				}
				if ev.id != "" {
					break
				}
			}
			if pings == 0 {
				t.Error("an idle stream carried no ping")
			}
		})
	}
}

// TestLogEventsOverHTTPS: the real registry behind the stream (SQLite and
// PostgreSQL): every event carries a checkpoint signed by the log key that
// includes its leaf, and a leaf appended by a revocation arrives on an
// open stream.
func TestLogEventsOverHTTPS(t *testing.T) {
	for _, db := range registrytest.Databases() {
		t.Run(db, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), eventsHangGuard)
			defer cancel()
			f := registrytest.NewFixture(t, registrytest.WithDatabase(db))
			if err := f.Registry.Start(t.Context()); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { f.Registry.Close() })
			s, err := New(Config{TrustDomain: registrytest.TrustDomain, TLS: true},
				Deps{Lifecycle: f.Registry, Auth: f.Registry, Admin: f.Registry, Log: f.Registry, Now: f.Clock.Now}, testLogger(io.Discard))
			if err != nil {
				t.Fatal(err)
			}
			srv := httptest.NewTLSServer(s.Handler())
			t.Cleanup(srv.Close)
			owner := f.Owner("acme", "acme")
			for _, name := range []string{"a.acme", "b.acme"} {
				csr, _ := f.NewCSR()
				if _, err := f.Registry.Register(ctx, owner, registry.RegisterRequest{Name: name, CSR: csr}); err != nil {
					t.Fatal(err)
				}
			}
			resp := openEvents(t, srv.Client(), srv.URL+"/v1/log/events")
			r := newSSEReader(resp.Body)
			check := func(want int64, wantType string) {
				t.Helper()
				ev, err := r.nextEvent()
				if err != nil {
					t.Fatalf("event %d: %v", want, err)
				}
				var d logEventData
				if err := json.Unmarshal([]byte(ev.data), &d); err != nil {
					t.Fatal(err)
				}
				cp, err := translog.OpenCheckpoint([]byte(d.Checkpoint), f.NoteVerifier)
				if err != nil {
					t.Fatalf("event %d: checkpoint: %v", want, err)
				}
				proof := make(tlog.RecordProof, len(d.InclusionProof))
				for i, p := range d.InclusionProof {
					copy(proof[i][:], p)
				}
				if ev.id != strconv.FormatInt(want, 10) || d.Index != want || ev.typ != wantType || d.Type != wantType {
					t.Fatalf("event id %s index %d type %s/%s, want %d %s", ev.id, d.Index, ev.typ, d.Type, want, wantType)
				}
				if err := translog.CheckInclusion(proof, cp.Size, cp.Hash, d.Index, translog.LeafHash(d.Leaf)); err != nil {
					t.Fatalf("event %d: %v", want, err)
				}
			}
			check(0, "register")
			check(1, "register")
			if _, err := f.Registry.Revoke(ctx, owner, "a.acme", "keyCompromise"); err != nil {
				t.Fatal(err)
			}
			check(2, "revoke")
		})
	}
}
