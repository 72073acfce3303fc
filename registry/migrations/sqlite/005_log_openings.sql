-- Openings of version 2 log leaves (docs/transparency.md): the agent name,
-- certificate and VRF proofs behind a leaf's fingerprint and name indexes.
-- Public leaves carry none of this; only the agent and its owner may read
-- an opening (registry.OpenedEntries, receipts).
CREATE TABLE log_openings (
    idx        BIGINT PRIMARY KEY,
    agent_name TEXT NOT NULL,
    opened     TEXT NOT NULL
);
CREATE INDEX log_openings_agent ON log_openings (agent_name, idx);
