-- 2: the SMS segments a provider billed for each send.
ALTER TABLE {schema}.deliveries ADD COLUMN segments integer;
