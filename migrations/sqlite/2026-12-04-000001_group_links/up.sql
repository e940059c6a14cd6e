-- Groups mirrored from LDAP ([ldap.groups]): which entry each one is (its stable key, as for
-- users in directory_links) and its DN, through which member DNs of other groups resolve.
CREATE TABLE group_links (
    group_id TEXT PRIMARY KEY NOT NULL REFERENCES groups (id) ON DELETE CASCADE,
    entry_key TEXT NOT NULL UNIQUE,
    dn TEXT NOT NULL
);

-- What a run did to the groups.
ALTER TABLE sync_runs ADD COLUMN groups_created BIGINT NOT NULL DEFAULT 0;
ALTER TABLE sync_runs ADD COLUMN groups_updated BIGINT NOT NULL DEFAULT 0;
ALTER TABLE sync_runs ADD COLUMN groups_deleted BIGINT NOT NULL DEFAULT 0;
ALTER TABLE sync_runs ADD COLUMN memberships_changed BIGINT NOT NULL DEFAULT 0;
