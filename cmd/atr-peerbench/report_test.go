package main

import (
	"io"
	"os"
	"regexp"
	"slices"
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
