package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"golang.org/x/mod/modfile"
	"golang.org/x/mod/module"
)

// TestDependenciesPinned (SEC-014): every module is required at an exact
// version (a release or a pseudo-version, never a branch), nothing is
// replaced by a local directory, and go.sum pins the content hash of every
// required module, so a build can only ever use the code that was reviewed
// (`go mod verify` in scripts/test.sh checks the module cache against it).
func TestDependenciesPinned(t *testing.T) {
	data, err := os.ReadFile("../../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	mf, err := modfile.Parse("go.mod", data, nil)
	if err != nil {
		t.Fatalf("parsing go.mod: %v", err)
	}
	if len(mf.Require) == 0 {
		t.Fatal("go.mod requires nothing; the test is reading the wrong file")
	}
	for _, r := range mf.Replace {
		if modfile.IsDirectoryPath(r.New.Path) {
			t.Errorf("go.mod replaces %s with the local directory %s", r.Old.Path, r.New.Path)
		}
	}
	sums := map[string]bool{}
	f, err := os.Open("../../go.sum")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 3 && strings.HasPrefix(fields[2], "h1:") {
			sums[fields[0]+" "+fields[1]] = true
		}
	}
	for _, r := range mf.Require {
		v := r.Mod.Version
		if err := module.Check(r.Mod.Path, v); err != nil {
			t.Errorf("require %s %s: %v", r.Mod.Path, v, err)
		}
		if !sums[r.Mod.Path+" "+v+"/go.mod"] {
			t.Errorf("go.sum lacks the go.mod hash of %s %s", r.Mod.Path, v)
		}
		if !r.Indirect && !sums[r.Mod.Path+" "+v] {
			t.Errorf("go.sum lacks the content hash of %s %s", r.Mod.Path, v)
		}
	}
}

// ourImports are the non-test imports of ours each package may have
// (DESIGN.md, Layout): dependencies point one way, cmd → api → registry →
// ca, with hsm and ca importing nothing of ours; the agent package builds on
// api/client and ca, the relying-party package on ca and the log package.
// Commands may import anything. A package missing from this table fails the
// test, so a new package gets its place in the direction reviewed.
// atrModule is the module path.
const atrModule = "github.com/agent-trust-registry/atr"

var ourImports = map[string][]string{
	"hsm":                      {},
	"hsm/hsmtest":              {"hsm"},
	"ca":                       {},
	"ca/catest":                {"ca"},
	"registry/apikey":          {},
	"registry/redact":          {},
	"registry/translog":        {},
	"registry/internal/testdb": {},
	"registry/witness":         {"registry/translog"},
	"registry":                 {"ca", "registry/apikey", "registry/redact", "registry/translog"},
	"registry/registrytest":    {"ca", "hsm", "hsm/hsmtest", "registry", "registry/internal/testdb", "registry/redact", "registry/translog"},
	"api/ratelimit":            {},
	"api/client":               {"registry/apikey"},
	"api":                      {"api/client", "api/ratelimit", "ca", "registry", "registry/apikey", "registry/redact", "registry/translog", "registry/witness"},
	"agent":                    {"api/client", "ca"},
	"rp":                       {"ca", "registry/translog"},
}

// pkcs11Importers are the only packages that may import crypto11 or
// miekg/pkcs11, in code or in tests: hsm, and its test-token helper.
var pkcs11Importers = map[string]bool{"hsm": true, "hsm/hsmtest": true}

type listedPackage struct {
	ImportPath                         string
	Imports, TestImports, XTestImports []string
}

// TestDependencyDirection enforces the package layout: no package imports
// one to its left, nothing but hsm touches PKCS#11. (That only the issuance
// pipeline reaches the issuing signer is ca.TestSignerPaths.)
func TestDependencyDirection(t *testing.T) {
	out, err := exec.Command("go", "list", "-e", "-json", atrModule+"/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	dec := json.NewDecoder(bytes.NewReader(out))
	seen := 0
	for dec.More() {
		var p listedPackage
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		seen++
		rel := strings.TrimPrefix(strings.TrimPrefix(p.ImportPath, atrModule), "/")
		for _, imp := range slices.Concat(p.Imports, p.TestImports, p.XTestImports) {
			if (strings.HasPrefix(imp, "github.com/ThalesGroup/crypto11") || strings.HasPrefix(imp, "github.com/miekg/pkcs11")) && !pkcs11Importers[rel] {
				t.Errorf("%s imports %s: only hsm may talk PKCS#11", rel, imp)
			}
		}
		if rel == "cmd/atr-peerbench" {
			// The side-by-side load client measures ATR and step-ca alike
			// over HTTPS; it must not share code with the system it measures.
			// It shares the benchmarks' /proc accounting with atr-bench.
			for _, imp := range slices.Concat(p.Imports, p.TestImports, p.XTestImports) {
				if strings.HasPrefix(imp, atrModule+"/") && imp != atrModule+"/cmd/internal/procstat" {
					t.Errorf("%s imports %s: the peer benchmark imports no ATR package", rel, imp)
				}
			}
		}
		if rel == "cmd/internal/procstat" {
			// The measurement code atr-peerbench shares: it must bring
			// it no ATR code.
			for _, imp := range p.Imports {
				if strings.HasPrefix(imp, atrModule+"/") {
					t.Errorf("%s imports %s: the benchmarks' /proc accounting imports no ATR package", rel, imp)
				}
			}
		}
		if rel == "cmd" || strings.HasPrefix(rel, "cmd/") {
			continue
		}
		allowed, ok := ourImports[rel]
		if !ok {
			t.Errorf("package %s has no entry in ourImports: give it its place in the dependency direction (DESIGN.md, Layout)", rel)
			continue
		}
		for _, imp := range p.Imports {
			if !strings.HasPrefix(imp, atrModule+"/") {
				continue
			}
			if dep := strings.TrimPrefix(imp, atrModule+"/"); !slices.Contains(allowed, dep) {
				t.Errorf("%s imports %s against the dependency direction (allowed: %v)", rel, dep, allowed)
			}
		}
	}
	if seen < len(ourImports) {
		t.Errorf("go list found %d packages, fewer than the %d the table names", seen, len(ourImports))
	}
}
