package registry

import (
	"context"
	"crypto/x509"
	"fmt"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/agent-trust-registry/atr/ca"
	"github.com/agent-trust-registry/atr/registry/translog"
)

// normalizeReason maps an RFC 5280 reason name (case-insensitive; "" →
// "unspecified") to its canonical spelling through ca's mapping, which refuses
// certificateHold and removeFromCRL (revocation is terminal).
func normalizeReason(reason string) (string, error) {
	if reason == "" {
		return "unspecified", nil
	}
	code, err := ca.ReasonCode(reason)
	if err != nil {
		return "", invalid("reason", err)
	}
	return ca.ReasonName(code), nil
}

// Revoke revokes an agent: its current certificate and every superseded one
// still in its grace period become revoked with reason, each with its own log
// entry, and the agent becomes revoked for good (no rotation afterwards).
// Owner (agents:write) or admin only; other owners' agents are ErrNotFound.
// Revoking a revoked agent changes nothing and returns it.
func (r *Registry) Revoke(ctx context.Context, a Actor, name, reason string) (*Agent, error) {
	norm, err := ca.NormalizeAgentName(name)
	if err != nil {
		return nil, invalid("name", err)
	}
	name = norm
	reason, err = normalizeReason(reason)
	if err != nil {
		return nil, err
	}
	agent, err := r.authorizeAgent(ctx, a, ActionRevoke, name, false)
	if err != nil {
		return nil, err
	}
	proofs, err := r.nameProofs(ctx, name, true) // on the token: before any transaction
	if err != nil {
		return nil, err
	}
	now := r.now()
	noop := false
	var revoked []string
	err = r.store.inTx(ctx, "revoke", func(tx *sqlx.Tx) error {
		if err := r.tlog.lockHead(ctx, tx); err != nil { // before the agent's row
			return err
		}
		cur, err := r.loadAgent(ctx, tx, name, true)
		if err != nil {
			return err
		}
		if cur.Status == AgentRevoked {
			noop = true
			*agent = *cur
			return nil
		}
		live, err := certs(tx).Unrevoked(ctx, name, now)
		if err != nil {
			return wrap("revoke", err)
		}
		var first *int64
		for _, c := range live {
			cert, err := x509.ParseCertificate(c.DER)
			if err != nil {
				return fmt.Errorf("registry: revoke: stored certificate %s: %v", c.Serial, err)
			}
			leaf, err := r.appendAgentEvent(ctx, tx, agentEvent{typ: translog.EventRevoke, time: now, name: name, cert: cert, proofs: proofs, reason: reason})
			if err != nil {
				return dbErr("revoke: log", err)
			}
			idx := leaf.opened.LeafIndex
			if first == nil || c.Serial == cur.CurrentSerial {
				first = &idx
			}
			if err := certs(tx).Revoke(ctx, c.Serial, reason, now); err != nil {
				return wrap("revoke", err)
			}
			revoked = append(revoked, c.Serial)
		}
		if _, err := tx.ExecContext(ctx, tx.Rebind(`UPDATE agents SET status = ?, updated_at = ? WHERE name = ?`),
			AgentRevoked, dbTime(now), name); err != nil {
			return dbErr("revoke: updating agent", err)
		}
		cur.Status, cur.UpdatedAt = AgentRevoked, dbTime(now)
		*agent = *cur
		return r.writeAudit(ctx, tx, a, ActionRevoke, name, ResultSuccess, map[string]string{
			"reason": reason, "serials": strings.Join(revoked, " ")}, first)
	})
	r.status.clear() // this replica's Verify reflects the revocation at once
	r.notify.ownChange()
	if err != nil {
		return nil, err
	}
	if noop {
		r.auditBestEffort(ctx, a, ActionRevoke, name, ResultNoop, map[string]string{"reason": reason})
		return agent, nil
	}
	r.log.WithFields(map[string]any{"agent": name, "reason": reason, "actor": a.label(), "request_id": a.RequestID}).Info("agent revoked")
	return agent, nil
}

// Reconcile settles pending issuances older than PendingTimeout, left by a
// crash (or a failure) between "pending" and "issued": a row whose
// certificate is stored becomes issued; any other row becomes abandoned and
// is audited. Pending server certificates (servercert.go) are abandoned the
// same way. Nothing is ever re-signed, and an abandoned certificate never
// reached a client (responses are sent only after the issuing transaction
// commits). Safe to run from several replicas at once. It returns the number
// of rows settled.
func (r *Registry) Reconcile(ctx context.Context) (int, error) {
	cutoff := dbTime(r.now().Add(-r.cfg.PendingTimeout))
	rows, err := certs(r.store.db).StalePending(ctx, cutoff)
	if err != nil {
		return 0, wrap("reconcile", err)
	}
	settled := 0
	sys := SystemActor()
	for _, p := range rows {
		did := false
		err := r.store.inTx(ctx, "reconcile", func(tx *sqlx.Tx) error {
			stored, err := certs(tx).Exists(ctx, p.Serial)
			if err != nil {
				return wrap("reconcile", err)
			}
			state := pendingAbandoned
			if stored {
				state = pendingIssued
			}
			if ok, err := certs(tx).SettlePending(ctx, p.Serial, state, r.now()); err != nil {
				return wrap("reconcile", err)
			} else if !ok {
				return nil // settled by someone else
			}
			did = true
			result := ResultAbandoned
			if state == pendingIssued {
				result = ResultSuccess
			}
			return r.writeAudit(ctx, tx, sys, ActionReconcile, p.Agent, result, map[string]string{
				"serial": p.Serial, "kind": p.Kind, "owner": p.Owner, "state": state}, nil)
		})
		if err != nil {
			return settled, err
		}
		if did {
			settled++
			r.log.WithFields(map[string]any{"serial": p.Serial, "agent": p.Agent}).Warn("reconciled pending issuance")
		}
	}
	n, err := r.reconcileServerCerts(ctx) // the server's own TLS certificates (servercert.go)
	return settled + n, err
}

// PendingIssuance is a row of pending_issuances, for operators and tests.
type PendingIssuance struct {
	Serial, Agent, Owner, Kind, State string
	TBS                               []byte
	CreatedAt                         time.Time
}

// PendingIssuances lists issuance records (all states), oldest first.
func (s *Store) PendingIssuances(ctx context.Context) ([]PendingIssuance, error) {
	rows, err := certs(s.db).Pending(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]PendingIssuance, len(rows))
	for i, p := range rows {
		out[i] = PendingIssuance{Serial: p.Serial, Agent: p.Agent, Owner: p.Owner, Kind: p.Kind, State: p.State, TBS: p.TBS, CreatedAt: p.CreatedAt.UTC()}
	}
	return out, nil
}
