-- A generation the cache-producer is rebuilding in place (its topic was re-created, or Redis lost
-- its data), as the producer reports it: why and since when, so that GetStatus shows it
-- (docs/architecture.md, "Rebuilding a generation in place"). NULL when none.
ALTER TABLE distcache_generations
    ADD COLUMN rebuild_reason text,
    ADD COLUMN rebuild_detail text,
    ADD COLUMN rebuild_since  timestamptz;
