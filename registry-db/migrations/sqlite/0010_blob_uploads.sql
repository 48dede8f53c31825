-- Registry schema v10: resumable uploads of service blobs (tus). The bytes
-- live in the blob store as one object per appended piece; a row says which
-- pieces make the blob, how far it got and until when it may resume.
CREATE TABLE blob_uploads (
    id            TEXT PRIMARY KEY,
    service_id    TEXT NOT NULL,
    user_id       TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    device_id     TEXT,
    length        BIGINT NOT NULL,
    upload_offset BIGINT NOT NULL,
    metadata      TEXT NOT NULL,
    sha256        TEXT,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL,
    -- NULL once complete: a complete blob is kept until deleted.
    expires_at    BIGINT
);
CREATE INDEX blob_uploads_owner_idx ON blob_uploads (service_id, user_id);
CREATE INDEX blob_uploads_expiry_idx ON blob_uploads (expires_at);

-- The stored pieces of an upload, one per appended request: the object
-- `<upload id>/<offset, 20 digits>` of the blob store holds `length` bytes.
CREATE TABLE blob_pieces (
    upload_id   TEXT NOT NULL REFERENCES blob_uploads (id) ON DELETE CASCADE,
    piece_offset BIGINT NOT NULL,
    length      BIGINT NOT NULL,
    PRIMARY KEY (upload_id, piece_offset)
);
