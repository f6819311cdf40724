-- invite-sync's own state. Every table carries a target: the Clerk instance (one secret
-- key, one roster relation, one hourly budget) the row belongs to, so several targets can
-- share one database later without a rewrite.

-- The ledger: every invitation invite-sync created, is creating, or has seen in Clerk.
CREATE TABLE invite_sync_ledger (
    id                  bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    target              text        NOT NULL,
    email               text        NOT NULL CHECK (email = lower(btrim(email))),
    clerk_invitation_id text,
    -- sending: a create carrying this row is in flight, or its outcome is unknown;
    -- pending / accepted / revoked / expired: the invitation's last seen status in Clerk;
    -- failed: the create was refused (see last_error_code, next_attempt_at).
    state               text        NOT NULL CHECK (state IN
                            ('sending', 'pending', 'accepted', 'revoked', 'expired', 'failed')),
    -- true when invite-sync created the invitation, or adopted one it had asked for.
    owned               boolean     NOT NULL,
    -- A digest of the roster row the create was made from: a changed row is retried.
    row_digest          text,
    public_metadata     jsonb,
    redirect_url        text,
    attempts            integer     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    last_error_code     text,
    last_error          text,
    terminal            boolean     NOT NULL DEFAULT false,
    next_attempt_at     timestamptz,
    -- The create call that carried it, to settle a crash or an unknown outcome.
    call_id             bigint,
    run_id              uuid,
    revoked_by_us       boolean     NOT NULL DEFAULT false,
    clerk_created_at    timestamptz,
    expires_at          timestamptz,
    sent_at             timestamptz,
    settled_at          timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);

CREATE UNIQUE INDEX invite_sync_ledger_invitation_key
    ON invite_sync_ledger (target, clerk_invitation_id)
    WHERE clerk_invitation_id IS NOT NULL;
CREATE INDEX invite_sync_ledger_email ON invite_sync_ledger (target, email);
-- At most one create in flight per person: the guard against sending twice.
CREATE UNIQUE INDEX invite_sync_ledger_one_sending
    ON invite_sync_ledger (target, email)
    WHERE state = 'sending';

CREATE TRIGGER invite_sync_ledger_touch_updated_at
    BEFORE UPDATE ON invite_sync_ledger
    FOR EACH ROW EXECUTE FUNCTION invite_sync_touch_updated_at();

-- People Clerk says are already users (form_identifier_exists, an accepted invitation,
-- a user.created webhook): no create budget is spent on them.
CREATE TABLE invite_sync_known_users (
    target     text        NOT NULL,
    email      text        NOT NULL CHECK (email = lower(btrim(email))),
    seen_via   text        NOT NULL,
    seen_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (target, email)
);

-- The run history: one row per reconcile cycle.
CREATE TABLE invite_sync_runs (
    id                  uuid        PRIMARY KEY,
    target              text        NOT NULL,
    trigger             text        NOT NULL,
    dry_run             boolean     NOT NULL,
    outcome             text        NOT NULL DEFAULT 'running' CHECK (outcome IN
                            ('running', 'succeeded', 'partial', 'failed', 'held', 'skipped', 'interrupted')),
    started_at          timestamptz NOT NULL DEFAULT now(),
    finished_at         timestamptz,
    -- Counts per plan category and per action outcome, e.g. {"create": 60, "in_sync": 12}.
    counts              jsonb       NOT NULL DEFAULT '{}'::jsonb,
    held_revocations    integer     NOT NULL DEFAULT 0,
    errors              integer     NOT NULL DEFAULT 0,
    error               text,
    budget_left         jsonb       NOT NULL DEFAULT '{}'::jsonb,
    backlog             integer     NOT NULL DEFAULT 0,
    backlog_eta_seconds bigint,
    host                text
);
CREATE INDEX invite_sync_runs_recent ON invite_sync_runs (target, started_at DESC);

-- The shared hourly budget: every call to an hourly-limited Clerk endpoint, recorded before
-- it is sent, so restarts and replicas count the same calls.
CREATE TABLE invite_sync_clerk_calls (
    id        bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    target    text        NOT NULL,
    endpoint  text        NOT NULL CHECK (endpoint IN ('create_invitation', 'create_bulk_invitations')),
    called_at timestamptz NOT NULL DEFAULT now(),
    items     integer     NOT NULL CHECK (items BETWEEN 1 AND 10),
    status    integer,
    run_id    uuid
);
CREATE INDEX invite_sync_clerk_calls_window ON invite_sync_clerk_calls (target, endpoint, called_at);

-- A 429's Retry-After: the endpoint is blocked until then.
CREATE TABLE invite_sync_rate_blocks (
    target        text        NOT NULL,
    endpoint      text        NOT NULL,
    blocked_until timestamptz NOT NULL,
    recorded_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (target, endpoint)
);
