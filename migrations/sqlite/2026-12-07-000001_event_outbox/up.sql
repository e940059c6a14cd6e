-- The outbox: what others must hear about, written in the transaction of the change that causes it.
-- No foreign key: events outlive users (a deletion is itself an event).
CREATE TABLE events (
    -- time-ordered UUID (version 7): the order of delivery and the receivers' idempotency key
    id TEXT PRIMARY KEY NOT NULL,
    at TIMESTAMP NOT NULL,
    event_type TEXT NOT NULL,
    user_id TEXT NOT NULL,
    user_name TEXT NOT NULL,
    origin TEXT NOT NULL,
    actor TEXT NOT NULL,
    reason TEXT,
    -- JSON object: what the receivers get as the event's data beyond the columns above
    data TEXT NOT NULL,
    -- false until a deliverer has made its delivery rows (one per receiver that wants it)
    dispatched BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX events_undispatched ON events (id) WHERE NOT dispatched;
CREATE INDEX events_at ON events (at);

-- One row per event and receiver until it is delivered (or dropped after events.max_age).
CREATE TABLE event_deliveries (
    receiver TEXT NOT NULL,
    event_id TEXT NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at TIMESTAMP NOT NULL,
    last_error TEXT,
    -- the instance that is delivering it and until when its claim holds
    claimed_by TEXT,
    claimed_until TIMESTAMP,
    PRIMARY KEY (receiver, event_id)
);
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
