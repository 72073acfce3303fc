-- The root CRLs' revision is notified on its own channel (registry/notify.go,
-- issue 14). Every rotation and revocation moves revocation_state.seq and
-- notifies atr_revocation, after which a replica's revocation revision is not
-- live until it read the row again; an issuance, which checks its issuing CA
-- against the root CRLs, then read the row itself. root_crl_seq moves only
-- when a root CRL is published (010_root_crl_seq.sql): notified on
-- atr_root_crls, it keeps a revision of its own that rotations leave live.
-- The payload is the new value (decimal) and is ignored, as in 009_notify.sql.
CREATE FUNCTION atr_notify_root_crl_seq() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('atr_root_crls', NEW.root_crl_seq::text);
    RETURN NULL;
END
$$;

CREATE TRIGGER revocation_state_root_crl_notify
AFTER UPDATE OF root_crl_seq ON revocation_state
FOR EACH ROW WHEN (OLD.root_crl_seq IS DISTINCT FROM NEW.root_crl_seq)
EXECUTE FUNCTION atr_notify_root_crl_seq();
