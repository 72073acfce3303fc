package witness_test

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	fnote "github.com/transparency-dev/formats/note"
	"golang.org/x/mod/sumdb/note"

	"github.com/agent-trust-registry/atr/registry"
	"github.com/agent-trust-registry/atr/registry/registrytest"
	"github.com/agent-trust-registry/atr/registry/translog"
	"github.com/agent-trust-registry/atr/registry/witness"
	"github.com/agent-trust-registry/atr/rp"
)

// issue registers n agents (each a log entry) and returns the tree size.
func issue(t *testing.T, f *registrytest.Fixture, owner registry.Actor, prefix string, n int) int64 {
	t.Helper()
	ctx := context.Background()
	for i := range n {
		csr, _ := f.NewCSR()
		if _, err := f.Registry.Register(ctx, owner, registry.RegisterRequest{Name: fmt.Sprintf("%s-%d.acme", prefix, i), CSR: csr}); err != nil {
			t.Fatalf("Register: %v", err)
		}
	}
	cp, err := f.Registry.SignedCheckpoint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c, err := translog.OpenCheckpoint(cp, f.NoteVerifier)
	if err != nil {
		t.Fatal(err)
	}
	return c.Size
}

// cosignedBy reports whether the served checkpoint of at least size carries
// a cosignature line by the witness name.
func cosignedBy(t *testing.T, f *registrytest.Fixture, size int64, name string) ([]byte, bool) {
	t.Helper()
	cp, err := f.Registry.CosignedCheckpoint(context.Background(), size)
	if err != nil {
		t.Fatalf("CosignedCheckpoint: %v", err)
	}
	return cp, strings.Contains(string(cp), "\n— "+name+" ")
}

// scriptedWitness answers add-checkpoint with a fixed status sequence and,
// for 200, a real cosignature/v1 by its key; it records the "old" lines.
type scriptedWitness struct {
	mu      sync.Mutex
	name    string
	vkey    string
	signer  note.Signer
	answers []int // status per request; the last one repeats
	size    int64 // reported on 409
	olds    []string
}

func newScriptedWitness(t *testing.T, name string, answers ...int) (*scriptedWitness, *httptest.Server) {
	skey, vkey, err := note.GenerateKey(rand.Reader, name)
	if err != nil {
		t.Fatal(err)
	}
	s, err := fnote.NewSignerForCosignatureV1(skey)
	if err != nil {
		t.Fatal(err)
	}
	w := &scriptedWitness{name: name, vkey: vkey, signer: s, answers: answers}
	srv := httptest.NewServer(w)
	t.Cleanup(srv.Close)
	return w, srv
}

func (w *scriptedWitness) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if r.URL.Path != "/add-checkpoint" || r.Method != http.MethodPost {
		http.NotFound(rw, r)
		return
	}
	b, _ := io.ReadAll(r.Body)
	first, _, _ := strings.Cut(string(b), "\n")
	w.olds = append(w.olds, first)
	status := w.answers[0]
	if len(w.answers) > 1 {
		w.answers = w.answers[1:]
	}
	switch status {
	case http.StatusOK:
		_, cp, _ := strings.Cut(string(b), "\n\n") // after the old and proof lines
		text, _, _ := strings.Cut(cp, "\n\n")
		signed, err := note.Sign(&note.Note{Text: text + "\n"}, w.signer)
		if err != nil {
			http.Error(rw, err.Error(), 500)
			return
		}
		_, lines, _ := strings.Cut(string(signed), "\n\n")
		io.WriteString(rw, lines)
	case http.StatusConflict:
		rw.Header().Set("Content-Type", "text/x.tlog.size")
		rw.WriteHeader(http.StatusConflict)
		fmt.Fprintf(rw, "%d\n", w.size)
	default:
		http.Error(rw, "no", status)
	}
}

func TestSubmitterOutcomes(t *testing.T) {
	f := registrytest.NewFixture(t)
	owner := f.Owner("acme", "acme")
	size := issue(t, f, owner, "bot", 2)
	ctx := context.Background()
	// A port nothing listens on: the witness is down.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	downURL := "http://" + ln.Addr().String()
	ln.Close()

	tests := []struct {
		name        string
		answers     []int
		size409     int64
		down        bool
		wantErr     bool
		wantCosign  bool
		wantOutcome string
		wantOlds    []string
	}{
		{"200 cosigns", []int{200}, 0, false, false, true, witness.OutcomeCosigned, []string{"old 0"}},
		{"409 then retry from the witness's size", []int{409, 200}, 1, false, false, true, witness.OutcomeCosigned, []string{"old 0", "old 1"}},
		{"409 ahead of us waits", []int{409}, size + 5, false, false, false, witness.OutcomeConflict, []string{"old 0"}},
		{"404 is refused", []int{404}, 0, false, true, false, witness.OutcomeRefused, []string{"old 0"}},
		{"422 is refused", []int{422}, 0, false, true, false, witness.OutcomeRefused, []string{"old 0"}},
		{"500 is an error", []int{500}, 0, false, true, false, witness.OutcomeError, []string{"old 0"}},
		{"down is an error", nil, 0, true, true, false, witness.OutcomeError, nil},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			name := fmt.Sprintf("w%d.example/witness", i)
			answers := tt.answers
			if answers == nil {
				answers = []int{200}
			}
			w, srv := newScriptedWitness(t, name, answers...)
			w.size = tt.size409
			url := srv.URL
			if tt.down {
				url = downURL
			}
			s, err := witness.New(f.Registry, witness.Config{Witnesses: []witness.Witness{{Name: name, URL: url, VKey: w.vkey}}, Log: f.Log})
			if err != nil {
				t.Fatal(err)
			}
			err = s.SubmitOnce(ctx)
			if gotErr := err != nil; gotErr != tt.wantErr {
				t.Errorf("SubmitOnce = %v; want error %t", err, tt.wantErr)
			}
			if got := submissions(t, s, name, tt.wantOutcome); got != 1 {
				t.Errorf("atr_witness_submissions_total{outcome=%q} = %v, want 1", tt.wantOutcome, got)
			}
			cp, got := cosignedBy(t, f, size, name)
			if got != tt.wantCosign {
				t.Errorf("served checkpoint cosigned by %s = %t, want %t:\n%s", name, got, tt.wantCosign, cp)
			}
			if !tt.down && strings.Join(w.olds, "|") != strings.Join(tt.wantOlds, "|") {
				t.Errorf("requests' old lines = %q, want %q", w.olds, tt.wantOlds)
			}
			if tt.wantCosign {
				logVs, _ := rp.ParseLogVerifiers(f.Registry.LogVerifierKey())
				if _, err := rp.VerifyCheckpoint(cp, logVs, rp.WitnessPolicy{Keys: []string{w.vkey}, Threshold: 1}); err != nil {
					t.Errorf("rp 1-of-1 refuses the served checkpoint: %v", err)
				}
			}
		})
	}

	// Issuance does not wait for witnesses: with every witness down it
	// still works, and the new checkpoint is served uncosigned.
	s, err := witness.New(f.Registry, witness.Config{Witnesses: []witness.Witness{{Name: "down.example/witness", URL: downURL, VKey: downVKey(t)}}, Log: f.Log})
	if err != nil {
		t.Fatal(err)
	}
	newSize := issue(t, f, owner, "later", 1)
	if err := s.SubmitOnce(ctx); err == nil {
		t.Errorf("SubmitOnce to a down witness = nil; want an error")
	}
	if _, got := cosignedBy(t, f, newSize, "w0.example/witness"); got || submissions(t, s, "down.example/witness", witness.OutcomeError) != 1 {
		t.Errorf("checkpoint %d served with a cosignature no witness made", newSize)
	}
}

func downVKey(t *testing.T) string {
	t.Helper()
	_, vkey, err := note.GenerateKey(rand.Reader, "down.example/witness")
	if err != nil {
		t.Fatal(err)
	}
	return vkey
}

// submissions reads atr_witness_submissions_total{witness, outcome}.
func submissions(t *testing.T, s *witness.Submitter, name, outcome string) float64 {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(s.Collectors()...)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "atr_witness_submissions_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["witness"] == name && labels["outcome"] == outcome {
				return m.GetCounter().GetValue()
			}
		}
	}
	t.Fatalf("no atr_witness_submissions_total{witness=%q,outcome=%q}", name, outcome)
	return 0
}
