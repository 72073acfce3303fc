// Package api is ATR's HTTP layer: the gorilla/mux routes of the REST API, their
// middleware, and the error writer. Handlers are thin — decode strictly, validate the
// shape, make one call into the registry, encode — and everything cross-cutting lives in
// middleware that every request passes:
//
//   - request ID: a fresh 128-bit random ID, or an inbound X-Request-ID that matches a
//     strict pattern; echoed on every response (errors, 404 and 405 included) and on every
//     log line;
//   - access log (logrus JSON: method, route template, status, duration, request_id,
//     client_ip) and Prometheus metrics on a registry owned by the Server;
//   - panic recovery into the standard 500 body;
//   - security headers (nosniff, Cache-Control: no-store, HSTS when Config.TLS, no Server
//     banner) and CORS for configured origins only (never "*", never credentials);
//   - body caps on every endpoint (Config.BodyLimit; 64 KiB for verify);
//   - rate limits that cannot be disabled (package api/ratelimit): per client IP, per API
//     key, per agent and action for rotate and revoke, list, and failed authentication
//     with lockout;
//   - authentication with "Authorization: Bearer atr_…" API keys, or, for
//     POST /v1/agents/{name}/rotate, …/card and …/jwt-svid only (and EST's
//     simplereenroll), the agent's own TLS client certificate; scopes checked per route
//     (agents:read, agents:write, admin).
//
// Every error reaches the client as {"error":{"code","message","request_id"}} with a
// stable code and a fixed message; the full error goes to the log with the request ID.
//
// The client IP is the socket peer unless the peer is in Config.TrustedProxies; then it
// is the right-most X-Forwarded-For (or Forwarded) hop that is not a trusted proxy.
//
// The API is described by the embedded OpenAPI 3.1 document served at /openapi.json;
// package api/client is the Go client.
package api
