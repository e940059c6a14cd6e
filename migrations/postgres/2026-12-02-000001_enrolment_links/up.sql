-- One-time enrolment links for users who must enrol (again), stored as SHA-256 hashes of their
-- tokens. At most one per user: a newer link replaces it, and a reset or its use deletes it.
CREATE TABLE mfa_enrolment_links (
    user_id TEXT PRIMARY KEY NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_hash TEXT NOT NULL UNIQUE,
    created_at TIMESTAMP NOT NULL,
    expires_at TIMESTAMP NOT NULL
);
