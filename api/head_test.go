package api

import (
	"net/http"
	"testing"
)

// TestHeadOnGetRoutes replays issue 11 item 7: HEAD on a GET route was 405. Every GET
// route answers HEAD with the status and headers GET would give and no body; other
// methods stay 405.
func TestHeadOnGetRoutes(t *testing.T) {
	h := newHarness(t, nil)
	tests := []struct {
		path, key string
		want      int
	}{
		{"/healthz", "", 200},
		{"/v1/ca/bundle", "", 200},
		{"/openapi.json", "", 200},
		{"/metrics", "", 200},
		{"/v1/agents", keyAlice, 200},
		{"/v1/agents", "", 401},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			get := h.do("GET", tt.path, tt.key, nil)
			head := h.do("HEAD", tt.path, tt.key, nil)
			if head.status != tt.want || get.status != tt.want {
				t.Fatalf("HEAD %d, GET %d, want %d", head.status, get.status, tt.want)
			}
			if len(head.body) != 0 {
				t.Errorf("HEAD returned a %d-byte body", len(head.body))
			}
			if g, h := get.header.Get("Content-Type"), head.header.Get("Content-Type"); g != h {
				t.Errorf("HEAD Content-Type %q, GET %q", h, g)
			}
		})
	}
	if r := h.do(http.MethodPut, "/healthz", "", nil); r.status != 405 {
		t.Errorf("PUT /healthz: %d, want 405", r.status)
	}
	if r := h.do(http.MethodHead, "/v1/verify", "", nil); r.status != 405 {
		t.Errorf("HEAD on the POST-only /v1/verify: %d, want 405", r.status)
	}
}
