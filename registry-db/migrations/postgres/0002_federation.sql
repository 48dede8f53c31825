-- Registry schema v2 (PostgreSQL): settings federation. Times are unix milliseconds.
-- Media (uploaded avatars), kept in the database so every gateway process
-- sharing it sees them.
CREATE TABLE media (
    id           TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    sha256       TEXT NOT NULL,
    content_type TEXT NOT NULL,
    width        BIGINT NOT NULL,
    height       BIGINT NOT NULL,
    data         BYTEA NOT NULL,
    created_at   BIGINT NOT NULL
);
CREATE INDEX media_user_idx ON media (user_id);

-- Change reports (S4). `seq` orders changes for latest-wins; `id` is public.
CREATE TABLE changes (
    seq         BIGSERIAL PRIMARY KEY,
    id          TEXT NOT NULL,
    user_id     TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    module_id   TEXT NOT NULL,
    binding_id  TEXT,
    settings    TEXT NOT NULL,
    status      TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    CONSTRAINT changes_id_key UNIQUE (id)
);
CREATE INDEX changes_user_idx ON changes (user_id, seq);

-- One row per target of a change: the outbox, written in the change's
-- transaction and claimed by delivery workers with a lease.
CREATE TABLE deliveries (
    seq              BIGSERIAL PRIMARY KEY,
    id               TEXT NOT NULL,
    change_id        TEXT NOT NULL REFERENCES changes (id) ON DELETE CASCADE,
    change_seq       BIGINT NOT NULL,
    user_id          TEXT NOT NULL,
    binding_id       TEXT NOT NULL,
    module_id        TEXT NOT NULL,
    account          TEXT NOT NULL,
    settings         TEXT NOT NULL,
    status           TEXT NOT NULL,
    attempts         BIGINT NOT NULL,
    last_error       TEXT,
    applied_fields   TEXT,
    truncated_fields TEXT,
    superseded_by    TEXT,
    dead             BIGINT NOT NULL,
    next_attempt_at  BIGINT NOT NULL,
    locked_until     BIGINT,
    locked_by        TEXT,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    delivered_at     BIGINT,
    CONSTRAINT deliveries_id_key UNIQUE (id)
);
CREATE INDEX deliveries_open_idx ON deliveries (next_attempt_at)
    WHERE status IN ('pending', 'retrying', 'delivering');
CREATE INDEX deliveries_binding_idx ON deliveries (binding_id, status);
CREATE INDEX deliveries_change_idx ON deliveries (change_id);
CREATE INDEX deliveries_dead_idx ON deliveries (dead) WHERE dead = 1;

-- A module endpoint paused after it asked to wait (429 / Retry-After).
CREATE TABLE module_pauses (
    module_id   TEXT PRIMARY KEY,
    until_ms    BIGINT NOT NULL,
    reason      TEXT NOT NULL
);

-- Idempotency-Key: a unique row per user, holding the first answer.
CREATE TABLE idempotency_keys (
    user_id     TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    key         TEXT NOT NULL,
    status_code BIGINT NOT NULL,
    response    TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    CONSTRAINT idempotency_keys_pkey PRIMARY KEY (user_id, key)
);

-- The user's current federated settings (latest accepted value per field).
CREATE TABLE profiles (
    user_id    TEXT PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    settings   TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);
