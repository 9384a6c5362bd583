-- A replay's bulk phase: the events up to a notification position, read entity by entity
-- (each entity's whole history at once), folded from nothing and copied into the staging table.
--
-- `bulk_until` is that position while the phase is under way (NULL once it is done, and for
-- the parts' own rows); `bulk_after` is, for each part of the phase, the last entity (stream
-- id, in the order the phase reads them) whose row is in the staging table: a part killed
-- midway resumes after it.
ALTER TABLE replay_runs
    ADD COLUMN bulk_until bigint,
    ADD COLUMN bulk_after text;
