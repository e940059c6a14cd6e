-- Users: the canonical SCIM body lives in `body` (JSON); the columns beside it are the
-- indexed copies that filters, uniqueness and sorting need.
CREATE TABLE users (
    id TEXT PRIMARY KEY NOT NULL,
    user_name TEXT NOT NULL,
    -- lower-cased userName: case-insensitive uniqueness and lookups (userName is caseExact=false)
    user_name_key TEXT NOT NULL UNIQUE,
    external_id TEXT,
    active BOOLEAN NOT NULL DEFAULT TRUE,
    body TEXT NOT NULL,
    source TEXT NOT NULL DEFAULT 'scim',
    version BIGINT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);
CREATE INDEX users_external_id ON users (external_id);
CREATE INDEX users_updated_at ON users (updated_at);
CREATE INDEX users_created_at ON users (created_at, id);

-- One row per leaf value of the other attributes (emails.value, name.givenname, ...):
-- the search index that lets any filter run in SQL.
CREATE TABLE user_values (
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    path TEXT NOT NULL,
    elem INTEGER NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (user_id, path, elem)
);
CREATE INDEX user_values_lookup ON user_values (path, value);

CREATE TABLE api_tokens (
    name TEXT PRIMARY KEY NOT NULL,
    token_hash TEXT NOT NULL UNIQUE,
    scopes TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    last_used_at TIMESTAMP
);
