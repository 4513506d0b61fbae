package pipeline

import (
	"context"
	"fmt"
	"strconv"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// The sample core table. seq is bumped by every update, so the value an edge holds says which
// committed update it reflects; pad gives the value a realistic size.
const coreSchema = `
CREATE TABLE IF NOT EXISTS items (
	id  bigint PRIMARY KEY,
	k   text   NOT NULL UNIQUE,
	seq bigint NOT NULL DEFAULT 0,
	pad text   NOT NULL DEFAULT ''
);`

// The capture triggers: statement-level (distcache_attach), so a writer's batch is one set-based
// write of its events.
const triggerSQL = `
DO $$ BEGIN
	IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgrelid = 'items'::regclass AND tgname = 'distcache_capture_update') THEN
		PERFORM distcache_attach('items', 'items', 'id');
	END IF;
END $$;`

// Key is the projection key of item id.
func Key(id int) string { return "item-" + strconv.Itoa(id) }

// prepareCore creates and seeds the table before attaching the capture trigger, so the seeded
// rows reach the broker through the publisher's backload.
func prepareCore(ctx context.Context, url string, items int) error {
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return fmt.Errorf("core database: %w", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, coreSchema); err != nil {
		return fmt.Errorf("create items: %w", err)
	}
	if _, err := conn.Exec(ctx, `INSERT INTO items (id, k, seq, pad)
		SELECT g, 'item-' || g, 0, repeat('x', 150) FROM generate_series(1, $1::bigint) AS g
		ON CONFLICT DO NOTHING`, items); err != nil {
		return fmt.Errorf("seed items: %w", err)
	}
	if _, err := conn.Exec(ctx, triggerSQL); err != nil {
		return fmt.Errorf("attach capture trigger: %w", err)
	}
	return nil
}

// Row is one item's committed state in the core database.
type Row struct {
	ID      int
	Seq     int64
	Version int64 // the outbox version of its last change (0: never changed since the backload)
}

// CoreRows reads every item with its outbox version.
func CoreRows(ctx context.Context, pool *pgxpool.Pool) (map[int]Row, error) {
	rows, err := pool.Query(ctx, `SELECT i.id, i.seq, coalesce(v.version, 0)
		FROM items i LEFT JOIN distcache_outbox_versions v ON v.aggregate = 'items' AND v.agg_key = i.id::text`)
	if err != nil {
		return nil, fmt.Errorf("read items: %w", err)
	}
	defer rows.Close()
	out := map[int]Row{}
	for rows.Next() {
		var r Row
		if err := rows.Scan(&r.ID, &r.Seq, &r.Version); err != nil {
			return nil, err
		}
		out[r.ID] = r
	}
	return out, rows.Err()
}

// Bump commits one update of each id in one statement (one event per id) and returns each id's
// new seq. The caller takes the time after it returns as the commit time.
func Bump(ctx context.Context, pool *pgxpool.Pool, ids []int64) (map[int64]int64, error) {
	rows, err := pool.Query(ctx, `UPDATE items SET seq = seq + 1 WHERE id = ANY($1) RETURNING id, seq`, ids)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := make(map[int64]int64, len(ids))
	for rows.Next() {
		var id, seq int64
		if err := rows.Scan(&id, &seq); err != nil {
			return nil, err
		}
		out[id] = seq
	}
	return out, rows.Err()
}
