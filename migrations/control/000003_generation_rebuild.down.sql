ALTER TABLE distcache_generations
    DROP COLUMN rebuild_since,
    DROP COLUMN rebuild_detail,
    DROP COLUMN rebuild_reason;
