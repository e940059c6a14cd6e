-- The metrics count users by source and state, and MFA events by type and origin, at every
-- scrape: with these, from index entries alone.
CREATE INDEX users_source_active ON users (source, active);
CREATE INDEX audit_events_type_origin ON audit_events (event_type, origin);
