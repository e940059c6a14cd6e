-- How many users there are, kept in the transaction of each insert and delete (see
-- store/user_count.rs): a page's totalResults without counting every user. Each writing
-- statement appends its own delta (concurrent writers lock no common row); readers fold them.
-- (`changes` is SQLite's generation; here the rows and their largest id are one.)
CREATE TABLE user_count_deltas (
    id BIGSERIAL PRIMARY KEY,
    delta BIGINT NOT NULL,
    changes BIGINT NOT NULL DEFAULT 0
);
INSERT INTO user_count_deltas (delta) SELECT COUNT(*) FROM users;

-- Folds the deltas it can lock at once into one row; never waits for a row another
-- transaction holds (a writer folding, or one whose delta is not committed yet).
CREATE FUNCTION user_count_fold() RETURNS void LANGUAGE sql AS $$
    WITH gone AS (
        DELETE FROM user_count_deltas
        WHERE id IN (SELECT id FROM user_count_deltas FOR UPDATE SKIP LOCKED)
        RETURNING delta
    )
    INSERT INTO user_count_deltas (delta) SELECT COALESCE(SUM(delta), 0) FROM gone;
$$;
-- Appends a writing statement's delta; every 256th delta its writer folds (readers of the
-- count fold too): the table stays small when users are only ever written.
CREATE FUNCTION user_count_add(n BIGINT) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    added BIGINT;
BEGIN
    IF n = 0 THEN
        RETURN;
    END IF;
    INSERT INTO user_count_deltas (delta) VALUES (n) RETURNING id INTO added;
    IF added % 256 = 0 THEN
        PERFORM user_count_fold();
    END IF;
END
$$;
CREATE FUNCTION users_count_in() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM user_count_add((SELECT COUNT(*) FROM users_in));
    RETURN NULL;
END
$$;
CREATE FUNCTION users_count_out() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM user_count_add(-(SELECT COUNT(*) FROM users_out));
    RETURN NULL;
END
$$;
CREATE TRIGGER users_counted_in AFTER INSERT ON users
    REFERENCING NEW TABLE AS users_in FOR EACH STATEMENT EXECUTE FUNCTION users_count_in();
CREATE TRIGGER users_counted_out AFTER DELETE ON users
    REFERENCING OLD TABLE AS users_out FOR EACH STATEMENT EXECUTE FUNCTION users_count_out();
