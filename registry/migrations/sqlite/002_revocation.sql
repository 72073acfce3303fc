-- Revocation channels (registry/revocation.go): the revocation revision, the
-- stored CRL and its number, and the shared cache of pre-signed OCSP
-- responses (SQLite).

-- revocation_state.seq is bumped, in the same transaction, by every change
-- to a certificate's revocation-relevant columns (triggers below), whatever
-- code path makes it. A stored CRL records the seq it reflects; a different
-- seq makes it stale at once on every replica.
CREATE TABLE revocation_state (
    id  INTEGER PRIMARY KEY CHECK (id = 1),
    seq BIGINT NOT NULL
);
INSERT INTO revocation_state (id, seq) VALUES (1, 0);

CREATE TRIGGER certificates_revocation_seq_update
AFTER UPDATE OF status, revocation_reason, revoked_at, grace_until ON certificates
FOR EACH ROW
WHEN OLD.status IS NOT NEW.status
  OR OLD.revocation_reason IS NOT NEW.revocation_reason
  OR OLD.revoked_at IS NOT NEW.revoked_at
  OR OLD.grace_until IS NOT NEW.grace_until
BEGIN
    UPDATE revocation_state SET seq = seq + 1 WHERE id = 1;
END;

CREATE TRIGGER certificates_revocation_seq_insert
AFTER INSERT ON certificates
FOR EACH ROW WHEN NEW.status <> 'issued'
BEGIN
    UPDATE revocation_state SET seq = seq + 1 WHERE id = 1;
END;

CREATE TRIGGER certificates_revocation_seq_delete
AFTER DELETE ON certificates
FOR EACH ROW WHEN OLD.status <> 'issued'
BEGIN
    UPDATE revocation_state SET seq = seq + 1 WHERE id = 1;
END;

-- The current full CRL (one row). number is the last CRL number used (0:
-- none yet); it only ever grows, under the row lock of the regenerating
-- transaction. stale_at is the earliest end of a rotation grace period after
-- this_update (a superseded certificate that will enter the CRL then), or
-- NULL.
CREATE TABLE crl_state (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    number      BIGINT NOT NULL,
    seq         BIGINT NOT NULL,
    der         BLOB,
    this_update TIMESTAMP,
    next_update TIMESTAMP,
    stale_at    TIMESTAMP
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
    revoked_at  TIMESTAMP,
    grace_until TIMESTAMP,
    der         BLOB NOT NULL,
    this_update TIMESTAMP NOT NULL,
    next_update TIMESTAMP NOT NULL,
    not_after   TIMESTAMP NOT NULL,
    PRIMARY KEY (serial, hash_alg)
);
CREATE INDEX ocsp_responses_not_after ON ocsp_responses (not_after);

-- The next grace end a CRL must wait for.
CREATE INDEX certificates_superseded_grace ON certificates (grace_until) WHERE status = 'superseded';
