-- The MAC of each stored log opening (registry/logentry.go, issue 14): an
-- HMAC-SHA256 of the agent name and the opening, keyed with a secret only a
-- holder of the VRF key can derive (translog.VRFSecret). A rotation takes its
-- name's VRF proofs from the agent's newest opening; with a MAC that checks,
-- it takes them without an RSA verification of each, which a database
-- changed behind ATR's back cannot forge. Openings stored before this
-- version, or while the key could not be derived, have none: their proofs
-- are verified as before.
ALTER TABLE log_openings ADD COLUMN opened_mac BYTEA;

-- An opening is ~2 KB (the certificate and one 512-character proof per name
-- suffix, in base64), which the MAC took past PostgreSQL's default TOAST
-- threshold of ~2 KB: every opening was then compressed (in vain) and
-- stored out of line, in the TOAST table and its index, and read back from
-- there — ~0.3 ms more of the backends' CPU per issuance in the peer bench.
-- Rows up to 8,160 bytes (a name of up to ~10 suffixes) now stay in the
-- table as they are; only larger ones are toasted.
ALTER TABLE log_openings SET (toast_tuple_target = 8160);
