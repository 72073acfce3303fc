-- Change notification (registry/notify.go). SQLite has no NOTIFY: a
-- transaction committed through this process's Store wakes its notifier
-- directly, and a notifier reads log_head.size and revocation_state.seq
-- (one small query) every 250 ms to see commits of other processes on the
-- same file. Nothing to create; this version keeps the two dialects'
-- migration numbers aligned with postgres/009_notify.sql.
SELECT 1;
