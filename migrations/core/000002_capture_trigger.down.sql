-- CASCADE also drops the triggers tables attached with distcache_capture():
-- going down removes distcache's capture, never the tables themselves.
DROP FUNCTION IF EXISTS distcache_capture() CASCADE;
DROP FUNCTION IF EXISTS distcache_outbox_append(text, text, text, jsonb, jsonb);
