-- Which certificate each rotation superseded, by revocation revision
-- (registry/supersedes.go, issue 14: cheap reads while a fleet rotates).
--
-- Every change of a certificate's status moves revocation_state.seq
-- (002_revocation.sql), and the Verify and OCSP caches of every replica
-- answer from memory only while the revision they read with is current: a
-- fleet that rotates moved it with every batch, so every verify and every
-- OCSP request read its certificate again. A rotation changes one status,
-- its predecessor's (issued to superseded, with its grace end). Such a
-- change now also records, under its new revision, the certificate it
-- changed; a replica reads the rows of the revisions it has not seen and
-- keeps every cached status that none of them names. A revision without a
-- row (a revocation, a root CRL, anything else) still makes every cached
-- status stale, as before.
CREATE TABLE superseded_changes (
    seq                BIGINT PRIMARY KEY,
    serial             TEXT NOT NULL,
    fingerprint_sha256 TEXT NOT NULL
);

CREATE FUNCTION atr_bump_revocation_seq_superseded() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    s BIGINT;
BEGIN
    UPDATE revocation_state SET seq = seq + 1 WHERE id = 1 RETURNING seq INTO s;
    INSERT INTO superseded_changes (seq, serial, fingerprint_sha256) VALUES (s, NEW.serial, NEW.fingerprint_sha256);
    RETURN NULL;
END
$$;

-- A supersede alone: issued to superseded, the revocation fields untouched.
-- Every other change keeps the trigger of 002 (its condition narrowed by
-- exactly this case, so that one trigger fires for a row).
DROP TRIGGER certificates_revocation_seq_update ON certificates;

CREATE TRIGGER certificates_revocation_seq_update
AFTER UPDATE OF status, revocation_reason, revoked_at, grace_until ON certificates
FOR EACH ROW
WHEN ((OLD.status IS DISTINCT FROM NEW.status
   OR OLD.revocation_reason IS DISTINCT FROM NEW.revocation_reason
   OR OLD.revoked_at IS DISTINCT FROM NEW.revoked_at
   OR OLD.grace_until IS DISTINCT FROM NEW.grace_until)
  AND NOT (OLD.status = 'issued' AND NEW.status = 'superseded'
   AND OLD.revocation_reason IS NOT DISTINCT FROM NEW.revocation_reason
   AND OLD.revoked_at IS NOT DISTINCT FROM NEW.revoked_at))
EXECUTE FUNCTION atr_bump_revocation_seq();

CREATE TRIGGER certificates_superseded_seq_update
AFTER UPDATE OF status, revocation_reason, revoked_at, grace_until ON certificates
FOR EACH ROW
WHEN (OLD.status = 'issued' AND NEW.status = 'superseded'
  AND OLD.revocation_reason IS NOT DISTINCT FROM NEW.revocation_reason
  AND OLD.revoked_at IS NOT DISTINCT FROM NEW.revoked_at)
EXECUTE FUNCTION atr_bump_revocation_seq_superseded();
