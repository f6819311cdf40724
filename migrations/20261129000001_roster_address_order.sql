-- The roster in the order a cycle reads it: by address with spaces trimmed and ASCII letters
-- lower-cased, in byte order (the key every address Clerk would take normalises to). With this
-- index the rows stream from the first one instead of after a sort of the whole table.
CREATE INDEX IF NOT EXISTS desired_invitees_address_order
    ON desired_invitees ((lower(btrim(email) COLLATE "C")));
