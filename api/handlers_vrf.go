package api

import (
	"context"
	"encoding/hex"
	"fmt"
	"net/http"

	"github.com/agent-trust-registry/atr/api/client"
	"github.com/agent-trust-registry/atr/ca"
	"github.com/agent-trust-registry/atr/registry"
)

// VRFIndexer computes name indexes for monitoring owners (POST /v1/log/vrf).
// *registry.Registry implements it; a Lifecycle that does not answers 501 on
// that route.
type VRFIndexer interface {
	// VRFIndex returns the VRF index and proof of name, normalized, for an
	// actor allowed to watch it (an owner key inside its namespace, admin);
	// refusals wrap registry.ErrForbidden, bad names registry.ErrInvalid.
	VRFIndex(ctx context.Context, a registry.Actor, name string) (index [32]byte, proof []byte, err error)
}

// vrfIndexRequest is the body of POST /v1/log/vrf.
type vrfIndexRequest struct {
	Name string `json:"name"`
}

func (q *vrfIndexRequest) Validate() error { return checkName(q.Name) }

// handleVRFKey serves GET /v1/log/vrf-key: the public VRF key, PEM, cacheable
// like the log key.
func (s *Server) handleVRFKey(w http.ResponseWriter, r *http.Request) error {
	if s.deps.Log == nil {
		return errNotImplemented
	}
	pub := s.deps.Log.VRFPublicKeyPEM()
	if len(pub) == 0 {
		return errNotImplemented
	}
	s.cacheable(w, s.cfg.BundleMaxAge)
	writeBytes(w, "application/x-pem-file", pub)
	return nil
}

// handleVRFIndex serves POST /v1/log/vrf: the VRF index and proof of a name
// or namespace the caller may watch.
func (s *Server) handleVRFIndex(w http.ResponseWriter, r *http.Request) error {
	vi, ok := s.deps.Lifecycle.(VRFIndexer)
	if !ok {
		return errNotImplemented
	}
	var req vrfIndexRequest
	if err := readJSON(r, &req); err != nil {
		return err
	}
	if err := req.Validate(); err != nil {
		return err
	}
	index, proof, err := vi.VRFIndex(r.Context(), actorOf(r), req.Name)
	if err != nil {
		return fmt.Errorf("api: vrf index: %w", err)
	}
	// The registry accepted the name, so it normalizes; the response names
	// the normalized form the proof is for.
	name, err := ca.NormalizeAgentName(req.Name)
	if err != nil {
		return fmt.Errorf("api: vrf index: normalizing an accepted name: %w", err)
	}
	writeJSONStatus(w, http.StatusOK, client.VRFIndexResponse{Name: name, Index: hex.EncodeToString(index[:]), Proof: proof})
	return nil
}
