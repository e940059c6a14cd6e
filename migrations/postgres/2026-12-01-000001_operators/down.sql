DROP TABLE console_sessions;
DROP TABLE operator_backup_codes;
DROP TABLE operator_setup_links;
DROP TABLE operators;
