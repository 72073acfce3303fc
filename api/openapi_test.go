package api

import (
	"context"
	"io"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/gorilla/mux"
)

var muxVarRE = regexp.MustCompile(`\{([A-Za-z0-9_]+):[^}]*\}`)

// TestOpenAPIMatchesRoutes validates the embedded spec and fails when a route has no
// spec entry or the spec names a route that does not exist.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(OpenAPISpec())
	if err != nil {
		t.Fatalf("loading openapi.json: %v", err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatalf("openapi.json does not validate: %v", err)
	}
	if !doc.IsOpenAPI31OrLater() {
		t.Errorf("openapi version %q, want 3.1", doc.OpenAPI)
	}
	inSpec := map[string]bool{}
	for path, item := range doc.Paths.Map() {
		if strings.HasPrefix(path, "/v1/log/tile/") {
			// One mux route serves every C2SP tile shape; the spec lists each shape
			// (TestOpenAPIPathsHoldRealValues checks them against real tile paths).
			path = "/v1/log/tile/{tile}"
		}
		for method := range item.Operations() {
			inSpec[method+" "+path] = true
		}
	}
	s, err := New(Config{TrustDomain: "example.org"}, Deps{Lifecycle: newFake(t), Auth: newFake(t), Admin: newFake(t)}, testLogger(io.Discard))
	if err != nil {
		t.Fatal(err)
	}
	inRouter := map[string]bool{}
	err = s.Router().Walk(func(r *mux.Route, _ *mux.Router, _ []*mux.Route) error {
		tpl, err := r.GetPathTemplate()
		if err != nil {
			return err
		}
		methods, err := r.GetMethods()
		if err != nil {
			return err
		}
		for _, m := range methods {
			if m == "HEAD" {
				continue // every GET route also answers HEAD (TestHeadOnGetRoutes)
			}
			inRouter[m+" "+muxVarRE.ReplaceAllString(tpl, "{$1}")] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	var missing, extra []string
	for k := range inRouter {
		if !inSpec[k] {
			missing = append(missing, k)
		}
	}
	for k := range inSpec {
		if !inRouter[k] {
			extra = append(extra, k)
		}
	}
	sort.Strings(missing)
	sort.Strings(extra)
	if len(missing) > 0 {
		t.Errorf("routes without a spec entry:\n%s", strings.Join(missing, "\n"))
	}
	if len(extra) > 0 {
		t.Errorf("spec entries without a route:\n%s", strings.Join(extra, "\n"))
	}
	if len(inRouter) < 24 {
		t.Errorf("walked %d routes, want ≥ 24", len(inRouter))
	}
}

// The spec's error codes are exactly the package's codes.
func TestOpenAPIErrorCodes(t *testing.T) {
	doc, err := openapi3.NewLoader().LoadFromData(OpenAPISpec())
	if err != nil {
		t.Fatal(err)
	}
	enum := doc.Components.Schemas["Error"].Value.Properties["error"].Value.Properties["code"].Value.Enum
	got := map[string]bool{}
	for _, v := range enum {
		got[v.(string)] = true
	}
	for _, c := range []string{CodeInvalidRequest, CodeRequestTooLarge, CodeUnsupportedMediaType, CodeUnauthenticated,
		CodeForbidden, CodeNotFound, CodeMethodNotAllowed, CodeConflict, CodeRateLimited, CodeInternal, CodeUnavailable, CodeNotImplemented} {
		if !got[c] {
			t.Errorf("spec lacks error code %q", c)
		}
	}
	if len(got) != 12 {
		t.Errorf("spec has %d error codes, want 12", len(got))
	}
}
