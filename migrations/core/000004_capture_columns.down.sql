-- Back to capture without column specs: a trigger given a third argument then fails its
-- writes with a clear error until it is recreated with two.
CREATE OR REPLACE FUNCTION distcache_capture() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    agg     text;
    key_col text;
    hdrs    jsonb;
    new_img jsonb;
    old_key text;
    new_key text;
BEGIN
    IF TG_NARGS <> 2 THEN
        RAISE EXCEPTION 'distcache_capture on %: want 2 arguments (aggregate, key column), got %', TG_TABLE_NAME, TG_NARGS;
    END IF;
    IF TG_LEVEL <> 'ROW' OR TG_WHEN <> 'AFTER' THEN
        RAISE EXCEPTION 'distcache_capture on %: must be an AFTER ... FOR EACH ROW trigger', TG_TABLE_NAME;
    END IF;
    agg := TG_ARGV[0];
    key_col := TG_ARGV[1];

    hdrs := COALESCE(NULLIF(current_setting('distcache.headers', true), '')::jsonb, '{}'::jsonb);

    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        old_key := to_jsonb(OLD) ->> key_col;
        IF old_key IS NULL THEN
            RAISE EXCEPTION 'distcache_capture on %: key column "%" is missing or NULL', TG_TABLE_NAME, key_col;
        END IF;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        new_img := to_jsonb(NEW);
        new_key := new_img ->> key_col;
        IF new_key IS NULL THEN
            RAISE EXCEPTION 'distcache_capture on %: key column "%" is missing or NULL', TG_TABLE_NAME, key_col;
        END IF;
    END IF;

    IF TG_OP = 'DELETE' OR (TG_OP = 'UPDATE' AND old_key <> new_key) THEN
        PERFORM distcache_outbox_append(agg, old_key, 'delete', NULL, hdrs);
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        PERFORM distcache_outbox_append(agg, new_key, 'upsert', new_img, hdrs);
    END IF;
    RETURN NULL;
END
$$;

DROP FUNCTION IF EXISTS distcache_published_image(jsonb, text);
