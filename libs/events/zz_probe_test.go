package events_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/distcache/distcache/migrations"
	"github.com/distcache/distcache/tools/devstacktest"
)

func TestProbeTrigger(t *testing.T) {
	ctx := context.Background()
	url := devstacktest.Database(t)
	migrations.Up(ctx, url)
	conn, _ := pgx.Connect(ctx, url)
	conn.Exec(ctx, `CREATE TABLE users (id int PRIMARY KEY, name text);
		CREATE TRIGGER users_distcache AFTER INSERT OR UPDATE OR DELETE ON users
		FOR EACH ROW EXECUTE FUNCTION distcache_capture('users', 'id')`)
	run := func(label string, n int) {
		t0 := time.Now()
		tx, _ := conn.Begin(ctx)
		if _, err := tx.Exec(ctx, fmt.Sprintf(`INSERT INTO users SELECT g, 'n' FROM generate_series(1, %d) g`, n)); err != nil {
			t.Fatal(err)
		}
		tx.Rollback(ctx)
		t.Logf("%s %d rows: %v (%v/row)", label, n, time.Since(t0), time.Since(t0)/time.Duration(n))
	}
	run("full", 1000)
	run("full", 10000)
	conn.Exec(ctx, `CREATE OR REPLACE FUNCTION distcache_outbox_append(p_aggregate text, p_key text, p_op text, p_payload jsonb, p_headers jsonb)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE v bigint;
BEGIN
    INSERT INTO distcache_outbox_versions AS cur (aggregate, agg_key, version) VALUES (p_aggregate, p_key, 1)
    ON CONFLICT (aggregate, agg_key) DO UPDATE SET version = cur.version + 1 RETURNING version INTO v;
    INSERT INTO distcache_outbox (aggregate, agg_key, version, op, payload, headers) VALUES (p_aggregate, p_key, v, p_op, p_payload, p_headers);
    RETURN v;
END $$`)
	run("no-notify", 1000)
	run("no-notify", 10000)
}
