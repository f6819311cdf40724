-- Roster changes wake the service within seconds: every statement that changes
-- desired_invitees sends NOTIFY invite_sync. The cron schedule stays as the full resync.
CREATE FUNCTION invite_sync_notify_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('invite_sync', TG_TABLE_NAME);
    RETURN NULL;
END;
$$;

CREATE TRIGGER desired_invitees_notify
    AFTER INSERT OR UPDATE OR DELETE ON desired_invitees
    FOR EACH STATEMENT EXECUTE FUNCTION invite_sync_notify_change();

CREATE TRIGGER desired_invitees_notify_truncate
    AFTER TRUNCATE ON desired_invitees
    FOR EACH STATEMENT EXECUTE FUNCTION invite_sync_notify_change();

-- Webhook deliveries already applied, by sender and message id: a redelivery is answered
-- 200 and not applied twice.
CREATE TABLE invite_sync_webhook_deliveries (
    source      text        NOT NULL,
    message_id  text        NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, message_id)
);
