DROP INDEX audit_events_type_origin;
DROP INDEX users_source_active;
