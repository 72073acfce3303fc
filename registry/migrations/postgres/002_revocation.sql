-- Revocation channels (registry/revocation.go): the revocation revision, the
-- stored CRL and its number, and the shared cache of pre-signed OCSP
-- responses (PostgreSQL).

-- revocation_state.seq is bumped, in the same transaction, by every change
-- to a certificate's revocation-relevant columns (triggers below), whatever
-- code path makes it. A stored CRL records the seq it reflects; a different
-- seq makes it stale at once on every replica.
CREATE TABLE revocation_state (
    id  INTEGER PRIMARY KEY CHECK (id = 1),
    seq BIGINT NOT NULL
);
INSERT INTO revocation_state (id, seq) VALUES (1, 0);

CREATE FUNCTION atr_bump_revocation_seq() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE revocation_state SET seq = seq + 1 WHERE id = 1;
    RETURN NULL;
END
$$;

CREATE TRIGGER certificates_revocation_seq_update
AFTER UPDATE OF status, revocation_reason, revoked_at, grace_until ON certificates
FOR EACH ROW
WHEN (OLD.status IS DISTINCT FROM NEW.status
   OR OLD.revocation_reason IS DISTINCT FROM NEW.revocation_reason
   OR OLD.revoked_at IS DISTINCT FROM NEW.revoked_at
   OR OLD.grace_until IS DISTINCT FROM NEW.grace_until)
EXECUTE FUNCTION atr_bump_revocation_seq();

CREATE TRIGGER certificates_revocation_seq_insert
AFTER INSERT ON certificates
FOR EACH ROW WHEN (NEW.status <> 'issued')
EXECUTE FUNCTION atr_bump_revocation_seq();

CREATE TRIGGER certificates_revocation_seq_delete
AFTER DELETE ON certificates
FOR EACH ROW WHEN (OLD.status <> 'issued')
EXECUTE FUNCTION atr_bump_revocation_seq();

-- The current full CRL (one row). number is the last CRL number used (0:
-- none yet); it only ever grows, under the row lock (SELECT … FOR UPDATE)
-- of the regenerating transaction, so replicas never reuse a number.
-- stale_at is the earliest end of a rotation grace period after this_update
-- (a superseded certificate that will enter the CRL then), or NULL.
CREATE TABLE crl_state (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    number      BIGINT NOT NULL,
    seq         BIGINT NOT NULL,
    der         BYTEA,
    this_update TIMESTAMPTZ,
    next_update TIMESTAMPTZ,
    stale_at    TIMESTAMPTZ
);
INSERT INTO crl_state (id, number, seq) VALUES (1, 0, -1);

-- Pre-signed OCSP responses shared by replicas, one per certificate and
-- request hash algorithm. A row is served only while (status, reason,
-- revoked_at, grace_until) still match the certificate's row. Rows are
-- pruned once the certificate expired (not_after). "unknown" answers are
-- never stored (their serials are chosen by the client).
CREATE TABLE ocsp_responses (
    serial      TEXT NOT NULL,
    hash_alg    TEXT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('good', 'revoked')),
    reason      INTEGER NOT NULL DEFAULT 0,
    revoked_at  TIMESTAMPTZ,
    grace_until TIMESTAMPTZ,
    der         BYTEA NOT NULL,
    this_update TIMESTAMPTZ NOT NULL,
    next_update TIMESTAMPTZ NOT NULL,
    not_after   TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (serial, hash_alg)
);
CREATE INDEX ocsp_responses_not_after ON ocsp_responses (not_after);

-- The next grace end a CRL must wait for.
CREATE INDEX certificates_superseded_grace ON certificates (grace_until) WHERE status = 'superseded';
