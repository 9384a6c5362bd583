-- Defence in depth for the read API: it reads the read models as `beeoclock_reader`, a role
-- that can only SELECT them, and row-level security shows that role only the rows of the
-- tenant its session names (`SET beeoclock.tenant_id`, done by the read API per request). A
-- query that forgot its tenant filter, or ran before the tenant was set, sees nothing.
-- The projector writes as the tables' owner, which row-level security does not restrict.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'beeoclock_reader') THEN
        CREATE ROLE beeoclock_reader NOLOGIN;
    END IF;
EXCEPTION
    -- another database of the cluster created it at the same moment
    WHEN duplicate_object OR unique_violation THEN NULL;
END
$$;

GRANT USAGE ON SCHEMA public TO beeoclock_reader;
GRANT SELECT ON customers, services, written_positions, applied_positions, media_blobs
    TO beeoclock_reader;

-- (written_positions and applied_positions hold no data, only how far each tenant's writes
-- and projections are: every read checks them, and needs no tenant set for that)
ALTER TABLE customers ENABLE ROW LEVEL SECURITY;
ALTER TABLE services ENABLE ROW LEVEL SECURITY;

CREATE POLICY tenant_rows ON customers FOR SELECT TO beeoclock_reader
    USING (tenant_id = current_setting('beeoclock.tenant_id', true));
CREATE POLICY tenant_rows ON services FOR SELECT TO beeoclock_reader
    USING (tenant_id = current_setting('beeoclock.tenant_id', true));
