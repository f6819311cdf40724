-- A 429's block lasts at most Clerk's longest window (an hour) and a minute's margin: blocks
-- recorded before the cap existed are shortened to it.
UPDATE invite_sync_rate_blocks
SET blocked_until = LEAST(blocked_until, recorded_at + interval '3660 seconds');
