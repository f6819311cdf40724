-- Who holds a target's lock, written by the holder when it takes the lock: invite-sync's own
-- process id and host, which pg_stat_activity cannot tell (its pid is the server backend's).
-- A row counts only while its backend still holds the advisory lock.
CREATE TABLE invite_sync_lock_holders (
    target       text        PRIMARY KEY,
    backend_pid  integer     NOT NULL,
    process_pid  integer     NOT NULL,
    host         text        NOT NULL,
    acquired_at  timestamptz NOT NULL DEFAULT now()
);
