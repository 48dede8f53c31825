-- Registry schema v5 (PostgreSQL): the master key's check value. One row
-- holding a fixed text sealed with the gateway's master key, written on first
-- start: a gateway whose key does not open it refuses to start, instead of
-- failing every delivery it claims because credentials do not decrypt.
CREATE TABLE key_check (
    id         BIGINT PRIMARY KEY CHECK (id = 1),
    sealed     BYTEA NOT NULL,
    created_at BIGINT NOT NULL
);
