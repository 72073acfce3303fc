package ca

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"go/ast"
	"go/importer"
	"go/parser"
	"go/token"
	"go/types"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// The rule (DESIGN.md): nothing is signed by a CA key outside the issuance
// pipeline. Keys on the token are reached only as crypto.Signer values, and
// a crypto.Signer signs only through the calls signingPrimitives names (and
// its own Sign method). TestSignerPaths lists every use of them in the
// module's non-test code, with its enclosing function, and requires the list
// to equal signerAllowList: a new use — like the server certificate that
// cmd/atr once signed with the issuing key directly (testdata/signerpaths/
// bad.go.txt) — fails until it is reviewed and listed, and a listed use that
// disappeared fails too, so the list stays exact.

// signCall is one use (a call or a function value) of a signing primitive.
type signCall struct {
	Func   string // enclosing function, types.Func.FullName: "pkg.F", "(*pkg.T).M"
	Callee string // the primitive: "crypto/x509.CreateCertificate", "Sign on crypto.Signer", …
}

func (c signCall) String() string { return c.Func + " → " + c.Callee }

// atrModule is the module path; the checker shortens it to "atr" in names.
const atrModule = "github.com/agent-trust-registry/atr"

// signingPrimitives are the functions that sign with a crypto.Signer they
// are given (full names; ca.CreateCertificate wraps x509.CreateCertificate).
// Besides them, any method named Sign of a type that implements
// crypto.Signer, or whose signature is crypto.Signer's Sign, is a signing
// primitive ("Sign on <receiver type>").
func signingPrimitives() []string {
	return []string{
		"crypto/x509.CreateCertificate",
		"crypto/x509.CreateRevocationList",
		"crypto/x509.CreateCertificateRequest",
		"crypto.SignMessage",
		"golang.org/x/crypto/ocsp.CreateResponse",
		atrModule + "/ca.CreateCertificate",
		// go-jose signs JWS with a crypto.Signer wrapped by cryptosigner.Opaque.
		"github.com/go-jose/go-jose/v4/cryptosigner.Opaque",
	}
}

// signerAllowList is every reviewed use of a signing primitive in non-test
// code, and why it is allowed. Only methods of ca.Issuer (and the ca
// Responder it hands out for CRLs and OCSP) ever sign with the issuing key;
// the root key signs only in ceremonies; the log, VRF and bench keys are
// other keys.
func signerAllowList() map[signCall]string {
	return map[signCall]string{
		// The issuance pipeline: the issuing key signs prepared (linted,
		// recorded) certificates, CRLs and OCSP responses.
		{"(*atr/ca.Issuer).Sign", "Sign on crypto.Signer"}:                          "the issuing key signs the exact TBSCertificate of a Prepared certificate (agent leaf or server certificate) after it was linted and recorded",
		{"(*atr/ca.Responder).SignCRL", "crypto/x509.CreateRevocationList"}:         "a CA's CRL (issuing CA, an earlier intermediate, or the root in the root-crl ceremony)",
		{"(*atr/ca.Responder).signCRLEncoded", "Sign on crypto.Signer"}:             "the same CRLs once crlTBS encoded one as x509.CreateRevocationList did (crltbs.go); the signature checked as CreateRevocationList checks it",
		{"(*atr/ca.Responder).SignOCSP", "golang.org/x/crypto/ocsp.CreateResponse"}: "a CA's OCSP response",
		// Throwaway keys of package ca.
		{"(*atr/ca.Issuer).lintTemplateAs", "crypto/x509.CreateCertificate"}: "the throwaway lint key, before the real signature",
		{"atr/ca.newLintIssuerCert", "crypto/x509.CreateCertificate"}:        "the throwaway lint key's self-signed issuer",
		{"atr/ca.lintCA", "crypto/x509.CreateCertificate"}:                   "the throwaway lint key signs a ceremony (root or intermediate) template before the real signature",
		{"atr/ca.CreateCertificate", "crypto/x509.CreateCertificate"}:        "the unlinted helper for tests and fixtures; every caller is listed here",
		// Ceremonies: the ROOT key on the root token signs only through
		// ca.CreateRoot and ca.CreateIntermediate (lint, sign, check); cmd/atr
		// has no signing call of its own.
		{"atr/ca.signCA", "crypto/x509.CreateCertificate"}: "root and intermediate ceremonies: the root key signs a linted root or intermediate certificate",
		// Other keys: the transparency log's note keys and its VRF key.
		{"(*atr/registry/translog.noteSigner).Sign", "Sign on crypto.Signer"}:        "the log's ECDSA checkpoint key",
		{"(*atr/registry/translog.ed25519NoteSigner).Sign", "Sign on crypto.Signer"}: "the log's Ed25519 checkpoint key",
		{"atr/registry/translog.signChecked", "Sign on crypto.Signer"}:               "the VRF key (name indexes, VRFProve; the openings' MAC key, VRFSecret)",
		// The A2A agent-card key (ES256 on the online token): a card that passed the identity rule.
		{"atr/ca.SignAgentCard", "Sign on crypto.Signer"}: "the card key signs an agent card's RFC 8785 canonical form (detached JWS), checked after signing",

		// The JWT-SVID key (ES256 on the online token), through go-jose.
		{"(*atr/ca.JWTSigner).IssueJWTSVID", "github.com/go-jose/go-jose/v4/cryptosigner.Opaque"}: "the JWT-SVID key signs a policy-checked JWT-SVID (ES256), checked after signing",

		// Signers wrapping signers: each forwards its own Sign.
		{"(*atr/hsm.Signer).Sign", "Sign on github.com/ThalesGroup/crypto11.Signer"}: "the token signer forwards to crypto11",
		{"(*atr/hsm.instrumentedSigner).Sign", "Sign on crypto.Signer"}:              "hsm.Metrics wrapper: forwards its own Sign",
		{"(*atr/registry/registrytest.FaultySigner).Sign", "Sign on crypto.Signer"}:  "test fixture wrapper: forwards its own Sign",
		// Agents' own keys (CSRs).
		{"atr/agent.NewCSR", "crypto/x509.CreateCertificateRequest"}:                            "an agent's CSR, signed by its own key (package agent; atr agent uses it)",
		{"(*atr/registry/registrytest.Fixture).CSRFor", "crypto/x509.CreateCertificateRequest"}: "test fixture: an agent's CSR",
		{"(*atr/ca/catest.CA).Issue", "crypto/x509.CreateCertificateRequest"}:                   "test CA (package catest, in memory): a test agent's CSR, signed by its own key",
		{"atr/cmd/atr/internal/faults.NewCSR", "crypto/x509.CreateCertificateRequest"}:          "fault tests: an agent's CSR",
		{"atr/cmd/atr-bench.newCSR", "crypto/x509.CreateCertificateRequest"}:                    "benchmark: an agent's CSR",
		// Test and benchmark CAs: keys of their own.
		{"atr/registry/registrytest.NewFixture", "atr/ca.CreateCertificate"}:        "test fixture ceremony: the fixture's root key on its own SoftHSM2 token",
		{"atr/cmd/atr-bench.openTokenBench", "atr/ca.CreateCertificate"}:            "benchmark: the bench's own token key",
		{"(*atr/cmd/atr-bench.tokenBench).sign", "Sign on *atr/hsm.Signer"}:         "benchmark: raw signatures with the bench's own token key",
		{"(*atr/cmd/atr-bench.tokenBench).create", "crypto/x509.CreateCertificate"}: "benchmark: certificates signed by the bench's own token key",
		{"atr/cmd/atr-bench.foreignCertificate", "atr/ca.CreateCertificate"}:        "benchmark: a throwaway foreign CA",
		{"atr/cmd/atr-bench.foreignCertificate", "crypto/x509.CreateCertificate"}:   "benchmark: a leaf of the throwaway foreign CA",
		{"atr/cmd/atr-peerbench.newCSR", "crypto/x509.CreateCertificateRequest"}:    "peer benchmark: a load client's CSR",
		{"atr/cmd/atr-peerbench.cmdStepPKI", "crypto/x509.CreateCertificate"}:       "peer benchmark: step-ca's software root certifies step-ca's intermediate (not ATR's)",
	}
}

// exportedPackages runs `go list -export` over the module and returns the
// export data file of every package in the build (for the importer) and the
// module's own packages (for the checker).
type modulePackage struct {
	ImportPath string
	Dir        string
	GoFiles    []string
	CgoFiles   []string
	Export     string
	Standard   bool
	Module     *struct{ Main bool }
	Error      *struct{ Err string }
}

func listModule(t *testing.T) (root string, pkgs []modulePackage, exports map[string]string) {
	t.Helper()
	if _, err := exec.LookPath("go"); err != nil {
		t.Fatalf("the go command is needed to list the module's packages: %v", err)
	}
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("module root: %v", err)
	}
	cmd := exec.Command("go", "list", "-e", "-deps", "-export", "-json=ImportPath,Dir,GoFiles,CgoFiles,Export,Standard,Module,Error", "./...")
	cmd.Dir = root
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.Bytes())
	}
	exports = map[string]string{}
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p modulePackage
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("go list output: %v", err)
		}
		if p.Error != nil {
			t.Fatalf("go list: package %s: %s", p.ImportPath, p.Error.Err)
		}
		exports[p.ImportPath] = p.Export
		if !p.Standard && p.Module != nil && p.Module.Main {
			pkgs = append(pkgs, p)
		}
	}
	return root, pkgs, exports
}

// signerChecker finds the uses of signing primitives in type-checked Go files.
type signerChecker struct {
	fset       *token.FileSet
	imp        types.Importer
	primitives []string
	signer     *types.Interface // crypto.Signer
	signerSign *types.Signature // crypto.Signer's Sign
}

func newSignerChecker(exports map[string]string) (*signerChecker, error) {
	fset := token.NewFileSet()
	imp := importer.ForCompiler(fset, "gc", func(path string) (io.ReadCloser, error) {
		f, ok := exports[path]
		if !ok || f == "" {
			return nil, fmt.Errorf("no export data for %q", path)
		}
		return os.Open(f)
	})
	cryptoPkg, err := imp.Import("crypto")
	if err != nil {
		return nil, err
	}
	signer := cryptoPkg.Scope().Lookup("Signer").Type().Underlying().(*types.Interface)
	var sign *types.Signature
	for m := range signer.Methods() {
		if m.Name() == "Sign" {
			sign = m.Type().(*types.Signature)
		}
	}
	return &signerChecker{fset: fset, imp: imp, primitives: signingPrimitives(), signer: signer, signerSign: sign}, nil
}

// check type-checks files as package path and returns the uses of signing
// primitives in them, sorted.
func (c *signerChecker) check(path string, files []*ast.File) ([]signCall, error) {
	info := &types.Info{Uses: map[*ast.Ident]types.Object{}, Defs: map[*ast.Ident]types.Object{},
		Selections: map[*ast.SelectorExpr]*types.Selection{}}
	conf := types.Config{Importer: c.imp, FakeImportC: true}
	if _, err := conf.Check(path, c.fset, files, info); err != nil {
		return nil, fmt.Errorf("type-checking %s: %w", path, err)
	}
	short := func(s string) string { return strings.ReplaceAll(s, atrModule, "atr") }
	qual := func(p *types.Package) string { return short(p.Path()) }
	seen := map[signCall]bool{}
	for _, f := range files {
		for _, decl := range f.Decls {
			enclosing := short(path) + ".(package variables)"
			if fd, ok := decl.(*ast.FuncDecl); ok {
				enclosing = short(info.Defs[fd.Name].(*types.Func).FullName())
			}
			ast.Inspect(decl, func(n ast.Node) bool {
				switch n := n.(type) {
				case *ast.Ident:
					if fn, ok := info.Uses[n].(*types.Func); ok && slices.Contains(c.primitives, fn.FullName()) {
						seen[signCall{enclosing, short(fn.FullName())}] = true
					}
				case *ast.SelectorExpr:
					sel, ok := info.Selections[n]
					if !ok || sel.Obj().Name() != "Sign" || (sel.Kind() != types.MethodVal && sel.Kind() != types.MethodExpr) {
						return true
					}
					if types.Implements(sel.Recv(), c.signer) || types.Identical(sel.Obj().Type(), c.signerSign) {
						seen[signCall{enclosing, "Sign on " + types.TypeString(sel.Recv(), qual)}] = true
					}
				}
				return true
			})
		}
	}
	out := make([]signCall, 0, len(seen))
	for k := range seen {
		out = append(out, k)
	}
	slices.SortFunc(out, func(a, b signCall) int { return strings.Compare(a.String(), b.String()) })
	return out, nil
}

// unlisted returns the calls that signerAllowList does not hold.
func unlisted(calls []signCall, allow map[signCall]string) []signCall {
	var out []signCall
	for _, c := range calls {
		if _, ok := allow[c]; !ok {
			out = append(out, c)
		}
	}
	return out
}

// TestSignerPaths: the uses of signing primitives in the module's non-test
// code are exactly signerAllowList.
func TestSignerPaths(t *testing.T) {
	_, pkgs, exports := listModule(t)
	c, err := newSignerChecker(exports)
	if err != nil {
		t.Fatal(err)
	}
	var found []signCall
	for _, p := range pkgs {
		var files []*ast.File
		for _, name := range append(slices.Clone(p.GoFiles), p.CgoFiles...) {
			f, err := parser.ParseFile(c.fset, filepath.Join(p.Dir, name), nil, parser.SkipObjectResolution)
			if err != nil {
				t.Fatal(err)
			}
			files = append(files, f)
		}
		calls, err := c.check(p.ImportPath, files)
		if err != nil {
			t.Fatal(err)
		}
		found = append(found, calls...)
	}
	if len(pkgs) < 10 || len(found) == 0 {
		t.Fatalf("checked %d packages, found %d signing calls: the checker is not looking at the module", len(pkgs), len(found))
	}
	for _, f := range found {
		t.Log(f)
	}
	allow := signerAllowList()
	for _, u := range unlisted(found, allow) {
		t.Errorf("unreviewed signing call: %s (only ca.Issuer signs with the issuing key; add it to signerAllowList only if it signs with another key)", u)
	}
	for a := range allow {
		if !slices.Contains(found, a) {
			t.Errorf("signerAllowList lists %s, which no longer exists: remove it", a)
		}
	}
}

// TestSignerPathChecker runs the checker on Go sources in
// testdata/signerpaths: bad.go.txt is what cmd/atr/tlscert.go did before the
// server certificate went through the registry (the issuing key signing
// directly with x509.CreateCertificate); the others are further ways to
// reach a signer, and good.go.txt uses only the pipeline.
func TestSignerPathChecker(t *testing.T) {
	_, _, exports := listModule(t)
	c, err := newSignerChecker(exports)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		file string
		want []signCall
	}{
		{"bad.go.txt", []signCall{{"(*example.com/bad.selfIssued).issue", "crypto/x509.CreateCertificate"}}},
		{"sign.go.txt", []signCall{
			{"example.com/bad.crl", "crypto/x509.CreateRevocationList"},
			{"example.com/bad.direct", "Sign on crypto.Signer"},
			{"example.com/bad.helper", "atr/ca.CreateCertificate"},
			{"example.com/bad.lookalike", "Sign on example.com/bad.onlySign"},
			{"example.com/bad.message", "crypto.SignMessage"},
			{"example.com/bad.methodValue", "Sign on *crypto/ecdsa.PrivateKey"},
			{"example.com/bad.ocspResponse", "golang.org/x/crypto/ocsp.CreateResponse"},
			{"example.com/bad.value", "crypto/x509.CreateCertificate"},
		}},
		{"good.go.txt", nil},
	}
	allow := signerAllowList()
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			f, err := parser.ParseFile(c.fset, filepath.Join("testdata", "signerpaths", tt.file), nil, parser.SkipObjectResolution)
			if err != nil {
				t.Fatal(err)
			}
			got, err := c.check("example.com/bad", []*ast.File{f})
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("signing calls\n%v\nwant\n%v", got, tt.want)
			}
			if u := unlisted(got, allow); !slices.Equal(u, got) {
				t.Errorf("unlisted(%v) = %v; want every call refused", got, u)
			}
		})
	}
}
