-- Registry schema v13: rate limits shared by every gateway process on this
-- database (a module's outbound quota holds cluster-wide). One row per
-- limit key: the GCRA "theoretical arrival time" in microseconds since the
-- epoch; a take moves it one interval on, refused when it would run more
-- than the burst ahead of now.
CREATE TABLE rate_limits (
    key    TEXT PRIMARY KEY,
    tat_us BIGINT NOT NULL
);
