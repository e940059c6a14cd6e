-- Security keys and passkeys (WebAuthn) beside the authenticator app. mfa_factors.status and
-- enrolled_at now speak of every factor a user holds; the authenticator app's own confirmation
-- moves to totp_enrolled_at.
ALTER TABLE mfa_factors ADD COLUMN totp_enrolled_at TIMESTAMP;
UPDATE mfa_factors SET totp_enrolled_at = enrolled_at WHERE status = 'enrolled';
-- What SCIM shows of the user's WebAuthn credentials (a JSON array of {name, created}), kept
-- beside the status so that a page of users is read without a query per user; NULL for none.
ALTER TABLE mfa_factors ADD COLUMN webauthn TEXT;

CREATE TABLE webauthn_credentials (
    -- the credential id the authenticator made, base64url
    id TEXT PRIMARY KEY NOT NULL,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- the name the user gave it
    name TEXT NOT NULL,
    -- the authenticator model's id, as the authenticator reported it
    aaguid TEXT,
    -- the public key, its algorithm and the sign counter (webauthn-rs's SecurityKey as JSON)
    credential TEXT NOT NULL,
    -- the authenticator's signature counter as last seen: an assertion must carry a higher one
    -- (or 0, from an authenticator that keeps none); a lower one signals a cloned key
    sign_count BIGINT NOT NULL DEFAULT 0,
    created_at TIMESTAMP NOT NULL,
    last_used_at TIMESTAMP
);
CREATE INDEX webauthn_credentials_user ON webauthn_credentials (user_id, created_at);

-- A registration or an authentication between its start and its finish: the challenge and
-- what the finish checks, used once, for five minutes.
CREATE TABLE webauthn_ceremonies (
    id TEXT PRIMARY KEY NOT NULL,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- registration | authentication
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    expires_at TIMESTAMP NOT NULL
);
CREATE INDEX webauthn_ceremonies_user ON webauthn_ceremonies (user_id);
CREATE INDEX webauthn_ceremonies_expiry ON webauthn_ceremonies (expires_at);
