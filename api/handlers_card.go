package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"

	"github.com/agent-trust-registry/atr/ca"
	"github.com/agent-trust-registry/atr/registry"
)

// AgentCards signs A2A agent cards. *registry.Registry implements it; a
// Lifecycle that does not answers 501 on POST /v1/agents/{name}/card.
type AgentCards interface {
	// SignAgentCard checks the card against the agent (identity rule:
	// docs/api.md) and signs it; refusals wrap registry.ErrInvalid,
	// ErrForbidden, ErrNotFound, ErrConflict (agent revoked, no current
	// certificate) and ErrCardSigningDisabled (no card key).
	SignAgentCard(ctx context.Context, a registry.Actor, name string, card []byte) (*registry.SignedCard, error)
}

// cardBodyLimit caps POST /v1/agents/{name}/card: the card is at most
// ca.MaxAgentCardSize bytes.
const cardBodyLimit = ca.MaxAgentCardSize

// errCardsOff is the 503 of a registry without a card key.
var errCardsOff = &apiError{Status: http.StatusServiceUnavailable, Code: CodeUnavailable,
	Message: "agent card signing is not enabled on this registry (no card key)"}

// handleSignCard serves POST /v1/agents/{name}/card: the body is an A2A
// agent card (JSON); the answer is the same card, in RFC 8785 member order,
// with "signatures" holding the registry's one signature (ES256, kid in
// /.well-known/jwks.json, log index in its unprotected header). The caller
// is the owner (agents:write), an admin, or the agent itself over mTLS.
func (s *Server) handleSignCard(w http.ResponseWriter, r *http.Request) error {
	cards, ok := s.deps.Lifecycle.(AgentCards)
	if !ok {
		return errNotImplemented
	}
	name, err := pathName(r)
	if err != nil {
		return err
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		return &apiError{Status: http.StatusUnsupportedMediaType, Code: CodeUnsupportedMediaType, Message: "Content-Type must be application/json"}
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return mbe
		}
		return &apiError{Status: http.StatusBadRequest, Code: CodeInvalidRequest, Message: "could not read the request body", cause: err}
	}
	signed, err := cards.SignAgentCard(r.Context(), actorOf(r), name, body)
	var pe *ca.PolicyError
	switch {
	case errors.Is(err, registry.ErrCardSigningDisabled):
		off := *errCardsOff
		off.cause = err
		return &off
	case errors.As(err, &pe):
		// The card's refusal reason is safe to show (ca.PolicyError never
		// echoes the input) and tells the owner what to fix.
		return &apiError{Status: http.StatusBadRequest, Code: CodeInvalidRequest, Message: "agent card refused: " + pe.Reason, cause: err}
	case err != nil:
		return fmt.Errorf("api: agent card: %w", err)
	}
	writeBytes(w, "application/json", signed.Card)
	return nil
}
