-- Entries whose write failed, run after run: after a few runs at the same change they no longer
-- hold the incremental high-water mark back (quarantined); every run still retries and reports
-- them until they are written or gone.
CREATE TABLE sync_quarantine (
    entry_key TEXT PRIMARY KEY NOT NULL,
    dn TEXT NOT NULL,
    change_mark TEXT,
    failures BIGINT NOT NULL,
    error TEXT NOT NULL
);
