-- The registry's own TLS server certificates (registry/servercert.go), issued
-- through the same record-before-sign pipeline as agent certificates: a row
-- is inserted 'pending' with the TBS before the issuing key signs, and
-- becomes 'issued' (fingerprint, DER, log index) in the transaction that
-- appends its server_cert log entry; Reconcile abandons a stale pending row.
-- serial (ca.FormatSerial), state, not_after and issuer_key_id (lowercase hex
-- of the issuing CA's subject key identifier) are what CRL and OCSP need.
CREATE TABLE server_certificates (
    serial             TEXT PRIMARY KEY,
    state              TEXT NOT NULL CHECK (state IN ('pending', 'issued', 'abandoned')),
    issuer_key_id      TEXT NOT NULL,
    dns_names          TEXT NOT NULL DEFAULT '[]',
    ip_addresses       TEXT NOT NULL DEFAULT '[]',
    tbs                BYTEA NOT NULL,
    fingerprint_sha256 TEXT UNIQUE,
    der                BYTEA,
    log_index          BIGINT,
    not_before         TIMESTAMPTZ NOT NULL,
    not_after          TIMESTAMPTZ NOT NULL,
    created_at         TIMESTAMPTZ NOT NULL,
    updated_at         TIMESTAMPTZ NOT NULL,
    CHECK (state <> 'issued' OR (fingerprint_sha256 IS NOT NULL AND der IS NOT NULL AND log_index IS NOT NULL))
);
CREATE INDEX server_certificates_state ON server_certificates (state, created_at);
