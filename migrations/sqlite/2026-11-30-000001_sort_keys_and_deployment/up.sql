-- Sorting (sortBy) by any attribute walks an index instead of computing a key per user.
-- The search row that is a user's sort key for its path (RFC 7644 §3.4.2.3: the primary value
-- of a multi-valued attribute, else its first): set by the daemon when it rebuilds the search
-- rows (store::reindex), which it does at start-up after this migration.
ALTER TABLE user_values ADD COLUMN sort_key BOOLEAN NOT NULL DEFAULT 0;
CREATE INDEX user_values_sort ON user_values (path, value, user_id) WHERE sort_key;
-- Column sorts, ties broken by id.
DROP INDEX users_external_id;
CREATE INDEX users_external_id ON users (external_id, id);
DROP INDEX users_updated_at;
CREATE INDEX users_updated_at ON users (updated_at, id);
CREATE INDEX users_active ON users (active, id);
DROP INDEX mfa_factors_status;
CREATE INDEX mfa_factors_status ON mfa_factors (status, user_id);
CREATE INDEX mfa_factors_enrolled_at ON mfa_factors (enrolled_at, user_id);
CREATE INDEX mfa_factors_last_reset_at ON mfa_factors (last_reset_at, user_id);

-- Facts about the whole deployment: the version of the derived search data, the id of the key
-- that seals TOTP secrets.
CREATE TABLE deployment (
    name TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
);
