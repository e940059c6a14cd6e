-- The last tick of each sync schedule that an instance claimed: instances firing at the same
-- tick race for it here, and only the first one runs.
CREATE TABLE sync_ticks (
    schedule TEXT PRIMARY KEY NOT NULL,
    last_tick TIMESTAMP NOT NULL
);
