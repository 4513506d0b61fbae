-- Published columns (docs/architecture.md, "Outbox row"): a model declares which of its table's
-- columns leave the core database, as the capture trigger's optional third argument:
--
--   CREATE TRIGGER users_distcache
--       AFTER INSERT OR UPDATE OR DELETE ON users
--       FOR EACH ROW EXECUTE FUNCTION distcache_capture('users', 'id', 'except:password_hash|api_key');
--
-- 'only:<col>|<col>...' publishes the listed columns only (an allow-list); 'except:<col>|...'
-- publishes every column but those (a deny-list, for the simple case). Without the argument every
-- column is published, as before. The trigger and the core-publisher's backload both render a row
-- with distcache_published_image, so a column left out never reaches the outbox, the broker or
-- any cache. The key is read from the whole row before the filter.

-- distcache_published_image returns img limited by spec; it raises on a malformed spec.
CREATE FUNCTION distcache_published_image(img jsonb, spec text)
RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    kind text;
    cols text[];
BEGIN
    IF spec IS NULL OR spec = '' THEN
        RETURN img;
    END IF;
    kind := split_part(spec, ':', 1);
    cols := string_to_array(substr(spec, length(kind) + 2), '|');
    IF kind NOT IN ('only', 'except') OR position(':' IN spec) = 0 OR cols IS NULL
        OR cardinality(cols) = 0 OR '' = ANY(cols) THEN
        RAISE EXCEPTION 'distcache: column spec "%" must be only:<column>|<column>... or except:<column>|<column>...', spec;
    END IF;
    IF img IS NULL THEN
        RETURN NULL;
    END IF;
    IF kind = 'except' THEN
        RETURN img - cols;
    END IF;
    RETURN COALESCE((SELECT jsonb_object_agg(e.key, e.value) FROM jsonb_each(img) e WHERE e.key = ANY(cols)), '{}'::jsonb);
END
$$;

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
