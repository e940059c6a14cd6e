DROP TRIGGER mfa_factors_status_copy ON mfa_factors;
DROP FUNCTION copy_mfa_status();
DROP INDEX users_mfa_status;
ALTER TABLE users DROP COLUMN mfa_status;
