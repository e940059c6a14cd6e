-- The LDAP change feed (ldap.change_detection = "syncrepl", RFC 4533): where it resumes.
CREATE TABLE sync_feed (
    name TEXT PRIMARY KEY NOT NULL,
    -- the server's sync cookie after the last applied change (hex of its octets); NULL: read everything again
    cookie TEXT,
    -- what the cookie was given for (url, base, scope, filter, attributes): another scope starts afresh
    scope TEXT NOT NULL,
    -- why the feed stopped deactivating users ([ldap.safety] over ldap.safety.window); NULL: it does not
    held TEXT,
    updated_at TIMESTAMP NOT NULL
);
