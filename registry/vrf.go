package registry

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"

	"github.com/agent-trust-registry/atr/ca"
)

// ActionVRFIndex is the audit action of a VRFIndex request (refusals are
// audited, like the other reads).
const ActionVRFIndex = "log.vrf_index"

// VRFPublicKeyPEM returns the public half of the name-index VRF key (PKIX,
// PEM; GET /v1/log/vrf-key) or nil when the registry has no VRF key.
func (r *Registry) VRFPublicKeyPEM() []byte {
	if r.cfg.VRFSigner == nil {
		return nil
	}
	der, err := x509.MarshalPKIXPublicKey(r.cfg.VRFSigner.Public())
	if err != nil {
		// New checked the key (translog.CheckVRFKey): an RSA key always encodes.
		r.log.WithError(err).Error("encoding the VRF public key")
		return nil
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// VRFIndex returns the VRF index of name (an agent name or a namespace, which
// is normalized first) and its proof (docs/transparency.md, "Name indexes"),
// so that the holder of a namespace can find the log entries of its names
// and check the index with the public VRF key.
//
// Authorization is the namespace rule of Register with read scope: an owner
// key (agents:read or agents:write) may ask only for names inside its
// namespace (the namespace itself included); an admin key for any name;
// agents over mTLS and other callers never. A refusal is ErrForbidden and
// is audited. The name need not be registered (an owner watches names it
// did not register). Without a VRF key the result is ErrUnavailable.
func (r *Registry) VRFIndex(ctx context.Context, a Actor, name string) (index [32]byte, proof []byte, err error) {
	if !a.can(ScopeAgentsRead) || (!a.IsAdmin() && (a.Owner == "" || a.Namespace == "")) {
		return index, nil, r.deny(ctx, a, ActionVRFIndex, name, wrap("vrf index", ErrForbidden))
	}
	norm, err := ca.NormalizeAgentName(name)
	if err != nil {
		return index, nil, invalid("name", err)
	}
	if !a.IsAdmin() && !inNamespace(norm, a.Namespace, false) {
		return index, nil, r.deny(ctx, a, ActionVRFIndex, norm, fmt.Errorf("registry: vrf index: name outside the key's namespace: %w", ErrForbidden))
	}
	out, err := r.vrfOf(norm) // cached: repeated asks cost no signature
	if err != nil {
		return index, nil, fmt.Errorf("registry: vrf index: %w", err)
	}
	return out.index, out.proof, nil
}
