package main

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5/pgxpool"
)

// The sample core schema: organisations and their users. The capture trigger from migrations/
// turns every change into an outbox row; the publisher's first run backloads the seeded rows.
const coreSchema = `
CREATE TABLE IF NOT EXISTS orgs (
	id         bigint PRIMARY KEY,
	slug       text NOT NULL UNIQUE,
	name       text NOT NULL,
	plan       text NOT NULL,
	updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS users (
	id         bigint PRIMARY KEY,
	email      text NOT NULL UNIQUE,
	name       text NOT NULL,
	org_id     bigint NOT NULL REFERENCES orgs (id),
	status     text NOT NULL,
	updated_at timestamptz NOT NULL DEFAULT now()
);`

// The capture triggers, statement-level (distcache_attach: one set-based write of a statement's
// events), attached once; an older demo database's row-level triggers are replaced.
const triggersSQL = `
DO $$ BEGIN
	IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = 'orgs'::regclass AND tgname = 'distcache_capture_update') THEN
		PERFORM distcache_attach('orgs', 'orgs', 'id');
	END IF;
	IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = 'users'::regclass AND tgname = 'distcache_capture_update') THEN
		PERFORM distcache_attach('users', 'users', 'id');
	END IF;
END $$;`

// prepareCore creates the sample schema, seeds it when it is empty (before the capture triggers
// exist, so the rows reach Kafka through the publisher's backload) and attaches the triggers.
// It returns the number of users.
func prepareCore(ctx context.Context, pool *pgxpool.Pool, users, orgs int) (int, bool, error) {
	if _, err := pool.Exec(ctx, coreSchema); err != nil {
		return 0, false, fmt.Errorf("create sample schema: %w", err)
	}
	var n int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM users").Scan(&n); err != nil {
		return 0, false, fmt.Errorf("count users: %w", err)
	}
	seeded := false
	if n == 0 {
		tx, err := pool.Begin(ctx)
		if err != nil {
			return 0, false, fmt.Errorf("seed: %w", err)
		}
		defer tx.Rollback(ctx)
		if _, err := tx.Exec(ctx, `INSERT INTO orgs (id, slug, name, plan)
			SELECT g, 'org-' || g, 'Org ' || g, (ARRAY['free', 'pro', 'enterprise'])[1 + g % 3]
			FROM generate_series(1, $1::bigint) AS g`, orgs); err != nil {
			return 0, false, fmt.Errorf("seed orgs: %w", err)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO users (id, email, name, org_id, status)
			SELECT g, 'user' || g || '@example.com', 'User ' || g, 1 + g % $1::bigint,
			       CASE WHEN g % 10 = 0 THEN 'disabled' ELSE 'active' END
			FROM generate_series(1, $2::bigint) AS g`, orgs, users); err != nil {
			return 0, false, fmt.Errorf("seed users: %w", err)
		}
		if err := tx.Commit(ctx); err != nil {
			return 0, false, fmt.Errorf("seed: %w", err)
		}
		n, seeded = users, true
	}
	if _, err := pool.Exec(ctx, triggersSQL); err != nil {
		return 0, false, fmt.Errorf("attach capture triggers (migrations applied?): %w", err)
	}
	return n, seeded, nil
}
