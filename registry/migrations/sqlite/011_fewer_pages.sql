-- Fewer pages per issuance (issue 14, tenth pass). Every issuance writes
-- each index of the rows it inserts or updates: an index no query reads is
-- a page written (and a WAL frame, and an fsync's worth of I/O) for nothing.
--
-- 1. certificates_status (status, not_after) has had no reader since the
--    CRL's query took issuer_key_id (007: certificates_issuer_revoked).
--    certificates_superseded_grace (grace_until, superseded rows) lacked
--    the issuer the next grace end is asked for: SQLite's planner (without
--    statistics) scanned every superseded row of the issuer in
--    certificates_issuer_revoked and sorted them, at every CRL; the index
--    that answers it (certStore.NextGraceEnd) leads with the issuer.
DROP INDEX certificates_status;
DROP INDEX certificates_superseded_grace;
CREATE INDEX certificates_grace_ends ON certificates (issuer_key_id, grace_until) WHERE status = 'superseded';

-- 2. Only the recovery sweep (StalePending) reads pending rows by time, and
--    only those still pending: a partial index keeps the in-flight rows
--    alone (a handful of pages) instead of every issuance ever recorded.
DROP INDEX pending_issuances_state;
CREATE INDEX pending_issuances_stale ON pending_issuances (created_at) WHERE state = 'pending';

-- 3. The log's tables were keyed "BIGINT PRIMARY KEY", which in SQLite is
--    a separate unique index beside the table's rowid: every append wrote
--    both, and every read by index went through both. "INTEGER PRIMARY KEY"
--    makes idx the rowid itself (same values, unique; ATR always writes idx,
--    so SQLite's rowid numbering of a NULL key never applies). Nothing
--    references these tables; each is copied as it is.
CREATE TABLE log_entries_011 (
    idx        INTEGER PRIMARY KEY,
    data       BLOB NOT NULL,
    created_at TIMESTAMP NOT NULL
);
INSERT INTO log_entries_011 (idx, data, created_at) SELECT idx, data, created_at FROM log_entries;
DROP TABLE log_entries;
ALTER TABLE log_entries_011 RENAME TO log_entries;

CREATE TABLE log_hashes_011 (
    idx  INTEGER PRIMARY KEY,
    hash BLOB NOT NULL
);
INSERT INTO log_hashes_011 (idx, hash) SELECT idx, hash FROM log_hashes;
DROP TABLE log_hashes;
ALTER TABLE log_hashes_011 RENAME TO log_hashes;

CREATE TABLE log_openings_011 (
    idx        INTEGER PRIMARY KEY,
    agent_name TEXT NOT NULL,
    opened     TEXT NOT NULL
);
INSERT INTO log_openings_011 (idx, agent_name, opened) SELECT idx, agent_name, opened FROM log_openings;
DROP TABLE log_openings;
ALTER TABLE log_openings_011 RENAME TO log_openings;
CREATE INDEX log_openings_agent ON log_openings (agent_name, idx);
