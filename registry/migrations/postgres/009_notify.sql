-- Change notification between replicas (registry/notify.go): when a
-- transaction that grew the transparency log or changed a certificate's
-- revocation state commits, every replica's notifier hears of it at once
-- (LISTEN atr_log, atr_revocation) instead of polling. NOTIFY is
-- transactional: it is delivered on commit, never for a rollback. The
-- payload is the new value (decimal); a notifier that lost its connection
-- reads both values again after reconnecting, so a lost notification only
-- delays, never hides, a change.

CREATE FUNCTION atr_notify_log_size() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('atr_log', NEW.size::text);
    RETURN NULL;
END
$$;

CREATE TRIGGER log_head_notify
AFTER UPDATE OF size ON log_head
FOR EACH ROW WHEN (OLD.size IS DISTINCT FROM NEW.size)
EXECUTE FUNCTION atr_notify_log_size();

CREATE FUNCTION atr_notify_revocation_seq() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('atr_revocation', NEW.seq::text);
    RETURN NULL;
END
$$;

CREATE TRIGGER revocation_state_notify
AFTER UPDATE OF seq ON revocation_state
FOR EACH ROW WHEN (OLD.seq IS DISTINCT FROM NEW.seq)
EXECUTE FUNCTION atr_notify_revocation_seq();
