-- Organizations (B2B): a second roster, of memberships, and invite-sync's state for it.

-- The membership roster: who should belong to which Clerk organization, and with which role.
-- HR systems, CSV imports and the roster webhook write here; invite-sync only reads it.
-- `organization` is an organization id (org_...) or its slug; an empty `role` takes
-- organizations.default_role.
CREATE TABLE desired_memberships (
    email            text        NOT NULL,
    organization     text        NOT NULL,
    role             text,
    public_metadata  jsonb       NOT NULL DEFAULT '{}'::jsonb,
    private_metadata jsonb       NOT NULL DEFAULT '{}'::jsonb,
    redirect_url     text,
    expires_in_days  integer,
    notify           boolean,
    not_before       timestamptz,
    source           text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT desired_memberships_email_not_blank CHECK (btrim(email) <> ''),
    CONSTRAINT desired_memberships_organization_not_blank CHECK (btrim(organization) <> ''),
    CONSTRAINT desired_memberships_not_before_in_range
        CHECK (not_before >= '0001-01-01 00:00:00+00' AND not_before < '10000-01-01 00:00:00+00'),
    CONSTRAINT desired_memberships_created_at_in_range
        CHECK (created_at >= '0001-01-01 00:00:00+00' AND created_at < '10000-01-01 00:00:00+00'),
    CONSTRAINT desired_memberships_updated_at_in_range
        CHECK (updated_at >= '0001-01-01 00:00:00+00' AND updated_at < '10000-01-01 00:00:00+00')
);

-- One row per address and organization: a second spelling of the same pair is rejected, so
-- an upsert names the conflict target ((lower(btrim(email))), (btrim(organization))).
CREATE UNIQUE INDEX desired_memberships_email_organization_key
    ON desired_memberships ((lower(btrim(email))), (btrim(organization)));

-- The roster in the order a cycle reads it: by organization as written (spaces trimmed), then
-- by address with spaces trimmed and ASCII letters lower-cased, both in byte order.
CREATE INDEX desired_memberships_organization_order
    ON desired_memberships ((btrim(organization) COLLATE "C"), (lower(btrim(email)) COLLATE "C"));

CREATE TRIGGER desired_memberships_touch_updated_at
    BEFORE UPDATE ON desired_memberships
    FOR EACH ROW EXECUTE FUNCTION invite_sync_touch_updated_at();

-- Roster changes wake the service, as for desired_invitees.
CREATE TRIGGER desired_memberships_notify
    AFTER INSERT OR UPDATE OR DELETE ON desired_memberships
    FOR EACH STATEMENT EXECUTE FUNCTION invite_sync_notify_change();

CREATE TRIGGER desired_memberships_notify_truncate
    AFTER TRUNCATE ON desired_memberships
    FOR EACH STATEMENT EXECUTE FUNCTION invite_sync_notify_change();

COMMENT ON TABLE desired_memberships IS
    'The membership roster invite-sync keeps Clerk''s organization memberships equal to. Insert (email, organization) at least, organization an id (org_...) or a slug; one row per address and organization, the address compared case-insensitively.';

-- The membership ledger: every organization invitation and membership invite-sync created,
-- is creating, or has seen in Clerk, per organization.
CREATE TABLE invite_sync_membership_ledger (
    id               bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    target           text        NOT NULL,
    email            text        NOT NULL CHECK (email = lower(btrim(email))),
    organization_id  text        NOT NULL CHECK (btrim(organization_id) <> ''),
    -- invitation: an organization invitation (clerk_id orginv_...);
    -- membership: a membership created directly (clerk_id the member's user id).
    kind             text        NOT NULL CHECK (kind IN ('invitation', 'membership')),
    -- NULL while sending, until Clerk's answer names it.
    clerk_id         text,
    -- The member's Clerk user id, once known (the membership's user, or who accepted the
    -- invitation): what a removal names.
    user_id          text,
    role             text        NOT NULL,
    -- sending: a create carrying this row is in flight, or its outcome is unknown;
    -- pending / accepted / revoked / expired: an invitation's last seen status in Clerk;
    -- member / removed: a membership's; failed: the create was refused (see
    -- last_error_code, next_attempt_at).
    state            text        NOT NULL CHECK (state IN
                         ('sending', 'pending', 'accepted', 'revoked', 'expired', 'failed',
                          'member', 'removed')),
    -- true when invite-sync created it (or adopted one it had asked for).
    owned            boolean     NOT NULL,
    -- A digest of the roster row the create was made from: a changed row is retried.
    row_digest       text,
    attempts         integer     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    last_error_code  text,
    last_error       text,
    terminal         boolean     NOT NULL DEFAULT false,
    next_attempt_at  timestamptz,
    -- The create call that carried it, to settle a crash or an unknown outcome.
    call_id          bigint,
    run_id           uuid,
    sent_at          timestamptz,
    settled_at       timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);

-- An organization invitation is held once.
CREATE UNIQUE INDEX invite_sync_membership_ledger_invitation_key
    ON invite_sync_membership_ledger (target, clerk_id)
    WHERE kind = 'invitation' AND clerk_id IS NOT NULL;
CREATE INDEX invite_sync_membership_ledger_organization_email
    ON invite_sync_membership_ledger (target, organization_id, email);
-- At most one create in flight per person and organization: the guard against sending twice.
CREATE UNIQUE INDEX invite_sync_membership_ledger_one_sending
    ON invite_sync_membership_ledger (target, organization_id, email)
    WHERE state = 'sending';

CREATE TRIGGER invite_sync_membership_ledger_touch_updated_at
    BEFORE UPDATE ON invite_sync_membership_ledger
    FOR EACH ROW EXECUTE FUNCTION invite_sync_touch_updated_at();

-- The organizations the membership roster names, as Clerk last described them: their room
-- (max_allowed_memberships counts members and pending invitations; 0 means unlimited) is
-- read before sending, so a full organization costs at most one refused call.
CREATE TABLE invite_sync_organizations (
    target                    text        NOT NULL,
    organization_id           text        NOT NULL CHECK (btrim(organization_id) <> ''),
    slug                      text,
    name                      text        NOT NULL DEFAULT '',
    max_allowed_memberships   integer     NOT NULL DEFAULT 0 CHECK (max_allowed_memberships >= 0),
    members_count             integer     NOT NULL DEFAULT 0 CHECK (members_count >= 0),
    pending_invitations_count integer     NOT NULL DEFAULT 0 CHECK (pending_invitations_count >= 0),
    -- When Clerk last refused a create because the organization was full; cleared when
    -- room is seen again.
    full_refused_at           timestamptz,
    seen_at                   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (target, organization_id)
);
CREATE INDEX invite_sync_organizations_slug ON invite_sync_organizations (target, slug);

-- The hourly-limited organization invitation endpoints share the calls table, each in its
-- own budget.
ALTER TABLE invite_sync_clerk_calls
    DROP CONSTRAINT invite_sync_clerk_calls_endpoint_check,
    ADD CONSTRAINT invite_sync_clerk_calls_endpoint_check CHECK (endpoint IN (
        'create_invitation', 'create_bulk_invitations',
        'create_organization_invitation', 'create_organization_invitations_bulk'));
