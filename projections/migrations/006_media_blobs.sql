-- Uploaded media, content-addressed: the key is the SHA-256 of the bytes, so a row never
-- changes and storing the same bytes twice is a no-op. Shared by all tenants: the only key is
-- the hash, which nobody can name without having the bytes.
CREATE TABLE media_blobs (
    sha256       text        PRIMARY KEY CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    content_type text        NOT NULL,
    size         integer     NOT NULL CHECK (size = octet_length(data)),
    data         bytea       NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);

-- Images arrive compressed already: keep them out of line without TOAST trying to compress
-- them again.
ALTER TABLE media_blobs ALTER COLUMN data SET STORAGE EXTERNAL;
