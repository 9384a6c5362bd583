-- Crypto-shredding (events/pii.py): one data key per customer, wrapped by the master key
-- (BEEOCLOCK_MASTER_KEY) and bound to its tenant and customer. Erasing a customer destroys
-- the key (`wrapped` becomes NULL; the row stays so no key is ever made again for them):
-- their personal data is unreadable everywhere a sealed copy of it went.
CREATE TABLE pii_keys (
    tenant_id  text        NOT NULL,
    subject_id text        NOT NULL,
    wrapped    bytea,
    created_at timestamptz NOT NULL DEFAULT now(),
    erased_at  timestamptz,
    PRIMARY KEY (tenant_id, subject_id),
    CHECK ((wrapped IS NULL) = (erased_at IS NOT NULL))
);

-- Erased customers: gone from the `customers` read model, remembered here with the version
-- of their erasure, so that no replay or redelivered event can bring a row back.
CREATE TABLE customer_tombstones (
    tenant_id text        NOT NULL,
    id        text        NOT NULL,
    version   integer     NOT NULL,
    erased_at timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, id)
);

-- Rebuilds of read models (`beeoclock replay`): where each one is, so it can resume.
CREATE TABLE replay_runs (
    name        text        PRIMARY KEY,
    projection  text        NOT NULL,
    tenant_id   text,
    staging     text        NOT NULL,
    position    bigint      NOT NULL DEFAULT 0,
    started_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
