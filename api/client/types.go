package client

import (
	"encoding/json"
	"time"
)

// The types below are the JSON wire format of the ATR REST API (see /openapi.json). The
// server encodes its responses with them, so client and server cannot drift apart.

// RegisterRequest is the body of POST /v1/agents. CSR is a PEM "CERTIFICATE REQUEST".
type RegisterRequest struct {
	Name         string            `json:"name"`
	CSR          string            `json:"csr"`
	Capabilities []string          `json:"capabilities,omitempty"`
	Metadata     map[string]string `json:"metadata,omitempty"`
}

// RotateRequest is the body of POST /v1/agents/{name}/rotate.
type RotateRequest struct {
	CSR string `json:"csr"`
}

// RevokeRequest is the body of POST /v1/agents/{name}/revoke. Reason is an RFC 5280
// reason name (for example "keyCompromise", "superseded", "cessationOfOperation").
type RevokeRequest struct {
	Reason string `json:"reason"`
}

// VerifyRequest is the body of POST /v1/verify: a PEM certificate and optionally the
// PEM intermediates the presenter sent with it.
type VerifyRequest struct {
	Certificate string `json:"certificate"`
	Chain       string `json:"chain,omitempty"`
	// Receipt false asks the registry for no log receipt; nil leaves the
	// server's default, a receipt when it has one.
	Receipt *bool `json:"receipt,omitempty"`
}

// CreateAPIKeyRequest is the body of POST /v1/admin/apikeys. ExpiresIn is a Go duration
// ("720h"); empty means the server's default.
type CreateAPIKeyRequest struct {
	Owner     string   `json:"owner"`
	Namespace string   `json:"namespace"`
	Scopes    []string `json:"scopes"`
	ExpiresIn string   `json:"expires_in,omitempty"`
}

// Certificate is the answer to register and rotate: the agent's new certificate.
type Certificate struct {
	Name              string    `json:"name"`
	Owner             string    `json:"owner"`
	Status            string    `json:"status"`
	Serial            string    `json:"serial"`
	FingerprintSHA256 string    `json:"fingerprint_sha256"`
	NotBefore         time.Time `json:"not_before"`
	NotAfter          time.Time `json:"not_after"`
	Certificate       string    `json:"certificate"` // PEM leaf
	Chain             string    `json:"chain"`       // PEM intermediates
	LogIndex          int64     `json:"log_index"`
	// Opened is the log leaf's opening with every VRF proof, and Receipt the
	// receipt a relying party verifies offline (docs/transparency.md). Receipt
	// is absent when the registry could not make one at issuance; fetch it
	// later with AgentLog.
	Opened  json.RawMessage `json:"opened,omitempty"`
	Receipt json.RawMessage `json:"receipt,omitempty"`
}

// AgentLog is the answer of GET /v1/agents/{name}/log: every log leaf of the
// agent, oldest first, opened for its owner, each with a fresh receipt.
type AgentLog struct {
	Entries []OpenedEntry `json:"entries"`
}

// OpenedEntry is one opened leaf of an agent.
type OpenedEntry struct {
	LeafIndex int64           `json:"leaf_index"`
	Opened    json.RawMessage `json:"opened"`
	Receipt   json.RawMessage `json:"receipt"`
}

// Agent is one registered agent.
type Agent struct {
	Name          string            `json:"name"`
	Owner         string            `json:"owner"`
	Status        string            `json:"status"`
	Capabilities  []string          `json:"capabilities"`
	Metadata      map[string]string `json:"metadata"`
	CurrentSerial string            `json:"current_serial,omitempty"`
	CreatedAt     time.Time         `json:"created_at"`
	UpdatedAt     time.Time         `json:"updated_at"`
}

// CertificateRecord is one certificate in an agent's history.
type CertificateRecord struct {
	Serial            string     `json:"serial"`
	FingerprintSHA256 string     `json:"fingerprint_sha256"`
	Status            string     `json:"status"`
	RevocationReason  string     `json:"revocation_reason,omitempty"`
	NotBefore         time.Time  `json:"not_before"`
	NotAfter          time.Time  `json:"not_after"`
	RevokedAt         *time.Time `json:"revoked_at,omitempty"`
	Predecessor       string     `json:"predecessor,omitempty"`
	Successor         string     `json:"successor,omitempty"`
	LogIndex          int64      `json:"log_index"`
}

// AgentDetail is an agent with its certificate history (GET /v1/agents/{name}).
type AgentDetail struct {
	Agent
	Certificates []CertificateRecord `json:"certificates"`
}

// AgentList is one page of GET /v1/agents. NextCursor is empty on the last page.
type AgentList struct {
	Agents     []Agent `json:"agents"`
	NextCursor string  `json:"next_cursor,omitempty"`
}

// VerifyResult is the answer of POST /v1/verify. Reason is set when Verified is false and
// is one of untrusted_chain, expired, not_yet_valid, revoked, superseded,
// unknown_certificate, wrong_usage, issuer_revoked.
type VerifyResult struct {
	Verified          bool       `json:"verified"`
	Agent             string     `json:"agent,omitempty"`
	Status            string     `json:"status,omitempty"`
	Serial            string     `json:"serial,omitempty"`
	FingerprintSHA256 string     `json:"fingerprint_sha256,omitempty"`
	NotAfter          *time.Time `json:"not_after,omitempty"`
	Reason            string     `json:"reason,omitempty"`
	LogIndex          *int64     `json:"log_index,omitempty"`
	// Receipt is the certificate's log receipt when the registry logged it
	// (docs/transparency.md); verify it offline with rp or `atr verify --receipt`.
	Receipt json.RawMessage `json:"receipt,omitempty"`
}

// APIKey describes an API key (never its secret).
type APIKey struct {
	ID         string     `json:"id"`
	Owner      string     `json:"owner"`
	Namespace  string     `json:"namespace"`
	Scopes     []string   `json:"scopes"`
	CreatedAt  time.Time  `json:"created_at"`
	ExpiresAt  *time.Time `json:"expires_at,omitempty"`
	RevokedAt  *time.Time `json:"revoked_at,omitempty"`
	LastUsedAt *time.Time `json:"last_used_at,omitempty"`
}

// APIKeyPage is one page of GET /v1/admin/apikeys. NextCursor is empty on the last page.
type APIKeyPage struct {
	APIKeys    []APIKey `json:"api_keys"`
	NextCursor string   `json:"next_cursor,omitempty"`
}

// CreatedAPIKey is the answer of POST /v1/admin/apikeys: Key is the secret, shown once.
type CreatedAPIKey struct {
	APIKey
	Key string `json:"key"`
}

// AuditEvent is one entry of the audit trail.
type AuditEvent struct {
	ID         int64             `json:"id"`
	Time       time.Time         `json:"time"`
	Actor      string            `json:"actor"`
	ActorOwner string            `json:"actor_owner,omitempty"`
	RequestID  string            `json:"request_id,omitempty"`
	IP         string            `json:"ip,omitempty"`
	Action     string            `json:"action"`
	Target     string            `json:"target,omitempty"`
	Result     string            `json:"result"`
	Metadata   map[string]string `json:"metadata,omitempty"`
	LogIndex   *int64            `json:"log_index,omitempty"`
}

// AuditPage is one page of GET /v1/admin/audit.
type AuditPage struct {
	Events     []AuditEvent `json:"events"`
	NextCursor string       `json:"next_cursor,omitempty"`
}

// LogEntries is the answer of GET /v1/log/entries: the raw leaves [Start, Start+len).
type LogEntries struct {
	Start   int64    `json:"start"`
	Entries [][]byte `json:"entries"` // base64 in JSON
}

// InclusionProof is the answer of GET /v1/log/proof/inclusion.
type InclusionProof struct {
	Index int64    `json:"index"`
	Size  int64    `json:"size"`
	Proof [][]byte `json:"proof"` // 32-byte hashes, base64 in JSON
}

// ConsistencyProof is the answer of GET /v1/log/proof/consistency.
type ConsistencyProof struct {
	Old   int64    `json:"old"`
	New   int64    `json:"new"`
	Proof [][]byte `json:"proof"`
}

// Status is the body of /healthz and /readyz when healthy.
type Status struct {
	Status string `json:"status"`
}

// ErrorBody is the body of every error response.
type ErrorBody struct {
	Error ErrorDetail `json:"error"`
}

// ErrorDetail is the inside of ErrorBody.
type ErrorDetail struct {
	Code      string `json:"code"`
	Message   string `json:"message"`
	RequestID string `json:"request_id"`
}
