-- Keys the write side derives things from, kept with the data they protect. `uniqueness` keys
-- the HMAC that turns an email or phone into the id of its uniqueness record
-- (commands/uniqueness.py): 32 bytes from PostgreSQL's strong random source.
CREATE TABLE panel_keys (
    name       text        PRIMARY KEY,
    key        bytea       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

INSERT INTO panel_keys (name, key)
VALUES ('uniqueness', decode(replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', ''), 'hex'));
