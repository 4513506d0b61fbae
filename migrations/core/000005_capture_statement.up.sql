-- Statement-level capture (docs/architecture.md, "Outbox row"): distcache_capture() may now also
-- be attached FOR EACH STATEMENT with transition tables, and then writes all the events of a
-- statement with one set-based INSERT into distcache_outbox_versions and one into
-- distcache_outbox, and one pg_notify. The row-level trigger runs two INSERTs through the
-- executor for every row (plan checks, executor start, the outbox's CHECK constraints rebuilt
-- from the catalog each time); measured on the bench's 100-row UPDATE the statement-level trigger
-- costs about a third of the row-level one per row. A statement that changed one row takes the
-- row-level path (the set-based statement's executor start costs more than one event). Events,
-- versions and their order are the row-level ones:
--
--   SELECT distcache_attach('users', 'users', 'id');                        -- table, aggregate, key column
--   SELECT distcache_attach('users', 'users', 'id', 'except:password_hash'); -- with a column spec
--
-- distcache_attach creates the three statement triggers (a transition table may belong to one
-- event only) and drops the table's other distcache_capture triggers of the same aggregate in the
-- same transaction, so switching a table from the row-level trigger neither misses nor doubles a
-- change. By hand the triggers are:
--
--   CREATE TRIGGER distcache_capture_insert AFTER INSERT ON users
--       REFERENCING NEW TABLE AS distcache_new
--       FOR EACH STATEMENT EXECUTE FUNCTION distcache_capture('users', 'id');
--   CREATE TRIGGER distcache_capture_update AFTER UPDATE ON users
--       REFERENCING OLD TABLE AS distcache_old NEW TABLE AS distcache_new
--       FOR EACH STATEMENT EXECUTE FUNCTION distcache_capture('users', 'id');
--   CREATE TRIGGER distcache_capture_delete AFTER DELETE ON users
--       REFERENCING OLD TABLE AS distcache_old
--       FOR EACH STATEMENT EXECUTE FUNCTION distcache_capture('users', 'id');
--
-- Within one statement: an UPDATE writes a delete for each old key that no new row has (a key
-- change), then an upsert per new row, in the statement's row order; rows sharing a key (a key
-- column that is not unique) each get their own version, as with the row-level trigger.
--
-- Also: the outbox's aggregate-name CHECK used the bounded repetition {1,200}, which PostgreSQL's
-- regex engine expands into 200 states and runs at about 16 µs a row; it is now a plain
-- repetition and a length check, the same rule.

ALTER TABLE distcache_outbox
    DROP CONSTRAINT distcache_outbox_aggregate_name,
    ADD CONSTRAINT distcache_outbox_aggregate_name
        CHECK (aggregate ~ '^[A-Za-z0-9_-]+$' AND length(aggregate) <= 200);

-- distcache_capture_null_key raises the row-level trigger's error for a missing or NULL key; the
-- statement-level queries call it from a CASE, so it runs only for such a row.
CREATE FUNCTION distcache_capture_null_key(tbl text, key_col text)
RETURNS text
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'distcache_capture on %: key column "%" is missing or NULL', tbl, key_col;
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
    has_old boolean;
    has_new boolean;
    n       bigint;
BEGIN
    IF TG_NARGS NOT IN (2, 3) THEN
        RAISE EXCEPTION 'distcache_capture on %: want 2 or 3 arguments (aggregate, key column[, column spec]), got %', TG_TABLE_NAME, TG_NARGS;
    END IF;
    IF TG_WHEN <> 'AFTER' THEN
        RAISE EXCEPTION 'distcache_capture on %: must be an AFTER trigger (FOR EACH ROW, or FOR EACH STATEMENT with transition tables distcache_old/distcache_new: see distcache_attach)', TG_TABLE_NAME;
    END IF;
    agg := TG_ARGV[0];
    key_col := TG_ARGV[1];
    IF TG_NARGS = 3 THEN
        spec := TG_ARGV[2];
    END IF;

    hdrs := COALESCE(NULLIF(current_setting('distcache.headers', true), '')::jsonb, '{}'::jsonb);

    IF TG_LEVEL = 'STATEMENT' THEN
        IF TG_OP NOT IN ('INSERT', 'UPDATE', 'DELETE') THEN
            RAISE EXCEPTION 'distcache_capture on %: % is not captured (attach it AFTER INSERT, UPDATE or DELETE)', TG_TABLE_NAME, TG_OP;
        END IF;
        SELECT t.tgoldtable IS NOT DISTINCT FROM 'distcache_old', t.tgnewtable IS NOT DISTINCT FROM 'distcache_new'
        INTO has_old, has_new
        FROM pg_trigger t WHERE t.tgrelid = TG_RELID AND t.tgname = TG_NAME;
        IF (TG_OP IN ('UPDATE', 'DELETE') AND NOT has_old) OR (TG_OP IN ('INSERT', 'UPDATE') AND NOT has_new) THEN
            RAISE EXCEPTION 'distcache_capture on %: a FOR EACH STATEMENT trigger on % needs REFERENCING % (use distcache_attach)', TG_TABLE_NAME, TG_OP,
                CASE TG_OP WHEN 'INSERT' THEN 'NEW TABLE AS distcache_new'
                           WHEN 'DELETE' THEN 'OLD TABLE AS distcache_old'
                           ELSE 'OLD TABLE AS distcache_old NEW TABLE AS distcache_new' END;
        END IF;

        IF TG_OP = 'DELETE' THEN
            SELECT count(*) INTO n FROM distcache_old;
        ELSE
            SELECT count(*) INTO n FROM distcache_new;
        END IF;
        IF n = 0 THEN
            RETURN NULL;
        END IF;
        IF n = 1 THEN
            -- One row (most OLTP statements): the row-level path below, which costs less for a
            -- single event than the set-based statement's executor start.
            IF TG_OP IN ('UPDATE', 'DELETE') THEN
                SELECT to_jsonb(r) ->> key_col INTO old_key FROM distcache_old r;
            END IF;
            IF TG_OP IN ('INSERT', 'UPDATE') THEN
                SELECT to_jsonb(r) INTO new_img FROM distcache_new r;
            END IF;
        ELSE
            -- Each statement below: ev lists the statement's events in order (ord), cnt counts them
            -- per key, v bumps each key's version once by its count (the row lock serialises
            -- writers of a key; taken in key order, so two statements sharing keys cannot
            -- deadlock on them), and the outbox rows take versions count-1 .. 0 below the new
            -- one, their ids drawn after their key's lock is won and in event order.
            IF TG_OP = 'INSERT' THEN
                WITH ev AS (
                    SELECT CASE WHEN img ->> key_col IS NULL THEN distcache_capture_null_key(TG_TABLE_NAME, key_col)
                                ELSE img ->> key_col END AS k,
                           'upsert'::text AS op, img, row_number() OVER () AS ord
                    FROM (SELECT to_jsonb(r) AS img FROM distcache_new r) s),
                cnt AS (SELECT k, count(*) AS c FROM ev GROUP BY k),
                v AS (
                    INSERT INTO distcache_outbox_versions AS cur (aggregate, agg_key, version)
                    SELECT agg, k, c FROM cnt ORDER BY k
                    ON CONFLICT (aggregate, agg_key) DO UPDATE SET version = cur.version + excluded.version
                    RETURNING agg_key, version)
                INSERT INTO distcache_outbox (aggregate, agg_key, version, op, payload, headers)
                SELECT agg, ev.k, v.version - cnt.c + row_number() OVER (PARTITION BY ev.k ORDER BY ev.ord),
                       ev.op, CASE WHEN spec IS NULL THEN ev.img ELSE distcache_published_image(ev.img, spec) END, hdrs
                FROM ev JOIN cnt ON cnt.k = ev.k JOIN v ON v.agg_key = ev.k
                ORDER BY ev.ord;
            ELSIF TG_OP = 'DELETE' THEN
                WITH ev AS (
                    SELECT CASE WHEN k IS NULL THEN distcache_capture_null_key(TG_TABLE_NAME, key_col) ELSE k END AS k,
                           'delete'::text AS op, NULL::jsonb AS img, row_number() OVER () AS ord
                    FROM (SELECT to_jsonb(r) ->> key_col AS k FROM distcache_old r) s),
                cnt AS (SELECT k, count(*) AS c FROM ev GROUP BY k),
                v AS (
                    INSERT INTO distcache_outbox_versions AS cur (aggregate, agg_key, version)
                    SELECT agg, k, c FROM cnt ORDER BY k
                    ON CONFLICT (aggregate, agg_key) DO UPDATE SET version = cur.version + excluded.version
                    RETURNING agg_key, version)
                INSERT INTO distcache_outbox (aggregate, agg_key, version, op, payload, headers)
                SELECT agg, ev.k, v.version - cnt.c + row_number() OVER (PARTITION BY ev.k ORDER BY ev.ord),
                       ev.op, ev.img, hdrs
                FROM ev JOIN cnt ON cnt.k = ev.k JOIN v ON v.agg_key = ev.k
                ORDER BY ev.ord;
            ELSE
                WITH nw AS (
                    SELECT CASE WHEN img ->> key_col IS NULL THEN distcache_capture_null_key(TG_TABLE_NAME, key_col)
                                ELSE img ->> key_col END AS k,
                           img, row_number() OVER () AS ord
                    FROM (SELECT to_jsonb(r) AS img FROM distcache_new r) s),
                od AS (
                    SELECT CASE WHEN k IS NULL THEN distcache_capture_null_key(TG_TABLE_NAME, key_col) ELSE k END AS k
                    FROM (SELECT to_jsonb(r) ->> key_col AS k FROM distcache_old r) s),
                ev AS (
                    SELECT od.k, 'delete'::text AS op, NULL::jsonb AS img, 0::bigint AS ord
                    FROM od WHERE NOT EXISTS (SELECT 1 FROM nw WHERE nw.k = od.k)
                    UNION ALL
                    SELECT nw.k, 'upsert', nw.img, nw.ord FROM nw),
                cnt AS (SELECT k, count(*) AS c FROM ev GROUP BY k),
                v AS (
                    INSERT INTO distcache_outbox_versions AS cur (aggregate, agg_key, version)
                    SELECT agg, k, c FROM cnt ORDER BY k
                    ON CONFLICT (aggregate, agg_key) DO UPDATE SET version = cur.version + excluded.version
                    RETURNING agg_key, version)
                INSERT INTO distcache_outbox (aggregate, agg_key, version, op, payload, headers)
                SELECT agg, ev.k, v.version - cnt.c + row_number() OVER (PARTITION BY ev.k ORDER BY ev.ord),
                       ev.op, CASE WHEN spec IS NULL THEN ev.img ELSE distcache_published_image(ev.img, spec) END, hdrs
                FROM ev JOIN cnt ON cnt.k = ev.k JOIN v ON v.agg_key = ev.k
                ORDER BY ev.ord;
            END IF;
            GET DIAGNOSTICS n = ROW_COUNT;
            IF n > 0 THEN
                PERFORM pg_notify('distcache_outbox', agg);
            END IF;
            RETURN NULL;
        END IF;
    ELSE
        IF TG_OP IN ('UPDATE', 'DELETE') THEN
            old_key := to_jsonb(OLD) ->> key_col;
        END IF;
        IF TG_OP IN ('INSERT', 'UPDATE') THEN
            new_img := to_jsonb(NEW);
        END IF;
    END IF;

    -- One row's events (a row-level trigger, or a statement that changed one row).
    IF TG_OP IN ('UPDATE', 'DELETE') AND old_key IS NULL THEN
        RAISE EXCEPTION 'distcache_capture on %: key column "%" is missing or NULL', TG_TABLE_NAME, key_col;
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
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

-- distcache_attach(table, aggregate, key column[, column spec]) attaches statement-level capture
-- to a table: it checks its arguments (a clear error names what is wrong), drops the table's
-- distcache_capture triggers of that aggregate (row-level ones included), and creates
-- distcache_capture_insert, _update and _delete. Run it again to change the key column or spec.
CREATE FUNCTION distcache_attach(tbl regclass, aggregate text, key_column text, columns text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    args text;
    t    record;
BEGIN
    IF aggregate IS NULL OR aggregate !~ '^[A-Za-z0-9_-]+$' OR length(aggregate) > 200 THEN
        RAISE EXCEPTION 'distcache_attach on %: aggregate name "%" must be 1 to 200 of A-Z a-z 0-9 _ -', tbl, aggregate;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_attribute
                   WHERE attrelid = tbl AND attname = key_column AND attnum > 0 AND NOT attisdropped) THEN
        RAISE EXCEPTION 'distcache_attach on %: key column "%" is not a column of the table', tbl, key_column;
    END IF;
    PERFORM distcache_published_image('{}'::jsonb, columns); -- raises on a malformed spec

    -- Replace the table's capture of this aggregate; leave a row-level capture of another
    -- aggregate alone, and refuse to overwrite another aggregate's statement-level triggers.
    FOR t IN SELECT tg.tgname, split_part(encode(tg.tgargs, 'escape'), '\000', 1) AS agg
             FROM pg_trigger tg JOIN pg_proc p ON p.oid = tg.tgfoid
             WHERE tg.tgrelid = tbl AND p.proname = 'distcache_capture' AND NOT tg.tgisinternal LOOP
        IF t.agg = aggregate THEN
            EXECUTE format('DROP TRIGGER %I ON %s', t.tgname, tbl);
        ELSIF t.tgname IN ('distcache_capture_insert', 'distcache_capture_update', 'distcache_capture_delete') THEN
            RAISE EXCEPTION 'distcache_attach on %: the table''s statement-level capture is of aggregate "%" (trigger %); one aggregate per table can use distcache_attach, attach another with a row-level trigger', tbl, t.agg, t.tgname;
        END IF;
    END LOOP;

    args := format('%L, %L', aggregate, key_column);
    IF columns IS NOT NULL AND columns <> '' THEN
        args := args || format(', %L', columns);
    END IF;
    EXECUTE format('CREATE TRIGGER distcache_capture_insert AFTER INSERT ON %s
        REFERENCING NEW TABLE AS distcache_new
        FOR EACH STATEMENT EXECUTE FUNCTION distcache_capture(%s)', tbl, args);
    EXECUTE format('CREATE TRIGGER distcache_capture_update AFTER UPDATE ON %s
        REFERENCING OLD TABLE AS distcache_old NEW TABLE AS distcache_new
        FOR EACH STATEMENT EXECUTE FUNCTION distcache_capture(%s)', tbl, args);
    EXECUTE format('CREATE TRIGGER distcache_capture_delete AFTER DELETE ON %s
        REFERENCING OLD TABLE AS distcache_old
        FOR EACH STATEMENT EXECUTE FUNCTION distcache_capture(%s)', tbl, args);
END
$$;
