package rp_test

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/agent-trust-registry/atr/api"
	"github.com/agent-trust-registry/atr/registry"
	"github.com/agent-trust-registry/atr/registry/registrytest"
	"github.com/agent-trust-registry/atr/registry/translog"
	"github.com/agent-trust-registry/atr/rp"
)

// followHangGuard bounds every wait (the house rule is no timed
// assertions: it only turns a hang into a failure).
const followHangGuard = 15 * time.Second

// liveLog is a real registry (SoftHSM2, SQLite) behind the real API over
// HTTPS, with its change notification started.
type liveLog struct {
	f     *registrytest.Fixture
	srv   *httptest.Server
	owner registry.Actor
	mu    sync.Mutex
	// lastEventIDs records the Last-Event-ID of every stream request.
	lastEventIDs []string
}

func newLiveLog(t *testing.T) *liveLog {
	t.Helper()
	f := registrytest.NewFixture(t)
	if err := f.Registry.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Registry.Close() })
	s, err := api.New(api.Config{TrustDomain: registrytest.TrustDomain, TLS: true},
		api.Deps{Lifecycle: f.Registry, Auth: f.Registry, Admin: f.Registry, Log: f.Registry, Now: f.Clock.Now}, f.Log)
	if err != nil {
		t.Fatal(err)
	}
	l := &liveLog{f: f, owner: f.Owner("acme", "acme")}
	l.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/log/events" {
			l.mu.Lock()
			l.lastEventIDs = append(l.lastEventIDs, r.Header.Get("Last-Event-ID"))
			l.mu.Unlock()
		}
		s.Handler().ServeHTTP(w, r)
	}))
	t.Cleanup(l.srv.Close)
	return l
}

func (l *liveLog) register(t *testing.T, name string) *registry.Issued {
	t.Helper()
	csr, _ := l.f.NewCSR()
	iss, err := l.f.Registry.Register(t.Context(), l.owner, registry.RegisterRequest{Name: name, CSR: csr})
	if err != nil {
		t.Fatal(err)
	}
	return iss
}

func (l *liveLog) rotate(t *testing.T, name string) *registry.Issued {
	t.Helper()
	csr, _ := l.f.NewCSR()
	iss, err := l.f.Registry.Rotate(t.Context(), l.owner, name, csr)
	if err != nil {
		t.Fatal(err)
	}
	return iss
}

func (l *liveLog) revoke(t *testing.T, name, reason string) {
	t.Helper()
	if _, err := l.f.Registry.Revoke(t.Context(), l.owner, name, reason); err != nil {
		t.Fatal(err)
	}
}

func (l *liveLog) follower(t *testing.T, url string, mutate func(*rp.FollowerConfig)) *rp.Follower {
	t.Helper()
	lv, err := rp.ParseLogVerifiers(l.f.Registry.LogVerifierKey())
	if err != nil {
		t.Fatal(err)
	}
	cfg := rp.FollowerConfig{URL: url, Client: l.srv.Client(), LogVerifiers: lv, Origin: l.f.LogOrigin, MaxBackoff: 100 * time.Millisecond}
	if mutate != nil {
		mutate(&cfg)
	}
	fl, err := rp.NewFollower(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return fl
}

// run runs fl in the background; events and Run's result come out on the
// returned channels.
func run(t *testing.T, fl *rp.Follower) (<-chan rp.FollowedEvent, <-chan error) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	events, done := make(chan rp.FollowedEvent, 1000), make(chan error, 1)
	go func() {
		done <- fl.Run(ctx, func(ev rp.FollowedEvent) error { events <- ev; return nil })
	}()
	t.Cleanup(func() { cancel(); <-done })
	return events, done
}

// expect reads events want..want+n-1, in order.
func expect(t *testing.T, events <-chan rp.FollowedEvent, done <-chan error, from, n int64) []rp.FollowedEvent {
	t.Helper()
	var out []rp.FollowedEvent
	for i := from; i < from+n; i++ {
		select {
		case ev := <-events:
			if ev.Index != i {
				t.Fatalf("event %d, want %d", ev.Index, i)
			}
			out = append(out, ev)
		case err := <-done:
			t.Fatalf("Run ended before event %d: %v", i, err)
		case <-time.After(followHangGuard):
			t.Fatalf("no event %d", i)
		}
	}
	return out
}

func fingerprint(t *testing.T, iss *registry.Issued) string {
	t.Helper()
	return iss.Certificate.FingerprintSHA256
}

// TestFollowerFollowsAndResumes: a follower gets every leaf in order,
// verified; learns revocations and rotations; after the server cuts every
// connection it resumes from the next index (Last-Event-ID) with no gap
// and no repeat, and events appended meanwhile arrive.
func TestFollowerFollowsAndResumes(t *testing.T) {
	l := newLiveLog(t)
	a, b := l.register(t, "a.acme"), l.register(t, "b.acme")
	b2 := l.rotate(t, "b.acme")
	retried := make(chan error, 1)
	fl := l.follower(t, l.srv.URL, func(c *rp.FollowerConfig) {
		c.Retried = func(err error) {
			select {
			case retried <- err:
			default:
			}
		}
	})
	if fl.LastIndex() != -1 {
		t.Errorf("LastIndex before Run: %d", fl.LastIndex())
	}
	events, done := run(t, fl)
	evs := expect(t, events, done, 0, 3)
	if evs[0].Entry.Type != translog.EventRegister || evs[2].Entry.Type != translog.EventRotate {
		t.Errorf("types %s %s %s", evs[0].Entry.Type, evs[1].Entry.Type, evs[2].Entry.Type)
	}
	if ok, by := fl.Superseded(fingerprint(t, b)); !ok || by != fingerprint(t, b2) {
		t.Errorf("Superseded(b) = %v, %q; want true, %s", ok, by, fingerprint(t, b2))
	}
	if ok, _ := fl.Revoked(fingerprint(t, a)); ok {
		t.Error("a is revoked before its revocation")
	}

	// A revocation while the stream is open.
	revokedAt := time.Now()
	l.revoke(t, "a.acme", "keyCompromise")
	ev := expect(t, events, done, 3, 1)[0]
	t.Logf("revocation verified by the follower %v after Revoke began", time.Since(revokedAt))
	if ev.Entry.Type != translog.EventRevoke || ev.Entry.Fingerprint != fingerprint(t, a) {
		t.Errorf("event 3: %+v", ev.Entry)
	}
	if ok, reason := fl.Revoked(strings.ToUpper(fingerprint(t, a))); !ok || reason != "keyCompromise" {
		t.Errorf("Revoked(a) = %v, %q; want true, keyCompromise", ok, reason)
	}
	if fl.LastIndex() != 3 {
		t.Errorf("LastIndex %d, want 3", fl.LastIndex())
	}

	// The server drops every connection; leaves are appended meanwhile.
	for round := range 3 {
		last := fl.LastIndex()
		l.srv.CloseClientConnections()
		c := l.register(t, fmt.Sprintf("c%d.acme", round))
		l.revoke(t, fmt.Sprintf("c%d.acme", round), "superseded")
		expect(t, events, done, last+1, 2)
		if ok, reason := fl.Revoked(fingerprint(t, c)); !ok || reason != "superseded" {
			t.Errorf("round %d: Revoked(c) = %v, %q", round, ok, reason)
		}
	}
	select {
	case ev := <-events:
		t.Errorf("an extra event %d", ev.Index)
	default:
	}
	if len(retried) == 0 {
		t.Error("Retried was never called, though the connections were cut")
	}
	// Every stream after the first resumed after the last verified event.
	l.mu.Lock()
	ids := append([]string(nil), l.lastEventIDs...)
	l.mu.Unlock()
	if len(ids) < 2 || ids[0] != "" {
		t.Fatalf("Last-Event-ID of the stream requests: %q", ids)
	}
	for _, id := range ids[1:] {
		n, err := strconv.ParseInt(id, 10, 64)
		if err != nil || n < 3 {
			t.Errorf("a resumed stream sent Last-Event-ID %q", id)
		}
	}
	if cp, ok := fl.Checkpoint(); !ok || cp.Size != fl.LastIndex()+1 {
		t.Errorf("Checkpoint %+v, %v; want size %d", cp, ok, fl.LastIndex()+1)
	}
}

// capturedEvent is one event of a real stream, with its data decoded.
type capturedEvent struct {
	id, typ string
	data    map[string]any
}

// capture reads n events of the real stream from index 0.
func capture(t *testing.T, l *liveLog, n int) []capturedEvent {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), followHangGuard)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, l.srv.URL+"/v1/log/events", nil)
	resp, err := l.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	var out []capturedEvent
	var cur capturedEvent
	for len(out) < n && sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if cur.id != "" {
				out = append(out, cur)
			}
			cur = capturedEvent{}
		case strings.HasPrefix(line, "id: "):
			cur.id = strings.TrimPrefix(line, "id: ")
		case strings.HasPrefix(line, "event: "):
			cur.typ = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			if err := json.Unmarshal([]byte(strings.TrimPrefix(line, "data: ")), &cur.data); err != nil {
				t.Fatal(err)
			}
		}
	}
	if len(out) < n {
		t.Fatalf("captured %d events, want %d: %v", len(out), n, sc.Err())
	}
	return out
}

func (e capturedEvent) clone() capturedEvent {
	d := map[string]any{}
	for k, v := range e.data {
		d[k] = v
	}
	return capturedEvent{id: e.id, typ: e.typ, data: d}
}

func (e capturedEvent) String() string {
	b, _ := json.Marshal(e.data)
	return fmt.Sprintf("id: %s\nevent: %s\ndata: %s\n\n", e.id, e.typ, b)
}

// replay serves a fixed, tampered stream at /v1/log/events and proxies
// every other path (the consistency proofs) to the real server.
func replay(t *testing.T, l *liveLog, events []capturedEvent) string {
	t.Helper()
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/log/events" {
			req, _ := http.NewRequestWithContext(r.Context(), r.Method, l.srv.URL+r.URL.RequestURI(), nil)
			resp, err := l.srv.Client().Do(req)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadGateway)
				return
			}
			defer resp.Body.Close()
			w.WriteHeader(resp.StatusCode)
			io.Copy(w, resp.Body)
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, ": tampered\n\n")
		for _, e := range events {
			io.WriteString(w, e.String())
		}
		// Then hang like an idle stream until the client goes.
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// signCheckpoint returns a checkpoint note for (size, root) signed with
// the log's real keys: a log operator turned malicious.
func signCheckpoint(t *testing.T, l *liveLog, size int64, root tlog.Hash) string {
	t.Helper()
	msg, err := translog.SignCheckpoint(translog.Checkpoint{Origin: l.f.LogOrigin, Size: size, Hash: root}, l.f.NoteSigner, l.f.NoteSignerEd25519)
	if err != nil {
		t.Fatal(err)
	}
	return string(msg)
}

// TestFollowerRefusesForgeries replays a real stream through a tampering
// server: every forgery is refused with its typed reason and evidence,
// and nothing after it counts.
func TestFollowerRefusesForgeries(t *testing.T) {
	l := newLiveLog(t)
	for _, n := range []string{"a.acme", "b.acme", "c.acme"} {
		l.register(t, n)
	}
	l.revoke(t, "a.acme", "keyCompromise")
	real := capture(t, l, 4)
	cp0 := real[0].data["checkpoint"].(string)

	otherKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	otherSigner, err := translog.NewNoteSigner(l.f.LogOrigin, otherKey)
	if err != nil {
		t.Fatal(err)
	}
	parse := func(note string) translog.Checkpoint {
		text, _, _ := strings.Cut(note, "\n\n")
		c, err := translog.ParseCheckpoint([]byte(text + "\n"))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	size := parse(cp0).Size // the tree of the first event's checkpoint
	var junk tlog.Hash
	copy(junk[:], sha256.New().Sum([]byte("junk")))

	tests := []struct {
		name      string
		tamper    func([]capturedEvent) []capturedEvent
		reason    rp.FollowReason
		index     int64 // the refused event's index
		wantIndex int64
		previous  bool // the evidence holds an earlier checkpoint
	}{
		{"bad signature", func(evs []capturedEvent) []capturedEvent {
			e := evs[2].clone()
			note := e.data["checkpoint"].(string)
			i := strings.LastIndex(note, "—") // the last signature line
			sig := []byte(note[i:])
			sig[len(sig)-5] ^= 0x01 // a base64 character of the signature
			e.data["checkpoint"] = note[:i] + string(sig)
			return []capturedEvent{evs[0], evs[1], e}
		}, rp.FollowLogSignature, 2, 2, false},
		{"signed by another key", func(evs []capturedEvent) []capturedEvent {
			e := evs[1].clone()
			msg, err := translog.SignCheckpoint(translog.Checkpoint{Origin: l.f.LogOrigin, Size: size, Hash: parse(cp0).Hash}, otherSigner)
			if err != nil {
				t.Fatal(err)
			}
			e.data["checkpoint"] = string(msg)
			return []capturedEvent{evs[0], e}
		}, rp.FollowLogSignature, 1, 1, false},
		{"wrong inclusion proof", func(evs []capturedEvent) []capturedEvent {
			e := evs[1].clone()
			proof := append([]any(nil), e.data["inclusion_proof"].([]any)...)
			h, _ := base64.StdEncoding.DecodeString(proof[0].(string))
			h[0] ^= 0x80
			proof[0] = base64.StdEncoding.EncodeToString(h)
			e.data["inclusion_proof"] = proof
			return []capturedEvent{evs[0], e}
		}, rp.FollowInclusion, 1, 1, false},
		{"rewritten leaf", func(evs []capturedEvent) []capturedEvent {
			e := evs[3].clone()
			leaf, _ := base64.StdEncoding.DecodeString(e.data["leaf"].(string))
			leaf = []byte(strings.Replace(string(leaf), "keyCompromise", "superseded", 1))
			e.data["leaf"] = base64.StdEncoding.EncodeToString(leaf)
			return []capturedEvent{evs[0], evs[1], evs[2], e}
		}, rp.FollowInclusion, 3, 3, false},
		{"skipped index", func(evs []capturedEvent) []capturedEvent {
			return []capturedEvent{evs[0], evs[1], evs[3]}
		}, rp.FollowOutOfOrder, 3, 2, false},
		{"repeated index", func(evs []capturedEvent) []capturedEvent {
			return []capturedEvent{evs[0], evs[1], evs[1]}
		}, rp.FollowOutOfOrder, 1, 2, false},
		{"reordered", func(evs []capturedEvent) []capturedEvent {
			return []capturedEvent{evs[1], evs[0]}
		}, rp.FollowOutOfOrder, 1, 0, false},
		{"id is not the index", func(evs []capturedEvent) []capturedEvent {
			e := evs[1].clone()
			e.id = "2"
			return []capturedEvent{evs[0], e}
		}, rp.FollowMalformed, 1, 1, false},
		{"type is not the leaf's", func(evs []capturedEvent) []capturedEvent {
			e := evs[1].clone()
			e.typ, e.data["type"] = "revoke", "revoke"
			return []capturedEvent{evs[0], e}
		}, rp.FollowMalformed, 1, 1, false},
		{"fork: another root for the same size, signed by the log key", func(evs []capturedEvent) []capturedEvent {
			e := evs[1].clone()
			e.data["checkpoint"] = signCheckpoint(t, l, size, junk)
			return []capturedEvent{evs[0], e}
		}, rp.FollowConsistency, 1, 1, true},
		{"a smaller tree inconsistent with the verified one", func(evs []capturedEvent) []capturedEvent {
			e := evs[1].clone()
			e.data["checkpoint"] = signCheckpoint(t, l, 2, junk)
			return []capturedEvent{evs[0], e}
		}, rp.FollowConsistency, 1, 1, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			url := replay(t, l, tt.tamper(real))
			fl := l.follower(t, url, nil)
			ctx, cancel := context.WithTimeout(t.Context(), followHangGuard)
			defer cancel()
			var got []int64
			err := fl.Run(ctx, func(ev rp.FollowedEvent) error { got = append(got, ev.Index); return nil })
			var fe *rp.FollowError
			if !errors.As(err, &fe) || !errors.Is(err, rp.ErrFollow) {
				t.Fatalf("Run: %v, want a *FollowError", err)
			}
			if fe.Reason != tt.reason || fe.Index != tt.index || fe.Want != tt.wantIndex {
				t.Errorf("refused as %s at %d (want %d), want %s at %d (want %d): %v", fe.Reason, fe.Index, fe.Want, tt.reason, tt.index, tt.wantIndex, err)
			}
			if !strings.HasPrefix(string(fe.Event), "id: ") || !strings.Contains(string(fe.Event), "\ndata: {") ||
				!strings.Contains(string(fe.Event), `"index":`+strconv.FormatInt(tt.index, 10)+",") {
				t.Errorf("evidence event %q", fe.Event)
			}
			if (fe.Previous != nil) != tt.previous {
				t.Errorf("evidence previous checkpoint %q", fe.Previous)
			}
			if int64(len(got)) != tt.wantIndex || fl.LastIndex() != tt.wantIndex-1 {
				t.Errorf("verified %v, LastIndex %d: the forged event or what follows counted", got, fl.LastIndex())
			}
			if tt.reason != rp.FollowOutOfOrder && tt.reason != rp.FollowMalformed {
				if fe.Checkpoint == nil {
					t.Error("no checkpoint in the evidence")
				}
			}
			revokedFP := func() string {
				leaf, _ := base64.StdEncoding.DecodeString(real[3].data["leaf"].(string))
				e, _ := translog.ParseEntry(leaf)
				return e.Fingerprint
			}()
			if ok, _ := fl.Revoked(revokedFP); ok && tt.wantIndex <= 3 {
				t.Error("a refused revocation counted")
			}
		})
	}

	// The untampered replay verifies (the tampering server itself is sound).
	t.Run("untampered", func(t *testing.T) {
		fl := l.follower(t, replay(t, l, real), nil)
		events, done := run(t, fl)
		expect(t, events, done, 0, 4)
	})
}

// TestFollowerWitnessPolicy: with a witness policy, an event whose
// checkpoint is not cosigned is fetched again until WitnessWait is over,
// then refused.
func TestFollowerWitnessPolicy(t *testing.T) {
	l := newLiveLog(t)
	l.register(t, "a.acme")
	w := newWitness(t, "witness.example")
	var retries int
	fl := l.follower(t, l.srv.URL, func(c *rp.FollowerConfig) {
		c.Witnesses = rp.WitnessPolicy{Keys: []string{w.vkey}, Threshold: 1}
		c.WitnessWait = 300 * time.Millisecond
		c.Retried = func(error) { retries++ }
	})
	ctx, cancel := context.WithTimeout(t.Context(), followHangGuard)
	defer cancel()
	err := fl.Run(ctx, nil)
	var fe *rp.FollowError
	if !errors.As(err, &fe) || fe.Reason != rp.FollowWitnessPolicy || fe.Index != 0 {
		t.Fatalf("Run: %v, want a witness_policy refusal of event 0", err)
	}
	if retries == 0 {
		t.Error("the event was not fetched again before the refusal")
	}
}

func TestNewFollowerRefusesBadConfig(t *testing.T) {
	_, vkey, err := note.GenerateKey(rand.Reader, "example.org/log")
	if err != nil {
		t.Fatal(err)
	}
	lv, err := rp.ParseLogVerifiers(vkey)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rp.NewFollower(rp.FollowerConfig{URL: "https://x/", LogVerifiers: lv}); err != nil {
		t.Fatalf("a good configuration: %v", err)
	}
	for _, cfg := range []rp.FollowerConfig{
		{URL: "", LogVerifiers: lv},
		{URL: "ftp://x", LogVerifiers: lv},
		{URL: "https://x"},
		{URL: "https://x", LogVerifiers: lv, From: -1},
		{URL: "https://x", LogVerifiers: lv, Witnesses: rp.WitnessPolicy{Threshold: 1}},
	} {
		if _, err := rp.NewFollower(cfg); err == nil {
			t.Errorf("NewFollower(%+v) accepted", cfg)
		}
	}
}

// roundTripper serves a fixed body for /v1/log/events and 500 for the rest.
type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// FuzzFollowerStream feeds arbitrary bytes to a Follower as the event
// stream (no network): it must never panic, and nothing unsigned may count.
func FuzzFollowerStream(f *testing.F) {
	ev := `{"index":0,"type":"register","leaf":"eyJ2IjoyfQ==","checkpoint":"example.org/log\n1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n\n— example.org/log AAAA\n","inclusion_proof":[]}`
	f.Add([]byte("id: 0\nevent: register\ndata: " + ev + "\n\n"))
	f.Add([]byte(": ping\n\nretry: 2000\n\n"))
	f.Add([]byte("id: 1\nevent: revoke\ndata: {\"index\":1}\n\n"))
	f.Add([]byte("data: a\ndata: b\n\nid:\n\n"))
	f.Add([]byte("id: 0\r\nevent: x\r\ndata: {}\r\n\r\n"))
	_, vkey, err := note.GenerateKey(rand.Reader, "example.org/log")
	if err != nil {
		f.Fatal(err)
	}
	lv, err := rp.ParseLogVerifiers(vkey)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		client := &http.Client{Transport: roundTripper(func(r *http.Request) (*http.Response, error) {
			if r.URL.Path != "/v1/log/events" {
				return &http.Response{StatusCode: 500, Body: io.NopCloser(strings.NewReader("")), Header: http.Header{}, Request: r}, nil
			}
			return &http.Response{StatusCode: 200, Body: io.NopCloser(strings.NewReader(string(body))),
				Header: http.Header{"Content-Type": {"text/event-stream"}}, Request: r}, nil
		})}
		fl, err := rp.NewFollower(rp.FollowerConfig{URL: "https://example.org", Client: client, LogVerifiers: lv,
			MaxBackoff: time.Millisecond, Retried: func(error) { cancel() }})
		if err != nil {
			t.Fatal(err)
		}
		err = fl.Run(ctx, func(rp.FollowedEvent) error {
			t.Fatal("an event without a valid signature counted")
			return nil
		})
		var fe *rp.FollowError
		if err != nil && !errors.As(err, &fe) && !errors.Is(err, context.Canceled) {
			t.Fatalf("Run: %v, want a FollowError or the end of the context", err)
		}
		if fl.LastIndex() != -1 {
			t.Fatalf("LastIndex %d after an unsigned stream", fl.LastIndex())
		}
	})
}

// ExampleFollower follows a registry's log and checks a certificate's
// fingerprint against the verified revocations.
func ExampleFollower() {
	ctx := context.Background()
	vkeys := "agents.example.org/log+1a2b3c4d+Ag…" // GET /v1/log/vkey, pinned out of band
	lv, err := rp.ParseLogVerifiers(vkeys)
	if err != nil {
		fmt.Println(err)
		return
	}
	f, err := rp.NewFollower(rp.FollowerConfig{URL: "https://atr.example.org", LogVerifiers: lv, Origin: "agents.example.org/log"})
	if err != nil {
		fmt.Println(err)
		return
	}
	go func() {
		// Run returns on a refused event (*rp.FollowError, with the evidence)
		// or when ctx ends; lost connections are resumed by itself.
		err := f.Run(ctx, func(ev rp.FollowedEvent) error {
			if ev.Entry.Type == translog.EventRevoke {
				fmt.Println("revoked:", ev.Entry.Fingerprint, ev.Entry.Reason)
			}
			return nil
		})
		fmt.Println("follower stopped:", err)
	}()
	// Elsewhere, for a certificate presented to this relying party:
	if revoked, reason := f.Revoked("3f0c…sha-256 of the certificate DER"); revoked {
		fmt.Println("refuse the certificate:", reason)
	}
}
