-- distcache_capture(): a row trigger any table attaches to, writing its
-- changes into the outbox exactly as libs/events.OutboxWriter does:
--
--   CREATE TRIGGER users_distcache
--       AFTER INSERT OR UPDATE OR DELETE ON users
--       FOR EACH ROW EXECUTE FUNCTION distcache_capture('users', 'id');
--
-- Arguments: the aggregate name and the key column. The key is the column's
-- value as JSON text (to_jsonb(row) ->> column: 42, the text itself, a uuid).
-- INSERT and UPDATE (every UPDATE, even one that changes nothing) write op
-- upsert with the full after-image to_jsonb(NEW);
-- DELETE writes op delete with a NULL payload; an UPDATE that changes the key
-- writes a delete of the old key, then an upsert of the new one. Each event
-- bumps its key's version in distcache_outbox_versions and notifies channel
-- distcache_outbox with the aggregate name (delivered at commit).
--
-- Headers: the transaction-local setting distcache.headers, when set to a
-- JSON object (SELECT set_config('distcache.headers', '{"traceparent":"..."}', true)),
-- is copied into every event's headers; otherwise headers are {}.
-- TRUNCATE is not captured.

-- distcache_outbox_append writes one event; shared by the trigger branches.
-- The outbox id is drawn after the version row lock is won, so for one key id
-- order, version order and commit order agree (the relay publishes in id order).
CREATE FUNCTION distcache_outbox_append(p_aggregate text, p_key text, p_op text, p_payload jsonb, p_headers jsonb)
RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v bigint;
BEGIN
    INSERT INTO distcache_outbox_versions AS cur (aggregate, agg_key, version)
    VALUES (p_aggregate, p_key, 1)
    ON CONFLICT (aggregate, agg_key) DO UPDATE SET version = cur.version + 1
    RETURNING version INTO v;

    INSERT INTO distcache_outbox (aggregate, agg_key, version, op, payload, headers)
    VALUES (p_aggregate, p_key, v, p_op, p_payload, p_headers);

    PERFORM pg_notify('distcache_outbox', p_aggregate);
    RETURN v;
END
$$;

CREATE FUNCTION distcache_capture() RETURNS trigger
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
