-- The schema of one leadctl namespace, as the migrations (store/migrations/*.sql) leave it today.
--
-- Every namespace has its own PostgreSQL schema; {schema} stands for it (leadctl substitutes its
-- quoted name). This file is for reading: leadctl builds and upgrades a schema with the migrations,
-- and tests/store/test_schema.py checks that applying this file gives the same tables, columns,
-- indexes, constraints, views, functions and triggers. A new migration changes this file too.
--
-- A lead's path through these tables: ingest adds it to `leads` (a lead without a `deliveries` row
-- is queued); a worker's claim creates its `deliveries` row (`sending`) and the worker records the
-- outcome there; provider webhooks add delivery receipts to it. `delivery_counts` keeps the number
-- of leads per status for `stats`, through triggers on both tables.

CREATE SCHEMA IF NOT EXISTS {schema};

-- Which migrations this schema has had (store/migrations/NNNN_*.sql).
CREATE TABLE {schema}.schema_migrations (
    version    integer PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO {schema}.schema_migrations (version) SELECT generate_series(1, 7);


-- Leads -----------------------------------------------------------------------------------------

-- Every accepted lead, once per contact and channel (ingest's INSERT skips duplicates on the unique
-- key). `contact` is what is sent to: the E.164 phone for sms and whatsapp, the normalised email
-- for email. Contacts and channels compare byte by byte (COLLATE "C"), which is faster than a
-- locale's comparison and equal for the same bytes. `fields` holds the row's other columns, the
-- template's variables.
CREATE TABLE {schema}.leads (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    channel     text COLLATE "C" NOT NULL,
    contact     text COLLATE "C" NOT NULL,
    name        text NOT NULL DEFAULT '',
    phone       text,
    email       text,
    fields      jsonb NOT NULL DEFAULT '{}',
    campaign    text NOT NULL,
    source      text,              -- the file it came from
    source_line integer,           -- its line in that file
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (channel, contact)
);

-- The send of a lead: created by the worker's claim (queued -> sending), or at ingest as
-- `suppressed` when the contact is on the suppression list. No foreign key, so that ingest and the
-- claim skip its row-by-row check: the `leads_deleted` trigger deletes a lead's delivery with it.
-- `attempts` counts provider requests over the lead's life; `not_before` holds back a lead that
-- quiet hours or a frequency cap deferred; the delivery_* columns come from provider receipts.
CREATE TABLE {schema}.deliveries (
    lead_id             bigint PRIMARY KEY,
    channel             text NOT NULL,
    campaign            text NOT NULL,
    status              text NOT NULL CHECK (status IN
        ('queued', 'sending', 'sent', 'failed', 'dead', 'in_doubt', 'suppressed')),
    attempts            integer NOT NULL DEFAULT 0,
    provider            text,
    provider_message_id text,
    error_code          text,
    error_message       text,
    worker              text,          -- the worker process that claimed it
    queued_at           timestamptz NOT NULL DEFAULT now(),
    claimed_at          timestamptz,
    finished_at         timestamptz,
    segments            integer,       -- SMS segments billed
    delivery_status     text CHECK (delivery_status IN
        ('sent', 'delivered', 'read', 'undelivered', 'bounced')),
    delivery_error      text,
    delivered_at        timestamptz,
    read_at             timestamptz,
    not_before          timestamptz
);
-- receipts find their delivery by the provider's message id
CREATE INDEX deliveries_provider_message_id ON {schema}.deliveries (provider_message_id)
    WHERE provider_message_id IS NOT NULL;
-- small partial indexes: leads being sent (the oldest claim, for `stats` and reclaiming), deferred
-- leads, leads in doubt (`doubt list`), and finished leads by age (`leadctl prune`)
CREATE INDEX deliveries_sending ON {schema}.deliveries (claimed_at) WHERE status = 'sending';
CREATE INDEX deliveries_deferred ON {schema}.deliveries (not_before)
    WHERE status = 'queued' AND not_before IS NOT NULL;
CREATE INDEX deliveries_in_doubt ON {schema}.deliveries (channel) WHERE status = 'in_doubt';
CREATE INDEX deliveries_finished_at ON {schema}.deliveries ((coalesce(finished_at, queued_at)))
    WHERE status IN ('sent', 'failed', 'dead', 'in_doubt', 'suppressed');

-- Every lead with its delivery, created or not: a lead without a deliveries row shows as queued.
CREATE VIEW {schema}.lead_deliveries AS
SELECT l.id AS lead_id, l.channel, l.campaign, coalesce(d.status, 'queued') AS status,
       coalesce(d.attempts, 0) AS attempts, d.provider, d.provider_message_id, d.error_code,
       d.error_message, d.worker, coalesce(d.queued_at, l.created_at) AS queued_at, d.claimed_at,
       d.finished_at, d.segments, d.delivery_status, d.delivery_error, d.delivered_at, d.read_at,
       d.not_before
  FROM {schema}.leads l LEFT JOIN {schema}.deliveries d ON d.lead_id = l.id;

-- Deleting leads deletes their deliveries (in place of a cascading foreign key), and a lead deleted
-- while still queued (no deliveries row) leaves the queued count.
CREATE FUNCTION {schema}.delete_deliveries() RETURNS trigger LANGUAGE plpgsql AS $$
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
CREATE TRIGGER leads_deleted AFTER DELETE ON {schema}.leads
    REFERENCING OLD TABLE AS gone
    FOR EACH STATEMENT EXECUTE FUNCTION {schema}.delete_deliveries();


-- Counts for `stats` -----------------------------------------------------------------------------

-- Leads per channel, campaign, provider, status and receipt status ('' for none), kept by the
-- statement-level triggers below, so that `stats` costs the same at 100M deliveries as at 100. A
-- statement adds its changes to one of 16 shards (by backend), so concurrent workers do not queue
-- on one row; a figure is the sum over its shards.
CREATE TABLE {schema}.delivery_counts (
    channel         text NOT NULL,
    campaign        text NOT NULL,
    provider        text NOT NULL,
    status          text NOT NULL,
    delivery_status text NOT NULL,
    shard           smallint NOT NULL,
    leads           bigint NOT NULL,
    PRIMARY KEY (channel, campaign, provider, status, delivery_status, shard)
);

-- A new lead counts as queued.
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

-- A new deliveries row moves its lead from queued to its status; an updated one from its old
-- status to its new one; a deleted one back to queued when its lead remains.
CREATE FUNCTION {schema}.count_deliveries() RETURNS trigger LANGUAGE plpgsql AS $$
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
CREATE TRIGGER deliveries_counted_insert AFTER INSERT ON {schema}.deliveries
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION {schema}.count_deliveries();
CREATE TRIGGER deliveries_counted_update AFTER UPDATE ON {schema}.deliveries
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION {schema}.count_deliveries();
CREATE TRIGGER deliveries_counted_delete AFTER DELETE ON {schema}.deliveries
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION {schema}.count_deliveries();


-- Who may not be messaged ------------------------------------------------------------------------

-- Contacts never to be sent to, on one channel or on every channel ('*'), with why and since when
-- (`leadctl suppress`, opt-outs from providers and replies). Compared byte by byte with leads.
CREATE TABLE {schema}.suppressions (
    contact    text COLLATE "C" NOT NULL,
    channel    text COLLATE "C" NOT NULL DEFAULT '*',
    reason     text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (contact, channel)
);

-- The salted hashes of erased contacts (`leadctl forget`): ingest skips a lead whose contact, phone
-- or email has one, so a re-import does not bring the person back.
CREATE TABLE {schema}.tombstones (
    digest     text PRIMARY KEY,      -- sha256(contact_salt || lower(contact)), in hex
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Values that never leave the server: `contact_salt`, the namespace's random salt of the tombstones.
CREATE TABLE {schema}.secrets (name text PRIMARY KEY, value bytea NOT NULL);
INSERT INTO {schema}.secrets (name, value)
    VALUES ('contact_salt', uuid_send(gen_random_uuid()) || uuid_send(gen_random_uuid()));


-- Provider webhooks ------------------------------------------------------------------------------

-- Webhook events kept: receipts (kind 'status') that matched no delivery yet, retried for a few
-- minutes (the provider's callback may beat the worker's record of the send), and opt-outs as
-- evidence (once each: a provider's duplicate adds nothing).
CREATE TABLE {schema}.webhook_events (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    provider    text NOT NULL,
    kind        text NOT NULL CHECK (kind IN ('status', 'optout')),
    message_id  text,
    lead_id     bigint,
    status      text,
    error       text,
    contact     text,
    channel     text,
    occurred_at timestamptz NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    payload     jsonb NOT NULL DEFAULT '{}'   -- the provider's event as it came
);
CREATE INDEX webhook_events_unmatched ON {schema}.webhook_events (received_at) WHERE kind = 'status';
CREATE INDEX webhook_events_contact ON {schema}.webhook_events (contact) WHERE contact IS NOT NULL;
CREATE INDEX webhook_events_message_id ON {schema}.webhook_events (message_id)
    WHERE message_id IS NOT NULL;
CREATE UNIQUE INDEX webhook_events_optout_once
    ON {schema}.webhook_events (provider, message_id, contact) WHERE kind = 'optout';
