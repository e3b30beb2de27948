-- Events the registry committed but has not published yet (postgres; keep in
-- step with ../sqlite/0004_outbox.sql). A signed decision, its audit entry
-- and the event announcing it commit in one transaction; the relay publishes
-- the rows in seq order and stamps published_at.
CREATE TABLE outbox (
    seq BIGSERIAL PRIMARY KEY,
    subject TEXT NOT NULL,
    msg_id TEXT NOT NULL UNIQUE,
    traceparent TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at TEXT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    last_error TEXT NOT NULL DEFAULT '',
    published_at TEXT NOT NULL DEFAULT '',
    duplicate BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX outbox_pending ON outbox (published_at, seq);
