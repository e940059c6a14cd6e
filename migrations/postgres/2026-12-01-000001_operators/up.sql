-- The people who sign in to the console. Not SCIM users: a table of their own.
CREATE TABLE operators (
    name TEXT PRIMARY KEY NOT NULL,
    -- admin or helpdesk
    role TEXT NOT NULL,
    -- argon2id (PHC string); NULL until the operator has used a setup link
    password_hash TEXT,
    -- the TOTP secret sealed with the MFA key, as users' are; NULL until set up
    totp_sealed TEXT,
    -- a secret shown on the setup page and not yet confirmed with a code
    pending_totp_sealed TEXT,
    -- the last accepted TOTP time step: a code of this step or an older one is a replay
    totp_last_step BIGINT,
    failures INTEGER NOT NULL DEFAULT 0,
    failures_since TIMESTAMP,
    locked_until TIMESTAMP,
    disabled BOOLEAN NOT NULL DEFAULT FALSE,
    created_at TIMESTAMP NOT NULL,
    last_sign_in_at TIMESTAMP
);

-- One-time setup links (stored as SHA-256 hashes): a new operator's, or one after a reset.
CREATE TABLE operator_setup_links (
    token_hash TEXT PRIMARY KEY NOT NULL,
    operator TEXT NOT NULL REFERENCES operators (name) ON DELETE CASCADE,
    expires_at TIMESTAMP NOT NULL
);
CREATE INDEX operator_setup_links_operator ON operator_setup_links (operator);

-- Operators' one-time backup codes, stored as argon2 hashes.
CREATE TABLE operator_backup_codes (
    operator TEXT NOT NULL REFERENCES operators (name) ON DELETE CASCADE,
    code_hash TEXT NOT NULL,
    used_at TIMESTAMP,
    PRIMARY KEY (operator, code_hash)
);

-- Console sessions, server-side so that they work across instances and can be ended: the
-- cookie holds a random id, stored here as its SHA-256; the CSRF token is per session.
CREATE TABLE console_sessions (
    id_hash TEXT PRIMARY KEY NOT NULL,
    operator TEXT NOT NULL REFERENCES operators (name) ON DELETE CASCADE,
    csrf_token TEXT NOT NULL,
    created_at TIMESTAMP NOT NULL,
    last_seen_at TIMESTAMP NOT NULL
);
CREATE INDEX console_sessions_operator ON console_sessions (operator);
