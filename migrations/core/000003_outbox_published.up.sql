-- The highest version the relay has published for each key (docs/architecture.md,
-- "Outbox row"). The relay refuses, and dead-letters, an outbox row whose
-- version does not exceed its key's published version: a writer that set
-- versions itself and went backwards would otherwise win over a newer state
-- at every consumer. The relay writes this table in the statement that
-- deletes the published rows, so it never runs ahead of what was delivered.
-- One row per key ever published, like distcache_outbox_versions.
CREATE TABLE distcache_outbox_published (
    aggregate text   NOT NULL,
    agg_key   text   NOT NULL,
    version   bigint NOT NULL,
    PRIMARY KEY (aggregate, agg_key)
);

-- Dead letters are pruned by age (PUBLISHER_DEAD_LETTER_RETENTION).
CREATE INDEX distcache_outbox_dead_failed_at ON distcache_outbox_dead (failed_at);
