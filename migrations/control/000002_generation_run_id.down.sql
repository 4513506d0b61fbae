ALTER TABLE distcache_generations DROP COLUMN run_id;
