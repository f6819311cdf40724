-- Outbound events: every change of the ledgers that the HR side cares about becomes a signed
-- event (Standard Webhooks) sent to each endpoint of `events.endpoints`.
--
-- Events are written by triggers on the ledgers, so each one is written in the same
-- transaction as the ledger change that causes it, whatever code path made the change: a
-- crash can neither lose an event (the change and its event commit together) nor invent one
-- (an event of a change rolled back is rolled back with it). No caller has to remember to
-- write it, and a ledger write added later cannot forget to.
--
-- Events are written whether or not any endpoint is configured: an endpoint added later can
-- be given the retained history (`invite-sync events replay --all`), and nothing is decided
-- at write time that depends on the configuration. What an instance without endpoints keeps
-- is bounded by `retention.days` (housekeeping prunes events older than that).

-- One row per event. `event_id` is the `webhook-id` header: stable across retries and
-- replays, so a receiver drops repeats by it. `person_key` orders a person's events: the
-- address for `person.*`, the address and organization for `membership.*`.
CREATE TABLE invite_sync_outbox (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    target      text        NOT NULL,
    event_id    text        NOT NULL UNIQUE
                            DEFAULT 'msg_' || replace(gen_random_uuid()::text, '-', ''),
    type        text        NOT NULL,
    person_key  text        NOT NULL,
    email       text        NOT NULL,
    -- The whole body sent, `{"type", "timestamp", "data"}`, frozen when the change is made:
    -- a retry sends the same bytes.
    payload     jsonb       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX invite_sync_outbox_created ON invite_sync_outbox (created_at);
CREATE INDEX invite_sync_outbox_person ON invite_sync_outbox (target, email, id);

-- The endpoints a target sends to, registered from the configuration when the service (or
-- a command that delivers) starts. The triggers read it: each event gets a delivery row per
-- active endpoint in the same transaction. An endpoint removed from the configuration is
-- kept, inactive, so its deliveries' history stays readable until pruned.
CREATE TABLE invite_sync_event_endpoints (
    target     text        NOT NULL,
    url        text        NOT NULL,
    active     boolean     NOT NULL DEFAULT true,
    added_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (target, url)
);

-- The roster relations of a target, registered with the endpoints, so that an event can
-- carry the roster row's `source` and metadata (the relations are configurable).
CREATE TABLE invite_sync_event_rosters (
    target               text PRIMARY KEY,
    relation             text NOT NULL,
    memberships_relation text NOT NULL
);

-- Delivery state, one row per event and endpoint: a table of its own rather than columns of
-- the outbox, because the number of endpoints is not fixed, each endpoint fails and
-- recovers on its own (one dead receiver must not hold another's events back), and a
-- person's order is kept per endpoint. `person_key` is copied here so the next due
-- delivery of each person is found from this table's partial index alone.
CREATE TABLE invite_sync_outbox_deliveries (
    outbox_id       bigint      NOT NULL REFERENCES invite_sync_outbox (id) ON DELETE CASCADE,
    endpoint        text        NOT NULL,
    target          text        NOT NULL,
    person_key      text        NOT NULL,
    attempts        integer     NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    -- When the next attempt is due; while an attempt is in flight, when its claim lapses.
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz,
    -- A dead letter: given up after events.max_attempts attempts or events.max_age.
    dead_at         timestamptz,
    last_status     integer,
    last_error      text,
    PRIMARY KEY (outbox_id, endpoint)
);
CREATE INDEX invite_sync_outbox_deliveries_open
    ON invite_sync_outbox_deliveries (target, endpoint, person_key, outbox_id)
    WHERE delivered_at IS NULL AND dead_at IS NULL;
CREATE INDEX invite_sync_outbox_deliveries_dead
    ON invite_sync_outbox_deliveries (target, endpoint, outbox_id)
    WHERE dead_at IS NOT NULL;

-- The roster row of a person, for an event's `source` and `metadata`: (NULL, NULL) when the
-- person has none or the relation cannot be read that way (a view without those columns).
-- Never fails: an event must not make a ledger write fail.
CREATE FUNCTION invite_sync_event_roster_row(
    p_target text, p_email text, p_organization_id text, OUT source text, OUT metadata jsonb)
LANGUAGE plpgsql AS $$
DECLARE
    relation regclass;
    rel_name text;
    slug     text;
BEGIN
    IF p_organization_id IS NULL THEN
        SELECT r.relation INTO rel_name FROM invite_sync_event_rosters AS r WHERE r.target = p_target;
        relation := to_regclass(coalesce(rel_name, 'desired_invitees'));
        IF relation IS NULL THEN
            RETURN;
        END IF;
        EXECUTE format(
            'SELECT source::text, public_metadata::jsonb FROM %s
             WHERE lower(btrim(email) COLLATE "C") = $1 LIMIT 1', relation)
            INTO source, metadata USING p_email;
    ELSE
        SELECT r.memberships_relation INTO rel_name
            FROM invite_sync_event_rosters AS r WHERE r.target = p_target;
        relation := to_regclass(coalesce(rel_name, 'desired_memberships'));
        IF relation IS NULL THEN
            RETURN;
        END IF;
        SELECT o.slug INTO slug FROM invite_sync_organizations AS o
            WHERE o.target = p_target AND o.organization_id = p_organization_id;
        EXECUTE format(
            'SELECT source::text, public_metadata::jsonb FROM %s
             WHERE lower(btrim(email)) = $1 AND btrim(organization) IN ($2, $3) LIMIT 1',
            relation)
            INTO source, metadata USING p_email, p_organization_id, coalesce(slug, '');
    END IF;
EXCEPTION WHEN OTHERS THEN
    source := NULL;
    metadata := NULL;
END;
$$;

-- Writes one event and its delivery rows, one per active endpoint of the target.
CREATE FUNCTION invite_sync_emit_event(
    p_target text, p_type text, p_email text, p_organization_id text, p_data jsonb)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    roster     record;
    v_person_key text;
    data       jsonb;
    stamp      timestamptz := now();
    new_id     bigint;
BEGIN
    roster := invite_sync_event_roster_row(p_target, p_email, p_organization_id);
    v_person_key := CASE WHEN p_organization_id IS NULL THEN p_email
                       ELSE p_email || ' ' || p_organization_id END;
    -- A person who left the roster (a revocation, a removal) has no row any more: their
    -- events carry the row as the person's previous event saw it.
    IF roster.source IS NULL AND roster.metadata IS NULL THEN
        SELECT o.payload->'data'->>'source', o.payload->'data'->'metadata'
            INTO roster.source, roster.metadata
            FROM invite_sync_outbox AS o
            WHERE o.target = p_target AND o.email = p_email AND o.person_key = v_person_key
            ORDER BY o.id DESC LIMIT 1;
    END IF;
    data := jsonb_build_object('email_address', p_email, 'source', roster.source,
                               'metadata', coalesce(roster.metadata, '{}'::jsonb))
            || p_data;
    INSERT INTO invite_sync_outbox (target, type, person_key, email, payload, created_at)
    VALUES (p_target, p_type, v_person_key, p_email,
            jsonb_build_object(
                'type', p_type,
                'timestamp', to_char(stamp AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
                'data', data),
            stamp)
    RETURNING id INTO new_id;
    INSERT INTO invite_sync_outbox_deliveries (outbox_id, endpoint, target, person_key)
    SELECT new_id, e.url, p_target, v_person_key
    FROM invite_sync_event_endpoints AS e
    WHERE e.target = p_target AND e.active;
END;
$$;

-- The invitation ledger's events, for the invitations invite-sync owns (a foreign or
-- historical invitation it only saw is not its news to tell):
--   person.invited   an invitation was created (or one it had asked for was adopted);
--   person.accepted  it was accepted;
--   person.revoked   it was revoked (`revoked_by_us` says by whom);
--   person.expired   it expired unanswered;
--   person.failed    Clerk refused the create (`reason`: code, message, terminal, retry time).
-- A `sending` row is a create in flight, not news; its outcome is.
CREATE FUNCTION invite_sync_ledger_event() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    kind text;
    data jsonb;
BEGIN
    IF NOT NEW.owned OR NEW.state = 'sending'
       OR (TG_OP = 'UPDATE' AND OLD.state IS NOT DISTINCT FROM NEW.state) THEN
        RETURN NULL;
    END IF;
    kind := CASE NEW.state
        WHEN 'pending' THEN 'person.invited'
        WHEN 'accepted' THEN 'person.accepted'
        WHEN 'revoked' THEN 'person.revoked'
        WHEN 'expired' THEN 'person.expired'
        WHEN 'failed' THEN 'person.failed'
    END;
    IF kind IS NULL THEN
        RETURN NULL;
    END IF;
    data := jsonb_build_object('invitation_id', NEW.clerk_invitation_id);
    IF NEW.state = 'revoked' THEN
        data := data || jsonb_build_object('revoked_by_us', NEW.revoked_by_us);
    ELSIF NEW.state = 'failed' THEN
        data := data || jsonb_build_object('attempts', NEW.attempts, 'reason', jsonb_build_object(
            'code', NEW.last_error_code, 'message', NEW.last_error, 'terminal', NEW.terminal,
            'next_attempt_at', NEW.next_attempt_at));
    ELSIF NEW.state = 'pending' THEN
        data := data || jsonb_build_object('expires_at', NEW.expires_at);
    END IF;
    PERFORM invite_sync_emit_event(NEW.target, kind, NEW.email, NULL, data);
    RETURN NULL;
END;
$$;

CREATE TRIGGER invite_sync_ledger_events
    AFTER INSERT OR UPDATE OF state ON invite_sync_ledger
    FOR EACH ROW EXECUTE FUNCTION invite_sync_ledger_event();

-- The membership ledger's events, for the entries invite-sync owns:
--   membership.invited       an organization invitation was created;
--   membership.accepted      it was accepted (`user_id` when known);
--   membership.revoked       it was revoked;
--   membership.expired       it expired unanswered;
--   membership.added         a membership was created directly (a known user);
--   membership.removed       a membership it made (directly, or by an accepted invitation)
--                            is gone;
--   membership.role_changed  the role it set on a membership or invitation changed
--                            (`previous_role`);
--   membership.failed        Clerk refused the create (`reason`).
CREATE FUNCTION invite_sync_membership_ledger_event() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    kind text;
    data jsonb;
BEGIN
    IF NOT NEW.owned OR NEW.state = 'sending' THEN
        RETURN NULL;
    END IF;
    IF TG_OP = 'UPDATE' AND OLD.state IS NOT DISTINCT FROM NEW.state THEN
        IF OLD.role IS DISTINCT FROM NEW.role
           AND NEW.state IN ('pending', 'member', 'accepted') THEN
            kind := 'membership.role_changed';
        ELSE
            RETURN NULL;
        END IF;
    ELSE
        kind := CASE NEW.state
            WHEN 'pending' THEN 'membership.invited'
            WHEN 'accepted' THEN 'membership.accepted'
            WHEN 'revoked' THEN 'membership.revoked'
            WHEN 'expired' THEN 'membership.expired'
            WHEN 'member' THEN 'membership.added'
            WHEN 'removed' THEN 'membership.removed'
            WHEN 'failed' THEN 'membership.failed'
        END;
    END IF;
    IF kind IS NULL THEN
        RETURN NULL;
    END IF;
    data := jsonb_build_object(
        'organization_id', NEW.organization_id,
        'role', NEW.role,
        'invitation_id', CASE WHEN NEW.kind = 'invitation' THEN NEW.clerk_id END,
        'user_id', NEW.user_id);
    IF kind = 'membership.role_changed' THEN
        data := data || jsonb_build_object('previous_role', OLD.role);
    ELSIF NEW.state = 'failed' THEN
        data := data || jsonb_build_object('attempts', NEW.attempts, 'reason', jsonb_build_object(
            'code', NEW.last_error_code, 'message', NEW.last_error, 'terminal', NEW.terminal,
            'next_attempt_at', NEW.next_attempt_at));
    END IF;
    PERFORM invite_sync_emit_event(NEW.target, kind, NEW.email, NEW.organization_id, data);
    RETURN NULL;
END;
$$;

CREATE TRIGGER invite_sync_membership_ledger_events
    AFTER INSERT OR UPDATE OF state, role ON invite_sync_membership_ledger
    FOR EACH ROW EXECUTE FUNCTION invite_sync_membership_ledger_event();

-- person.already_user: invite-sync found, instead of inviting, that a person is already a
-- user (a lookup, or a create Clerk refused with form_identifier_exists): a known user
-- recorded, or a deleted one seen again, that way. Users learnt of otherwise (a webhook, an
-- accepted invitation) are not this event: an acceptance is person.accepted.
CREATE FUNCTION invite_sync_known_user_event() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.deleted_at IS NOT NULL
       OR NEW.seen_via NOT IN ('lookup', 'form_identifier_exists')
       OR (TG_OP = 'UPDATE' AND OLD.deleted_at IS NULL) THEN
        RETURN NULL;
    END IF;
    PERFORM invite_sync_emit_event(NEW.target, 'person.already_user', NEW.email, NULL,
        jsonb_build_object('user_id', NEW.clerk_user_id, 'seen_via', NEW.seen_via));
    RETURN NULL;
END;
$$;

CREATE TRIGGER invite_sync_known_user_events
    AFTER INSERT OR UPDATE ON invite_sync_known_users
    FOR EACH ROW EXECUTE FUNCTION invite_sync_known_user_event();
