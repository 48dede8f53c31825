-- Registry schema v7: finding a user's image by its digest (an avatar sent
-- again is not stored twice) and old images for the retention purge.
CREATE INDEX media_user_digest_idx ON media (user_id, sha256);
CREATE INDEX media_created_idx ON media (created_at);
