ALTER TABLE sync_runs DROP COLUMN memberships_changed;
ALTER TABLE sync_runs DROP COLUMN groups_deleted;
ALTER TABLE sync_runs DROP COLUMN groups_updated;
ALTER TABLE sync_runs DROP COLUMN groups_created;
DROP TABLE group_links;
