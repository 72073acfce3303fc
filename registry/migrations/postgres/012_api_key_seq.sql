-- The API keys' revision (registry/apikeys.go, issue 14). Authenticate keeps
-- the keys it read in memory instead of reading the key's row at every
-- request; a cached key is used only while api_key_state.seq is the value it
-- was read under. Every change to what a key authenticates as — its
-- revocation, expiry, secret's hash, owner, namespace or scopes — and every
-- deletion bumps the seq in the same transaction and notifies every replica
-- when it commits (LISTEN atr_api_keys; payload the new seq, as in
-- 009_notify.sql). A key's bookkeeping (last_used_at, failed_attempts) does
-- not move it.
CREATE TABLE api_key_state (
    id  INTEGER PRIMARY KEY CHECK (id = 1),
    seq BIGINT NOT NULL
);
INSERT INTO api_key_state (id, seq) VALUES (1, 0);

CREATE FUNCTION atr_bump_api_key_seq() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    s BIGINT;
BEGIN
    UPDATE api_key_state SET seq = seq + 1 WHERE id = 1 RETURNING seq INTO s;
    PERFORM pg_notify('atr_api_keys', s::text);
    RETURN NULL;
END
$$;

CREATE TRIGGER api_keys_seq_update
AFTER UPDATE OF id, hash, owner, namespace, scopes, expires_at, revoked_at ON api_keys
FOR EACH ROW EXECUTE FUNCTION atr_bump_api_key_seq();

CREATE TRIGGER api_keys_seq_delete
AFTER DELETE ON api_keys
FOR EACH ROW EXECUTE FUNCTION atr_bump_api_key_seq();

CREATE TRIGGER api_keys_seq_truncate
AFTER TRUNCATE ON api_keys
FOR EACH STATEMENT EXECUTE FUNCTION atr_bump_api_key_seq();
