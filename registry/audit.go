package registry

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/agent-trust-registry/atr/registry/redact"
)

// Audit actions.
const (
	ActionRegister     = "agent.register"
	ActionRotate       = "agent.rotate"
	ActionRevoke       = "agent.revoke"
	ActionGetAgent     = "agent.get"
	ActionListAgents   = "agent.list"
	ActionReconcile    = "issuance.reconcile"
	ActionAPIKeyCreate = "apikey.create"
	ActionAPIKeyRevoke = "apikey.revoke"
	ActionAuditList    = "audit.list"
)

// Audit results.
const (
	ResultSuccess   = "success"
	ResultDenied    = "denied"
	ResultError     = "error"
	ResultNoop      = "noop"
	ResultAbandoned = "abandoned"
)

// Caps on what one audit event stores.
const (
	maxAuditField = 256
	maxAuditMeta  = 32
)

// writeAudit inserts an audit event through q (a transaction or the pool).
// Metadata and every free-text field pass the redactor first (SEC-012).
func (r *Registry) writeAudit(ctx context.Context, q sqlx.ExtContext, a Actor, action, target, result string, md map[string]string, logIndex *int64) error {
	st, err := r.auditEvent(a, action, target, result, md, logIndex)
	if err != nil {
		return err
	}
	_, err = q.ExecContext(ctx, q.Rebind(st.query), st.args...)
	return dbErr("audit: insert", err)
}

// auditEvent is writeAudit's statement (for execPlan).
func (r *Registry) auditEvent(a Actor, action, target, result string, md map[string]string, logIndex *int64) (stmt, error) {
	md = redact.RedactMap(md)
	if len(md) > maxAuditMeta {
		trimmed := make(map[string]string, maxAuditMeta)
		for k, v := range md {
			if len(trimmed) == maxAuditMeta {
				break
			}
			trimmed[k] = v
		}
		md = trimmed
	}
	for k, v := range md {
		md[k] = clip(v)
	}
	mdJSON, err := json.Marshal(md)
	if err != nil {
		return stmt{}, fmt.Errorf("registry: audit: encoding metadata: %w", err)
	}
	if md == nil {
		mdJSON = []byte("{}")
	}
	return stmt{`INSERT INTO audit_events
		(occurred_at, actor, actor_owner, request_id, ip, action, target, result, metadata, log_index)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`, []any{
		dbTime(r.now()), clip(redact.Redact(a.label())), clip(redact.Redact(a.Owner)), clip(redact.Redact(a.RequestID)),
		clip(redact.Redact(a.IP)), action, clip(redact.Redact(target)), result, string(mdJSON), logIndex}}, nil
}

// auditBestEffort records an event on its own, outside the caller's work
// (refusals, failures): one statement (Store.inStatement: on SQLite
// through the writer, like every write). It survives a cancelled request
// context; errors are logged, never returned, so that the caller's own
// error is what the client sees.
func (r *Registry) auditBestEffort(ctx context.Context, a Actor, action, target, result string, md map[string]string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := r.store.inStatement(ctx, "audit", func(q sqlx.ExtContext) error {
		return r.writeAudit(ctx, q, a, action, target, result, md, nil)
	}); err != nil {
		r.log.WithError(err).WithField("action", action).WithField("request_id", a.RequestID).Error("writing audit event")
	}
}

// deny audits a refused authorization and returns err.
func (r *Registry) deny(ctx context.Context, a Actor, action, target string, err error) error {
	r.auditBestEffort(ctx, a, action, target, ResultDenied, map[string]string{"error": errCode(err)})
	r.log.WithFields(map[string]any{"request_id": a.RequestID, "actor": a.label(), "action": action}).Warn("authorization refused")
	return err
}

// errCode is the sentinel name of err for audit metadata.
func errCode(err error) string {
	for _, s := range []struct {
		err  error
		name string
	}{{ErrNotFound, "not_found"}, {ErrConflict, "conflict"}, {ErrForbidden, "forbidden"},
		{ErrUnauthenticated, "unauthenticated"}, {ErrInvalid, "invalid"}, {ErrUnavailable, "unavailable"}} {
		if errors.Is(err, s.err) {
			return s.name
		}
	}
	return "internal"
}

func clip(s string) string {
	if len(s) <= maxAuditField {
		return s
	}
	return s[:maxAuditField]
}

type auditRow struct {
	ID         int64     `db:"id"`
	OccurredAt time.Time `db:"occurred_at"`
	Actor      string    `db:"actor"`
	ActorOwner string    `db:"actor_owner"`
	RequestID  string    `db:"request_id"`
	IP         string    `db:"ip"`
	Action     string    `db:"action"`
	Target     string    `db:"target"`
	Result     string    `db:"result"`
	Metadata   string    `db:"metadata"`
	LogIndex   *int64    `db:"log_index"`
}

// ListAudit returns audit events newest first (admin only). cursor is the
// opaque value returned by a previous call ("" for the first page); limit
// defaults to 50 and is capped at 100.
func (r *Registry) ListAudit(ctx context.Context, a Actor, cursor string, limit int) ([]AuditEvent, string, error) {
	if !a.IsAdmin() {
		return nil, "", r.deny(ctx, a, ActionAuditList, "", wrap("list audit", ErrForbidden))
	}
	limit, err := pageLimit(limit)
	if err != nil {
		return nil, "", err
	}
	before := int64(-1)
	if cursor != "" {
		raw, err := base64.RawURLEncoding.DecodeString(cursor)
		if err != nil {
			return nil, "", invalid("cursor", nil)
		}
		before, err = strconv.ParseInt(string(raw), 10, 64)
		if err != nil || before <= 0 {
			return nil, "", invalid("cursor", nil)
		}
	}
	// No "? < 0" trick: PostgreSQL would type that parameter from the literal as
	// int4 and refuse a cursor of 2^31 or more (issue 11 item 4).
	q := `SELECT id, occurred_at, actor, actor_owner, request_id, ip, action, target, result, metadata, log_index
		FROM audit_events`
	args := []any{}
	if before > 0 {
		q += ` WHERE id < ?`
		args = append(args, before)
	}
	q += ` ORDER BY id DESC LIMIT ?`
	args = append(args, limit+1)
	var rows []auditRow
	if err := r.store.db.SelectContext(ctx, &rows, r.store.db.Rebind(q), args...); err != nil {
		return nil, "", dbErr("list audit", err)
	}
	next := ""
	if len(rows) > limit {
		rows = rows[:limit]
		next = base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(rows[len(rows)-1].ID, 10)))
	}
	out := make([]AuditEvent, 0, len(rows))
	for _, row := range rows {
		ev := AuditEvent{ID: row.ID, Time: row.OccurredAt.UTC(), Actor: row.Actor, ActorOwner: row.ActorOwner,
			RequestID: row.RequestID, IP: row.IP, Action: row.Action, Target: row.Target, Result: row.Result, LogIndex: row.LogIndex}
		if err := json.Unmarshal([]byte(row.Metadata), &ev.Metadata); err != nil {
			return nil, "", fmt.Errorf("registry: list audit: decoding metadata of event %d: %v", row.ID, err)
		}
		out = append(out, ev)
	}
	return out, next, nil
}

// pageLimit applies the paging rules: 0 → 50, above 100 → 100, negative →
// ErrInvalid.
func pageLimit(limit int) (int, error) {
	switch {
	case limit < 0:
		return 0, invalid("limit must not be negative", nil)
	case limit == 0:
		return 50, nil
	case limit > 100:
		return 100, nil
	}
	return limit, nil
}
