package main

import (
	"io"
	"os"
	"regexp"
	"strings"
	"testing"
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
// median 1238. Its yardstick (server CPU a certificate ÷ the load
// generator's CPU a request) in those runs: 1.17542/(5.35447/24000 s),
// 1.1575/(5.32594/24000), 1.10125/(4.90093/24000) and
// 1.16387/(5.26237/23482) = 5.269, 5.216, 5.393, 5.193: median 5.24.
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
	if !regexp.MustCompile(`(?m)^\| step-badger \| 16 \| 4 \| .* \| 5\.24 \(5\.19–5\.39\) \|$`).MatchString(out) {
		t.Errorf("report lacks step-badger's yardstick at c=16, 5.24 (5.19–5.39):\n%s", out)
	}
	if !regexp.MustCompile(`(?m)^\| \d\d:\d\d:\d\d \| 1 \| step-badger \| 16 \| [^\n]* \| 5\.27 \| `).MatchString(out) {
		t.Errorf("the runs' table lacks step-badger's first c=16 yardstick, 5.27:\n%s", out)
	}
	if n := len(regexp.MustCompile(`(?m)^\| \d\d:\d\d:\d\d \|`).FindAllString(out, -1)); n != 36 {
		t.Errorf("report lists %d runs, want the file's 36", n)
	}
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
