DROP TRIGGER mfa_factors_status_copy;
DROP INDEX users_mfa_status;
ALTER TABLE users DROP COLUMN mfa_status;
