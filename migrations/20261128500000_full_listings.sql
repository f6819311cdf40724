-- When each target last listed every invitation in Clerk (a full reconciliation). The cycles
-- in between list pending invitations only and look up the ones that left the pending set;
-- the first cycle after each tick of sync.full_schedule lists everything again.
CREATE TABLE invite_sync_full_listings (
    target    text        PRIMARY KEY,
    listed_at timestamptz NOT NULL
);
