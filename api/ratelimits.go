package api

import (
	"time"

	"github.com/agent-trust-registry/atr/api/ratelimit"
)

// Names of the rate-limit tables: the table label of atr_ratelimit_table_full_total.
const (
	tableClient      = "client"       // per-ip and public buckets, keyed by client address
	tablePrincipal   = "principal"    // per-key, list, register
	tableAction      = "action"       // rotate and revoke, per agent name and caller
	tableAuthFailure = "auth-failure" // the short window of failed authentications
	tableLockout     = "lockout"      // lockouts of client addresses
)

// limitTable is one kind of rate-limit state.
type limitTable struct {
	name string
	lim  ratelimit.Limiter
}

// limiters are the Server's rate-limit tables. Each kind of state has its own table, so
// that one kind filling memory never refuses another: a flood of failed logins from
// fresh addresses fills at most the auth-failure table, never the client buckets every
// request needs. In process, the tables whose keys a caller can mint at will evict when
// full: client and auth-failure (keyed by address), action (keyed by the agent name in
// the URL). The others refuse new keys rather than forget state: principal (one key per
// API key or agent identity, which only an administrator or an issuance creates) and
// lockout (created only once an address has spent its auth-failure budget). With a
// shared backend every table is that backend, keys told apart by prefix.
type limiters struct {
	client, principal, action, authFailure, lockout limitTable
	// fallback serves the public buckets when the shared backend fails; nil without one.
	fallback *ratelimit.Local
}

// newLimiters builds the tables over shared, or in-process tables when shared is nil.
func newLimiters(shared ratelimit.Limiter, now func() time.Time) limiters {
	if shared == nil {
		return limiters{
			client:      limitTable{tableClient, ratelimit.NewLocal(0, ratelimit.EvictNearest, now)},
			principal:   limitTable{tablePrincipal, ratelimit.NewLocal(0, ratelimit.RefuseNew, now)},
			action:      limitTable{tableAction, ratelimit.NewLocal(0, ratelimit.EvictNearest, now)},
			authFailure: limitTable{tableAuthFailure, ratelimit.NewLocal(0, ratelimit.EvictNearest, now)},
			lockout:     limitTable{tableLockout, ratelimit.NewLocal(0, ratelimit.RefuseNew, now)},
		}
	}
	return limiters{
		client:      limitTable{tableClient, shared},
		principal:   limitTable{tablePrincipal, shared},
		action:      limitTable{tableAction, shared},
		authFailure: limitTable{tableAuthFailure, shared},
		lockout:     limitTable{tableLockout, shared},
		fallback:    ratelimit.NewLocal(0, ratelimit.EvictNearest, now),
	}
}
