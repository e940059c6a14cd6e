-- Users mirrored from LDAP: which entry each one is, and what the sync last wrote, so that an
-- unchanged entry costs no write.
CREATE TABLE directory_links (
    user_id TEXT PRIMARY KEY NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- the entry's stable key (ldap.id_attribute: entryUUID, objectGUID as a UUID, ...)
    entry_key TEXT NOT NULL UNIQUE,
    dn TEXT NOT NULL,
    -- hash of the mapped values last written, and the user version that write produced
    fingerprint TEXT NOT NULL,
    synced_version BIGINT NOT NULL,
    -- set when a full run no longer found the entry (the user was deactivated then)
    missing_since TIMESTAMP,
    -- the entry's change mark (entryCSN / modifyTimestamp) when its MFA reset flag was applied:
    -- a flag that could not be cleared is not applied again for the same mark
    flag_mark TEXT
);

-- One row per sync run: what it did, and the high-water mark the next incremental run starts from.
CREATE TABLE sync_runs (
    id TEXT PRIMARY KEY NOT NULL,
    kind TEXT NOT NULL,
    started_by TEXT NOT NULL,
    status TEXT NOT NULL,
    started_at TIMESTAMP NOT NULL,
    finished_at TIMESTAMP,
    created BIGINT NOT NULL DEFAULT 0,
    updated BIGINT NOT NULL DEFAULT 0,
    unchanged BIGINT NOT NULL DEFAULT 0,
    deactivated BIGINT NOT NULL DEFAULT 0,
    reactivated BIGINT NOT NULL DEFAULT 0,
    resets_applied BIGINT NOT NULL DEFAULT 0,
    flags_cleared BIGINT NOT NULL DEFAULT 0,
    errors TEXT NOT NULL DEFAULT '[]',
    high_water TEXT,
    duration_ms BIGINT
);
CREATE INDEX sync_runs_started ON sync_runs (started_at);

-- Who runs the sync now: runs never overlap, across the processes sharing the database.
CREATE TABLE sync_lease (
    name TEXT PRIMARY KEY NOT NULL,
    holder TEXT NOT NULL,
    expires_at TIMESTAMP NOT NULL
);
