-- 1: leads (one per contact and channel), their deliveries (one per lead: the send's status and
-- outcome) and the suppression list.
CREATE TABLE {schema}.leads (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    channel     text NOT NULL,
    contact     text NOT NULL,
    name        text NOT NULL DEFAULT '',
    phone       text,
    email       text,
    fields      jsonb NOT NULL DEFAULT '{}',
    campaign    text NOT NULL,
    source      text,
    source_line integer,
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (channel, contact)
);
CREATE TABLE {schema}.deliveries (
    lead_id             bigint PRIMARY KEY REFERENCES {schema}.leads (id) ON DELETE CASCADE,
    channel             text NOT NULL,
    campaign            text NOT NULL,
    status              text NOT NULL CHECK (status IN
        ('queued', 'sending', 'sent', 'failed', 'dead', 'in_doubt', 'suppressed')),
    attempts            integer NOT NULL DEFAULT 0,
    provider            text,
    provider_message_id text,
    error_code          text,
    error_message       text,
    worker              text,
    queued_at           timestamptz NOT NULL DEFAULT now(),
    claimed_at          timestamptz,
    finished_at         timestamptz
);
CREATE INDEX deliveries_channel_status ON {schema}.deliveries (channel, status);
CREATE INDEX deliveries_provider_message_id ON {schema}.deliveries (provider_message_id)
    WHERE provider_message_id IS NOT NULL;
CREATE TABLE {schema}.suppressions (
    contact    text NOT NULL,
    channel    text NOT NULL DEFAULT '*',
    reason     text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (contact, channel)
);
