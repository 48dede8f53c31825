-- Registry schema v1 (SQLite). Times are unix milliseconds; JSON is TEXT.
CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    username      TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    CONSTRAINT users_username_key UNIQUE (username)
);

CREATE TABLE sessions (
    token_hash TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX sessions_user_idx ON sessions (user_id);
CREATE INDEX sessions_expires_idx ON sessions (expires_at);

CREATE TABLE modules (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    version       BIGINT NOT NULL,
    plugin_digest TEXT NOT NULL,
    plugin        BLOB NOT NULL,
    manifest      TEXT NOT NULL,
    description   TEXT,
    enabled       BIGINT NOT NULL,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);

CREATE TABLE bindings (
    id           TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    module_id    TEXT NOT NULL REFERENCES modules (id),
    account      TEXT NOT NULL,
    credentials  BLOB NOT NULL,
    last_applied TEXT,
    created_at   BIGINT NOT NULL,
    CONSTRAINT bindings_user_module_account_key UNIQUE (user_id, module_id, account)
);
CREATE INDEX bindings_user_idx ON bindings (user_id);

CREATE TABLE audit_events (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    at      BIGINT NOT NULL,
    actor   TEXT NOT NULL,
    action  TEXT NOT NULL,
    subject TEXT NOT NULL,
    detail  TEXT NOT NULL
);
