-- The outbox: what others must hear about, written in the transaction of the change that causes it.
-- No foreign key: events outlive users (a deletion is itself an event).
CREATE TABLE events (
    -- time-ordered UUID (version 7): the order of delivery
    id TEXT PRIMARY KEY NOT NULL,
    at TIMESTAMP NOT NULL,
    event_type TEXT NOT NULL,
    user_id TEXT NOT NULL,
    user_name TEXT NOT NULL,
    origin TEXT NOT NULL,
    actor TEXT NOT NULL,
    reason TEXT,
    -- JSON object: what the receivers get beyond the columns above (the user's email, details)
    data TEXT NOT NULL,
    -- false until a deliverer has made its delivery rows (one per receiver and message)
    dispatched BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX events_undispatched ON events (id) WHERE NOT dispatched;
CREATE INDEX events_at ON events (at);

-- One row per message owed to a receiver (a webhook: one per event; a Shared Signals stream: one
-- per CAEP/RISC event it asked for) until it is delivered, acknowledged or dropped after events.max_age.
CREATE TABLE event_deliveries (
    -- `webhook:<name>` or `stream:<id>`
    receiver TEXT NOT NULL,
    event_id TEXT NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    -- the event type URI of a stream's message; empty for a webhook's
    signal TEXT NOT NULL,
    -- the message's id (webhook-id, a SET's jti): the same on every attempt
    jti TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at TIMESTAMP NOT NULL,
    last_error TEXT,
    -- the instance that is delivering it and until when its claim holds
    claimed_by TEXT,
    claimed_until TIMESTAMP,
    PRIMARY KEY (receiver, event_id, signal)
);
CREATE UNIQUE INDEX event_deliveries_jti ON event_deliveries (receiver, jti);
CREATE INDEX event_deliveries_event ON event_deliveries (event_id);

-- Per receiver: delivered and dropped counts (for /metrics across restarts) and the last error.
CREATE TABLE event_receivers (
    receiver TEXT PRIMARY KEY NOT NULL,
    delivered BIGINT NOT NULL DEFAULT 0,
    dropped BIGINT NOT NULL DEFAULT 0,
    failed_attempts BIGINT NOT NULL DEFAULT 0,
    last_error TEXT,
    last_error_at TIMESTAMP,
    last_delivered_at TIMESTAMP
);

-- Shared Signals streams (SSF 1.0 §8.1.1) that receivers created through the management API.
CREATE TABLE ssf_streams (
    id TEXT PRIMARY KEY NOT NULL,
    -- the name of the token with scope `ssf` that created it; NULL when an admin token did
    owner TEXT,
    -- JSON array of strings
    audience TEXT NOT NULL,
    -- JSON arrays of event type URIs
    events_requested TEXT NOT NULL,
    events_delivered TEXT NOT NULL,
    -- urn:ietf:rfc:8935 (push) or urn:ietf:rfc:8936 (poll)
    delivery_method TEXT NOT NULL,
    -- push: where to POST; poll: NULL (ours is derived from the id)
    endpoint_url TEXT,
    -- push: the Authorization header the receiver asked for, sealed with the MFA key
    authorization_header TEXT,
    -- iss_sub, email or opaque
    subject_format TEXT NOT NULL DEFAULT 'iss_sub',
    description TEXT,
    -- enabled, paused or disabled
    status TEXT NOT NULL DEFAULT 'enabled',
    status_reason TEXT,
    created_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL
);
