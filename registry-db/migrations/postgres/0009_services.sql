-- Registry schema v9 (DRAFT): service plugins and what the host keeps for
-- them: a key-value store per service and user (versions for
-- compare-and-swap), and durable timers.
CREATE TABLE services (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    version       BIGINT NOT NULL,
    plugin_digest TEXT NOT NULL,
    plugin        BYTEA NOT NULL,
    manifest      TEXT NOT NULL,
    enabled       BIGINT NOT NULL,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);

CREATE TABLE service_kv (
    service_id TEXT NOT NULL,
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    key        TEXT NOT NULL,
    value      BYTEA NOT NULL,
    version    BIGINT NOT NULL,
    PRIMARY KEY (service_id, user_id, key)
);

CREATE TABLE service_timers (
    service_id TEXT NOT NULL,
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name       TEXT NOT NULL,
    due_at     BIGINT NOT NULL,
    PRIMARY KEY (service_id, user_id, name)
);
CREATE INDEX service_timers_due_idx ON service_timers (due_at);
