-- The people who sign in to the console. Not SCIM users: a table of their own.
CREATE TABLE operators (
    name TEXT PRIMARY KEY NOT NULL,
    -- admin or helpdesk
    role TEXT NOT NULL,
    -- argon2id (PHC string); NULL until the operator has used a setup link
    password_hash TEXT,
    -- the TOTP secret sealed with the MFA key, as users' are; NULL until set up
    totp_sealed TEXT,
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
