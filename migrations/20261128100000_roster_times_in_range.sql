-- Times a reader can hold: PostgreSQL keeps infinity and years up to 294276, which no client
-- library's date type holds whole. NOT VALID: rows written before this migration stay (the
-- service reports them as invalid and goes on); new and updated rows must be in range.
ALTER TABLE desired_invitees
    ADD CONSTRAINT desired_invitees_not_before_in_range
        CHECK (not_before >= '0001-01-01 00:00:00+00' AND not_before < '10000-01-01 00:00:00+00')
        NOT VALID,
    ADD CONSTRAINT desired_invitees_created_at_in_range
        CHECK (created_at >= '0001-01-01 00:00:00+00' AND created_at < '10000-01-01 00:00:00+00')
        NOT VALID,
    ADD CONSTRAINT desired_invitees_updated_at_in_range
        CHECK (updated_at >= '0001-01-01 00:00:00+00' AND updated_at < '10000-01-01 00:00:00+00')
        NOT VALID;

-- Where every existing row is in range, the constraints are validated now, so they hold for
-- the whole table.
DO $$
BEGIN
    ALTER TABLE desired_invitees VALIDATE CONSTRAINT desired_invitees_not_before_in_range;
    ALTER TABLE desired_invitees VALIDATE CONSTRAINT desired_invitees_created_at_in_range;
    ALTER TABLE desired_invitees VALIDATE CONSTRAINT desired_invitees_updated_at_in_range;
EXCEPTION WHEN check_violation THEN
    RAISE NOTICE 'desired_invitees holds rows with times out of range; they are reported as invalid until corrected';
END;
$$;
