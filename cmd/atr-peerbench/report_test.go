package main

import (
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestMedian(t *testing.T) {
	for _, tc := range []struct {
		in   []float64
		want float64
	}{
		{nil, 0},
		{[]float64{3}, 3},
		{[]float64{3, 1, 2}, 2},
		{[]float64{4, 1, 3, 2}, 2.5},
	} {
		if got := median(tc.in); got != tc.want {
			t.Errorf("median(%v) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

// TestReport runs the report over the results of the 2026-12-03 run
// (docs/performance-history.md). The within-round ratio ATR-sqlite-vrf2048 /
// step-badger at c=1 is, round by round, 150.7/511.3, 163.7/528.8,
// 153.9/496.2 and 138.7/491.2 = 0.2947, 0.3096, 0.3102, 0.2824: median
// 0.302. Step-badger at c=16 ran 4 times: 1227.9, 1259.1, 1248.1, 1173.6,
// median 1238. Its yardstick (the server's CPU seconds ÷ the load
// generator's in the timed window) in those runs: 28.21/5.354465,
// 27.78/5.325938, 26.43/4.900931 and 27.33/5.262374 = 5.269, 5.216, 5.393,
// 5.193: median 5.24, range 5.19–5.39.
func TestReport(t *testing.T) {
	out := captureStdout(t, func() error { return cmdReport([]string{"testdata/side-2026-12-03.jsonl"}) })
	for _, want := range []string{
		"| step-badger | 16 | 4 | **1238** | 1174–1259 |",
		"| ATR-sqlite-vrf2048 | step-badger | 0.302 (0.302) |",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
	if n := len(regexp.MustCompile(`(?m)^\| \d\d:\d\d:\d\d \|`).FindAllString(out, -1)); n != 36 {
		t.Errorf("report lists %d runs, want the file's 36", n)
	}
	tables := markdownTables(out)
	if len(tables) != 3 {
		t.Fatalf("report has %d tables, want 3:\n%s", len(tables), out)
	}
	for _, tb := range tables {
		for _, row := range tb[1:] {
			if len(row) != len(tb[0]) {
				t.Errorf("a row has %d cells, its header %d: %q", len(row), len(tb[0]), row)
			}
		}
	}
	cell := func(tb [][]string, column string, match func(row []string) bool) string {
		k := slices.Index(tb[0], column)
		if k < 0 {
			t.Fatalf("no column %q in %q", column, tb[0])
		}
		for _, row := range tb[2:] {
			if match(row) {
				return row[k]
			}
		}
		t.Fatalf("no row for column %q", column)
		return ""
	}
	if got := cell(tables[0], "server ÷ load generator CPU s, median (min–max)", func(r []string) bool {
		return r[0] == "step-badger" && r[1] == "16"
	}); got != "5.24 (5.19–5.39)" {
		t.Errorf("step-badger's yardstick at c=16 = %q, want 5.24 (5.19–5.39)", got)
	}
	if got := cell(tables[2], "server ÷ client CPU s", func(r []string) bool {
		return r[1] == "1" && r[2] == "step-badger" && r[3] == "16"
	}); got != "5.27" {
		t.Errorf("step-badger's yardstick at c=16 in round 1 = %q, want 5.27", got)
	}
}

// Yardsticks compare two builds of one system doing one operation only.
func TestComparableYardsticks(t *testing.T) {
	for _, tc := range []struct {
		x, y Result
		want bool
	}{
		{Result{System: "atr", Op: "rotate"}, Result{System: "atr", Op: "rotate"}, true},
		{Result{System: "atr"}, Result{System: "atr"}, true},
		{Result{System: "atr"}, Result{System: "atr", Op: "rotate"}, false},
		{Result{System: "atr"}, Result{System: "stepca"}, false},
		{Result{}, Result{}, false},
	} {
		if got := comparableYardsticks(tc.x, tc.y); got != tc.want {
			t.Errorf("comparableYardsticks(%+v, %+v) = %v, want %v", tc.x, tc.y, got, tc.want)
		}
	}
}

// A run without the load generator's CPU (or none timed) has no yardstick:
// it is left out of the median and the range, and "—" stands for none.
func TestYardsticks(t *testing.T) {
	for _, tc := range []struct {
		in   []Result
		want string
	}{
		{nil, "—"},
		{[]Result{{ServerCPUs: 10}}, "—"},
		{[]Result{{ServerCPUs: 10, ClientCPUs: 2}, {ServerCPUs: 10}, {ServerCPUs: 12, ClientCPUs: 2}}, "5.50 (5.00–6.00)"},
	} {
		if got := yardsticks(tc.in); got != tc.want {
			t.Errorf("yardsticks(%v) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// Round numbers restart with every run-all.sh: each A run is paired with
// the B run of its own round in its own run-all.sh invocation and file (the
// one that started nearest to it should there be several), never with a run
// of the same round number made at another time.
func TestPairUp(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 16, 0, 0, 0, time.UTC)
	run := func(label string, file, round, minute int) Result {
		return Result{Label: label, file: file, Round: round, Start: t0.Add(time.Duration(minute) * time.Minute)}
	}
	// second marks a run of a second run-all.sh in the same file.
	second := func(r Result) Result { r.invocation = 1; return r }
	// pair holds the minutes of the paired runs' starts.
	type pair struct{ a, b int }
	for _, tc := range []struct {
		name string
		a, b []Result
		want []pair
	}{
		{"one file", []Result{run("A", 0, 1, 0), run("A", 0, 2, 2)}, []Result{run("B", 0, 1, 1), run("B", 0, 2, 3)},
			[]pair{{0, 1}, {2, 3}}},
		{"two files, the same rounds", []Result{run("A", 0, 1, 0), run("A", 1, 1, 30)}, []Result{run("B", 0, 1, 1), run("B", 1, 1, 31)},
			[]pair{{0, 1}, {30, 31}}},
		{"two run-all.sh appended to one file", []Result{run("A", 0, 1, 0), second(run("A", 0, 1, 30))}, []Result{second(run("B", 0, 1, 31)), run("B", 0, 1, 1)},
			[]pair{{0, 1}, {30, 31}}},
		{"A alone in the second run-all.sh", []Result{run("A", 0, 1, 0), second(run("A", 0, 1, 30))}, []Result{run("B", 0, 1, 1)},
			[]pair{{0, 1}}},
		{"several B of the round: the nearest", []Result{run("A", 0, 1, 5)}, []Result{run("B", 0, 1, 1), run("B", 0, 1, 6)},
			[]pair{{5, 6}}},
		{"no B in an A's round", []Result{run("A", 0, 1, 0), run("A", 0, 2, 2)}, []Result{run("B", 0, 1, 1), run("B", 1, 2, 3)},
			[]pair{{0, 1}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []pair
			for _, p := range pairUp(tc.a, tc.b) {
				got = append(got, pair{int(p[0].Start.Sub(t0) / time.Minute), int(p[1].Start.Sub(t0) / time.Minute)})
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("pairs %v, want %v", got, tc.want)
			}
		})
	}
}

// A file's runs in the order written: a new run-all.sh invocation starts
// where the round number falls, or where a system, round and concurrency
// come again (an invocation stopped and run again, or ROUNDS=1 in a loop).
func TestInvocations(t *testing.T) {
	r := func(label string, round, c int) Result { return Result{Label: label, Round: round, C: c} }
	for _, tc := range []struct {
		name string
		in   []Result
		want []int
	}{
		{"one", []Result{r("A", 1, 16), r("B", 1, 16), r("B", 2, 16), r("A", 2, 16)}, []int{0, 0, 0, 0}},
		{"the rounds fall", []Result{r("A", 1, 16), r("B", 1, 16), r("A", 2, 16), r("A", 1, 16), r("C", 2, 16)}, []int{0, 0, 0, 1, 1}},
		{"a run comes again", []Result{r("A", 1, 16), r("B", 1, 16), r("A", 1, 16), r("B", 1, 16)}, []int{0, 0, 1, 1}},
		{"another concurrency", []Result{r("A", 1, 1), r("A", 1, 16), r("A", 2, 1)}, []int{0, 0, 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []int
			for _, x := range invocations(tc.in) {
				got = append(got, x.invocation)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("invocations %v, want %v", got, tc.want)
			}
		})
	}
}

// TestReportPairsWithinFiles gives the report two files of one round each:
// A/B is 50/100 in the first and 100/50 in the second, a median of 1.25.
// Pairing by round number alone made four pairs (0.5, 1, 1, 2: a median of
// 1), and paired the second file's later run of A alone (1,000/s) as well.
// The medians' ratio (in brackets) takes every run: 100/75. Two builds of
// one system also get the yardsticks' ratio (7/7 and 6.3/7: a median of
// 0.95); ATR against step-ca does not.
func TestReportPairsWithinFiles(t *testing.T) {
	dir := t.TempDir()
	t0 := time.Date(2026, 12, 7, 16, 0, 0, 0, time.UTC)
	write := func(name string, rs ...Result) string {
		var b strings.Builder
		for _, r := range rs {
			line, err := json.Marshal(r)
			if err != nil {
				t.Fatal(err)
			}
			b.Write(append(line, '\n'))
		}
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	res := func(label, system string, minute int, certs, serverCPU float64) Result {
		return Result{Label: label, System: system, Round: 1, C: 16, Start: t0.Add(time.Duration(minute) * time.Minute),
			CertsPerSec: certs, ServerCPUms: 1, ServerCPUs: serverCPU, ClientCPUs: 1}
	}
	first := write("first.jsonl", res("ATR-new", "atr", 0, 50, 7), res("ATR-old", "atr", 1, 100, 7), res("step-badger", "stepca", 2, 100, 5))
	// The second file also holds a later run-all.sh of ATR-new alone,
	// which has no ATR-old to pair with.
	second := write("second.jsonl", res("ATR-new", "atr", 30, 100, 6.3), res("ATR-old", "atr", 31, 50, 7), res("step-badger", "stepca", 32, 100, 5),
		res("ATR-new", "atr", 60, 1000, 1))
	out := captureStdout(t, func() error {
		return cmdReport([]string{"-pair", "ATR-new:ATR-old", "-pair", "ATR-new:step-badger", first, second})
	})
	for _, want := range []string{
		"| ATR-new | ATR-old | 1.250 (1.333) | 1.00× (1.00×); total 1.00×; yardstick 0.95× |",
		"| ATR-new | step-badger | 0.750 (1.000) | 1.00× (1.00×); total 1.00× |",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("report lacks %q:\n%s", want, out)
		}
	}
}

// markdownTables splits out's markdown tables into rows of cells.
func markdownTables(out string) [][][]string {
	var (
		tables [][][]string
		cur    [][]string
	)
	for _, line := range strings.Split(out, "\n") {
		if !strings.HasPrefix(line, "|") {
			if cur != nil {
				tables, cur = append(tables, cur), nil
			}
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), "|")
		for i := range cells {
			cells[i] = strings.TrimSpace(cells[i])
		}
		cur = append(cur, cells)
	}
	if cur != nil {
		tables = append(tables, cur)
	}
	return tables
}

func captureStdout(t *testing.T, f func() error) string {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	old := os.Stdout
	os.Stdout = w
	done := make(chan string)
	go func() {
		b, _ := io.ReadAll(r)
		done <- string(b)
	}()
	ferr := f()
	os.Stdout = old
	w.Close()
	out := <-done
	if ferr != nil {
		t.Fatal(ferr)
	}
	return out
}
