-- 5: the hot paths write fewer index entries: every claim and every outcome moved the row in
-- (channel, status), an index nothing reads any more (counts come from delivery_counts, in-flight and
-- deferred leads from partial indexes, `doubt list` from a new small one; `requeue`, a recovery
-- command, scans); and ingest no longer runs the foreign key's row-level check for each new
-- delivery. A lead's delivery still goes with it: one statement-level trigger deletes the deliveries
-- of the leads a statement deleted.
DROP INDEX {schema}.deliveries_channel_status;
CREATE INDEX deliveries_in_doubt ON {schema}.deliveries (channel) WHERE status = 'in_doubt';
ALTER TABLE {schema}.deliveries DROP CONSTRAINT deliveries_lead_id_fkey;
CREATE FUNCTION {schema}.delete_deliveries() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM {schema}.deliveries d USING gone WHERE d.lead_id = gone.id;
    RETURN NULL;
END $$;
CREATE TRIGGER leads_deleted AFTER DELETE ON {schema}.leads
    REFERENCING OLD TABLE AS gone
    FOR EACH STATEMENT EXECUTE FUNCTION {schema}.delete_deliveries();
