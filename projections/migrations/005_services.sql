-- The service read model, keyed by (tenant_id, id) and hash-partitioned by tenant like customers.
CREATE TABLE services (
    tenant_id   text        NOT NULL,
    id          text        NOT NULL,
    version     integer     NOT NULL,
    state       text        NOT NULL,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL,
    -- the service's `order`, or 2147483647 when it has none (sorted last ascending): keyset
    -- cursors compare (sort_order, id) row values, which a NULL would make unknown
    sort_order  integer     NOT NULL,
    -- lower-cased text that `phrase` searches: every language version's title and description
    search      text        NOT NULL,
    -- banner id -> SHA-256 of its bytes in the blob store (what the DTO does not show)
    media       jsonb       NOT NULL DEFAULT '{}',
    -- the ServiceDto as served, serialized once by the projector
    doc         text        NOT NULL,
    PRIMARY KEY (tenant_id, id)
) PARTITION BY HASH (tenant_id);

CREATE TABLE services_p0 PARTITION OF services FOR VALUES WITH (MODULUS 8, REMAINDER 0);
CREATE TABLE services_p1 PARTITION OF services FOR VALUES WITH (MODULUS 8, REMAINDER 1);
CREATE TABLE services_p2 PARTITION OF services FOR VALUES WITH (MODULUS 8, REMAINDER 2);
CREATE TABLE services_p3 PARTITION OF services FOR VALUES WITH (MODULUS 8, REMAINDER 3);
CREATE TABLE services_p4 PARTITION OF services FOR VALUES WITH (MODULUS 8, REMAINDER 4);
CREATE TABLE services_p5 PARTITION OF services FOR VALUES WITH (MODULUS 8, REMAINDER 5);
CREATE TABLE services_p6 PARTITION OF services FOR VALUES WITH (MODULUS 8, REMAINDER 6);
CREATE TABLE services_p7 PARTITION OF services FOR VALUES WITH (MODULUS 8, REMAINDER 7);

CREATE INDEX services_updated ON services (tenant_id, updated_at, id);
CREATE INDEX services_created ON services (tenant_id, created_at, id);
CREATE INDEX services_order ON services (tenant_id, sort_order, id);
CREATE INDEX services_search ON services USING gin (tenant_id, search gin_trgm_ops);
