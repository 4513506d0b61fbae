DROP TABLE IF EXISTS distcache_publisher_state;
DROP TABLE IF EXISTS distcache_outbox_dead;
DROP TABLE IF EXISTS distcache_outbox_versions;
DROP TABLE IF EXISTS distcache_outbox;
