-- Registry schema v8 (SQLite): devices (a user's terminals), each with a
-- durable event inbox, and their history. A device token is a session bound
-- to a device (sessions.device_id); removing the device ends its sessions.
CREATE TABLE devices (
    id           TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    platform     TEXT,
    capabilities TEXT NOT NULL,
    ip           TEXT,
    port         BIGINT,
    state        TEXT NOT NULL,
    last_seen    BIGINT NOT NULL,
    -- Id of the newest event of the inbox (ids increase per device).
    last_event   BIGINT NOT NULL,
    -- Newest event id a stream has sent to the device.
    delivered    BIGINT NOT NULL,
    created_at   BIGINT NOT NULL
);
CREATE INDEX devices_user_idx ON devices (user_id);
CREATE INDEX devices_state_seen_idx ON devices (state, last_seen);

ALTER TABLE sessions ADD COLUMN device_id TEXT REFERENCES devices (id) ON DELETE CASCADE;
CREATE INDEX sessions_device_idx ON sessions (device_id);

CREATE TABLE device_events (
    device_id  TEXT NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
    seq        BIGINT NOT NULL,
    kind       TEXT NOT NULL,
    payload    TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (device_id, seq)
);
CREATE INDEX device_events_created_idx ON device_events (created_at);

CREATE TABLE device_history (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id   TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    device_id TEXT NOT NULL,
    event     TEXT NOT NULL,
    at        BIGINT NOT NULL
);
CREATE INDEX device_history_user_idx ON device_history (user_id, id);
