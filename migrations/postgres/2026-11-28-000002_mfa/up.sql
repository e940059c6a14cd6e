-- The second factor of each user: one row per user, created with the user.
CREATE TABLE mfa_factors (
    user_id TEXT PRIMARY KEY NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- none: never enrolled; pending: must (re)enrol; enrolled: a confirmed TOTP factor
    status TEXT NOT NULL DEFAULT 'none',
    -- the TOTP secret sealed with the MFA key (AEAD); never stored in clear
    secret_sealed TEXT,
    enrolled_at TIMESTAMP,
    last_reset_at TIMESTAMP,
    -- the last accepted TOTP time step: a code of this step or an older one is a replay
    last_step BIGINT,
    failures INTEGER NOT NULL DEFAULT 0,
    failures_since TIMESTAMP,
    locked_until TIMESTAMP
);
CREATE INDEX mfa_factors_status ON mfa_factors (status);
INSERT INTO mfa_factors (user_id) SELECT id FROM users;

-- One-time backup codes, stored as argon2 hashes.
CREATE TABLE mfa_backup_codes (
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    code_hash TEXT NOT NULL,
    used_at TIMESTAMP,
    PRIMARY KEY (user_id, code_hash)
);

-- What happened, to whom, through which door, by whom. No foreign key: events outlive users.
CREATE TABLE audit_events (
    id BIGSERIAL PRIMARY KEY,
    at TIMESTAMP NOT NULL,
    event_type TEXT NOT NULL,
    user_id TEXT,
    user_name TEXT,
    origin TEXT NOT NULL,
    actor TEXT NOT NULL,
    reason TEXT,
    request_id TEXT,
    detail TEXT
);
CREATE INDEX audit_events_user ON audit_events (user_id, id);
CREATE INDEX audit_events_type ON audit_events (event_type, id);
CREATE INDEX audit_events_at ON audit_events (at);
