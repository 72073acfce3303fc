-- ATR initial schema (PostgreSQL). Times are UTC TIMESTAMPTZ values written by the
-- registry; JSON columns hold arrays/objects of strings.

CREATE TABLE agents (
    name           TEXT PRIMARY KEY,
    owner          TEXT NOT NULL,
    status         TEXT NOT NULL CHECK (status IN ('active', 'revoked')),
    capabilities   TEXT NOT NULL DEFAULT '[]',
    metadata       TEXT NOT NULL DEFAULT '{}',
    current_serial TEXT,
    created_at     TIMESTAMPTZ NOT NULL,
    updated_at     TIMESTAMPTZ NOT NULL
);
CREATE INDEX agents_owner_name ON agents (owner, name);

CREATE TABLE certificates (
    serial             TEXT PRIMARY KEY,
    agent_name         TEXT NOT NULL REFERENCES agents (name),
    fingerprint_sha256 TEXT NOT NULL UNIQUE,
    status             TEXT NOT NULL CHECK (status IN ('issued', 'superseded', 'revoked')),
    revocation_reason  TEXT,
    revoked_at         TIMESTAMPTZ,
    predecessor_serial TEXT,
    successor_serial   TEXT,
    der                BYTEA NOT NULL,
    log_index          BIGINT,
    not_before         TIMESTAMPTZ NOT NULL,
    not_after          TIMESTAMPTZ NOT NULL,
    grace_until        TIMESTAMPTZ,
    created_at         TIMESTAMPTZ NOT NULL
);
CREATE INDEX certificates_agent ON certificates (agent_name, created_at);
CREATE INDEX certificates_status ON certificates (status, not_after);

CREATE TABLE pending_issuances (
    serial     TEXT PRIMARY KEY,
    agent_name TEXT NOT NULL,
    owner      TEXT NOT NULL,
    kind       TEXT NOT NULL CHECK (kind IN ('register', 'rotate')),
    tbs        BYTEA NOT NULL,
    state      TEXT NOT NULL CHECK (state IN ('pending', 'issued', 'abandoned')),
    created_at TIMESTAMPTZ NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL
);
-- At most one issuance in flight per agent name: a second concurrent
-- register/rotate is refused before anything is signed.
CREATE UNIQUE INDEX pending_issuances_one_in_flight ON pending_issuances (agent_name) WHERE state = 'pending';
CREATE INDEX pending_issuances_state ON pending_issuances (state, created_at);

CREATE TABLE api_keys (
    id              TEXT PRIMARY KEY,
    hash            BYTEA NOT NULL,
    owner           TEXT NOT NULL,
    namespace       TEXT NOT NULL,
    scopes          TEXT NOT NULL,
    created_by      TEXT NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL,
    expires_at      TIMESTAMPTZ,
    revoked_at      TIMESTAMPTZ,
    last_used_at    TIMESTAMPTZ,
    failed_attempts INTEGER NOT NULL DEFAULT 0,
    locked_until    TIMESTAMPTZ
);

CREATE TABLE audit_events (
    id          BIGSERIAL PRIMARY KEY,
    occurred_at TIMESTAMPTZ NOT NULL,
    actor       TEXT NOT NULL,
    actor_owner TEXT NOT NULL,
    request_id  TEXT NOT NULL,
    ip          TEXT NOT NULL,
    action      TEXT NOT NULL,
    target      TEXT NOT NULL,
    result      TEXT NOT NULL,
    metadata    TEXT NOT NULL DEFAULT '{}',
    log_index   BIGINT
);

-- Transparency log (registry/log.go): entries, tlog stored hashes, the tree
-- head (one row, locked by every append), signed checkpoints.
CREATE TABLE log_entries (
    idx        BIGINT PRIMARY KEY,
    data       BYTEA NOT NULL,
    created_at TIMESTAMPTZ NOT NULL
);
CREATE TABLE log_hashes (
    idx  BIGINT PRIMARY KEY,
    hash BYTEA NOT NULL
);
CREATE TABLE log_head (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    size BIGINT NOT NULL,
    root BYTEA NOT NULL
);
INSERT INTO log_head (id, size, root) VALUES (1, 0, decode(repeat('00', 32), 'hex'));
CREATE TABLE log_checkpoints (
    size       BIGINT PRIMARY KEY,
    note       TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL
);
