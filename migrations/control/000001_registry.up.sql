-- The projection registry, owned by the control-plane
-- (docs/architecture.md, "Projection registry").

CREATE TABLE distcache_projections (
    name                text        PRIMARY KEY,
    model               text        NOT NULL,
    key_template        text        NOT NULL,
    lowercase_key       boolean     NOT NULL DEFAULT false,
    fields              text[]      NOT NULL DEFAULT '{}',
    filter              jsonb,
    current_generation  integer,
    previous_generation integer,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    deleted_at          timestamptz,
    CONSTRAINT distcache_projections_name_not_empty CHECK (name <> ''),
    CONSTRAINT distcache_projections_model_not_empty CHECK (model <> ''),
    CONSTRAINT distcache_projections_key_template_not_empty CHECK (key_template <> ''),
    CONSTRAINT distcache_projections_filter_object CHECK (filter IS NULL OR jsonb_typeof(filter) = 'object')
);

CREATE TABLE distcache_generations (
    projection      text        NOT NULL REFERENCES distcache_projections (name) ON DELETE CASCADE,
    generation      integer     NOT NULL,
    definition      jsonb       NOT NULL,
    state           text        NOT NULL DEFAULT 'allocated',
    workflow_id     text,
    records_done    bigint      NOT NULL DEFAULT 0,
    backfill_offset bigint      NOT NULL DEFAULT 0,
    end_offset      bigint      NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (projection, generation),
    CONSTRAINT distcache_generations_generation_positive CHECK (generation >= 1),
    CONSTRAINT distcache_generations_state CHECK (
        state IN ('allocated', 'backfilling', 'tailing', 'live', 'retiring', 'retired', 'failed')),
    CONSTRAINT distcache_generations_definition_object CHECK (jsonb_typeof(definition) = 'object')
);

-- Cache-producers look up the generations they must consume by state.
CREATE INDEX distcache_generations_state ON distcache_generations (state);

-- Every change to either table is announced on channel distcache_registry so
-- cache-producers pick it up without a restart. The payload is a JSON object:
-- {"table": "distcache_generations", "op": "UPDATE", "projection": "users_by_email", "generation": 2}
-- ("generation" only for distcache_generations).
CREATE FUNCTION distcache_registry_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    r       record;
    payload jsonb;
BEGIN
    IF TG_OP = 'DELETE' THEN
        r := OLD;
    ELSE
        r := NEW;
    END IF;
    IF TG_TABLE_NAME = 'distcache_generations' THEN
        payload := jsonb_build_object('table', TG_TABLE_NAME, 'op', TG_OP,
            'projection', r.projection, 'generation', r.generation);
    ELSE
        payload := jsonb_build_object('table', TG_TABLE_NAME, 'op', TG_OP, 'projection', r.name);
    END IF;
    PERFORM pg_notify('distcache_registry', payload::text);
    RETURN NULL;
END
$$;

CREATE TRIGGER distcache_projections_notify
    AFTER INSERT OR UPDATE OR DELETE ON distcache_projections
    FOR EACH ROW EXECUTE FUNCTION distcache_registry_notify();

CREATE TRIGGER distcache_generations_notify
    AFTER INSERT OR UPDATE OR DELETE ON distcache_generations
    FOR EACH ROW EXECUTE FUNCTION distcache_registry_notify();

-- updated_at follows every update, whoever writes the row.
CREATE FUNCTION distcache_touch_updated_at() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END
$$;

CREATE TRIGGER distcache_projections_touch
    BEFORE UPDATE ON distcache_projections
    FOR EACH ROW EXECUTE FUNCTION distcache_touch_updated_at();

CREATE TRIGGER distcache_generations_touch
    BEFORE UPDATE ON distcache_generations
    FOR EACH ROW EXECUTE FUNCTION distcache_touch_updated_at();
