-- Registry schema v12: media jobs of services (grant "media"), queued
-- durably. A node claims a queued job by leasing it; a node killed while
-- it runs one leaves the lease to run out, and another claims it again.
-- A finished job's result is a blob of the job's user in the service,
-- kept until `kept_until`, then deleted (`gone_at` says when).
CREATE TABLE media_jobs (
    id          TEXT PRIMARY KEY,
    service_id  TEXT NOT NULL,
    user_id     TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    device_id   TEXT,
    kind        TEXT NOT NULL,
    input       TEXT NOT NULL,
    params      TEXT NOT NULL,
    -- queued | running | done | failed
    status      TEXT NOT NULL,
    attempts    BIGINT NOT NULL,
    lease_until BIGINT,
    keep_ms     BIGINT NOT NULL,
    result_blob TEXT,
    result_type TEXT,
    result_size BIGINT,
    -- {"code", "message", "help"} of a failed job
    error       TEXT,
    created_at  BIGINT NOT NULL,
    started_at  BIGINT,
    finished_at BIGINT,
    kept_until  BIGINT,
    gone_at     BIGINT
);
CREATE INDEX media_jobs_queue_idx ON media_jobs (status, created_at);
CREATE INDEX media_jobs_kept_idx ON media_jobs (kept_until);
