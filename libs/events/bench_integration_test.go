package events_test

import (
	"context"
	"encoding/json"
	"strconv"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/distcache/distcache/libs/events"
	"github.com/distcache/distcache/migrations"
	"github.com/distcache/distcache/tools/devstacktest"
)

// BenchmarkOutboxWrite measures one transaction writing 10 events (rolled
// back, so the commit's fsync does not drown the difference), through the
// batched path (pgx.Tx) and through one Exec per statement (the peer), and,
// for reference, 10 inserted rows of a table with distcache_capture().
func BenchmarkOutboxWrite(b *testing.B) {
	ctx := context.Background()
	url := devstacktest.Database(b)
	if err := migrations.Up(ctx, url, migrations.Core); err != nil {
		b.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `CREATE TABLE users (id int PRIMARY KEY, name text);
		CREATE TRIGGER users_distcache AFTER INSERT OR UPDATE OR DELETE ON users
		FOR EACH ROW EXECUTE FUNCTION distcache_capture('users', 'id')`); err != nil {
		b.Fatal(err)
	}
	w, _ := events.NewOutboxWriter()
	batch := make([]events.Envelope, 10)
	for i := range batch {
		batch[i] = events.Envelope{Aggregate: "bench", Key: strconv.Itoa(i), Op: events.OpUpsert,
			Payload: json.RawMessage(`{"id":` + strconv.Itoa(i) + `,"name":"n"}`)}
	}
	for _, mode := range []string{"batch", "exec"} {
		b.Run(mode, func(b *testing.B) {
			for b.Loop() {
				tx, err := conn.Begin(ctx)
				if err != nil {
					b.Fatal(err)
				}
				var q events.Querier = tx
				if mode == "exec" {
					q = execOnly{tx}
				}
				if err := w.Write(ctx, q, batch...); err != nil {
					b.Fatal(err)
				}
				// Roll back: measure the writer, not the commit's fsync.
				if err := tx.Rollback(ctx); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	b.Run("trigger", func(b *testing.B) {
		for b.Loop() {
			tx, err := conn.Begin(ctx)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := tx.Exec(ctx, `INSERT INTO users SELECT g, 'n' FROM generate_series(0, 9) g`); err != nil {
				b.Fatal(err)
			}
			if err := tx.Rollback(ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
}
