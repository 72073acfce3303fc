package api

import (
	"context"
	"strings"
	"testing"

	"github.com/agent-trust-registry/atr/api/client"
	"github.com/agent-trust-registry/atr/registry"
	"github.com/agent-trust-registry/atr/registry/registrytest"
)

var _ APIKeyLister = (*registry.Registry)(nil)

// TestListAPIKeysOverHTTPS (issue 11 item 13): GET /v1/admin/apikeys pages
// through every key for an admin, never shows a secret, and refuses owners.
func TestListAPIKeysOverHTTPS(t *testing.T) {
	for _, db := range registrytest.Databases() {
		t.Run(db, func(t *testing.T) {
			ctx := context.Background()
			rs := newRealServer(t, db)
			adminKey := rs.f.NewAPIKey("ops", "", registry.ScopeAdmin)
			admin := rs.client(t, client.WithAPIKey(adminKey))
			aliceKey := rs.f.NewAPIKey("alice", "alice", registry.ScopeAgentsRead, registry.ScopeAgentsWrite)
			alice := rs.client(t, client.WithAPIKey(aliceKey))
			secrets := []string{adminKey, aliceKey}
			for range 3 {
				k, err := admin.CreateAPIKey(ctx, client.CreateAPIKeyRequest{Owner: "acme", Namespace: "acme", Scopes: []string{"agents:read"}})
				if err != nil {
					t.Fatal(err)
				}
				secrets = append(secrets, k.Key)
			}
			var got []client.APIKey
			cursor := ""
			for {
				page, err := admin.ListAPIKeys(ctx, cursor, 2)
				if err != nil {
					t.Fatalf("ListAPIKeys(%q): %v", cursor, err)
				}
				got = append(got, page.APIKeys...)
				if page.NextCursor == "" {
					break
				}
				cursor = page.NextCursor
			}
			if len(got) != len(secrets) {
				t.Fatalf("listed %d keys, want %d", len(got), len(secrets))
			}
			for _, k := range got {
				for _, s := range secrets {
					if strings.Contains(k.ID, s[len("atr_")+17:]) || k.Owner == "" {
						t.Errorf("key %+v: reveals a secret or lacks its owner", k)
					}
				}
			}
			_, err := alice.ListAPIKeys(ctx, "", 0)
			wantCode(t, "owner lists api keys", err, 403, CodeForbidden)
			_, err = admin.ListAPIKeys(ctx, "not-a-cursor", 0)
			wantCode(t, "bad cursor", err, 400, CodeInvalidRequest)
		})
	}
}

// An Admin without ListAPIKeys answers 501, not 500.
func TestListAPIKeysNotImplemented(t *testing.T) {
	h := newHarness(t, nil)
	if r := h.do("GET", "/v1/admin/apikeys", keyAdmin, nil); r.status != 501 {
		t.Errorf("GET /v1/admin/apikeys on an Admin without a lister: %d, want 501", r.status)
	}
	if r := h.do("GET", "/v1/admin/apikeys", keyAlice, nil); r.status != 403 {
		t.Errorf("owner: %d, want 403", r.status)
	}
}
