-- Registry schema v13: rate limits shared by every gateway process on this
-- database (a module's outbound quota holds cluster-wide). One row per
-- limit key: the GCRA "theoretical arrival time" in microseconds since the
-- epoch; a take of n tokens moves it n intervals on, granting fewer (or
-- none) when it would run more than the burst ahead of now. `granted` is
-- what the last take got.
CREATE TABLE rate_limits (
    key     TEXT PRIMARY KEY,
    tat_us  BIGINT NOT NULL,
    granted BIGINT NOT NULL
);
