-- Which certificate each rotation superseded, by revocation revision; see
-- the PostgreSQL migration of the same number (registry/supersedes.go).
CREATE TABLE superseded_changes (
    seq                INTEGER PRIMARY KEY,
    serial             TEXT NOT NULL,
    fingerprint_sha256 TEXT NOT NULL
);

DROP TRIGGER certificates_revocation_seq_update;

CREATE TRIGGER certificates_revocation_seq_update
AFTER UPDATE OF status, revocation_reason, revoked_at, grace_until ON certificates
FOR EACH ROW
WHEN (OLD.status IS NOT NEW.status
  OR OLD.revocation_reason IS NOT NEW.revocation_reason
  OR OLD.revoked_at IS NOT NEW.revoked_at
  OR OLD.grace_until IS NOT NEW.grace_until)
 AND NOT (OLD.status = 'issued' AND NEW.status = 'superseded'
  AND OLD.revocation_reason IS NEW.revocation_reason
  AND OLD.revoked_at IS NEW.revoked_at)
BEGIN
    UPDATE revocation_state SET seq = seq + 1 WHERE id = 1;
END;

CREATE TRIGGER certificates_superseded_seq_update
AFTER UPDATE OF status, revocation_reason, revoked_at, grace_until ON certificates
FOR EACH ROW
WHEN OLD.status = 'issued' AND NEW.status = 'superseded'
 AND OLD.revocation_reason IS NEW.revocation_reason
 AND OLD.revoked_at IS NEW.revoked_at
BEGIN
    UPDATE revocation_state SET seq = seq + 1 WHERE id = 1;
    INSERT INTO superseded_changes (seq, serial, fingerprint_sha256)
    SELECT seq, NEW.serial, NEW.fingerprint_sha256 FROM revocation_state WHERE id = 1;
END;
