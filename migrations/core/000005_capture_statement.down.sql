-- Back to row-level capture only: every statement-level distcache_capture trigger (as
-- distcache_attach creates them) is replaced by one row-level trigger named distcache_capture
-- with the same arguments, so the tables keep being captured, then the functions of 000005 are
-- dropped and the row-only distcache_capture and the old aggregate-name CHECK come back.
DO $$
DECLARE
    t    record;
    args text[];
BEGIN
    FOR t IN SELECT DISTINCT tg.tgrelid::regclass AS tbl, encode(tg.tgargs, 'escape') AS raw
             FROM pg_trigger tg JOIN pg_proc p ON p.oid = tg.tgfoid
             WHERE p.proname = 'distcache_capture' AND NOT tg.tgisinternal AND tg.tgtype & 1 = 0 LOOP
        args := string_to_array(rtrim(t.raw, '\000'), '\000');
        args := array(SELECT format('%L', replace(a, '\\', '\')) FROM unnest(args) AS a);
        EXECUTE format('DROP TRIGGER IF EXISTS distcache_capture_insert ON %s', t.tbl);
        EXECUTE format('DROP TRIGGER IF EXISTS distcache_capture_update ON %s', t.tbl);
        EXECUTE format('DROP TRIGGER IF EXISTS distcache_capture_delete ON %s', t.tbl);
        EXECUTE format('CREATE TRIGGER distcache_capture AFTER INSERT OR UPDATE OR DELETE ON %s
            FOR EACH ROW EXECUTE FUNCTION distcache_capture(%s)', t.tbl, array_to_string(args, ', '));
    END LOOP;
END
$$;

DROP FUNCTION distcache_attach(regclass, text, text, text);

CREATE OR REPLACE FUNCTION distcache_capture() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    agg     text;
    key_col text;
    spec    text;
    hdrs    jsonb;
    new_img jsonb;
    old_key text;
    new_key text;
BEGIN
    IF TG_NARGS NOT IN (2, 3) THEN
        RAISE EXCEPTION 'distcache_capture on %: want 2 or 3 arguments (aggregate, key column[, column spec]), got %', TG_TABLE_NAME, TG_NARGS;
    END IF;
    IF TG_LEVEL <> 'ROW' OR TG_WHEN <> 'AFTER' THEN
        RAISE EXCEPTION 'distcache_capture on %: must be an AFTER ... FOR EACH ROW trigger', TG_TABLE_NAME;
    END IF;
    agg := TG_ARGV[0];
    key_col := TG_ARGV[1];
    IF TG_NARGS = 3 THEN
        spec := TG_ARGV[2];
    END IF;

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
        new_img := distcache_published_image(new_img, spec);
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

DROP FUNCTION distcache_capture_null_key(text, text);

ALTER TABLE distcache_outbox
    DROP CONSTRAINT distcache_outbox_aggregate_name,
    ADD CONSTRAINT distcache_outbox_aggregate_name CHECK (aggregate ~ '^[A-Za-z0-9_-]{1,200}$');
