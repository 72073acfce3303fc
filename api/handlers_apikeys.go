package api

import (
	"context"
	"fmt"
	"net/http"

	"github.com/agent-trust-registry/atr/api/client"
	"github.com/agent-trust-registry/atr/registry"
)

// APIKeyLister lists API keys (GET /v1/admin/apikeys). *registry.Registry
// implements it; an Admin that does not answers 501 on that route.
type APIKeyLister interface {
	// ListAPIKeys returns one page of keys (admin only), never a secret or a
	// hash, and the cursor of the next page ("" on the last).
	ListAPIKeys(ctx context.Context, a registry.Actor, cursor string, limit int) ([]registry.APIKey, string, error)
}

// handleListAPIKeys serves GET /v1/admin/apikeys: one page of API keys,
// ordered by id, with the cursor of the next.
func (s *Server) handleListAPIKeys(w http.ResponseWriter, r *http.Request) error {
	lister, ok := s.deps.Admin.(APIKeyLister)
	if !ok {
		return errNotImplemented
	}
	cursor, limit, err := pageParams(r)
	if err != nil {
		return err
	}
	keys, next, err := lister.ListAPIKeys(r.Context(), actorOf(r), cursor, limit)
	if err != nil {
		return fmt.Errorf("api: list api keys: %w", err)
	}
	out := client.APIKeyPage{APIKeys: make([]client.APIKey, 0, len(keys)), NextCursor: next}
	for i := range keys {
		out.APIKeys = append(out.APIKeys, apiKeyBody(&keys[i]))
	}
	writeJSONStatus(w, http.StatusOK, out)
	return nil
}
