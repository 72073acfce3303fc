package registry

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/agent-trust-registry/atr/ca"
)

type agentRow struct {
	Name          string    `db:"name"`
	Owner         string    `db:"owner"`
	Status        string    `db:"status"`
	Capabilities  string    `db:"capabilities"`
	Metadata      string    `db:"metadata"`
	CurrentSerial *string   `db:"current_serial"`
	CreatedAt     time.Time `db:"created_at"`
	UpdatedAt     time.Time `db:"updated_at"`
}

const agentColumns = `name, owner, status, capabilities, metadata, current_serial, created_at, updated_at`

func (row agentRow) agent() (*Agent, error) {
	a := &Agent{Name: row.Name, Owner: row.Owner, Status: row.Status, CreatedAt: row.CreatedAt.UTC(), UpdatedAt: row.UpdatedAt.UTC()}
	if row.CurrentSerial != nil {
		a.CurrentSerial = *row.CurrentSerial
	}
	if err := json.Unmarshal([]byte(row.Capabilities), &a.Capabilities); err != nil {
		return nil, fmt.Errorf("registry: agent %s: decoding capabilities: %v", row.Name, err)
	}
	if err := json.Unmarshal([]byte(row.Metadata), &a.Metadata); err != nil {
		return nil, fmt.Errorf("registry: agent %s: decoding metadata: %v", row.Name, err)
	}
	return a, nil
}

// loadAgent reads one agent (locking its row on PostgreSQL when lock).
func (r *Registry) loadAgent(ctx context.Context, q sqlx.ExtContext, name string, lock bool) (*Agent, error) {
	query := `SELECT ` + agentColumns + ` FROM agents WHERE name = ?`
	if lock {
		query += forUpdate(r.store.dialect)
	}
	var row agentRow
	if err := sqlx.GetContext(ctx, q, &row, q.Rebind(query), name); err != nil {
		return nil, dbErr("agent "+name, err)
	}
	return row.agent()
}

// loadAgentAndCurrent reads the agent name and, in the same statement, the
// fingerprint of its current certificate (nil when it has none, or when
// that certificate's row is missing).
func (r *Registry) loadAgentAndCurrent(ctx context.Context, name string) (*Agent, *string, error) {
	row, fp, err := certs(r.store.db).AgentAndCurrent(ctx, name)
	if err != nil {
		return nil, nil, dbErr("agent "+name, err)
	}
	a, err := row.agent()
	return a, fp, err
}

// ListAgents lists agents by name: the actor's own (agents:read), or all for
// an admin (SEC-021, SEC-026). cursor is the opaque value a previous call
// returned ("" to start); an invalid cursor is ErrInvalid. limit defaults to
// 50 and is capped at 100 (SEC-027). The second result is the next cursor,
// "" after the last page.
func (r *Registry) ListAgents(ctx context.Context, a Actor, cursor string, limit int) ([]Agent, string, error) {
	if !a.can(ScopeAgentsRead) || (!a.IsAdmin() && a.Owner == "") {
		return nil, "", r.deny(ctx, a, ActionListAgents, "", fmt.Errorf("registry: list agents: %w", bare(ErrForbidden)))
	}
	limit, err := pageLimit(limit)
	if err != nil {
		return nil, "", err
	}
	after := ""
	if cursor != "" {
		raw, err := base64.RawURLEncoding.DecodeString(cursor)
		if err != nil {
			return nil, "", invalid("cursor", nil)
		}
		if after, err = ca.NormalizeAgentName(string(raw)); err != nil || after != string(raw) {
			return nil, "", invalid("cursor", nil)
		}
	}
	q := `SELECT ` + agentColumns + ` FROM agents WHERE name > ?`
	args := []any{after}
	if !a.IsAdmin() {
		// The owner's agents inside the key's namespace (names are
		// [a-z0-9.-], so the namespace holds no LIKE metacharacters).
		q += ` AND owner = ? AND (name = ? OR name LIKE ?)`
		args = append(args, a.Owner, a.Namespace, "%."+a.Namespace)
	}
	q += ` ORDER BY name LIMIT ?`
	args = append(args, limit+1)
	var rows []agentRow
	if err := r.store.db.SelectContext(ctx, &rows, r.store.db.Rebind(q), args...); err != nil {
		return nil, "", dbErr("list agents", err)
	}
	return page(rows, limit, func(row agentRow) string { return row.Name }, agentRow.agent)
}

// page cuts rows read with LIMIT limit+1 to one page: the items conv makes of them and
// the opaque cursor after the last one, from key ("" when there is no further page).
func page[R, T any](rows []R, limit int, key func(R) string, conv func(R) (*T, error)) ([]T, string, error) {
	next := ""
	if len(rows) > limit {
		rows = rows[:limit]
		next = base64.RawURLEncoding.EncodeToString([]byte(key(rows[len(rows)-1])))
	}
	out := make([]T, 0, len(rows))
	for _, row := range rows {
		v, err := conv(row)
		if err != nil {
			return nil, "", err
		}
		out = append(out, *v)
	}
	return out, next, nil
}

// GetAgent returns an agent with its certificate history (oldest first).
// Owner (agents:read) or admin; an agent of another owner is ErrNotFound,
// exactly like a missing one (SEC-010).
func (r *Registry) GetAgent(ctx context.Context, a Actor, name string) (*AgentDetail, error) {
	norm, err := ca.NormalizeAgentName(name)
	if err != nil {
		return nil, fmt.Errorf("registry: get agent: %w", bare(ErrNotFound))
	}
	agent, err := r.authorizeAgent(ctx, a, ActionGetAgent, norm, false)
	if err != nil {
		return nil, err
	}
	rows, err := certs(r.store.db).History(ctx, norm)
	if err != nil {
		return nil, wrap("get agent", err)
	}
	d := &AgentDetail{Agent: *agent}
	for _, row := range rows {
		d.Certificates = append(d.Certificates, row.record())
	}
	return d, nil
}

// CurrentCertificate returns the PEM of an agent's current certificate, with
// the same authorization as GetAgent.
func (r *Registry) CurrentCertificate(ctx context.Context, a Actor, name string) (string, error) {
	norm, err := ca.NormalizeAgentName(name)
	if err != nil {
		return "", fmt.Errorf("registry: current certificate: %w", bare(ErrNotFound))
	}
	agent, err := r.authorizeAgent(ctx, a, ActionGetAgent, norm, false)
	if err != nil {
		return "", err
	}
	der, err := certs(r.store.db).DER(ctx, agent.CurrentSerial)
	if err != nil {
		return "", wrap("current certificate", err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})), nil
}
