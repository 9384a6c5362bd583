-- The GDPR export says whether a customer is in the read model (workers/gdpr.py), and the read
-- API makes it as `beeoclock_auditor` (009). Row-level security on `customers` (007) had a
-- policy for the reader only, so to the auditor every customer looked absent. The auditor
-- reads every tenant's events already; it may read every tenant's read-model rows too.
CREATE POLICY audit_rows ON customers FOR SELECT TO beeoclock_auditor USING (true);
