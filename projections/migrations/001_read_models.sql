-- Read models, keyed by (tenant_id, id) and hash-partitioned by tenant.
CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE EXTENSION IF NOT EXISTS btree_gin;

CREATE TABLE customers (
    tenant_id   text        NOT NULL,
    id          text        NOT NULL,
    version     integer     NOT NULL,
    state       text        NOT NULL,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    -- lower-cased text that `phrase` searches: names, email, phone, note
    search      text        NOT NULL,
    -- the CustomerDto as served, serialized once by the projector
    doc         text        NOT NULL,
    PRIMARY KEY (tenant_id, id)
) PARTITION BY HASH (tenant_id);

CREATE TABLE customers_p0 PARTITION OF customers FOR VALUES WITH (MODULUS 8, REMAINDER 0);
CREATE TABLE customers_p1 PARTITION OF customers FOR VALUES WITH (MODULUS 8, REMAINDER 1);
CREATE TABLE customers_p2 PARTITION OF customers FOR VALUES WITH (MODULUS 8, REMAINDER 2);
CREATE TABLE customers_p3 PARTITION OF customers FOR VALUES WITH (MODULUS 8, REMAINDER 3);
CREATE TABLE customers_p4 PARTITION OF customers FOR VALUES WITH (MODULUS 8, REMAINDER 4);
CREATE TABLE customers_p5 PARTITION OF customers FOR VALUES WITH (MODULUS 8, REMAINDER 5);
CREATE TABLE customers_p6 PARTITION OF customers FOR VALUES WITH (MODULUS 8, REMAINDER 6);
CREATE TABLE customers_p7 PARTITION OF customers FOR VALUES WITH (MODULUS 8, REMAINDER 7);

CREATE INDEX customers_updated ON customers (tenant_id, updated_at, id);
CREATE INDEX customers_created ON customers (tenant_id, created_at, id);
CREATE INDEX customers_search ON customers USING gin (tenant_id, search gin_trgm_ops);

-- Read-your-writes: the latest position written and applied, per tenant and stream.
CREATE TABLE written_positions (
    tenant_id text   NOT NULL,
    stream    text   NOT NULL,
    position  bigint NOT NULL,
    PRIMARY KEY (tenant_id, stream)
);
CREATE TABLE applied_positions (
    tenant_id text   NOT NULL,
    stream    text   NOT NULL,
    position  bigint NOT NULL,
    PRIMARY KEY (tenant_id, stream)
);

-- The relay's tracked position in the notification log.
CREATE TABLE relay_positions (
    name     text   PRIMARY KEY,
    position bigint NOT NULL
);

-- The projector's progress per Kafka partition, committed with the rows it wrote.
CREATE TABLE projector_offsets (
    group_id    text    NOT NULL,
    topic       text    NOT NULL,
    partition   integer NOT NULL,
    next_offset bigint  NOT NULL,
    PRIMARY KEY (group_id, topic, partition)
);
