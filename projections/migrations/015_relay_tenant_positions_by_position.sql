-- The projector looks every few seconds for tenants whose last messages never reached it
-- (workers/projector.py, `heal`): only at those the relay passed on anything of since its
-- last look, an index range instead of a scan of every tenant (300 ms at 200,000 tenant
-- streams here, `python -m bench.heal_query`).
CREATE INDEX relay_tenant_positions_by_position ON relay_tenant_positions (name, position);
