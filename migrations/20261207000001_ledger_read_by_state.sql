-- The ledger streams beside the roster in two parts, each by address in byte order
-- (`COLLATE "C"`), oldest first: the entries people accepted, of which a cycle needs the id
-- and whether invite-sync sent them alone (held by this index, so the table is not read),
-- and every other entry in full. Once a roster is drained nearly every entry is accepted: a
-- cycle reads little more of the ledger than the addresses, and the second part is short.
CREATE INDEX invite_sync_ledger_accepted_by_address
    ON invite_sync_ledger (target, (email COLLATE "C"), id) INCLUDE (owned)
    WHERE state = 'accepted';
CREATE INDEX invite_sync_ledger_open_by_address
    ON invite_sync_ledger (target, (email COLLATE "C"), id)
    WHERE state <> 'accepted';

-- The two above read what this one did.
DROP INDEX invite_sync_ledger_by_address;
