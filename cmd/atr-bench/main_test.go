package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/tlog"

	"github.com/agent-trust-registry/atr/cmd/internal/procstat"
	"github.com/agent-trust-registry/atr/hsm/hsmtest"
	"github.com/agent-trust-registry/atr/registry/translog"
)

func TestMain(m *testing.M) {
	// The profile benchmarks (profile_test.go) need SoftHSM2 tokens; the
	// pure tests below do not touch them.
	cleanup, err := hsmtest.Setup()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	cleanup()
	os.Exit(code)
}

func durs(ms ...int) []time.Duration {
	out := make([]time.Duration, len(ms))
	for i, v := range ms {
		out[i] = time.Duration(v) * time.Millisecond
	}
	return out
}

func TestPercentile(t *testing.T) {
	hundred := make([]time.Duration, 100)
	for i := range hundred {
		hundred[i] = time.Duration(i+1) * time.Millisecond
	}
	tests := []struct {
		name   string
		sorted []time.Duration
		p      float64
		want   time.Duration
	}{
		{"empty", nil, 50, 0},
		{"one value", durs(7), 99, 7 * time.Millisecond},
		{"p0 is the minimum", durs(1, 2, 3), 0, time.Millisecond},
		{"median of odd", durs(1, 2, 3), 50, 2 * time.Millisecond},
		{"median of even is the lower (nearest rank)", durs(1, 2, 3, 4), 50, 2 * time.Millisecond},
		{"p100 is the maximum", durs(1, 2, 3, 4), 100, 4 * time.Millisecond},
		{"p95 of 1..100", hundred, 95, 95 * time.Millisecond},
		{"p99 of 1..100", hundred, 99, 99 * time.Millisecond},
		{"p99.9 of 1..100 rounds up", hundred, 99.9, 100 * time.Millisecond},
		{"p above 100 is clamped", durs(1, 2), 150, 2 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Percentile(tt.sorted, tt.p); got != tt.want {
				t.Errorf("Percentile(%v, %v) = %v, want %v", tt.sorted, tt.p, got, tt.want)
			}
		})
	}
}

func TestSummarize(t *testing.T) {
	s := summarize(durs(5, 1, 4, 2, 3), 1, 2*time.Second, errors.New("boom"))
	if s.N != 6 || s.Errors != 1 {
		t.Errorf("N, Errors = %d, %d, want 6, 1", s.N, s.Errors)
	}
	if s.P50 != 3*time.Millisecond || s.P99 != 5*time.Millisecond || s.Mean != 3*time.Millisecond {
		t.Errorf("p50 %v p99 %v mean %v, want 3ms 5ms 3ms", s.P50, s.P99, s.Mean)
	}
	if got, want := s.Rate(), 2.5; got != want {
		t.Errorf("Rate() = %v, want %v (5 successes in 2 s)", got, want)
	}
	if got := (Stats{}).Rate(); got != 0 {
		t.Errorf("zero Stats Rate() = %v, want 0", got)
	}
}

func TestRunNRunsEachIndexOnce(t *testing.T) {
	for _, conc := range []int{1, 3, 50} {
		t.Run(fmt.Sprint("conc ", conc), func(t *testing.T) {
			var seen [20]atomic.Int32
			s := runN(context.Background(), len(seen), conc, func(_ context.Context, i int) error {
				seen[i].Add(1)
				if i == 7 {
					return errors.New("seven")
				}
				return nil
			})
			for i := range seen {
				if got := seen[i].Load(); got != 1 {
					t.Errorf("index %d ran %d times, want 1", i, got)
				}
			}
			if s.N != 20 || s.Errors != 1 || s.FirstErr == nil {
				t.Errorf("N %d Errors %d FirstErr %v, want 20, 1, non-nil", s.N, s.Errors, s.FirstErr)
			}
		})
	}
}

func TestRunPacedStartsEveryOp(t *testing.T) {
	var n atomic.Int32
	s := runPaced(context.Background(), 10, 1000, func(context.Context, int) error { n.Add(1); return nil })
	if n.Load() != 10 || s.N != 10 {
		t.Errorf("ran %d, N %d, want 10, 10", n.Load(), s.N)
	}
}

func TestWithRatio(t *testing.T) {
	tests := []struct {
		name      string
		num, den  float64
		target    string
		wantRatio float64
		wantMet   *bool
	}{
		{"meets >=", 3, 2, ">=1.5", 1.5, ptr(true)},
		{"misses >=", 1, 2, ">=1.5", 0.5, ptr(false)},
		{"meets <=", 1, 1, "<=1.5", 1, ptr(true)},
		{"misses <=", 4, 2, "<=1.5", 2, ptr(false)},
		{"no target", 1, 4, "", 0.25, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := Row{Value: tt.num}.withRatio(tt.num, tt.den, "base", tt.target)
			if r.Ratio == nil || *r.Ratio != tt.wantRatio {
				t.Fatalf("ratio = %v, want %v", r.Ratio, tt.wantRatio)
			}
			if (r.Met == nil) != (tt.wantMet == nil) || (r.Met != nil && *r.Met != *tt.wantMet) {
				t.Errorf("met = %v, want %v", deref(r.Met), deref(tt.wantMet))
			}
		})
	}
	if r := (Row{}).withRatio(1, 0, "base", ">=1"); r.Ratio != nil {
		t.Errorf("zero baseline: ratio %v, want none", *r.Ratio)
	}
	if r := unavailable("g", "n", "why").withRatio(1, 1, "base", ">=1"); r.Ratio != nil {
		t.Errorf("unavailable row got a ratio")
	}
}

func TestWithUse(t *testing.T) {
	ms := time.Millisecond
	tests := []struct {
		name string
		row  Row
		use  phaseUse
		want string
	}{
		{"server and self", Row{N: 4}, phaseUse{cpu: cpuUse{server: 6 * ms, self: 2 * ms, serverOK: true}},
			"connections opened while timed: 0; CPU per request: atr serve 1.5 ms, load generator 0.5 ms"},
		{"a server not ours", Row{N: 2}, phaseUse{opened: 3, cpu: cpuUse{self: ms}},
			"connections opened while timed: 3; CPU per request: atr serve unknown, load generator 0.5 ms"},
		{"nothing served", Row{}, phaseUse{opened: 1, cpu: cpuUse{server: ms, serverOK: true}},
			"connections opened while timed: 1"},
		{"after a first error", Row{N: 1, Note: "first error: HTTP 429"}, phaseUse{cpu: cpuUse{server: 2 * ms, self: ms, serverOK: true}},
			"first error: HTTP 429; connections opened while timed: 0; CPU per request: atr serve 2 ms, load generator 1 ms"},
		{"with the database's backends", Row{N: 4}, phaseUse{cpu: cpuUse{server: 6 * ms, self: 2 * ms, serverOK: true}, db: dbUse{watched: true, PGUse: procstat.PGUse{Backends: 30, NBackends: 5}}},
			"connections opened while timed: 0; CPU per request: atr serve 1.5 ms, PostgreSQL backends 75 ms (5), together 76.5 ms, load generator 0.5 ms"},
		{"and autovacuum", Row{N: 4}, phaseUse{cpu: cpuUse{server: 6 * ms, self: 2 * ms, serverOK: true}, db: dbUse{watched: true, PGUse: procstat.PGUse{Backends: 1, Autovacuum: 2, NBackends: 5, NAutovacuum: 1}}},
			"connections opened while timed: 0; CPU per request: atr serve 1.5 ms, PostgreSQL backends 2.5 ms (5) and autovacuum 5 ms (1), together 9 ms, load generator 0.5 ms"},
		{"the database's backends of a server not ours", Row{N: 2}, phaseUse{cpu: cpuUse{self: ms}, db: dbUse{watched: true, PGUse: procstat.PGUse{Backends: 1, NBackends: 1}}},
			"connections opened while timed: 0; CPU per request: atr serve unknown, PostgreSQL backends 5 ms (1), load generator 0.5 ms"},
		{"autovacuum alone", Row{N: 2}, phaseUse{cpu: cpuUse{server: ms, self: ms, serverOK: true}, db: dbUse{watched: true, PGUse: procstat.PGUse{Autovacuum: 1, NAutovacuum: 1}}},
			"connections opened while timed: 0; CPU per request: atr serve 0.5 ms, PostgreSQL backends 0 ms (0) and autovacuum 5 ms (1), together 5.5 ms, load generator 0.5 ms"},
		{"PostgreSQL elsewhere", Row{N: 2}, phaseUse{cpu: cpuUse{server: ms, self: ms, serverOK: true}, db: dbUse{watched: true}},
			"connections opened while timed: 0; CPU per request: atr serve 0.5 ms, PostgreSQL backends unseen (not on this machine), load generator 0.5 ms"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.row.withUse(tt.use).Note; got != tt.want {
				t.Errorf("note = %q\nwant   %q", got, tt.want)
			}
		})
	}
}

func ptr(b bool) *bool { return &b }

func deref(b *bool) any {
	if b == nil {
		return nil
	}
	return *b
}

func sampleReport() *Report {
	rep := &Report{Started: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), Duration: 42, Mode: "quick",
		Database: "sqlite", Cores: 2, GoVersion: "go1.26"}
	s := summarize(durs(1, 2, 3, 4), 0, time.Second, nil)
	rep.add(rateRow("baseline", "sign", s),
		rateRow("verify", "valid", s).withRatio(4, 2, "sign", ">=1.5"),
		unavailable("ocsp", "responses", "POST /v1/ocsp answers 501 on this build"))
	rep.Notes = []string{"noisy"}
	return rep
}

func TestWriteTable(t *testing.T) {
	var buf bytes.Buffer
	if err := sampleReport().WriteTable(&buf); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{"atr-bench quick run on sqlite, 2 cores", "group", "verify", "2", ">=1.5 met",
		"unavailable", "answers 501", "note: noisy"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	if got := strings.Count(out, "\n"); got != 6 {
		t.Errorf("table has %d lines, want 6 (title, header, 3 rows, 1 note):\n%s", got, out)
	}
}

func TestWriteJSON(t *testing.T) {
	var buf bytes.Buffer
	if err := sampleReport().WriteJSON(&buf); err != nil {
		t.Fatal(err)
	}
	var got struct {
		Mode string `json:"mode"`
		Rows []struct {
			Group, Name string
			Value       float64
			P99         float64 `json:"p99_ms"`
			Ratio       *float64
			Met         *bool
			Unavailable bool
		} `json:"rows"`
	}
	if err := json.Unmarshal(buf.Bytes(), &got); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, buf.String())
	}
	if got.Mode != "quick" || len(got.Rows) != 3 {
		t.Fatalf("mode %q, %d rows; want quick, 3", got.Mode, len(got.Rows))
	}
	if r := got.Rows[1]; r.Ratio == nil || *r.Ratio != 2 || r.Met == nil || !*r.Met || r.P99 != 4 {
		t.Errorf("verify row = %+v, want ratio 2, met, p99 4 ms", r)
	}
	if !got.Rows[2].Unavailable {
		t.Errorf("ocsp row should be unavailable")
	}
}

// TestWriteMarkdown holds the Markdown of a report to testdata/report.md
// (the form of docs/performance.md's tables): a met and a missed target, a
// row with errors, an unavailable row, a '|' in a name, thousands.
func TestWriteMarkdown(t *testing.T) {
	rep := sampleReport()
	s := summarize(durs(1, 2, 3, 40), 1, time.Second, nil)
	rep.add(rateRow("issuance", "register | c=32", s).withRatio(1, 20, "CreateCertificate (8 goroutines)", ">=0.2"),
		Row{Group: "baseline", Name: "HSM sign", Value: 12_345.6, Unit: "ops/s", P50ms: 0.14567, P99ms: 11.49},
		Row{Group: "floor", Name: "verify (valid) rate / GET /healthz rate", Value: 5_268, Unit: "ops/s",
			Note: "median of 3 interleaved rounds; per round 0.529–0.647"}.withRatio(0.554, 1, "GET /healthz", ">=0.7"))
	var buf bytes.Buffer
	if err := rep.WriteMarkdown(&buf); err != nil {
		t.Fatal(err)
	}
	golden := filepath.Join("testdata", "report.md")
	if os.Getenv("ATR_BENCH_UPDATE_GOLDEN") != "" {
		if err := os.WriteFile(golden, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if got := buf.String(); got != string(want) {
		t.Errorf("Markdown:\n%s\nwant (%s):\n%s", got, golden, want)
	}
}

func TestSig3(t *testing.T) {
	for v, want := range map[float64]string{0: "0", 6930.4: "6,930", 12_345.6: "12,300", 1_234_567: "1,230,000", 203.4: "203",
		87.14: "87.1", 0.03351: "0.0335", 999.6: "1,000", 0.00001234: "1.23e-05", -4567: "-4,570"} {
		if got := sig3(v); got != want {
			t.Errorf("sig3(%v) = %q, want %q", v, got, want)
		}
	}
}

// TestReadReport: --report prints a saved run again; a file that is not
// one is refused with its name.
func TestReadReport(t *testing.T) {
	dir := t.TempDir()
	var buf bytes.Buffer
	if err := sampleReport().WriteJSON(&buf); err != nil {
		t.Fatal(err)
	}
	good := filepath.Join(dir, "run.json")
	if err := os.WriteFile(good, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	rep, err := readReport(good)
	if err != nil {
		t.Fatal(err)
	}
	var a, b bytes.Buffer
	_ = rep.WriteMarkdown(&a)
	_ = sampleReport().WriteMarkdown(&b)
	if a.String() != b.String() {
		t.Errorf("read back:\n%s\nwritten:\n%s", a.String(), b.String())
	}
	for name, body := range map[string]string{"empty.json": "", "other.json": `{"rows":[],"mode":""}`,
		"unknown.json": `{"mode":"quick","rows":[{}],"extra":1}`, "text.txt": "atr-bench quick run",
		"two.json": buf.String() + buf.String()} {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := readReport(p); err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("readReport(%s) = %v, want an error naming the file", name, err)
		}
	}
	if _, err := readReport(filepath.Join(dir, "missing.json")); err == nil {
		t.Error("readReport of a missing file succeeded")
	}
}

func TestParseProcStatus(t *testing.T) {
	cur, peak, err := parseProcStatus("Name:\tatr\nVmHWM:\t  53800 kB\nVmRSS:\t   47400 kB\nThreads:\t9\n")
	if err != nil || cur != 47400 || peak != 53800 {
		t.Errorf("got %d, %d, %v; want 47400, 53800, nil", cur, peak, err)
	}
	if _, _, err := parseProcStatus("Name:\tatr\n"); err == nil {
		t.Error("no VmRSS: want an error")
	}
}

func TestHumanCount(t *testing.T) {
	for n, want := range map[int64]string{1000: "1k", 100_000: "100k", 1_000_000: "1M", 1500: "1500", 20_000: "20k"} {
		if got := humanCount(n); got != want {
			t.Errorf("humanCount(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestAddrsSkipsNetworkAndBroadcast(t *testing.T) {
	a := &addrs{loopback: true}
	seen := map[string]bool{}
	for range 600 {
		ip := a.next()
		if last := ip.To4()[3]; last == 0 || last == 255 {
			t.Fatalf("handed out %v", ip)
		}
		if !ip.IsLoopback() || seen[ip.String()] {
			t.Fatalf("handed out %v twice or off loopback", ip)
		}
		seen[ip.String()] = true
	}
	if ip := (&addrs{}).next(); ip != nil {
		t.Errorf("off loopback: got %v, want nil", ip)
	}
}

func TestMemHashesProofsVerify(t *testing.T) {
	ctx := context.Background()
	m := &memHashes{}
	for n := range int64(100) {
		if err := translog.Append(ctx, m, n, leafFor(n)); err != nil {
			t.Fatal(err)
		}
	}
	root, err := translog.RootHash(ctx, m, 100)
	if err != nil {
		t.Fatal(err)
	}
	proof, err := translog.InclusionProof(ctx, m, 37, 100)
	if err != nil {
		t.Fatal(err)
	}
	if err := translog.CheckInclusion(proof, 100, root, 37, tlog.RecordHash(leafFor(37))); err != nil {
		t.Errorf("inclusion proof from memHashes does not verify: %v", err)
	}
}

func TestMeasureMemLog(t *testing.T) {
	pts, err := measureMemLog(context.Background(), []int64{10, 100}, 5, 20)
	if err != nil {
		t.Fatal(err)
	}
	if len(pts) != 2 || pts[1].proofs.Errors != 0 || pts[1].proofs.N != 20 {
		t.Errorf("points %+v", pts)
	}
}

// TestMedianOf: the median of odd and even counts, none, and the input
// left in its order.
func TestMedianOf(t *testing.T) {
	for _, tc := range []struct {
		in   []float64
		want float64
	}{{nil, 0}, {[]float64{3}, 3}, {[]float64{3, 1, 2}, 2}, {[]float64{4, 1, 3, 2}, 2.5}} {
		in := slices.Clone(tc.in)
		if got := medianOf(in); got != tc.want || !slices.Equal(in, tc.in) {
			t.Errorf("medianOf(%v) = %v (input now %v), want %v", tc.in, got, in, tc.want)
		}
	}
	if got := spread([]float64{0.647, 0.529, 0.6}); got != "0.529–0.647" {
		t.Errorf("spread = %q", got)
	}
}

// TestProcCPU: the CPU time of this process read from /proc grows with
// work and agrees with getrusage to within the tick.
func TestProcCPU(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("procCPU reads Linux's /proc")
	}
	before, err := procCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	for end := time.Now().Add(150 * time.Millisecond); time.Now().Before(end); {
	}
	after, err := procCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if after <= before {
		t.Errorf("procCPU did not grow: %v then %v", before, after)
	}
	if self := procstat.Self(); self < after-20*time.Millisecond || self > after+time.Second {
		t.Errorf("getrusage %v, /proc %v", self, after)
	}
	if _, err := procCPU(-1); err == nil {
		t.Error("procCPU(-1) succeeded")
	}
}

// TestRunOutsideTheRepository: with --atr-binary, run from outside the atr
// module, atr-bench still needs the repository's softhsm/init-tokens.sh for
// the server's tokens. It must say so before it starts anything, not fail
// later with "fork/exec softhsm/init-tokens.sh: no such file or directory".
func TestRunOutsideTheRepository(t *testing.T) {
	for _, tc := range []struct {
		name  string
		gomod string // the working directory's go.mod; none when empty
	}{
		{"outside any module", ""},
		{"inside another module", "module example.com/other\n\ngo 1.26\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if tc.gomod != "" {
				if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte(tc.gomod), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			t.Chdir(dir)
			_, err := run(context.Background(), options{atrBinary: "/bin/true", quick: true}, nil)
			if err == nil || !strings.Contains(err.Error(), "run atr-bench from the repository") || strings.Contains(err.Error(), "fork/exec") {
				t.Fatalf("run with --atr-binary: %v; want the repository named, no fork/exec error", err)
			}
		})
	}
}

// TestModuleRootWithoutGo: with no go command (a prebuilt atr-bench and
// --atr-binary), the repository is the working directory when it holds
// softhsm/init-tokens.sh (as it was before moduleRoot refused to go on
// without one), and elsewhere the error names the repository.
func TestModuleRootWithoutGo(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	repo := t.TempDir()
	if err := os.MkdirAll(filepath.Join(repo, "softhsm"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(repo, "softhsm", "init-tokens.sh"), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Chdir(repo)
	if root, err := moduleRoot(context.Background()); err != nil || root != repo {
		t.Errorf("moduleRoot in the repository without go = %q, %v; want %q", root, err, repo)
	}
	t.Chdir(t.TempDir())
	if _, err := moduleRoot(context.Background()); err == nil || !strings.Contains(err.Error(), "run atr-bench from the repository") {
		t.Errorf("moduleRoot elsewhere without go: %v; want the repository named", err)
	}
}
