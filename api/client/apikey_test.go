package client_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/agent-trust-registry/atr/api/client"
	"github.com/agent-trust-registry/atr/registry/apikey"
)

const goodKey = "atr_0123456789abcdef_" + "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"

// TestMalformedAPIKeyNeverSent replays issue 11 item 11: a malformed key (such as "null"
// written by a failed jq) was sent and counted toward the caller's IP lockout. The
// client refuses it before any request.
func TestMalformedAPIKeyNeverSent(t *testing.T) {
	var requests atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		w.WriteHeader(http.StatusUnauthorized)
	}))
	defer srv.Close()
	tests := []struct {
		key     string
		wantErr bool
	}{
		{"null", true},
		{"null\n", true},
		{"", true},
		{"atr_admin_0123", true},
		{goodKey + "\n", false},
	}
	for _, tt := range tests {
		t.Run(strings.TrimSpace(tt.key), func(t *testing.T) {
			c, err := client.New(srv.URL, client.WithAPIKey(tt.key))
			if tt.wantErr {
				if !errors.Is(err, apikey.ErrMalformed) {
					t.Fatalf("New(WithAPIKey(%q)) error = %v; want apikey.ErrMalformed", tt.key, err)
				}
				if got := requests.Load(); got != 0 {
					t.Errorf("%d requests reached the server; want 0", got)
				}
				return
			}
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			_ = c
		})
	}
}

func TestListAPIKeys(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet || r.URL.Path != "/v1/admin/apikeys" {
			http.NotFound(w, r)
			return
		}
		if got, want := r.URL.Query().Get("cursor"), "c1"; got != want {
			t.Errorf("cursor %q, want %q", got, want)
		}
		if got, want := r.Header.Get("Authorization"), "Bearer "+goodKey; got != want {
			t.Errorf("Authorization %q, want %q", got, want)
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"api_keys":[{"id":"0123456789abcdef","owner":"acme","namespace":"acme","scopes":["agents:read"],"created_at":"2026-03-01T12:00:00Z"}],"next_cursor":"c2"}`))
	}))
	defer srv.Close()
	c, err := client.New(srv.URL, client.WithAPIKey(goodKey))
	if err != nil {
		t.Fatal(err)
	}
	page, err := c.ListAPIKeys(context.Background(), "c1", 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(page.APIKeys) != 1 || page.APIKeys[0].ID != "0123456789abcdef" || page.NextCursor != "c2" {
		t.Errorf("page = %+v", page)
	}
}
