-- 6: contacts and channels compare byte by byte (COLLATE "C"): ingest's de-duplicating insert spends
-- an eighth of its PostgreSQL time in locale-aware comparisons in the (channel, contact) index
-- otherwise (more under a non-C database locale). Equality is unchanged: a deterministic collation is
-- equal only for equal bytes. The suppression list's columns follow, as they are compared with these.
-- Rebuilds the two indexes.
ALTER TABLE {schema}.leads
    ALTER channel TYPE text COLLATE "C", ALTER contact TYPE text COLLATE "C";
ALTER TABLE {schema}.suppressions
    ALTER contact TYPE text COLLATE "C", ALTER channel TYPE text COLLATE "C";
