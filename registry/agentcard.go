package registry

import (
	"context"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/jmoiron/sqlx"

	"github.com/agent-trust-registry/atr/ca"
	"github.com/agent-trust-registry/atr/registry/translog"
)

// Signed A2A agent cards (issue 16; docs/api.md, "Signed A2A agent cards").

// MetadataA2AURL is the agent metadata key holding the https URL prefix
// under which the agent's A2A endpoints live; its owner sets it when
// registering the agent. Without it no card is signed for the agent.
const MetadataA2AURL = "a2a_url"

// ErrCardSigningDisabled is wrapped (together with ErrUnavailable) by
// SignAgentCard when the registry has no card key.
var ErrCardSigningDisabled = errors.New("registry: agent card signing is off (no card key; run 'atr ceremony card-key')")

// ActionSignCard is the audit action of SignAgentCard.
const ActionSignCard = "agent.card"

// CardLogIndexHeader is the member of the signature's unprotected JWS header
// that carries the log index of the agent_card entry.
const CardLogIndexHeader = "atr_log_index"

// SignedCard is an agent card signed by the registry.
type SignedCard struct {
	// Card is the card as signed (RFC 8785 member order) with one entry in
	// "signatures": the registry's, its unprotected header carrying
	// {"atr_log_index": LogIndex}.
	Card []byte
	// LogIndex is the index of the agent_card log entry.
	LogIndex int64
	// DigestSHA256 is the SHA-256 (hex) of the card's canonical form, the
	// entry's card_sha256.
	DigestSHA256 string
	// KeyID is the signature's kid (the card key's JWK thumbprint).
	KeyID string
	// Fingerprint and Serial are those of the agent's current certificate,
	// the one the log entry names.
	Fingerprint, Serial string
}

// SignAgentCard checks an A2A agent card against the agent it is for and
// signs it with the card key on the token. The steps:
//
//  1. The card key must be configured (else ErrCardSigningDisabled and
//     ErrUnavailable).
//  2. Authorize like Rotate: the owner's key (agents:write, the agent in
//     its namespace), an admin, or the agent itself over mTLS.
//  3. The agent is active (else ErrConflict) and its current certificate is
//     issued, not revoked and inside its validity (else ErrConflict).
//  4. Parse the card strictly (ca.ParseAgentCard) and check its identity:
//     "name" equals the agent's name; the agent's metadata holds
//     MetadataA2AURL; every supportedInterfaces url lies under that https
//     prefix (ca.CheckAgentCardURL). Any failure is ErrInvalid.
//  5. Compute the name's VRF proofs and sign the canonical card (ES256 on
//     the token; the signature is checked).
//  6. In one transaction, with the agent row locked and its current
//     certificate unchanged: append the agent_card log entry (certificate
//     fingerprint, issuer key ID, name indexes, card_sha256: no plaintext)
//     and its opening, and the audit event with the log index.
//  7. Return the card with the signature, the log index in its unprotected
//     header, only after the commit.
func (r *Registry) SignAgentCard(ctx context.Context, a Actor, name string, card []byte) (*SignedCard, error) {
	if r.cfg.CardSigner == nil {
		return nil, fmt.Errorf("registry: agent card: %w: %w", bare(ErrCardSigningDisabled), bare(ErrUnavailable))
	}
	norm, err := ca.NormalizeAgentName(name)
	if err != nil {
		return nil, invalid("name", err)
	}
	name = norm
	agent, err := r.authorizeAgent(ctx, a, ActionSignCard, name, true)
	if err != nil {
		return nil, err
	}
	if agent.Status != AgentActive {
		return nil, fmt.Errorf("registry: agent card: agent %s is revoked: %w", name, bare(ErrConflict))
	}
	now := r.now()
	cur, err := certs(r.store.db).BySerial(ctx, agent.CurrentSerial)
	if err != nil {
		return nil, wrap("agent card: reading the current certificate", err)
	}
	if cur.Status != CertIssued || now.Before(cur.NotBefore) || !now.Before(cur.NotAfter) {
		return nil, fmt.Errorf("registry: agent card: agent %s has no current certificate: %w", name, bare(ErrConflict))
	}
	c, err := ca.ParseAgentCard(card)
	if err != nil {
		return nil, invalid("card", err)
	}
	if err := checkCardIdentity(c, name, agent.Metadata); err != nil {
		return nil, err
	}
	digest, err := c.Digest()
	if err != nil {
		return nil, invalid("card", err)
	}
	der, err := certs(r.store.db).DER(ctx, cur.Serial)
	if err != nil {
		return nil, wrap("agent card: reading the current certificate", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("registry: agent card: stored certificate %s: %v", cur.Serial, err)
	}
	proofs, err := r.nameProofs(ctx, name, true) // on the token: before any transaction
	if err != nil {
		return nil, err
	}
	sig, err := ca.SignAgentCard(r.cfg.CardSigner, c, nil)
	if err != nil {
		return nil, fmt.Errorf("registry: agent card: %v: %w", err, bare(ErrUnavailable))
	}
	out := &SignedCard{DigestSHA256: hex.EncodeToString(digest[:]), Fingerprint: cur.Fingerprint, Serial: cur.Serial}
	out.KeyID, err = ca.JWKThumbprint(r.cfg.CardSigner.Public())
	if err != nil {
		return nil, fmt.Errorf("registry: agent card: %w", err)
	}
	err = r.store.inTx(ctx, "agent card", func(tx *sqlx.Tx) error {
		if err := r.tlog.lockHead(ctx, tx); err != nil { // before the agent's row
			return err
		}
		locked, err := r.loadAgent(ctx, tx, name, true)
		if err != nil {
			return err
		}
		if locked.Status != AgentActive || locked.CurrentSerial != cur.Serial {
			return fmt.Errorf("registry: agent card: agent %s changed concurrently: %w", name, bare(ErrConflict))
		}
		leaf, err := r.appendAgentEvent(ctx, tx, agentEvent{typ: translog.EventAgentCard, time: now, name: name, cert: cert,
			proofs: proofs, card: out.DigestSHA256})
		if err != nil {
			return dbErr("agent card: log", err)
		}
		idx := leaf.opened.LeafIndex
		out.LogIndex = idx
		return r.writeAudit(ctx, tx, a, ActionSignCard, name, ResultSuccess, map[string]string{
			"card_sha256": out.DigestSHA256, "serial": cur.Serial, "kid": out.KeyID}, &idx)
	})
	if err != nil {
		return nil, err
	}
	r.notify.ownChange()
	sig.Header = map[string]any{CardLogIndexHeader: out.LogIndex}
	if out.Card, err = c.JSON(sig); err != nil {
		return nil, fmt.Errorf("registry: agent card: %w", err)
	}
	r.log.WithFields(map[string]any{"agent": name, "serial": cur.Serial, "actor": a.label(), "request_id": a.RequestID,
		"log_index": out.LogIndex}).Info("agent card signed")
	return out, nil
}

// checkCardIdentity is the identity rule of signed cards: the card's name is
// the agent's name, and every interface URL lies under the agent's
// registered MetadataA2AURL.
func checkCardIdentity(c *ca.AgentCard, name string, md map[string]string) error {
	if c.Name != name {
		return invalid("card", &ca.PolicyError{Field: "card", Reason: "name is not the agent's name"})
	}
	prefix := md[MetadataA2AURL]
	if prefix == "" {
		return invalid("card", &ca.PolicyError{Field: MetadataA2AURL, Reason: "the agent has no " + MetadataA2AURL + " metadata"})
	}
	for _, u := range c.InterfaceURLs {
		if err := ca.CheckAgentCardURL(prefix, u); err != nil {
			return invalid("card", err)
		}
	}
	return nil
}
