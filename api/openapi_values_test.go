package api

import (
	"context"
	"encoding/base64"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers/gorillamux"
)

// TestOpenAPIPathsHoldRealValues replays issue 11 item 7: /v1/log/tile/{tile} was one
// path parameter, which cannot hold a C2SP tile path ("0/x001/234.p/7" has "/" inside),
// so an OpenAPI validator refused every real tile request. Each real request below must
// be found by kin-openapi's router and pass request validation.
func TestOpenAPIPathsHoldRealValues(t *testing.T) {
	doc, err := openapi3.NewLoader().LoadFromData(OpenAPISpec())
	if err != nil {
		t.Fatal(err)
	}
	doc.Servers = openapi3.Servers{{URL: "https://atr.example"}}
	router, err := gorillamux.NewRouter(doc)
	if err != nil {
		t.Fatalf("building a router from the spec: %v", err)
	}
	// A real OCSP request has '/' and '+' in standard base64 for most serials.
	der := []byte{0x30, 0x42, 0xff, 0xfe, 0xfb, 0x3f, 0x00, 0x7e}
	std := base64.StdEncoding.EncodeToString(der)
	if !strings.ContainsAny(std, "/+") {
		t.Fatalf("fixture %q has no '/' or '+'", std)
	}
	tests := []struct {
		path, wantOp string
	}{
		{"/v1/log/tile/0/000", "getLogTile1"},
		{"/v1/log/tile/0/000.p/5", "getLogTile1Partial"},
		{"/v1/log/tile/1/x001/234", "getLogTile2"},
		{"/v1/log/tile/0/x001/234.p/255", "getLogTile2Partial"},
		{"/v1/log/tile/2/x001/x002/x003/004", "getLogTile4"},
		{"/v1/log/tile/entries/000", "getLogEntryBundle1"},
		{"/v1/log/tile/entries/x001/234.p/7", "getLogEntryBundle2Partial"},
		{"/v1/ocsp/" + base64.RawURLEncoding.EncodeToString(der), "ocspGet"},
		{"/v1/ocsp/" + strings.NewReplacer("/", "%2F", "+", "%2B", "=", "%3D").Replace(std), "ocspGet"},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			req := httptest.NewRequest(http.MethodGet, "https://atr.example"+tt.path, nil)
			route, params, err := router.FindRoute(req)
			if err != nil {
				t.Fatalf("FindRoute: %v", err)
			}
			if route.Operation.OperationID != tt.wantOp {
				t.Errorf("operation %s, want %s", route.Operation.OperationID, tt.wantOp)
			}
			in := &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route,
				Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc}}
			if err := openapi3filter.ValidateRequest(context.Background(), in); err != nil {
				t.Errorf("ValidateRequest: %v", err)
			}
		})
	}
	// And a shape that is not a tile stays outside the spec.
	req := httptest.NewRequest(http.MethodGet, "https://atr.example/v1/log/tile/0/x001/234/567/890/123", nil)
	if route, params, err := router.FindRoute(req); err == nil {
		in := &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route,
			Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc}}
		if openapi3filter.ValidateRequest(context.Background(), in) == nil {
			t.Errorf("malformed tile path %s validated as %s", req.URL.Path, route.Operation.OperationID)
		}
	}
}
