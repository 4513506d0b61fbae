-- The transactional outbox (docs/architecture.md, "Outbox row"). Core
-- services write here in the same transaction as their business change,
-- through libs/events.OutboxWriter or the distcache_capture() trigger; the
-- core-publisher relays rows to Kafka in commit order.

CREATE TABLE distcache_outbox (
    id         bigserial   PRIMARY KEY,
    -- Commit-visibility fence: the relay only reads rows whose txid is older
    -- than every transaction still in progress (pg_snapshot_xmin), so a row is
    -- never skipped because a concurrent transaction committed later.
    txid       xid8        NOT NULL DEFAULT pg_current_xact_id(),
    aggregate  text        NOT NULL,
    agg_key    text        NOT NULL,
    version    bigint      NOT NULL,
    op         text        NOT NULL,
    payload    jsonb,
    headers    jsonb       NOT NULL DEFAULT '{}',
    event_id   uuid        NOT NULL DEFAULT gen_random_uuid(),
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT distcache_outbox_aggregate_name CHECK (aggregate ~ '^[A-Za-z0-9_-]{1,200}$'),
    CONSTRAINT distcache_outbox_key_not_empty CHECK (agg_key <> ''),
    CONSTRAINT distcache_outbox_version_positive CHECK (version >= 1),
    CONSTRAINT distcache_outbox_op CHECK (op IN ('upsert', 'delete')),
    CONSTRAINT distcache_outbox_payload CHECK (
        (op = 'upsert' AND payload IS NOT NULL AND jsonb_typeof(payload) = 'object')
        OR (op = 'delete' AND payload IS NULL)),
    CONSTRAINT distcache_outbox_headers_object CHECK (jsonb_typeof(headers) = 'object')
);

-- The relay reads in commit order: (txid, id).
CREATE INDEX distcache_outbox_txid_id ON distcache_outbox (txid, id);

-- Per-key version allocation: writers bump the row with INSERT ... ON CONFLICT
-- DO UPDATE SET version = version + 1 RETURNING version; the row lock
-- serialises writers of one key, so versions follow commit order per key.
CREATE TABLE distcache_outbox_versions (
    aggregate text   NOT NULL,
    agg_key   text   NOT NULL,
    version   bigint NOT NULL,
    PRIMARY KEY (aggregate, agg_key)
);

-- Rows the relay could not publish (oversized, invalid, ...), with the reason.
-- No checks here: a dead letter may be exactly the row that broke a rule.
CREATE TABLE distcache_outbox_dead (
    id         bigint      PRIMARY KEY,
    txid       xid8        NOT NULL,
    aggregate  text        NOT NULL,
    agg_key    text        NOT NULL,
    version    bigint      NOT NULL,
    op         text        NOT NULL,
    payload    jsonb,
    headers    jsonb       NOT NULL DEFAULT '{}',
    event_id   uuid        NOT NULL,
    created_at timestamptz NOT NULL,
    reason     text        NOT NULL,
    failed_at  timestamptz NOT NULL DEFAULT now()
);

-- Checkpoints of the core-publisher (relay position, backload progress, ...).
CREATE TABLE distcache_publisher_state (
    name       text        PRIMARY KEY,
    value      jsonb       NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
