-- Registry schema v4 (SQLite): an Idempotency-Key keeps the change's receipt
-- only. The HTTP layer derives the status code from the receipt's `status`,
-- so a stored code could only disagree with it. Existing rows keep their body,
-- which is that receipt already.
ALTER TABLE idempotency_keys DROP COLUMN status_code;
ALTER TABLE idempotency_keys RENAME COLUMN response TO receipt;
