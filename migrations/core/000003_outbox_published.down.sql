DROP INDEX IF EXISTS distcache_outbox_dead_failed_at;
DROP TABLE IF EXISTS distcache_outbox_published;
