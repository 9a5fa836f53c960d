-- 7: a lead's deliveries row is created when it is first claimed (or at ingest, when its contact is
-- suppressed): a lead without one is queued. Ingest writes one row per lead instead of two, a quarter
-- of its PostgreSQL time. The counts follow: a new lead counts as queued (a trigger on leads), a new
-- deliveries row moves its lead from queued to its status, a deleted one moves it back when the lead
-- remains, and a deleted lead without one leaves the queued count. `lead_deliveries` shows every
-- lead's delivery, created or not.
CREATE OR REPLACE FUNCTION {schema}.count_deliveries() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO {schema}.delivery_counts AS c
        SELECT channel, campaign, provider, status, delivery_status, pg_backend_pid() % 16, sum(n)
          FROM (SELECT channel, campaign, coalesce(provider, '') AS provider, status,
                       coalesce(delivery_status, '') AS delivery_status, 1 AS n FROM new_rows
                UNION ALL
                SELECT channel, campaign, '', 'queued', '', -1 FROM new_rows) changed
         GROUP BY 1, 2, 3, 4, 5 HAVING sum(n) <> 0 ORDER BY 1, 2, 3, 4, 5
        ON CONFLICT (channel, campaign, provider, status, delivery_status, shard)
        DO UPDATE SET leads = c.leads + excluded.leads;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO {schema}.delivery_counts AS c
        SELECT channel, campaign, provider, status, delivery_status, pg_backend_pid() % 16, sum(n)
          FROM (SELECT channel, campaign, coalesce(provider, '') AS provider, status,
                       coalesce(delivery_status, '') AS delivery_status, -1 AS n FROM old_rows
                UNION ALL
                SELECT o.channel, o.campaign, '', 'queued', '', 1 FROM old_rows o
                 WHERE EXISTS (SELECT FROM {schema}.leads l WHERE l.id = o.lead_id)) changed
         GROUP BY 1, 2, 3, 4, 5 HAVING sum(n) <> 0 ORDER BY 1, 2, 3, 4, 5
        ON CONFLICT (channel, campaign, provider, status, delivery_status, shard)
        DO UPDATE SET leads = c.leads + excluded.leads;
    ELSE
        INSERT INTO {schema}.delivery_counts AS c
        SELECT channel, campaign, provider, status, delivery_status, pg_backend_pid() % 16, sum(n)
          FROM (SELECT channel, campaign, coalesce(provider, '') AS provider, status,
                       coalesce(delivery_status, '') AS delivery_status, 1 AS n FROM new_rows
                UNION ALL
                SELECT channel, campaign, coalesce(provider, ''), status,
                       coalesce(delivery_status, ''), -1 FROM old_rows) changed
         GROUP BY 1, 2, 3, 4, 5 HAVING sum(n) <> 0 ORDER BY 1, 2, 3, 4, 5
        ON CONFLICT (channel, campaign, provider, status, delivery_status, shard)
        DO UPDATE SET leads = c.leads + excluded.leads;
    END IF;
    RETURN NULL;
END $$;
CREATE FUNCTION {schema}.count_leads() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO {schema}.delivery_counts AS c
    SELECT channel, campaign, '', 'queued', '', pg_backend_pid() % 16, count(*)
      FROM new_rows GROUP BY 1, 2 ORDER BY 1, 2
    ON CONFLICT (channel, campaign, provider, status, delivery_status, shard)
    DO UPDATE SET leads = c.leads + excluded.leads;
    RETURN NULL;
END $$;
CREATE TRIGGER leads_counted_insert AFTER INSERT ON {schema}.leads
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION {schema}.count_leads();
CREATE OR REPLACE FUNCTION {schema}.delete_deliveries() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO {schema}.delivery_counts AS c
    SELECT g.channel, g.campaign, '', 'queued', '', pg_backend_pid() % 16, -count(*)
      FROM gone g WHERE NOT EXISTS (SELECT FROM {schema}.deliveries d WHERE d.lead_id = g.id)
     GROUP BY 1, 2 ORDER BY 1, 2
    ON CONFLICT (channel, campaign, provider, status, delivery_status, shard)
    DO UPDATE SET leads = c.leads + excluded.leads;
    DELETE FROM {schema}.deliveries d USING gone WHERE d.lead_id = gone.id;
    RETURN NULL;
END $$;
CREATE VIEW {schema}.lead_deliveries AS
SELECT l.id AS lead_id, l.channel, l.campaign, coalesce(d.status, 'queued') AS status,
       coalesce(d.attempts, 0) AS attempts, d.provider, d.provider_message_id, d.error_code,
       d.error_message, d.worker, coalesce(d.queued_at, l.created_at) AS queued_at, d.claimed_at,
       d.finished_at, d.segments, d.delivery_status, d.delivery_error, d.delivered_at, d.read_at,
       d.not_before
  FROM {schema}.leads l LEFT JOIN {schema}.deliveries d ON d.lead_id = l.id;
