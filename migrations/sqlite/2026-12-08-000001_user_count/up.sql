-- How many users there are, kept in the transaction of each insert and delete (see
-- store/user_count.rs): a page's totalResults without counting every user. SQLite writes one
-- transaction at a time, so one row holds the count, and in `changes` how many inserts and
-- deletes made it (a generation: the creation order changed since it was last read).
CREATE TABLE user_count_deltas (
    id INTEGER PRIMARY KEY NOT NULL,
    delta BIGINT NOT NULL,
    changes BIGINT NOT NULL DEFAULT 0
);
INSERT INTO user_count_deltas (id, delta) SELECT 0, COUNT(*) FROM users;
CREATE TRIGGER users_counted_in AFTER INSERT ON users
BEGIN
    UPDATE user_count_deltas SET delta = delta + 1, changes = changes + 1 WHERE id = 0;
END;
CREATE TRIGGER users_counted_out AFTER DELETE ON users
BEGIN
    UPDATE user_count_deltas SET delta = delta - 1, changes = changes + 1 WHERE id = 0;
END;
