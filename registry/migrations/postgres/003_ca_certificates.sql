-- CA certificates (roots and issuing CAs) the registry has put into the
-- transparency log as "ceremony" entries (registry/ceremony.go). The primary
-- key makes recording idempotent across restarts and replicas.
CREATE TABLE ca_certificates (
    fingerprint_sha256 TEXT PRIMARY KEY,
    subject            TEXT NOT NULL,
    is_root            BOOLEAN NOT NULL,
    not_after          TIMESTAMPTZ NOT NULL,
    log_index          BIGINT,
    recorded_at        TIMESTAMPTZ NOT NULL
);
