CREATE TABLE user_values_rowid (
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    path TEXT NOT NULL,
    elem INTEGER NOT NULL,
    value TEXT NOT NULL,
    sort_key BOOLEAN NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, path, elem)
);
INSERT INTO user_values_rowid (user_id, path, elem, value, sort_key)
    SELECT user_id, path, elem, value, sort_key FROM user_values;
DROP TABLE user_values;
ALTER TABLE user_values_rowid RENAME TO user_values;
CREATE INDEX user_values_lookup ON user_values (path, value);
CREATE INDEX user_values_sort ON user_values (path, value, user_id) WHERE sort_key;
