// Package faults holds ATR's reliability tests (issue 8, sections 1–3) and
// the harness they share. Nothing here is linked into the atr binary.
//
// The tests run the real `atr` binary, built once by TestMain (or taken from
// ATR_FAULTS_BIN), set up like scripts/dev-up.sh: SoftHSM2 tokens made by
// softhsm/init-tokens.sh in a temporary data dir, the root, intermediate,
// log-key, log-key-ed25519 and vrf-key ceremonies run by the binary, an admin API key from `atr apikey
// create`, then `atr serve` over HTTPS on a free 127.0.0.1 port.
//
//   - TestCrashConsistency: concurrent registrations, rotations and
//     revocations through api/client while the server is SIGKILLed at random
//     moments and restarted, on SQLite and on a fresh PostgreSQL database.
//     After every restart the Ledger of acknowledged answers (a 2xx with a
//     complete body; anything cut off is "in doubt") is checked against the
//     database, POST /v1/verify and the transparency log.
//   - TestPostgresOutage, TestRedisOutage: the database or the rate-limit
//     store is cut by a TCP Proxy under load; privileged requests must fail
//     fast with 503 and the standard error body, /readyz turns red for the
//     database, and service resumes by itself.
//   - TestTokenTrouble: sessions closed and the module finalized under an
//     in-process registry and API (the cmd package cannot be started from
//     here, see the report in the test).
//   - TestReplicas: three `atr serve` processes on one PostgreSQL database,
//     one token directory and one Redis.
//
// ATR_SOAK=1 runs more kills, longer loads and more outages. In CI (CI=true)
// a missing SoftHSM2, PostgreSQL or Redis fails the tests instead of
// skipping them.
//
// Rate limits: the harness keeps the server's defaults (it could raise them
// with ATR_RATE_LIMITS, never switch them off); load is spread over several
// API keys and several loopback source addresses (127.x.y.z), as distinct
// clients would be. The checkers behave as polite clients: on 429 they wait
// as long as Retry-After says and ask again, and the log auditor asks for one
// consistency proof per tree size it saw, however often it saw it. Each
// outage of TestPostgresOutage is probed by a fresh client (own key and
// address), so that a soak run's probes meet the outage's 503 and not a
// spent budget's 429.
package faults
