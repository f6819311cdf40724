-- The orders a cycle and `plan` read in, each given by an index rather than a sort.
--
-- The ledger and the known users stream beside the roster by address in byte order
-- (`COLLATE "C"`), which the (target, email) indexes, in the database's collation, do not
-- give unless that collation is "C": without these, each read sorted the target's whole
-- ledger and users first.
CREATE INDEX invite_sync_ledger_by_address
    ON invite_sync_ledger (target, (email COLLATE "C"), id);
CREATE INDEX invite_sync_known_users_by_address
    ON invite_sync_known_users (target, (email COLLATE "C")) INCLUDE (deleted_at);

-- A cycle holds the ledger entries Clerk can still change or that await settling: found
-- without reading the whole ledger, in which they are few once the roster is drained.
CREATE INDEX invite_sync_ledger_live
    ON invite_sync_ledger (target, id) WHERE state IN ('sending', 'pending', 'expired');

-- `plan` writes the creates in queue order as it reads the roster: the oldest `not_before`
-- (a row without one has waited since it was written), then the oldest row, then the
-- address.
CREATE INDEX desired_invitees_queue_order ON desired_invitees (
    coalesce(not_before, created_at) NULLS FIRST,
    created_at NULLS FIRST,
    lower(btrim(email) COLLATE "C")
);
