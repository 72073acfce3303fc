package main

// admin.go is the operator side of the REST API that needed curl before:
// `atr agents list`, `atr audit`, `atr apikey list` and `atr apikey revoke`.
// Each prints an aligned table for people and, with --json, one JSON array
// (or object) for programs. Listings follow the server's cursor pagination to
// the end, or stop after --limit items.

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/agent-trust-registry/atr/api/client"
	"github.com/agent-trust-registry/atr/registry/apikey"
)

// adminPageSize is how many items a listing asks for per request (the
// server's maximum).
const adminPageSize = 100

// adminOpts are the flags of the API commands that need an API key.
type adminOpts struct {
	agentOpts
	json  bool
	limit int
}

func (o *adminOpts) bind(fs *flag.FlagSet, a *app, paged bool) {
	o.agentOpts.bind(fs, a.lookupEnv, afServer|afCABundle|afAPIKey)
	fs.BoolVar(&o.json, "json", false, "print JSON instead of a table")
	if paged {
		fs.IntVar(&o.limit, "limit", 0, "print at most this many items (default: all, following every page)")
	}
}

// client checks the options and returns an API client with the API key.
func (o *adminOpts) client() (*client.Client, error) {
	if o.limit < 0 {
		return nil, usagef("--limit must not be negative")
	}
	if o.server == "" {
		return nil, usagef("--server (ATR_SERVER) is required")
	}
	key, err := o.readAPIKey()
	if err != nil {
		return nil, err
	}
	if key == "" {
		return nil, usagef("--api-key-file (ATR_API_KEY_FILE) or ATR_API_KEY is required")
	}
	return o.newClient(key, nil)
}

// collect follows pages from fetch until the last page or limit items
// (0: no limit).
func collect[T any](ctx context.Context, limit int, fetch func(ctx context.Context, cursor string, n int) ([]T, string, error)) ([]T, error) {
	var out []T
	cursor := ""
	for {
		n := adminPageSize
		if limit > 0 {
			n = min(n, limit-len(out))
		}
		items, next, err := fetch(ctx, cursor, n)
		if err != nil {
			return nil, err
		}
		out = append(out, items...)
		if limit > 0 && len(out) >= limit {
			return out[:limit], nil
		}
		if next == "" || len(items) == 0 {
			return out, nil
		}
		cursor = next
	}
}

// printJSON writes v as indented JSON.
func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// printTable writes rows under header, columns aligned by two spaces. Empty
// cells show "-".
func printTable(w io.Writer, header []string, rows [][]string) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, r := range rows {
		cells := make([]string, len(r))
		for i, c := range r {
			c = strings.Map(func(r rune) rune {
				if r == '\t' || r == '\n' || r == '\r' {
					return ' '
				}
				return r
			}, c)
			if c == "" {
				c = "-"
			}
			cells[i] = c
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
	}
	return tw.Flush()
}

func timeCell(t *time.Time) string {
	if t == nil || t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

const adminExitStatus = `Exit status: 0 success; 1 an error (server errors show the error code and
request ID); 2 a usage error.`

// listing is what differs between the listing commands (agents list, audit, apikey
// list): how to fetch a page and how to show an item as a table row.
type listing[T any] struct {
	what    string // for errors: "listing agents"
	page    func(ctx context.Context, c *client.Client, cursor string, n int) ([]T, string, error)
	headers []string
	row     func(T) []string
}

// run parses the common flags, fetches every page (or --limit items), and prints
// them as one JSON array (--json) or as an aligned table.
func (l listing[T]) run(ctx context.Context, a *app, fs *flag.FlagSet, args []string) error {
	var o adminOpts
	o.bind(fs, a, true)
	if err := a.parse(fs, args); err != nil {
		return err
	}
	c, err := o.client()
	if err != nil {
		return err
	}
	items, err := collect(ctx, o.limit, func(ctx context.Context, cursor string, n int) ([]T, string, error) {
		return l.page(ctx, c, cursor, n)
	})
	if err != nil {
		return explain(l.what, err)
	}
	if o.json {
		if items == nil {
			items = []T{}
		}
		return printJSON(a.stdout, items)
	}
	rows := make([][]string, 0, len(items))
	for _, it := range items {
		rows = append(rows, l.row(it))
	}
	return printTable(a.stdout, l.headers, rows)
}

// ---- agents ----------------------------------------------------------------

func runAgents(ctx context.Context, a *app, args []string) error {
	return a.subcommand(ctx, "agents", map[string]func(context.Context, *app, []string) error{
		"list": runAgentsList,
	}, map[string]string{
		"list": "list the agents the API key may see (all of them with an admin key)",
	}, args)
}

func runAgentsList(ctx context.Context, a *app, args []string) error {
	fs := a.newFlagSet("agents list", "agents list --server URL --api-key-file FILE [--json] [--limit N]",
		`List the agents the API key may see (GET /v1/agents): an owner key sees
its own agents inside its namespace, an admin key every agent. Follows the
pages to the end unless --limit. The table shows name, owner, status,
current serial and last update; --json prints the API's agent objects as
one JSON array.

`+adminExitStatus,
		`atr agents list --server https://127.0.0.1:8443 --ca-bundle ./var/ca/bundle.pem --api-key-file team.apikey
atr agents list --api-key-file ./var/admin.apikey --json | jq -r '.[] | select(.status == "revoked") | .name'`)
	return listing[client.Agent]{
		what: "listing agents",
		page: func(ctx context.Context, c *client.Client, cursor string, n int) ([]client.Agent, string, error) {
			p, err := c.List(ctx, cursor, n)
			if err != nil {
				return nil, "", err
			}
			return p.Agents, p.NextCursor, nil
		},
		headers: []string{"NAME", "OWNER", "STATUS", "SERIAL", "UPDATED"},
		row: func(ag client.Agent) []string {
			return []string{ag.Name, ag.Owner, ag.Status, showSerial(ag.CurrentSerial), timeCell(&ag.UpdatedAt)}
		},
	}.run(ctx, a, fs, args)
}

// ---- audit -----------------------------------------------------------------

func runAudit(ctx context.Context, a *app, args []string) error {
	fs := a.newFlagSet("audit", "audit --server URL --api-key-file ADMIN_KEY [--json] [--limit N]",
		`Print the audit trail (GET /v1/admin/audit, admin API key), newest first:
every registration, rotation, revocation, API key change and refused
authorization (a valid key asking for what it may not), with who did it,
from where, the result and the transparency log index. Failed
authentications (a wrong or revoked key or certificate) are not audit
events: they are in the server log and atr_auth_failures_total. Follows the pages to the end unless --limit. --json prints the API's
event objects as one JSON array.

`+adminExitStatus,
		`atr audit --server https://127.0.0.1:8443 --ca-bundle ./var/ca/bundle.pem --api-key-file ./var/admin.apikey --limit 20
atr audit --api-key-file ./var/admin.apikey --json | jq '.[] | select(.result == "denied")'`)
	return listing[client.AuditEvent]{
		what: "reading the audit trail",
		page: func(ctx context.Context, c *client.Client, cursor string, n int) ([]client.AuditEvent, string, error) {
			p, err := c.Audit(ctx, cursor, n)
			if err != nil {
				return nil, "", err
			}
			return p.Events, p.NextCursor, nil
		},
		headers: []string{"ID", "TIME", "ACTOR", "IP", "ACTION", "TARGET", "RESULT", "LOG", "DETAILS"},
		row: func(e client.AuditEvent) []string {
			logIndex := ""
			if e.LogIndex != nil {
				logIndex = strconv.FormatInt(*e.LogIndex, 10)
			}
			return []string{strconv.FormatInt(e.ID, 10), timeCell(&e.Time), e.Actor, e.IP, e.Action, e.Target, e.Result, logIndex, metadataCell(e.Metadata)}
		},
	}.run(ctx, a, fs, args)
}

// metadataCell renders an event's metadata as k=v pairs in key order.
func metadataCell(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, k+"="+strconv.Quote(m[k]))
	}
	return strings.Join(parts, " ")
}

// ---- apikey list | revoke --------------------------------------------------

// apiKeyStatus is "revoked", "expired" or "active" at now.
func apiKeyStatus(k client.APIKey, now time.Time) string {
	switch {
	case k.RevokedAt != nil:
		return "revoked"
	case k.ExpiresAt != nil && !now.Before(*k.ExpiresAt):
		return "expired"
	}
	return "active"
}

func runAPIKeyList(ctx context.Context, a *app, args []string) error {
	fs := a.newFlagSet("apikey list", "apikey list --server URL --api-key-file ADMIN_KEY [--json] [--limit N]",
		`List the API keys (GET /v1/admin/apikeys, admin API key), ordered by id:
owner, namespace, scopes, status (active, expired, revoked), expiry and
last use. Secrets are never shown: the registry stores only their hashes
and never returns those. Follows the pages to the end unless --limit.
--json prints the API's key objects as one JSON array.

`+adminExitStatus,
		`atr apikey list --server https://127.0.0.1:8443 --ca-bundle ./var/ca/bundle.pem --api-key-file ./var/admin.apikey
atr apikey list --api-key-file ./var/admin.apikey --json | jq -r '.[] | select(.revoked_at == null) | .id'`)
	now := a.now()
	return listing[client.APIKey]{
		what: "listing API keys",
		page: func(ctx context.Context, c *client.Client, cursor string, n int) ([]client.APIKey, string, error) {
			p, err := c.ListAPIKeys(ctx, cursor, n)
			if err != nil {
				return nil, "", err
			}
			return p.APIKeys, p.NextCursor, nil
		},
		headers: []string{"ID", "OWNER", "NAMESPACE", "SCOPES", "STATUS", "CREATED", "EXPIRES", "LAST USED"},
		row: func(k client.APIKey) []string {
			return []string{k.ID, k.Owner, k.Namespace, strings.Join(k.Scopes, ","), apiKeyStatus(k, now),
				timeCell(&k.CreatedAt), timeCell(k.ExpiresAt), timeCell(k.LastUsedAt)}
		},
	}.run(ctx, a, fs, args)
}

func runAPIKeyRevoke(ctx context.Context, a *app, args []string) error {
	fs := a.newFlagSet("apikey revoke", "apikey revoke --server URL --api-key-file ADMIN_KEY [--json] ID",
		`Revoke the API key ID (DELETE /v1/admin/apikeys/{id}, admin API key). ID is
the 16 hex digits after "atr_" in the key, as 'atr apikey list' shows it.
The key stops working at once; revoking a revoked key changes nothing and
succeeds. The revocation is audited and written to the transparency log.
--json prints {"id": ID, "status": "revoked"}.

`+adminExitStatus,
		`atr apikey revoke --server https://127.0.0.1:8443 --ca-bundle ./var/ca/bundle.pem --api-key-file ./var/admin.apikey 0123456789abcdef`)
	var o adminOpts
	o.bind(fs, a, false)
	id, err := a.parseWithArg(fs, args)
	if err != nil {
		return err
	}
	if kid, err := apikey.Parse(id); err == nil {
		// A whole key pasted by mistake: never echo it (the secret would land in
		// terminal scrollback and CI logs); name its id instead.
		return usagef("that is a whole API key, secret included; pass only its ID: atr apikey revoke %s", kid)
	}
	if !apikey.ValidID(id) {
		// Not echoed either: a malformed argument may still hold part of a secret.
		return usagef("the API key ID must be the %d lowercase hex digits after \"atr_\" (see 'atr apikey list')", apikey.IDLen)
	}
	c, err := o.client()
	if err != nil {
		return err
	}
	if err := c.RevokeAPIKey(ctx, id); err != nil {
		return explain("revoking API key "+id, err)
	}
	if o.json {
		return printJSON(a.stdout, map[string]string{"id": id, "status": "revoked"})
	}
	fmt.Fprintf(a.stdout, "revoked API key %s\n", id)
	return nil
}

// parseWithArg parses args holding exactly one positional argument, which
// may come before, between or after the flags, and returns it.
func (a *app) parseWithArg(fs *flag.FlagSet, args []string) (string, error) {
	for _, arg := range args {
		if arg == "-h" || arg == "-help" || arg == "--help" || arg == "--h" {
			return "", a.parse(fs, []string{arg})
		}
	}
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return "", &usageError{err.Error()}
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
	switch len(pos) {
	case 0:
		return "", usagef("the API key ID is required (see 'atr apikey list')")
	case 1:
		return pos[0], nil
	}
	return "", usagef("unexpected argument %q", pos[1])
}
