// Package witness is the log side of the C2SP tlog-witness protocol
// (c2sp.org/tlog-witness): it submits each new checkpoint of ATR's
// transparency log, with a consistency proof, to every configured witness
// and hands the cosignatures they return (c2sp.org/tlog-cosignature) to the
// registry, which checks, stores and serves them.
//
// A Submitter never blocks issuance: it runs in its own goroutine
// (Run), and a witness that is down, slow or refusing is logged, counted in
// atr_witness_submissions_total and retried with exponential backoff; until
// it catches up the checkpoint is served without its cosignature.
//
// The protocol, as a Submitter speaks it: POST <witness URL>/add-checkpoint
// with the body
//
//	old <size the witness last cosigned, 0 at first>
//	<base64 consistency proof hash from that size, one per line>
//	<empty line>
//	<the checkpoint, signed by the log>
//
// 200 returns the witness's signature lines; 409 (Content-Type
// text/x.tlog.size) returns the size the witness has, from which the
// Submitter retries at once; anything else (403 unknown log or key, 422 bad
// proof, 404, 5xx, network errors) is a failure to retry later. The witness
// must know ATR's log origin and Ed25519 verifier key (the second line of
// GET /v1/log/vkey): witnesses verify signed-note type 0x01 only.
package witness

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"
	fnote "github.com/transparency-dev/formats/note"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/agent-trust-registry/atr/registry/translog"
)

// Defaults for Config fields left zero.
const (
	DefaultTimeout    = 10 * time.Second
	DefaultInterval   = 2 * time.Second
	DefaultMaxBackoff = 5 * time.Minute
	// maxResponse caps what is read of a witness's answer.
	maxResponse = 16 << 10
	// maxConflicts bounds the 409 retries of one submission.
	maxConflicts = 3
)

// Witness is one configured witness.
type Witness struct {
	// Name labels the witness in logs and metrics (the operator's choice).
	Name string
	// URL is the witness's submission prefix; the Submitter POSTs to
	// URL + "/add-checkpoint".
	URL string
	// VKey is the witness's cosigner verifier key (type 0x04, or 0x01 as
	// litewitness prints it), whose key name is the witness name that
	// appears in its cosignature lines.
	VKey string
}

// ParseWitnesses reads the --witness / ATR_WITNESSES syntax: entries
// separated by commas or white space, each "name=URL=vkey". The name is a
// label without '=' or spaces; the URL is http or https, without '=' (no
// query string); the vkey is the rest of the entry. Names must be unique.
// An empty string is no witnesses.
func ParseWitnesses(s string) ([]Witness, error) {
	var out []Witness
	seen := map[string]bool{}
	for _, e := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' || r == '\n' || r == '\r' }) {
		parts := strings.SplitN(e, "=", 3)
		if len(parts) != 3 || parts[0] == "" || parts[1] == "" || parts[2] == "" {
			return nil, fmt.Errorf("witness: %q: want name=URL=vkey", e)
		}
		w := Witness{Name: parts[0], URL: parts[1], VKey: parts[2]}
		if err := w.validate(); err != nil {
			return nil, err
		}
		if seen[w.Name] {
			return nil, fmt.Errorf("witness: name %q listed twice", w.Name)
		}
		seen[w.Name] = true
		out = append(out, w)
	}
	return out, nil
}

func (w Witness) validate() error {
	u, err := url.Parse(w.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("witness %q: URL %q: want http(s)://host[/prefix] without query", w.Name, w.URL)
	}
	if _, err := fnote.NewVerifierForCosignatureV1(w.VKey); err != nil {
		return fmt.Errorf("witness %q: verifier key: %v", w.Name, err)
	}
	return nil
}

// Log is what a Submitter needs of the registry (*registry.Registry).
type Log interface {
	// SignedCheckpoint returns the latest checkpoint signed by the log,
	// without cosignatures, signing a new one when the log has grown.
	SignedCheckpoint(ctx context.Context) ([]byte, error)
	// ConsistencyProof proves the tree of oldSize is a prefix of newSize's.
	ConsistencyProof(ctx context.Context, oldSize, newSize int64) ([]tlog.Hash, error)
	// AddCosignatures checks the witness's lines over the stored checkpoint
	// of that size with v and stores those that verify.
	AddCosignatures(ctx context.Context, size int64, v note.Verifier, lines []byte) (int, error)
}

// Config configures a Submitter.
type Config struct {
	Witnesses []Witness
	// Timeout bounds each request to a witness. Default DefaultTimeout.
	Timeout time.Duration
	// Interval is how often Run looks for a new checkpoint. Default
	// DefaultInterval.
	Interval time.Duration
	// MaxBackoff caps the wait after repeated failures of one witness (it
	// doubles from Interval). Default DefaultMaxBackoff.
	MaxBackoff time.Duration
	// Client sends the requests. Default: an http.Client without redirects.
	Client *http.Client
	// Log receives operational logs. Required.
	Log *logrus.Entry
}

// Submitter submits checkpoints to witnesses. Its methods are safe for
// concurrent use, but one Run per Submitter is expected.
type Submitter struct {
	log      Log
	cfg      Config
	client   *http.Client
	entry    *logrus.Entry
	now      func() time.Time
	outcomes *prometheus.CounterVec // witness, outcome

	mu     sync.Mutex // guards states; held for a whole pass
	states []*state
}

// state is what the Submitter knows of one witness.
type state struct {
	w        Witness
	verifier note.Verifier
	known    int64 // the size the witness last cosigned, as far as we know
	cosigned int64 // the latest size whose cosignature we stored
	failures int
	next     time.Time // no attempt before (backoff)
}

// Outcomes counted in atr_witness_submissions_total.
const (
	OutcomeCosigned = "cosigned" // a cosignature was stored
	OutcomeConflict = "conflict" // 409: the witness has another size
	OutcomeRefused  = "refused"  // another 4xx (unknown log or key, bad proof)
	OutcomeError    = "error"    // network, 5xx, a bad cosignature
)

// New returns a Submitter over l.
func New(l Log, cfg Config) (*Submitter, error) {
	if l == nil || cfg.Log == nil {
		return nil, errors.New("witness: new: nil Log or logger")
	}
	cfg.Timeout = cmpOr(cfg.Timeout, DefaultTimeout)
	cfg.Interval = cmpOr(cfg.Interval, DefaultInterval)
	cfg.MaxBackoff = cmpOr(cfg.MaxBackoff, DefaultMaxBackoff)
	client := cfg.Client
	if client == nil {
		client = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	s := &Submitter{log: l, cfg: cfg, client: client, entry: cfg.Log, now: time.Now,
		outcomes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "atr_witness_submissions_total",
			Help: "Checkpoint submissions to witnesses (c2sp.org/tlog-witness), by witness and outcome (cosigned, conflict, refused, error).",
		}, []string{"witness", "outcome"})}
	for _, w := range cfg.Witnesses {
		if err := w.validate(); err != nil {
			return nil, err
		}
		v, _ := fnote.NewVerifierForCosignatureV1(w.VKey) // checked by validate
		s.states = append(s.states, &state{w: w, verifier: v})
		for _, o := range []string{OutcomeCosigned, OutcomeConflict, OutcomeRefused, OutcomeError} {
			s.outcomes.WithLabelValues(w.Name, o) // export zeros
		}
	}
	return s, nil
}

func cmpOr(d, def time.Duration) time.Duration {
	if d <= 0 {
		return def
	}
	return d
}

// Collectors returns the Submitter's metrics for a Prometheus registry.
func (s *Submitter) Collectors() []prometheus.Collector { return []prometheus.Collector{s.outcomes} }

// Run submits every Interval until ctx is done. Failures are logged and
// retried with per-witness backoff; Run never returns early.
func (s *Submitter) Run(ctx context.Context) {
	if len(s.states) == 0 {
		return
	}
	t := time.NewTicker(s.cfg.Interval)
	defer t.Stop()
	for {
		_ = s.pass(ctx, true)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// SubmitOnce submits the latest checkpoint to every witness that has not
// cosigned it yet, ignoring backoff, and returns the failures joined (nil
// when every witness has cosigned the latest checkpoint).
func (s *Submitter) SubmitOnce(ctx context.Context) error {
	return s.pass(ctx, false)
}

func (s *Submitter) pass(ctx context.Context, backoff bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	signed, err := s.log.SignedCheckpoint(ctx)
	if err != nil {
		s.entry.WithError(err).Warn("witness: no checkpoint to submit")
		return fmt.Errorf("witness: reading checkpoint: %w", err)
	}
	text, _, ok := bytes.Cut(signed, []byte("\n\n"))
	if !ok {
		return errors.New("witness: checkpoint is not a signed note")
	}
	c, err := translog.ParseCheckpoint(append(bytes.Clone(text), '\n'))
	if err != nil {
		return fmt.Errorf("witness: checkpoint: %w", err)
	}
	if c.Size == 0 {
		return nil // an empty log has nothing to witness
	}
	var errs []error
	for _, st := range s.states {
		if st.cosigned >= c.Size || st.known > c.Size {
			continue // done, or the witness is ahead of this replica's view
		}
		if backoff && s.now().Before(st.next) {
			continue
		}
		entry := s.entry.WithFields(logrus.Fields{"witness": st.w.Name, "tree_size": c.Size})
		outcome, err := s.submit(ctx, st, signed, c.Size)
		if err != nil {
			st.failures++
			wait := min(s.cfg.Interval<<min(st.failures, 20), s.cfg.MaxBackoff)
			st.next = s.now().Add(wait)
			entry.WithError(err).WithField("retry_in", wait.String()).Warn("witness: submission failed; the checkpoint stays uncosigned by this witness for now")
			errs = append(errs, fmt.Errorf("witness %s: %w", st.w.Name, err))
			continue
		}
		st.failures, st.next = 0, time.Time{}
		if outcome == OutcomeCosigned {
			entry.Info("witness: checkpoint cosigned")
		}
	}
	return errors.Join(errs...)
}

// submit runs one add-checkpoint exchange, following up to maxConflicts 409
// answers, and counts the outcome of every request. It returns the outcome
// of the last one.
func (s *Submitter) submit(ctx context.Context, st *state, signed []byte, size int64) (outcome string, err error) {
	defer func() { s.outcomes.WithLabelValues(st.w.Name, outcome).Inc() }()
	for i := range maxConflicts {
		if i > 0 {
			s.outcomes.WithLabelValues(st.w.Name, OutcomeConflict).Inc() // the 409 we follow
		}
		old := st.known
		var proof []tlog.Hash
		if old > 0 && old < size {
			var err error
			if proof, err = s.log.ConsistencyProof(ctx, old, size); err != nil {
				return OutcomeError, fmt.Errorf("consistency proof %d→%d: %w", old, size, err)
			}
		}
		var body bytes.Buffer
		fmt.Fprintf(&body, "old %d\n", old)
		for _, h := range proof {
			body.WriteString(base64.StdEncoding.EncodeToString(h[:]))
			body.WriteByte('\n')
		}
		body.WriteByte('\n')
		body.Write(signed)

		status, ctype, resp, err := s.post(ctx, st.w, body.Bytes())
		if err != nil {
			return OutcomeError, err
		}
		switch {
		case status == http.StatusOK:
			if _, err := s.log.AddCosignatures(ctx, size, st.verifier, resp); err != nil {
				return OutcomeError, fmt.Errorf("cosignature: %w", err)
			}
			st.known, st.cosigned = size, size
			return OutcomeCosigned, nil
		case status == http.StatusConflict:
			known, err := parseSize(ctype, resp)
			if err != nil {
				return OutcomeConflict, fmt.Errorf("409 answer: %w", err)
			}
			st.known = known
			if known > size {
				return OutcomeConflict, nil // wait for a larger checkpoint
			}
		case status >= 400 && status < 500:
			return OutcomeRefused, fmt.Errorf("witness refused the checkpoint: %d %s", status, snippet(resp))
		default:
			return OutcomeError, fmt.Errorf("witness answered %d %s", status, snippet(resp))
		}
	}
	return OutcomeConflict, fmt.Errorf("witness kept answering 409 (known size %d)", st.known)
}

func (s *Submitter) post(ctx context.Context, w Witness, body []byte) (int, string, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(w.URL, "/")+"/add-checkpoint", bytes.NewReader(body))
	if err != nil {
		return 0, "", nil, err
	}
	req.Header.Set("Content-Type", "text/plain; charset=utf-8")
	resp, err := s.client.Do(req)
	if err != nil {
		return 0, "", nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse+1))
	if err != nil {
		return 0, "", nil, fmt.Errorf("reading the answer: %w", err)
	}
	if len(b) > maxResponse {
		return 0, "", nil, fmt.Errorf("answer longer than %d bytes", maxResponse)
	}
	return resp.StatusCode, resp.Header.Get("Content-Type"), b, nil
}

// parseSize reads a 409 body: the witness's size, decimal, one line.
func parseSize(ctype string, b []byte) (int64, error) {
	if ct, _, _ := strings.Cut(ctype, ";"); strings.TrimSpace(ct) != "text/x.tlog.size" {
		return 0, fmt.Errorf("Content-Type %q, want text/x.tlog.size", ctype)
	}
	n, err := strconv.ParseInt(strings.TrimSuffix(string(b), "\n"), 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("size %q is not a non-negative decimal", snippet(b))
	}
	return n, nil
}

func snippet(b []byte) string {
	s := strings.TrimSpace(string(b))
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return strconv.Quote(s)
}
