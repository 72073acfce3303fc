-- Witness cosignatures (c2sp.org/tlog-cosignature) of transparency log
-- checkpoints (registry/witnesslog.go): one signature line per checkpoint
-- size and witness key (key name and 32-bit key ID of the signed-note
-- line). GET /v1/log/checkpoint serves a checkpoint with its lines appended.
CREATE TABLE witness_cosignatures (
    size       BIGINT NOT NULL REFERENCES log_checkpoints (size),
    key_name   TEXT NOT NULL,
    key_hash   BIGINT NOT NULL,
    line       TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    PRIMARY KEY (size, key_name, key_hash)
);
