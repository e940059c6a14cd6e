-- The search rows in one B-tree keyed by their primary key (WITHOUT ROWID: no rowid table beside
-- the key's index) and one index that serves both lookups and sorts: (path, value, sort_key)
-- carries user_id and elem in every entry. A write of a user's search rows touches two B-trees
-- instead of four, the pages a commit has to write (issue 18). A sort by a value reads the index
-- in (value) order and orders the ties by user_id as it goes.
CREATE TABLE user_values_keyed (
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    path TEXT NOT NULL,
    elem INTEGER NOT NULL,
    value TEXT NOT NULL,
    sort_key BOOLEAN NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, path, elem)
) WITHOUT ROWID;
INSERT INTO user_values_keyed (user_id, path, elem, value, sort_key)
    SELECT user_id, path, elem, value, sort_key FROM user_values;
DROP TABLE user_values;
ALTER TABLE user_values_keyed RENAME TO user_values;
CREATE INDEX user_values_lookup ON user_values (path, value, sort_key);
