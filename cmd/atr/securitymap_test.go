package main

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
)

// securityMapPath is docs/security.md relative to this package's directory.
const securityMapPath = "../../docs/security.md"

// Numbers of seed findings (SEC-001 … SEC-029) and threat-model abuse cases
// (AC-01 … AC-11) in ../shared/seed/002_17e92704ee144e09.txt.
// externalFindings are the findings of the outside attack and third-party
// client review (issue 11), EXT-01 … EXT-14 in the same order as the issue.
const (
	seedFindings     = 29
	seedAbuseCases   = 11
	externalFindings = 14
)

// noTestYet lists rows allowed to name no test, each with the reason. Keep
// it empty: every finding and abuse case must be replayed by a test. A row
// that says "no test yet" without an entry here fails.
func noTestYet() map[string]string {
	return map[string]string{}
}

var (
	// rowID matches the ID cell of a mapped row: "SEC-001", "**SEC-001**", "AC-01",
	// "EXT-01".
	rowID = regexp.MustCompile(`^\**((?:SEC-\d{3})|(?:AC-\d{2})|(?:EXT-\d{2}))\**$`)
	// testRef matches a test named in backticks: `pkg/path.TestName` or
	// `pkg/path.FuzzName` (Go package directory relative to the module root).
	testRef = regexp.MustCompile("`([a-z0-9_]+(?:/[a-z0-9_]+)*)\\.((?:Test|Fuzz)[A-Za-z0-9_]*)`")
)

// mapRow is one row of the finding or abuse-case tables.
type mapRow struct {
	id    string
	line  int
	text  string
	tests []string // "pkg/path.TestName"
}

// parseSecurityMap returns the mapped rows by ID (duplicates are reported)
// and every test reference anywhere in the document with its line.
func parseSecurityMap(doc string) (rows map[string]mapRow, dups []string, refs map[string]int) {
	rows = map[string]mapRow{}
	refs = map[string]int{}
	for i, line := range strings.Split(doc, "\n") {
		n := i + 1
		for _, m := range testRef.FindAllStringSubmatch(line, -1) {
			ref := m[1] + "." + m[2]
			if _, seen := refs[ref]; !seen {
				refs[ref] = n
			}
		}
		trimmed := strings.TrimSpace(line)
		if !strings.HasPrefix(trimmed, "|") {
			continue
		}
		cells := strings.Split(strings.Trim(trimmed, "|"), "|")
		m := rowID.FindStringSubmatch(strings.TrimSpace(cells[0]))
		if m == nil {
			continue
		}
		r := mapRow{id: m[1], line: n, text: trimmed}
		for _, t := range testRef.FindAllStringSubmatch(trimmed, -1) {
			r.tests = append(r.tests, t[1]+"."+t[2])
		}
		if old, ok := rows[r.id]; ok {
			dups = append(dups, fmt.Sprintf("%s on lines %d and %d", r.id, old.line, n))
			continue
		}
		rows[r.id] = r
	}
	return rows, dups, refs
}

// requiredIDs are the rows the map must have.
func requiredIDs() []string {
	var ids []string
	for i := 1; i <= seedFindings; i++ {
		ids = append(ids, fmt.Sprintf("SEC-%03d", i))
	}
	for i := 1; i <= seedAbuseCases; i++ {
		ids = append(ids, fmt.Sprintf("AC-%02d", i))
	}
	for i := 1; i <= externalFindings; i++ {
		ids = append(ids, fmt.Sprintf("EXT-%02d", i))
	}
	return ids
}

// testFuncs returns the names of the Test and Fuzz functions declared in the
// _test.go files of the package directory dir.
func testFuncs(dir string) (map[string]bool, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*_test.go"))
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", dir, err)
	}
	decl := regexp.MustCompile(`(?m)^func ((?:Test|Fuzz)[A-Za-z0-9_]*)\(`)
	out := map[string]bool{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("reading %s: %w", f, err)
		}
		for _, m := range decl.FindAllStringSubmatch(string(data), -1) {
			out[m[1]] = true
		}
	}
	return out, nil
}

// TestSecurityMap checks docs/security.md: every seed finding and abuse case
// has exactly one row, every row names at least one test (or is allowlisted
// with a reason), and every test the document names exists.
func TestSecurityMap(t *testing.T) {
	data, err := os.ReadFile(filepath.FromSlash(securityMapPath))
	if err != nil {
		t.Fatalf("reading the security map: %v", err)
	}
	rows, dups, refs := parseSecurityMap(string(data))
	for _, d := range dups {
		t.Errorf("%s: duplicate row %s", securityMapPath, d)
	}
	allow := noTestYet()

	for _, id := range requiredIDs() {
		t.Run(id, func(t *testing.T) {
			r, ok := rows[id]
			if !ok {
				t.Fatalf("%s has no table row for %s", securityMapPath, id)
			}
			reason, allowed := allow[id]
			saysNoTest := strings.Contains(strings.ToLower(r.text), "no test yet")
			switch {
			case len(r.tests) == 0 && !allowed:
				t.Errorf("%s:%d: row %s names no test (`pkg/path.TestName`); add a replaying test, or allowlist it in noTestYet with a reason", securityMapPath, r.line, id)
			case saysNoTest && !allowed:
				t.Errorf("%s:%d: row %s says \"no test yet\" but is not in the noTestYet allowlist", securityMapPath, r.line, id)
			case allowed && len(r.tests) > 0:
				t.Errorf("%s:%d: row %s names tests %v but is allowlisted (%s); drop it from noTestYet", securityMapPath, r.line, id, r.tests, reason)
			}
		})
	}
	for id := range allow {
		if _, ok := rows[id]; !ok {
			t.Errorf("noTestYet allowlists %s, which has no row", id)
		}
	}

	names := make([]string, 0, len(refs))
	for ref := range refs {
		names = append(names, ref)
	}
	sort.Strings(names)
	if len(names) == 0 {
		t.Fatalf("%s names no tests at all", securityMapPath)
	}
	cache := map[string]map[string]bool{}
	for _, ref := range names {
		t.Run(ref, func(t *testing.T) {
			dot := strings.LastIndex(ref, ".")
			pkg, fn := ref[:dot], ref[dot+1:]
			dir := filepath.Join("..", "..", filepath.FromSlash(pkg))
			funcs, ok := cache[dir]
			if !ok {
				if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
					t.Fatalf("%s:%d: %s: package directory %s does not exist", securityMapPath, refs[ref], ref, pkg)
				}
				var err error
				if funcs, err = testFuncs(dir); err != nil {
					t.Fatal(err)
				}
				cache[dir] = funcs
			}
			if !funcs[fn] {
				t.Errorf("%s:%d: %s: no func %s( in %s/*_test.go", securityMapPath, refs[ref], ref, fn, pkg)
			}
		})
	}
}

// TestParseSecurityMap checks the parser on a small document.
func TestParseSecurityMap(t *testing.T) {
	doc := strings.Join([]string{
		"| ID | finding | how | replayed by |",
		"|---|---|---|---|",
		"| **SEC-001** | No auth | control | `api.TestA`, `registry/translog.FuzzB` |",
		"| SEC-002 | x | y | no test yet |",
		"| AC-01 | z | `pkg.TestC` in prose | `cmd/atr.TestD` |",
		"| SEC-001 | dup | | |",
		"| checklist | n/a | `ca.TestE` |",
		"Prose naming `hsm.TestF` and `not a ref`.",
	}, "\n")
	rows, dups, refs := parseSecurityMap(doc)
	tests := []struct {
		id    string
		tests string
	}{
		{"SEC-001", "api.TestA registry/translog.FuzzB"},
		{"SEC-002", ""},
		{"AC-01", "pkg.TestC cmd/atr.TestD"},
	}
	for _, tt := range tests {
		r, ok := rows[tt.id]
		if got := strings.Join(r.tests, " "); !ok || got != tt.tests {
			t.Errorf("row %s: got %v %q, want tests %q", tt.id, ok, got, tt.tests)
		}
	}
	if len(rows) != 3 {
		t.Errorf("got %d rows, want 3", len(rows))
	}
	if len(dups) != 1 || !strings.HasPrefix(dups[0], "SEC-001") {
		t.Errorf("got duplicates %v, want SEC-001", dups)
	}
	for _, ref := range []string{"api.TestA", "registry/translog.FuzzB", "pkg.TestC", "cmd/atr.TestD", "ca.TestE", "hsm.TestF"} {
		if _, ok := refs[ref]; !ok {
			t.Errorf("reference %s not found; got %v", ref, refs)
		}
	}
	if len(refs) != 6 {
		t.Errorf("got %d references, want 6: %v", len(refs), refs)
	}
}
