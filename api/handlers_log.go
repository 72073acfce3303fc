package api

import (
	"context"
	"fmt"
	"net/http"

	"github.com/agent-trust-registry/atr/api/client"
	"github.com/agent-trust-registry/atr/registry"
)

// ReceiptVerifier is Verify with the certificate's log receipt in the result.
// *registry.Registry implements it; without it, verify answers carry no receipt.
type ReceiptVerifier interface {
	VerifyWithReceipt(ctx context.Context, leafPEM, chainPEM []byte) (*registry.VerifyResult, error)
}

// AgentLogReader opens an agent's log leaves for its owner
// (GET /v1/agents/{name}/log). *registry.Registry implements it; a Lifecycle
// without it answers 501 there.
type AgentLogReader interface {
	OpenedEntries(ctx context.Context, a registry.Actor, name string) ([]registry.OpenedEntry, error)
}

// handleAgentLog serves GET /v1/agents/{name}/log: every leaf of the agent,
// opened, each with a fresh receipt. Owner (agents:read) or admin.
func (s *Server) handleAgentLog(w http.ResponseWriter, r *http.Request) error {
	reader, ok := s.deps.Lifecycle.(AgentLogReader)
	if !ok {
		return errNotImplemented
	}
	name, err := pathName(r)
	if err != nil {
		return err
	}
	entries, err := reader.OpenedEntries(r.Context(), actorOf(r), name)
	if err != nil {
		return fmt.Errorf("api: agent log: %w", err)
	}
	out := client.AgentLog{Entries: make([]client.OpenedEntry, 0, len(entries))}
	for _, e := range entries {
		out.Entries = append(out.Entries, client.OpenedEntry{LeafIndex: e.LeafIndex, Opened: e.Opened, Receipt: e.Receipt})
	}
	writeJSONStatus(w, http.StatusOK, out)
	return nil
}
