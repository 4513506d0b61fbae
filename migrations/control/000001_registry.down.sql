DROP TABLE IF EXISTS distcache_generations;
DROP TABLE IF EXISTS distcache_projections;
DROP FUNCTION IF EXISTS distcache_registry_notify();
DROP FUNCTION IF EXISTS distcache_touch_updated_at();
