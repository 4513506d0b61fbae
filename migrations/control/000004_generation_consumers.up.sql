-- What the cache-producer replica that keeps a generation up to date last reported of it
-- (docs/architecture.md, "Is it fresh? The consumer report"): who owns it, its position and the
-- topic's end as that replica saw them, the source time of the newest change it applied and its
-- dead letters of the last hour. One row per generation, upserted by the owner every few seconds
-- (reported_at); the control-plane's GetStatus derives lag and ages from it. No NOTIFY: the
-- registry's watchers do not care, and a row per generation every two seconds would wake them all.
CREATE TABLE distcache_generation_consumers (
    projection             text        NOT NULL,
    generation             integer     NOT NULL,
    owner                  text        NOT NULL,
    next_offset            bigint      NOT NULL,
    high_watermark         bigint      NOT NULL,
    newest_source_time     timestamptz,
    dead_letters_last_hour integer     NOT NULL DEFAULT 0,
    reported_at            timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (projection, generation),
    FOREIGN KEY (projection, generation)
        REFERENCES distcache_generations (projection, generation) ON DELETE CASCADE
);
