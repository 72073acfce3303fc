-- Fewer pages per issuance (issue 14, tenth pass); see the SQLite migration
-- of the same number. PostgreSQL's BIGINT PRIMARY KEY is the table's one
-- index already: only the index changes apply.
DROP INDEX certificates_status;
DROP INDEX certificates_superseded_grace;
CREATE INDEX certificates_grace_ends ON certificates (issuer_key_id, grace_until) WHERE status = 'superseded';
DROP INDEX pending_issuances_state;
CREATE INDEX pending_issuances_stale ON pending_issuances (created_at) WHERE state = 'pending';
