-- The read API's other wall: history, time travel and the GDPR export read the event store
-- (not a read model). In production the read API does that as a login role in
-- `beeoclock_auditor` (BEEOCLOCK_AUDIT_DATABASE_URL), which can read the event store, its
-- snapshots, the data keys it needs to open personal data and the uniqueness key, and can
-- change nothing.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'beeoclock_auditor') THEN
        CREATE ROLE beeoclock_auditor NOLOGIN;
    END IF;
EXCEPTION
    WHEN duplicate_object OR unique_violation THEN NULL;
END
$$;

GRANT USAGE ON SCHEMA public TO beeoclock_auditor;
GRANT SELECT ON panel_events, panel_snapshots, pii_keys, panel_keys, customers,
    customer_tombstones TO beeoclock_auditor;
