-- Who is already a Clerk user, learned before any create budget is spent on them.
-- Known users carry their Clerk user id (a `user.deleted` event names only the id) and are
-- marked deleted, not forgotten, when Clerk deletes them: a deleted user still on the roster
-- is invited again.
ALTER TABLE invite_sync_known_users
    ADD COLUMN clerk_user_id text,
    ADD COLUMN deleted_at    timestamptz;

CREATE INDEX invite_sync_known_users_by_user_id
    ON invite_sync_known_users (target, clerk_user_id)
    WHERE clerk_user_id IS NOT NULL;

-- Addresses Clerk said are not users, and when: an answer older than
-- `clerk.user_check_max_age_seconds` is asked again before a create.
CREATE TABLE invite_sync_user_checks (
    target     text        NOT NULL,
    email      text        NOT NULL CHECK (email = lower(btrim(email))),
    checked_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (target, email)
);
