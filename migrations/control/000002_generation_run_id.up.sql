-- The run of the build workflow that allocated each generation, so a link to the generation's
-- workflow opens that run rather than the newest run of projection/<name>
-- (docs/architecture.md, "Projection registry"). NULL for generations allocated before.
ALTER TABLE distcache_generations ADD COLUMN run_id text;
