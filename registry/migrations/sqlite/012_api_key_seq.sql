-- The API keys' revision (registry/apikeys.go, issue 14). Authenticate keeps
-- the keys it read in memory instead of reading the key's row at every
-- request; a cached key is used only while api_key_state.seq is the value it
-- was read under. Every change to what a key authenticates as — its
-- revocation, expiry, secret's hash, owner, namespace or scopes — and every
-- deletion bumps the seq in the same transaction, whichever process made it:
-- the notifier (registry/notify.go) of this process learns of it at the
-- commit, that of another process on the same file within 250 ms. A key's
-- bookkeeping (last_used_at, failed_attempts) does not move it.
CREATE TABLE api_key_state (
    id  INTEGER PRIMARY KEY CHECK (id = 1),
    seq INTEGER NOT NULL
);
INSERT INTO api_key_state (id, seq) VALUES (1, 0);

CREATE TRIGGER api_keys_seq_update
AFTER UPDATE OF id, hash, owner, namespace, scopes, expires_at, revoked_at ON api_keys
BEGIN
    UPDATE api_key_state SET seq = seq + 1 WHERE id = 1;
END;

CREATE TRIGGER api_keys_seq_delete
AFTER DELETE ON api_keys
BEGIN
    UPDATE api_key_state SET seq = seq + 1 WHERE id = 1;
END;
