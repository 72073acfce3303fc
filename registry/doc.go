// Package registry is ATR's durable state and agent lifecycle: agents,
// certificates, pending issuances, API keys, the audit trail and the
// transparency log tables, over sqlx with one code path for SQLite (the
// embedded default) and PostgreSQL.
//
// # Storage
//
// Open connects (SQLite: WAL, synchronous=FULL, foreign keys, busy timeout,
// BEGIN IMMEDIATE, temporary journals in memory, the WAL checkpointed off
// the writer by the Store's checkpointer; PostgreSQL: lib/pq), with a
// bounded pool. Migrate applies
// the embedded migrations (migrations/<dialect>/NNN_name.sql), each in one
// transaction with its schema_migrations row; it is idempotent and safe from
// several replicas. Times are stored in UTC with microsecond precision.
// Driver errors never leave the package: callers see ErrNotFound,
// ErrConflict, ErrUnavailable or an opaque internal error.
//
// # Issuance ("record before sign")
//
// Register and Rotate authorize (the owner comes from the Actor, names are
// normalized by ca.NormalizeAgentName and must lie in the key's namespace),
// parse the CSR, draw a serial, build and lint the TBS (ca.Issuer.Prepare),
// commit a pending_issuances row holding serial and TBS, and only then sign
// through the token. Certificate, agent row, pending → issued, the log entry
// and the audit event (with its log index) are then written in one
// transaction — group-committed with the issuances ready beside it
// (writer.go), each one's part a single statement on PostgreSQL (execPlan:
// guards, log append, certificate rows, audit event) — and the certificate
// is returned only after that commit. A
// failed signature marks the row abandoned; a crash leaves it pending, and
// Reconcile (run at start-up and periodically) settles rows older than
// Config.PendingTimeout: issued if the certificate is stored, else abandoned
// and audited. Nothing is ever re-signed. At most one issuance per agent
// name is in flight (a partial unique index), so racing requests conflict
// before anything is signed.
//
// # Authorization
//
// API key actors need agents:read (list, get, certificate) or agents:write
// (register, rotate, revoke; implies read) and act only on their owner's
// agents; admin sees and does everything and manages API keys and the audit
// trail. Agents of other owners are ErrNotFound, indistinguishable from
// missing ones. An agent authenticated over mTLS (AuthenticateAgent) may only
// rotate itself. Every mutation and every refusal is audited with the actor's
// key id and owner, request id and IP; audit metadata passes package redact.
//
// # API keys
//
// Keys are atr_<16 hex id>_<64 hex secret> (256 random bits), shown once,
// stored as SHA-256 and compared in constant time. Any failure of
// Authenticate is the same ErrUnauthenticated. Wrong secrets are counted and
// every Config.MaxAuthFailures of them reported in the log, but a key is
// never locked: key IDs are public, so a lockout would be a denial of
// service; brute force is stopped per client IP by the api layer.
//
// # Verification
//
// Verify parses strictly (64 KiB), builds the chain to the token-held roots
// with ca.Verifier, then looks the status up by SHA-256 fingerprint; a
// superseded certificate verifies until its grace period (Config.RotationGrace,
// default 5 minutes) ends. That status rule is coded once (statusAt,
// status.go) and OCSP and the CRL state the same.
//
// # Certificate store
//
// The certificates, pending_issuances and server_certificates tables are
// read and written only through the typed operations of certstore.go
// (InsertPending, SettlePending, Insert, Supersede, Revoke, ByFingerprint,
// Status, …, and settlePending, the statement of the issuance's markIssued
// guard), one row struct per table; each runs in the transaction it is
// given, so the issuance commit shares the group-commit batches
// (writer.go).
//
// Serials are stored in the canonical spelling of ca.FormatSerial (lowercase
// hex, two digits per byte; migration 004 rewrote older odd-length rows),
// fingerprints as 64 lowercase hex digits.
package registry
