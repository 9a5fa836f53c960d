-- 3: delivery receipts on deliveries; webhook events kept (receipts that matched no delivery yet,
-- opt-outs as evidence); tombstones of erased contacts and the namespace's random salt for their
-- digests.
ALTER TABLE {schema}.deliveries
    ADD COLUMN delivery_status text CHECK (delivery_status IN
        ('sent', 'delivered', 'read', 'undelivered', 'bounced')),
    ADD COLUMN delivery_error text,
    ADD COLUMN delivered_at timestamptz,
    ADD COLUMN read_at timestamptz,
    ADD COLUMN not_before timestamptz;
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
    payload     jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX webhook_events_unmatched ON {schema}.webhook_events (received_at) WHERE kind = 'status';
CREATE INDEX webhook_events_contact ON {schema}.webhook_events (contact) WHERE contact IS NOT NULL;
CREATE INDEX webhook_events_message_id ON {schema}.webhook_events (message_id)
    WHERE message_id IS NOT NULL;
CREATE UNIQUE INDEX webhook_events_optout_once
    ON {schema}.webhook_events (provider, message_id, contact) WHERE kind = 'optout';
CREATE TABLE {schema}.tombstones (
    digest     text PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE {schema}.secrets (name text PRIMARY KEY, value bytea NOT NULL);
INSERT INTO {schema}.secrets (name, value)
    VALUES ('contact_salt', uuid_send(gen_random_uuid()) || uuid_send(gen_random_uuid()));
