-- The roster: the people who should hold an invitation. HR systems, CSV imports and the
-- roster webhook write here; invite-sync only reads it.
CREATE TABLE desired_invitees (
    email           text        NOT NULL,
    public_metadata jsonb       NOT NULL DEFAULT '{}'::jsonb,
    redirect_url    text,
    notify          boolean,
    expires_in_days integer,
    template_slug   text,
    not_before      timestamptz,
    source          text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT desired_invitees_email_not_blank CHECK (btrim(email) <> '')
);

-- One row per person: a second spelling of the same address ("Ann@X.com", " ann@x.com")
-- is rejected, so an upsert names the conflict target (lower(btrim(email))).
CREATE UNIQUE INDEX desired_invitees_email_key ON desired_invitees ((lower(btrim(email))));

CREATE FUNCTION invite_sync_touch_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW IS DISTINCT FROM OLD THEN
        NEW.updated_at := now();
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER desired_invitees_touch_updated_at
    BEFORE UPDATE ON desired_invitees
    FOR EACH ROW EXECUTE FUNCTION invite_sync_touch_updated_at();

COMMENT ON TABLE desired_invitees IS
    'The roster invite-sync keeps Clerk''s invitations equal to. Insert (email) at least; the email is unique case-insensitively.';
