DROP TABLE audit_events;
DROP TABLE mfa_backup_codes;
DROP TABLE mfa_factors;
