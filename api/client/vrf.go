package client

import (
	"context"
	"net/http"
)

// VRFIndexRequest is the body of POST /v1/log/vrf: an agent name or a
// namespace inside the API key's namespace.
type VRFIndexRequest struct {
	Name string `json:"name"`
}

// VRFIndexResponse is the VRF index of a name and its proof
// (docs/transparency.md, "Name indexes"). Name is the normalized name the
// index is of; Index is 64 lowercase hex digits, the value log leaves carry
// in name_indexes; Proof is the RSA PKCS#1 v1.5 signature (base64 in JSON)
// that translog.VRFVerify checks against the public VRF key.
type VRFIndexResponse struct {
	Name  string `json:"name"`
	Index string `json:"index"`
	Proof []byte `json:"proof"`
}

// VRFIndex asks for the VRF index and proof of name (owner keys: names
// inside their namespace; admin keys: any name). The caller checks the
// proof with the VRF public key it trusts (VRFKey, or a pinned copy).
func (c *Client) VRFIndex(ctx context.Context, name string) (*VRFIndexResponse, error) {
	var out VRFIndexResponse
	if err := c.doJSON(ctx, http.MethodPost, "/v1/log/vrf", nil, VRFIndexRequest{Name: name}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// VRFKey returns the public name-index VRF key (PEM, GET /v1/log/vrf-key).
func (c *Client) VRFKey(ctx context.Context) ([]byte, error) {
	return c.doBytes(ctx, http.MethodGet, "/v1/log/vrf-key", nil)
}
