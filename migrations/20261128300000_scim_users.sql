-- Users provisioned through the SCIM 2.0 endpoint (/scim/v2). The SCIM record is kept here
-- whole, active or not, so an identity provider reads back what it wrote; the roster row
-- (desired_invitees, source 'scim') exists only while the user is active and has an address.
CREATE TABLE invite_sync_scim_users (
    id          uuid        PRIMARY KEY,
    user_name   text        NOT NULL CHECK (btrim(user_name) <> ''),
    external_id text,
    -- The roster address this user maps to (normalised), when it has one.
    email       text        CHECK (email = lower(btrim(email))),
    active      boolean     NOT NULL,
    -- The User's attributes as stored (no id, meta or password).
    attributes  jsonb       NOT NULL CHECK (jsonb_typeof(attributes) = 'object'),
    version     bigint      NOT NULL DEFAULT 1,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- userName is unique case-insensitively (RFC 7643: caseExact false, uniqueness server);
-- two users cannot share a roster address.
CREATE UNIQUE INDEX invite_sync_scim_users_user_name_key
    ON invite_sync_scim_users ((lower(user_name)));
CREATE UNIQUE INDEX invite_sync_scim_users_email_key
    ON invite_sync_scim_users (email);
CREATE INDEX invite_sync_scim_users_external_id
    ON invite_sync_scim_users (external_id);
CREATE INDEX invite_sync_scim_users_created
    ON invite_sync_scim_users (created_at, id);
