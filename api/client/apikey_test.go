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
)

const goodKey = "atr_0123456789abcdef_" + "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"

func TestParseAPIKey(t *testing.T) {
	tests := []struct {
		name, key string
		wantID    string // "" → malformed
	}{
		{"well formed", goodKey, "0123456789abcdef"},
		{"empty", "", ""},
		{"null from a failed jq", "null", ""},
		{"no prefix", strings.TrimPrefix(goodKey, "atr_"), ""},
		{"uppercase", strings.ToUpper(goodKey), ""},
		{"short secret", goodKey[:len(goodKey)-1], ""},
		{"long secret", goodKey + "0", ""},
		{"wrong separator", strings.Replace(goodKey, "f_", "f-", 1), ""},
		{"non-hex id", "atr_0123456789abcdeg_" + goodKey[21:], ""},
		{"inner space", goodKey[:30] + " " + goodKey[31:], ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := client.ParseAPIKey(tt.key)
			if tt.wantID == "" {
				if err == nil || !errors.Is(err, client.ErrMalformedAPIKey) {
					t.Fatalf("ParseAPIKey(%q) = %q, %v; want ErrMalformedAPIKey", tt.key, id, err)
				}
				if len(tt.key) > 8 && strings.Contains(err.Error(), tt.key) {
					t.Errorf("the error repeats the key: %v", err)
				}
				return
			}
			if err != nil || id != tt.wantID {
				t.Errorf("ParseAPIKey = %q, %v; want %q, nil", id, err, tt.wantID)
			}
		})
	}
}

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
				if !errors.Is(err, client.ErrMalformedAPIKey) {
					t.Fatalf("New(WithAPIKey(%q)) error = %v; want ErrMalformedAPIKey", tt.key, err)
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
