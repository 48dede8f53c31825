-- Claims read the queue in (next_attempt_at, seq) order and look up older
-- open deliveries of the same binding: with these two indexes a claim reads
-- only the rows it takes, instead of sorting the whole queue (31 ms -> 0.8 ms
-- for 20,000 queued deliveries on PostgreSQL).
DROP INDEX deliveries_open_idx;
CREATE INDEX deliveries_due_idx ON deliveries (next_attempt_at, seq)
    WHERE status IN ('pending', 'retrying', 'delivering');
CREATE INDEX deliveries_binding_open_idx ON deliveries (binding_id, seq)
    WHERE status IN ('pending', 'retrying', 'delivering');
