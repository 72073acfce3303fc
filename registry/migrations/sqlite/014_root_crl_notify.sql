-- The root CRLs' revision on its own (registry/notify.go, issue 14): on
-- PostgreSQL a trigger notifies atr_root_crls when root_crl_seq moves. SQLite
-- has no notifications: a root CRL published through this process's Store
-- clears the revision's liveness itself, and one published by another
-- process on the same file is seen at the notifier's next read (every
-- 250 ms), as every other revision. Nothing changes in the schema; the
-- version keeps both dialects at the same number.
SELECT 1;
