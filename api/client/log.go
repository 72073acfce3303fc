package client

import (
	"context"
	"net/http"
	"net/url"
)

// AgentLog returns every log leaf of the agent name, opened for its owner, each
// with a fresh receipt (GET /v1/agents/{name}/log; owner or admin key).
func (c *Client) AgentLog(ctx context.Context, name string) (*AgentLog, error) {
	var out AgentLog
	if err := c.doJSON(ctx, http.MethodGet, "/v1/agents/"+url.PathEscape(name)+"/log", nil, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}
