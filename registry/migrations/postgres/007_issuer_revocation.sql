-- Revocation per issuing CA (registry/revocation.go, registry/arl.go).
--
-- Every certificate row names the CA that issued it: issuer_key_id is the
-- lowercase hex of its authority key identifier (the issuing intermediate's
-- subject key identifier). Rows written before this migration, or by a
-- replica older than it, have NULL; the registry fills it from the row's DER
-- at start-up and on every maintenance tick (Registry.BackfillIssuers).
ALTER TABLE certificates ADD COLUMN issuer_key_id TEXT;
CREATE INDEX certificates_issuer_revoked ON certificates (issuer_key_id, status, not_after);

-- One CRL per issuing CA, for as long as it has unexpired leaves. number is
-- the last CRL number that CA used; it only grows, under this row's lock. A
-- CA's first row starts from the single CRL of crl_state (migration 002), so
-- the CA that signed those keeps its numbers monotonic across the upgrade.
CREATE TABLE crl_issuers (
    issuer_key_id TEXT PRIMARY KEY,
    number        BIGINT NOT NULL,
    seq           BIGINT NOT NULL,
    der           BYTEA,
    this_update   TIMESTAMPTZ,
    next_update   TIMESTAMPTZ,
    stale_at      TIMESTAMPTZ
);

-- CRLs signed by a root in a key ceremony (atr ceremony root-crl), listing
-- revoked intermediates. The server publishes the highest number of each
-- root at /v1/crl/{root key id} and stops trusting the intermediates it lists.
CREATE TABLE root_crls (
    root_key_id TEXT NOT NULL,
    number      BIGINT NOT NULL,
    der         BYTEA NOT NULL,
    this_update TIMESTAMPTZ NOT NULL,
    next_update TIMESTAMPTZ NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (root_key_id, number)
);

-- A new root CRL is a revocation change like any other: every replica's
-- CRLs, OCSP answers and verification see it at the next revision.
CREATE TRIGGER root_crls_revocation_seq_insert
AFTER INSERT ON root_crls
FOR EACH ROW
EXECUTE FUNCTION atr_bump_revocation_seq();
