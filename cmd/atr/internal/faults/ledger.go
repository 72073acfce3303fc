package faults

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/agent-trust-registry/atr/api/client"
)

// Certificate statuses as the registry names them.
const (
	StatusIssued     = "issued"
	StatusSuperseded = "superseded"
	StatusRevoked    = "revoked"
)

// AckedCert is a certificate a client received in a 2xx answer.
type AckedCert struct {
	Serial, Fingerprint string
	PEM, ChainPEM       string
	LogIndex            int64
}

// AgentRecord is what the clients know for certain about one agent.
// Certs holds every acknowledged certificate in order (Certs[0] from
// register). Doubt names an operation whose answer never arrived ("rotate",
// "revoke"): its effect may or may not exist, and the agent is used no more.
type AgentRecord struct {
	Name    string
	Certs   []AckedCert
	Revoked bool // a revocation was acknowledged
	Doubt   string
}

// Expected returns the statuses certificate i of the agent may have now.
func (a AgentRecord) Expected(i int) []string {
	last := i == len(a.Certs)-1
	var want []string
	switch {
	case last && a.Revoked:
		return []string{StatusRevoked}
	case last:
		want = []string{StatusIssued}
		if a.Doubt == "rotate" {
			want = append(want, StatusSuperseded)
		}
	default:
		// Revocation also revokes superseded certificates still in their
		// grace period; older ones stay superseded.
		want = []string{StatusSuperseded}
		if a.Revoked {
			want = append(want, StatusRevoked)
		}
	}
	if a.Doubt == "revoke" {
		want = append(want, StatusRevoked)
	}
	return want
}

// Ledger records every acknowledged answer of a test's clients. It is safe
// for concurrent use.
type Ledger struct {
	mu      sync.Mutex
	agents  map[string]*AgentRecord
	order   []string
	apiKeys []string // acknowledged API key IDs (apikey_create log entries)
	revokes int
	doubts  int
	checked int // len(order) at the last Fresh call
}

// NewLedger returns an empty ledger.
func NewLedger() *Ledger { return &Ledger{agents: map[string]*AgentRecord{}} }

func ackOf(c *client.Certificate) AckedCert {
	return AckedCert{Serial: c.Serial, Fingerprint: c.FingerprintSHA256, PEM: c.Certificate, ChainPEM: c.Chain, LogIndex: c.LogIndex}
}

// Registered records an acknowledged registration.
func (l *Ledger) Registered(name string, c *client.Certificate) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.agents[name] = &AgentRecord{Name: name, Certs: []AckedCert{ackOf(c)}}
	l.order = append(l.order, name)
}

// Rotated records an acknowledged rotation.
func (l *Ledger) Rotated(name string, c *client.Certificate) {
	l.mu.Lock()
	defer l.mu.Unlock()
	a := l.agents[name]
	a.Certs = append(a.Certs, ackOf(c))
}

// RevokedAck records an acknowledged revocation.
func (l *Ledger) RevokedAck(name string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.agents[name].Revoked = true
	l.revokes++
}

// InDoubt records an operation on a registered agent whose answer was lost.
func (l *Ledger) InDoubt(name, op string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.doubts++
	if a, ok := l.agents[name]; ok && a.Doubt == "" {
		a.Doubt = op
	}
}

// RegisterInDoubt counts a registration whose answer was lost.
func (l *Ledger) RegisterInDoubt() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.doubts++
}

// APIKey records an acknowledged API key creation.
func (l *Ledger) APIKey(id string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.apiKeys = append(l.apiKeys, id)
}

// Agents returns a deep copy of every agent record.
func (l *Ledger) Agents() []AgentRecord {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]AgentRecord, 0, len(l.order))
	for _, n := range l.order {
		a := *l.agents[n]
		a.Certs = slices.Clone(a.Certs)
		out = append(out, a)
	}
	return out
}

// APIKeys returns the acknowledged API key IDs.
func (l *Ledger) APIKeys() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.apiKeys)
}

// Stats returns the figures for the report: acknowledged certificates,
// acknowledged revocations, answers lost (in doubt).
func (l *Ledger) Stats() (certs, revokes, doubts int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, a := range l.agents {
		certs += len(a.Certs)
	}
	return certs, l.revokes, l.doubts
}

// NewCSR returns a PEM CSR over a fresh ECDSA P-256 key.
func NewCSR() ([]byte, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("faults: key: %w", err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, k)
	if err != nil {
		return nil, fmt.Errorf("faults: csr: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), nil
}

// definitive reports whether err is an answer that proves the operation did
// not happen: a 4xx from the server (refused before anything changed).
// Transport errors, cut-off bodies and 5xx leave the outcome in doubt.
func definitive(err error) bool {
	var ce *client.Error
	if errors.As(err, &ce) {
		return ce.Status >= 400 && ce.Status < 500
	}
	// A refused connection never reached a server.
	return errors.Is(err, syscall.ECONNREFUSED)
}

// Worker drives registrations, rotations and revocations for one owner (one
// API key, one source address) through a set of clients (one per replica).
type Worker struct {
	ID        int
	Namespace string
	Clients   []*client.Client
	Ledger    *Ledger

	// Errors counts answers by HTTP status (0: transport error).
	mu     sync.Mutex
	Errors map[int]int
	OK     int
	// MaxLatency is the longest any request took.
	MaxLatency time.Duration

	active []string // registered, not revoked, not in doubt
	seq    int
	next   int // round-robin over Clients
}

func (w *Worker) pick() *client.Client {
	c := w.Clients[w.next%len(w.Clients)]
	w.next++
	return c
}

func (w *Worker) note(start time.Time, err error) {
	d := time.Since(start)
	w.mu.Lock()
	defer w.mu.Unlock()
	if d > w.MaxLatency {
		w.MaxLatency = d
	}
	if err == nil {
		w.OK++
		return
	}
	if w.Errors == nil {
		w.Errors = map[int]int{}
	}
	var ce *client.Error
	if errors.As(err, &ce) {
		w.Errors[ce.Status]++
	} else {
		w.Errors[0]++
	}
}

// Snapshot returns the worker's counters.
func (w *Worker) Snapshot() (ok int, errs map[int]int, maxLatency time.Duration) {
	w.mu.Lock()
	defer w.mu.Unlock()
	errs = map[int]int{}
	for k, v := range w.Errors {
		errs[k] = v
	}
	return w.OK, errs, w.MaxLatency
}

// Step performs one random operation. It returns the error of the request,
// if any; the ledger is updated either way.
func (w *Worker) Step(ctx context.Context) error {
	csr, err := NewCSR()
	if err != nil {
		return err
	}
	r := randIntn(100)
	switch {
	case len(w.active) < 3 || r < 45:
		w.seq++
		name := fmt.Sprintf("a%d-%s.%s", w.seq, RandomHex(3), w.Namespace)
		start := time.Now()
		c, err := w.pick().Register(ctx, client.RegisterRequest{Name: name, CSR: string(csr)})
		w.note(start, err)
		switch {
		case err == nil:
			w.Ledger.Registered(name, c)
			w.active = append(w.active, name)
		case !definitive(err):
			w.Ledger.RegisterInDoubt()
		}
		return err
	case r < 85:
		i := randIntn(len(w.active))
		name := w.active[i]
		start := time.Now()
		c, err := w.pick().Rotate(ctx, name, csr)
		w.note(start, err)
		switch {
		case err == nil:
			w.Ledger.Rotated(name, c)
		case !definitive(err):
			w.Ledger.InDoubt(name, "rotate")
			w.active = slices.Delete(w.active, i, i+1)
		case client.IsCode(err, "rate_limited"):
			w.active = slices.Delete(w.active, i, i+1) // its rotate budget is spent
		}
		return err
	default:
		i := randIntn(len(w.active))
		name := w.active[i]
		start := time.Now()
		_, err := w.pick().Revoke(ctx, name, "cessationOfOperation")
		w.note(start, err)
		switch {
		case err == nil:
			w.Ledger.RevokedAck(name)
			w.active = slices.Delete(w.active, i, i+1)
		case !definitive(err):
			w.Ledger.InDoubt(name, "revoke")
			w.active = slices.Delete(w.active, i, i+1)
		}
		return err
	}
}

// Run steps until ctx is done, pausing briefly after errors so that a dead
// server is not spun against.
func (w *Worker) Run(ctx context.Context) {
	for ctx.Err() == nil {
		if err := w.Step(ctx); err != nil {
			var ce *client.Error
			pause := 20 * time.Millisecond
			if errors.As(err, &ce) && ce.Status == http.StatusTooManyRequests {
				pause = 200 * time.Millisecond
			}
			select {
			case <-ctx.Done():
			case <-time.After(pause):
			}
		}
	}
}

// NewWorkers creates n owners through the admin client (one API key each,
// namespace wN-<run>.faults) and returns their workers; clientFor builds the
// per-replica clients of one worker from its key.
func NewWorkers(ctx context.Context, n int, admin *client.Client, l *Ledger, clientFor func(i int, key string) []*client.Client) ([]*Worker, error) {
	run := RandomHex(3)
	ws := make([]*Worker, n)
	for i := range ws {
		ns := fmt.Sprintf("w%d-%s.faults", i, run)
		k, err := admin.CreateAPIKey(ctx, client.CreateAPIKeyRequest{
			Owner: fmt.Sprintf("team-%d-%s", i, run), Namespace: ns,
			Scopes: []string{"agents:read", "agents:write"}, ExpiresIn: "24h"})
		if err != nil {
			return nil, fmt.Errorf("faults: creating API key %d: %w", i, err)
		}
		l.APIKey(k.ID)
		ws[i] = &Worker{ID: i, Namespace: ns, Clients: clientFor(i, k.Key), Ledger: l}
	}
	return ws, nil
}
