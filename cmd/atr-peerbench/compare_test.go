package main

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestCompareRefusesBeforeStarting runs scripts/peerbench/compare.sh with
// what it must refuse before it builds or starts anything: each case ends at
// once with exit status 1 (0 for --help) and says why.
func TestCompareRefusesBeforeStarting(t *testing.T) {
	script, err := filepath.Abs("../../scripts/peerbench/compare.sh")
	if err != nil {
		t.Fatal(err)
	}
	full := t.TempDir()
	if err := os.WriteFile(filepath.Join(full, "results.jsonl"), []byte("{}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// A server of another comparison on ATR's SQLite port (or whatever
	// listens there already: the script refuses either way). The port must
	// be taken: otherwise the last case would run a whole comparison.
	if ln, err := net.Listen("tcp", "127.0.0.1:38443"); err == nil {
		t.Cleanup(func() { ln.Close() })
	} else if c, derr := net.Dial("tcp", "127.0.0.1:38443"); derr == nil {
		c.Close()
	} else {
		t.Fatalf("cannot take 127.0.0.1:38443 (%v), and nothing listens there (%v)", err, derr)
	}
	for _, tc := range []struct {
		name string
		args []string
		env  []string
		code int
		says string
	}{
		{"help", []string{"--help"}, nil, 0, "compare.sh [RESULTS.jsonl]"},
		{"unknown option", []string{"-x"}, nil, 1, "unknown option -x"},
		{"two results files", []string{"a.jsonl", "b.jsonl"}, nil, 1, "one argument at most"},
		{"unknown database", nil, []string{"DBS=mysql"}, 1, "DBS: mysql is neither sqlite nor postgres"},
		{"a system it does not start", nil, []string{"SYSTEMS=ATR-sqlite-base step-badger"}, 1, "SYSTEMS: ATR-sqlite-base needs servers"},
		{"a used working directory", nil, []string{"DBS=sqlite", "PERF=" + full}, 1, "is not empty"},
		{"an existing results file", []string{filepath.Join(full, "results.jsonl")}, []string{"DBS=sqlite"}, 1, "results.jsonl exists"},
		{"a port in use", nil, []string{"DBS=sqlite", "PERF=" + filepath.Join(t.TempDir(), "new")}, 1, "127.0.0.1:38443 is in use"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command("bash", append([]string{script}, tc.args...)...)
			cmd.Env = append(os.Environ(), tc.env...)
			out, err := cmd.CombinedOutput()
			code := 0
			if ee, ok := err.(*exec.ExitError); ok {
				code = ee.ExitCode()
			} else if err != nil {
				t.Fatal(err)
			}
			if code != tc.code || !strings.Contains(string(out), tc.says) {
				t.Fatalf("exit %d, want %d; output:\n%s\nwant it to say %q", code, tc.code, out, tc.says)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(full, "bin")); err == nil {
		t.Error("a refused run left files in the used working directory")
	}
}
