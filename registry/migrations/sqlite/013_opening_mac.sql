-- The MAC of each stored log opening (registry/logentry.go, issue 14): an
-- HMAC-SHA256 of the agent name and the opening, keyed with a secret only a
-- holder of the VRF key can derive (translog.VRFSecret). A rotation takes its
-- name's VRF proofs from the agent's newest opening; with a MAC that checks,
-- it takes them without an RSA verification of each, which a database
-- changed behind ATR's back cannot forge. Openings stored before this
-- version, or while the key could not be derived, have none: their proofs
-- are verified as before.
ALTER TABLE log_openings ADD COLUMN opened_mac BLOB;
