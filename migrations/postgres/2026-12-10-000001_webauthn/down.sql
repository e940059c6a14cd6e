DROP TABLE webauthn_ceremonies;
DROP TABLE webauthn_credentials;
-- A user whose only factors were WebAuthn credentials must enrol again, without backup codes.
DELETE FROM mfa_backup_codes WHERE user_id IN
    (SELECT user_id FROM mfa_factors WHERE status = 'enrolled' AND totp_enrolled_at IS NULL);
UPDATE mfa_factors SET status = 'pending', enrolled_at = NULL WHERE status = 'enrolled' AND totp_enrolled_at IS NULL;
UPDATE mfa_factors SET enrolled_at = totp_enrolled_at WHERE totp_enrolled_at IS NOT NULL;
ALTER TABLE mfa_factors DROP COLUMN webauthn;
ALTER TABLE mfa_factors DROP COLUMN totp_enrolled_at;
