-- Groups provisioned through the SCIM 2.0 endpoint (/scim/v2/Groups), per target (the Clerk
-- instance invite-sync keeps in line). The group's members are SCIM users; what a group means
-- for the membership roster is the configuration's (scim.groups).
CREATE TABLE invite_sync_scim_groups (
    id           uuid        PRIMARY KEY,
    target       text        NOT NULL,
    display_name text        NOT NULL CHECK (btrim(display_name) <> ''),
    external_id  text,
    version      bigint      NOT NULL DEFAULT 1,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now()
);

-- displayName is unique per target, case-insensitively (RFC 7643 §4.2 leaves its uniqueness
-- to the server: here, as userName's).
CREATE UNIQUE INDEX invite_sync_scim_groups_display_name_key
    ON invite_sync_scim_groups (target, (lower(display_name)));
CREATE INDEX invite_sync_scim_groups_external_id
    ON invite_sync_scim_groups (target, external_id);
CREATE INDEX invite_sync_scim_groups_created
    ON invite_sync_scim_groups (target, created_at, id);

-- A group's members: SCIM users, each at most once. A user deleted leaves every group.
CREATE TABLE invite_sync_scim_group_members (
    group_id uuid NOT NULL REFERENCES invite_sync_scim_groups (id) ON DELETE CASCADE,
    user_id  uuid NOT NULL REFERENCES invite_sync_scim_users (id) ON DELETE CASCADE,
    -- The member's display text as the client sent it.
    display  text,
    -- The order members were added in, which a group's members are listed in.
    added    bigint GENERATED ALWAYS AS IDENTITY,
    PRIMARY KEY (group_id, user_id)
);

CREATE INDEX invite_sync_scim_group_members_order
    ON invite_sync_scim_group_members (group_id, added);
-- The groups of a user (`members` looked up by value, a user's deletion).
CREATE INDEX invite_sync_scim_group_members_user
    ON invite_sync_scim_group_members (user_id, group_id);
