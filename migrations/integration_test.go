package migrations_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/distcache/distcache/migrations"
	"github.com/distcache/distcache/tools/devstacktest"
)

func TestMain(m *testing.M) { devstacktest.Main(m) }

// migrated returns a fresh database with both sets applied (the registry in the core database,
// as a deployment that uses one database for both may have it) and a connection to it.
func migrated(t *testing.T) (string, *pgx.Conn) {
	t.Helper()
	url := devstacktest.Database(t)
	for _, set := range migrations.Sets() {
		if err := migrations.Up(context.Background(), url, set); err != nil {
			t.Fatalf("Up %s: %v", set, err)
		}
	}
	return url, connect(t, url)
}

func connect(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), url)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func exec(t *testing.T, conn *pgx.Conn, sql string, args ...any) {
	t.Helper()
	if _, err := conn.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// distcacheObjects lists the tables and functions the migrations own.
func distcacheObjects(t *testing.T, conn *pgx.Conn) []string {
	t.Helper()
	rows, err := conn.Query(context.Background(), `
		SELECT 'table ' || tablename FROM pg_tables WHERE schemaname = 'public' AND tablename LIKE 'distcache%'
		UNION ALL
		SELECT 'function ' || proname FROM pg_proc WHERE pronamespace = 'public'::regnamespace AND proname LIKE 'distcache%'
		ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return names
}

// objectsOf are the objects each set creates, its version table included.
var objectsOf = map[string][]string{
	"core": {
		"function distcache_attach", "function distcache_capture", "function distcache_capture_null_key",
		"function distcache_outbox_append", "function distcache_published_image",
		"table distcache_core_schema_migrations", "table distcache_outbox", "table distcache_outbox_dead",
		"table distcache_outbox_published", "table distcache_outbox_versions", "table distcache_publisher_state",
	},
	"control": {
		"function distcache_registry_notify", "function distcache_touch_updated_at",
		"table distcache_control_schema_migrations", "table distcache_generation_consumers", "table distcache_generations",
		"table distcache_projections",
	},
}

// TestUpDownUp applies each set alone in its own database (core database, registry database) and
// both in one, twice over: Up, Up again (no change), Down, with exactly the set's objects present
// after Up and only its version table after Down; user tables survive Down.
func TestUpDownUp(t *testing.T) {
	t.Parallel()
	for _, sets := range [][]migrations.Set{{migrations.Core}, {migrations.Control}, {migrations.Core, migrations.Control}} {
		t.Run(fmt.Sprint(sets), func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			url := devstacktest.Database(t)
			conn := connect(t, url)
			var wantUp, wantDown []string
			for _, set := range sets {
				wantUp = append(wantUp, objectsOf[set.Name()]...)
				wantDown = append(wantDown, "table "+set.Table())
				// Down on an empty database has nothing to do and is not an error.
				if err := migrations.Down(ctx, url, set); err != nil {
					t.Fatalf("Down %s on an empty database: %v", set, err)
				}
			}
			slices.Sort(wantUp)
			slices.Sort(wantDown)
			for round := 1; round <= 2; round++ {
				for _, set := range sets {
					if err := migrations.Up(ctx, url, set); err != nil {
						t.Fatalf("round %d: Up %s: %v", round, set, err)
					}
					if err := migrations.Up(ctx, url, set); err != nil {
						t.Fatalf("round %d: second Up %s (no change) = %v, want nil", round, set, err)
					}
					v, dirty, err := migrations.Version(ctx, url, set)
					if err != nil || v != set.LatestVersion() || dirty {
						t.Fatalf("round %d: %s Version after Up = %d, %v, %v; want %d, clean", round, set, v, dirty, err, set.LatestVersion())
					}
					if err := migrations.Check(ctx, url, set); err != nil {
						t.Fatalf("round %d: Check %s after Up: %v", round, set, err)
					}
				}
				if got := distcacheObjects(t, conn); fmt.Sprint(got) != fmt.Sprint(wantUp) {
					t.Fatalf("round %d: after Up objects\n got %v\nwant %v", round, got, wantUp)
				}
				if slices.Contains(sets, migrations.Core) {
					// A table with the capture trigger attached must not block Down.
					exec(t, conn, `CREATE TABLE IF NOT EXISTS things (id int PRIMARY KEY)`)
					exec(t, conn, `CREATE TRIGGER things_distcache AFTER INSERT OR UPDATE OR DELETE ON things
						FOR EACH ROW EXECUTE FUNCTION distcache_capture('things', 'id')`)
					exec(t, conn, `INSERT INTO things VALUES ($1)`, round)
				}
				for _, set := range slices.Backward(sets) {
					if err := migrations.Down(ctx, url, set); err != nil {
						t.Fatalf("round %d: Down %s: %v", round, set, err)
					}
					v, _, err := migrations.Version(ctx, url, set)
					if err != nil || v != 0 {
						t.Fatalf("round %d: %s Version after Down = %d, %v; want 0", round, set, v, err)
					}
				}
				if got := distcacheObjects(t, conn); fmt.Sprint(got) != fmt.Sprint(wantDown) {
					t.Fatalf("round %d: after Down objects %v, want only %v", round, got, wantDown)
				}
				if slices.Contains(sets, migrations.Core) {
					var n int
					if err := conn.QueryRow(ctx, `SELECT count(*) FROM things`).Scan(&n); err != nil || n != round {
						t.Fatalf("round %d: things has %d rows (%v) after Down, want %d: Down must keep user tables", round, n, err, round)
					}
				}
			}
		})
	}
}

func TestConcurrentUp(t *testing.T) {
	t.Parallel()
	url := devstacktest.Database(t)
	var wg sync.WaitGroup
	sets := []migrations.Set{migrations.Core, migrations.Control, migrations.Core, migrations.Control, migrations.Core}
	errs := make([]error, len(sets))
	for i, set := range sets {
		wg.Go(func() { errs[i] = migrations.Up(context.Background(), url, set) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("concurrent Up %d (%s): %v", i, sets[i], err)
		}
	}
	for _, set := range migrations.Sets() {
		v, dirty, err := migrations.Version(context.Background(), url, set)
		if err != nil || v != set.LatestVersion() || dirty {
			t.Fatalf("%s Version = %d, %v, %v; want %d, clean", set, v, dirty, err, set.LatestVersion())
		}
	}
}

type outboxRow struct {
	Key     string
	Version int64
	Op      string
	Payload map[string]any
	Headers map[string]string
}

// outboxRows returns the aggregate's outbox rows in insertion (id) order.
func outboxRows(t *testing.T, conn *pgx.Conn, aggregate string) []outboxRow {
	t.Helper()
	rows, err := conn.Query(context.Background(),
		`SELECT agg_key, version, op, payload, headers FROM distcache_outbox WHERE aggregate = $1 ORDER BY id`, aggregate)
	if err != nil {
		t.Fatal(err)
	}
	got, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (outboxRow, error) {
		var o outboxRow
		err := r.Scan(&o.Key, &o.Version, &o.Op, &o.Payload, &o.Headers)
		return o, err
	})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func TestCaptureTrigger(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url, conn := migrated(t)
	exec(t, conn, `CREATE TABLE users (id bigint PRIMARY KEY, email text NOT NULL, name text)`)
	exec(t, conn, `CREATE TRIGGER users_distcache AFTER INSERT OR UPDATE OR DELETE ON users
		FOR EACH ROW EXECUTE FUNCTION distcache_capture('users', 'id')`)

	listener := connect(t, url)
	exec(t, listener, `LISTEN distcache_outbox`)

	exec(t, conn, `INSERT INTO users VALUES (1, 'a@example.com', 'Ann')`)
	exec(t, conn, `UPDATE users SET name = 'Anna' WHERE id = 1`)
	exec(t, conn, `UPDATE users SET id = 2 WHERE id = 1`) // key change
	exec(t, conn, `DELETE FROM users WHERE id = 2`)
	// A rolled-back change leaves nothing.
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO users VALUES (3, 'c@example.com', NULL)`); err != nil {
		t.Fatal(err)
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	// Headers come from the transaction-local setting distcache.headers.
	tx, err = conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `SELECT set_config('distcache.headers', '{"traceparent":"00-abc-def-01"}', true)`); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO users VALUES (4, 'd@example.com', NULL)`); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}

	want := []outboxRow{
		{Key: "1", Version: 1, Op: "upsert", Payload: map[string]any{"id": 1.0, "email": "a@example.com", "name": "Ann"}},
		{Key: "1", Version: 2, Op: "upsert", Payload: map[string]any{"id": 1.0, "email": "a@example.com", "name": "Anna"}},
		{Key: "1", Version: 3, Op: "delete"},
		{Key: "2", Version: 1, Op: "upsert", Payload: map[string]any{"id": 2.0, "email": "a@example.com", "name": "Anna"}},
		{Key: "2", Version: 2, Op: "delete"},
		{Key: "4", Version: 1, Op: "upsert", Payload: map[string]any{"id": 4.0, "email": "d@example.com", "name": nil},
			Headers: map[string]string{"traceparent": "00-abc-def-01"}},
	}
	got := outboxRows(t, conn, "users")
	gotJSON, _ := json.Marshal(got)
	for i := range want {
		if want[i].Headers == nil {
			want[i].Headers = map[string]string{}
		}
	}
	wantJSON, _ := json.Marshal(want)
	if string(gotJSON) != string(wantJSON) {
		t.Fatalf("outbox rows\n got %s\nwant %s", gotJSON, wantJSON)
	}

	var vers []int64
	rows, err := conn.Query(ctx, `SELECT version FROM distcache_outbox_versions WHERE aggregate = 'users' ORDER BY agg_key`)
	if err != nil {
		t.Fatal(err)
	}
	if vers, err = pgx.CollectRows(rows, pgx.RowTo[int64]); err != nil || fmt.Sprint(vers) != "[3 2 1]" {
		t.Fatalf("versions table = %v, %v; want [3 2 1] for keys 1, 2, 4", vers, err)
	}

	// Committed changes notified channel distcache_outbox with the aggregate.
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	n, err := listener.WaitForNotification(wctx)
	if err != nil {
		t.Fatalf("WaitForNotification: %v", err)
	}
	if n.Channel != "distcache_outbox" || n.Payload != "users" {
		t.Fatalf("notification %s/%q, want distcache_outbox/users", n.Channel, n.Payload)
	}
}

func TestCaptureTriggerTextKeyAndConcurrentVersions(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url, conn := migrated(t)
	exec(t, conn, `CREATE TABLE orgs (slug text PRIMARY KEY, n int NOT NULL)`)
	exec(t, conn, `CREATE TRIGGER orgs_distcache AFTER INSERT OR UPDATE OR DELETE ON orgs
		FOR EACH ROW EXECUTE FUNCTION distcache_capture('orgs', 'slug')`)
	exec(t, conn, `INSERT INTO orgs VALUES ('acme', 0)`)

	// Concurrent writers of one key get distinct versions in commit order.
	const writers, each = 4, 10
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for range writers {
		wg.Go(func() {
			c, err := pgx.Connect(ctx, url)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close(ctx)
			for range each {
				if _, err := c.Exec(ctx, `UPDATE orgs SET n = n + 1 WHERE slug = 'acme'`); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	got := outboxRows(t, conn, "orgs")
	if len(got) != 1+writers*each {
		t.Fatalf("%d outbox rows, want %d", len(got), 1+writers*each)
	}
	// In id order the versions are exactly 1..41 and each after-image carries
	// the counter its commit produced: for one key, id order, version order and
	// commit order agree (the relay publishes in id order and relies on it).
	// txid order need not agree: xids are assigned before the row lock is won.
	for i, r := range got {
		if r.Key != "acme" || r.Version != int64(i+1) || r.Payload["n"] != float64(i) {
			t.Fatalf("row %d = %+v, want key acme version %d n %d", i, r, i+1, i)
		}
	}
}

func TestCaptureTriggerMisuse(t *testing.T) {
	t.Parallel()
	_, conn := migrated(t)
	exec(t, conn, `CREATE TABLE a (id int PRIMARY KEY)`)
	exec(t, conn, `CREATE TRIGGER a_distcache AFTER INSERT ON a FOR EACH ROW EXECUTE FUNCTION distcache_capture('a')`)
	exec(t, conn, `CREATE TABLE b (id int PRIMARY KEY)`)
	exec(t, conn, `CREATE TRIGGER b_distcache AFTER INSERT ON b FOR EACH ROW EXECUTE FUNCTION distcache_capture('b', 'nope')`)
	exec(t, conn, `CREATE TABLE c (id int PRIMARY KEY)`)
	exec(t, conn, `CREATE TRIGGER c_distcache AFTER INSERT ON c FOR EACH ROW EXECUTE FUNCTION distcache_capture('c.d', 'id')`)
	tests := []struct{ sql, wantIn string }{
		{`INSERT INTO a VALUES (1)`, "want 2 or 3 arguments"},
		{`INSERT INTO b VALUES (1)`, `key column "nope" is missing or NULL`},
		{`INSERT INTO c VALUES (1)`, "distcache_outbox_aggregate_name"},
	}
	for _, tt := range tests {
		_, err := conn.Exec(context.Background(), tt.sql)
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || !strings.Contains(pgErr.Message+" "+pgErr.ConstraintName, tt.wantIn) {
			t.Errorf("%s = %v, want an error containing %q", tt.sql, err, tt.wantIn)
		}
	}
}

// TestCaptureTriggerPublishedColumns: a capture trigger's column spec keeps the columns it leaves
// out (a password hash, an API key) out of the outbox, on insert and on update; 'only' keeps the
// listed ones; the key is read from the whole row; a malformed spec fails the write with a clear
// error instead of publishing everything.
func TestCaptureTriggerPublishedColumns(t *testing.T) {
	t.Parallel()
	_, conn := migrated(t)
	exec(t, conn, `CREATE TABLE accounts (id int PRIMARY KEY, email text, password_hash text, api_key text)`)
	exec(t, conn, `CREATE TRIGGER accounts_distcache AFTER INSERT OR UPDATE OR DELETE ON accounts
		FOR EACH ROW EXECUTE FUNCTION distcache_capture('accounts', 'id', 'except:password_hash|api_key')`)
	exec(t, conn, `CREATE TABLE people (id int PRIMARY KEY, email text, name text, ssn text)`)
	exec(t, conn, `CREATE TRIGGER people_distcache AFTER INSERT OR UPDATE OR DELETE ON people
		FOR EACH ROW EXECUTE FUNCTION distcache_capture('people', 'id', 'only:id|name')`)
	exec(t, conn, `INSERT INTO accounts VALUES (1, 'a@example.com', '$2a$10$secret', 'key-1')`)
	exec(t, conn, `UPDATE accounts SET password_hash = '$2a$10$other' WHERE id = 1`)
	exec(t, conn, `INSERT INTO people VALUES (7, 'p@example.com', 'Pat', '123-45-6789')`)

	got, _ := json.Marshal(append(outboxRows(t, conn, "accounts"), outboxRows(t, conn, "people")...))
	want := `[{"Key":"1","Version":1,"Op":"upsert","Payload":{"email":"a@example.com","id":1},"Headers":{}},` +
		`{"Key":"1","Version":2,"Op":"upsert","Payload":{"email":"a@example.com","id":1},"Headers":{}},` +
		`{"Key":"7","Version":1,"Op":"upsert","Payload":{"id":7,"name":"Pat"},"Headers":{}}]`
	if string(got) != want {
		t.Errorf("outbox rows\n got %s\nwant %s", got, want)
	}
	if strings.Contains(string(got), "secret") || strings.Contains(string(got), "key-1") || strings.Contains(string(got), "6789") {
		t.Errorf("a left-out column reached the outbox: %s", got)
	}

	for _, spec := range []string{"everything", "only:", "except:a||b", "hide:password_hash"} {
		table := "bad" + strconv.Itoa(len(spec))
		exec(t, conn, `CREATE TABLE `+table+` (id int PRIMARY KEY)`)
		exec(t, conn, `CREATE TRIGGER `+table+`_distcache AFTER INSERT ON `+table+`
			FOR EACH ROW EXECUTE FUNCTION distcache_capture('`+table+`', 'id', '`+spec+`')`)
		_, err := conn.Exec(context.Background(), `INSERT INTO `+table+` VALUES (1)`)
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || !strings.Contains(pgErr.Message, `column spec "`+spec+`" must be only:`) {
			t.Errorf("spec %q: insert = %v, want the column spec error", spec, err)
		}
	}
}

func TestOutboxConstraints(t *testing.T) {
	t.Parallel()
	_, conn := migrated(t)
	tests := []struct{ name, sql, constraint string }{
		{"unknown op", `INSERT INTO distcache_outbox (aggregate, agg_key, version, op, payload) VALUES ('u', '1', 1, 'merge', '{}')`, "distcache_outbox_op"},
		{"upsert without payload", `INSERT INTO distcache_outbox (aggregate, agg_key, version, op) VALUES ('u', '1', 1, 'upsert')`, "distcache_outbox_payload"},
		{"array payload", `INSERT INTO distcache_outbox (aggregate, agg_key, version, op, payload) VALUES ('u', '1', 1, 'upsert', '[]')`, "distcache_outbox_payload"},
		{"delete with payload", `INSERT INTO distcache_outbox (aggregate, agg_key, version, op, payload) VALUES ('u', '1', 1, 'delete', '{}')`, "distcache_outbox_payload"},
		{"version zero", `INSERT INTO distcache_outbox (aggregate, agg_key, version, op, payload) VALUES ('u', '1', 0, 'upsert', '{}')`, "distcache_outbox_version_positive"},
		{"empty key", `INSERT INTO distcache_outbox (aggregate, agg_key, version, op, payload) VALUES ('u', '', 1, 'upsert', '{}')`, "distcache_outbox_key_not_empty"},
		{"aggregate with a dot", `INSERT INTO distcache_outbox (aggregate, agg_key, version, op, payload) VALUES ('u.v', '1', 1, 'upsert', '{}')`, "distcache_outbox_aggregate_name"},
		{"aggregate of 201 characters", `INSERT INTO distcache_outbox (aggregate, agg_key, version, op, payload) VALUES (repeat('a', 201), '1', 1, 'upsert', '{}')`, "distcache_outbox_aggregate_name"},
		{"empty aggregate", `INSERT INTO distcache_outbox (aggregate, agg_key, version, op, payload) VALUES ('', '1', 1, 'upsert', '{}')`, "distcache_outbox_aggregate_name"},
		{"headers array", `INSERT INTO distcache_outbox (aggregate, agg_key, version, op, payload, headers) VALUES ('u', '1', 1, 'upsert', '{}', '[]')`, "distcache_outbox_headers_object"},
	}
	for _, tt := range tests {
		_, err := conn.Exec(context.Background(), tt.sql)
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "23514" || pgErr.ConstraintName != tt.constraint {
			t.Errorf("%s: %v, want check violation of %s", tt.name, err, tt.constraint)
		}
	}
	// The longest aggregate name the rule allows is accepted.
	exec(t, conn, `INSERT INTO distcache_outbox (aggregate, agg_key, version, op, payload) VALUES (repeat('a', 200), '1', 1, 'upsert', '{}')`)
	// Defaults fill txid, event_id, headers and created_at.
	var txidSet, idSet bool
	var headers string
	err := conn.QueryRow(context.Background(), `INSERT INTO distcache_outbox (aggregate, agg_key, version, op) VALUES ('u', '1', 1, 'delete')
		RETURNING txid IS NOT NULL, event_id IS NOT NULL, headers::text`).Scan(&txidSet, &idSet, &headers)
	if err != nil || !txidSet || !idSet || headers != "{}" {
		t.Fatalf("defaults: txid %v event_id %v headers %q err %v; want set, set, {}", txidSet, idSet, headers, err)
	}
}

func TestRegistry(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url, conn := migrated(t)
	listener := connect(t, url)
	exec(t, listener, `LISTEN distcache_registry`)

	exec(t, conn, `INSERT INTO distcache_projections (name, model, key_template, fields, filter)
		VALUES ('users_by_email', 'users', '{email}', '{id,email}', '{"field":"status","op":"eq","values":["active"]}')`)
	exec(t, conn, `INSERT INTO distcache_generations (projection, generation, definition)
		VALUES ('users_by_email', 1, '{"key_template":"{email}"}')`)

	var state string
	var done, off, end int64
	if err := conn.QueryRow(ctx, `SELECT state, records_done, backfill_offset, end_offset FROM distcache_generations`).Scan(&state, &done, &off, &end); err != nil {
		t.Fatal(err)
	}
	if state != "allocated" || done != 0 || off != 0 || end != 0 {
		t.Fatalf("new generation: state %q records_done %d backfill_offset %d end_offset %d; want allocated, 0, 0, 0", state, done, off, end)
	}
	for _, s := range []string{"backfilling", "tailing", "live", "retiring", "retired", "failed"} {
		exec(t, conn, `UPDATE distcache_generations SET state = $1`, s)
	}

	bad := []struct{ name, sql, constraint string }{
		{"bad state", `UPDATE distcache_generations SET state = 'exploded'`, "distcache_generations_state"},
		{"generation zero", `INSERT INTO distcache_generations (projection, generation, definition) VALUES ('users_by_email', 0, '{}')`, "distcache_generations_generation_positive"},
		{"definition not object", `INSERT INTO distcache_generations (projection, generation, definition) VALUES ('users_by_email', 2, '[]')`, "distcache_generations_definition_object"},
		{"filter not object", `UPDATE distcache_projections SET filter = '"x"'`, "distcache_projections_filter_object"},
		{"empty model", `INSERT INTO distcache_projections (name, model, key_template) VALUES ('p', '', '{id}')`, "distcache_projections_model_not_empty"},
	}
	for _, tt := range bad {
		_, err := conn.Exec(ctx, tt.sql)
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "23514" || pgErr.ConstraintName != tt.constraint {
			t.Errorf("%s: %v, want check violation of %s", tt.name, err, tt.constraint)
		}
	}
	_, err := conn.Exec(ctx, `INSERT INTO distcache_generations (projection, generation, definition) VALUES ('nope', 1, '{}')`)
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != "23503" {
		t.Errorf("generation of unknown projection: %v, want foreign key violation", err)
	}
	_, err = conn.Exec(ctx, `INSERT INTO distcache_generations (projection, generation, definition) VALUES ('users_by_email', 1, '{}')`)
	if !errors.As(err, &pgErr) || pgErr.Code != "23505" {
		t.Errorf("duplicate generation: %v, want unique violation", err)
	}

	// updated_at follows updates.
	var created, updated time.Time
	exec(t, conn, `UPDATE distcache_projections SET current_generation = 1`)
	if err := conn.QueryRow(ctx, `SELECT created_at, updated_at FROM distcache_projections`).Scan(&created, &updated); err != nil || !updated.After(created) {
		t.Errorf("updated_at %v not after created_at %v (%v)", updated, created, err)
	}

	// Every committed change was announced, in order, with its row identity.
	want := []string{
		`{"op": "INSERT", "table": "distcache_projections", "projection": "users_by_email"}`,
		`{"op": "INSERT", "table": "distcache_generations", "generation": 1, "projection": "users_by_email"}`,
	}
	for _, w := range want {
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		n, err := listener.WaitForNotification(wctx)
		cancel()
		if err != nil {
			t.Fatalf("WaitForNotification: %v", err)
		}
		if n.Payload != w {
			t.Fatalf("notification %q, want %q", n.Payload, w)
		}
	}

	// Deleting a projection removes its generations.
	exec(t, conn, `DELETE FROM distcache_projections`)
	var n int
	if err := conn.QueryRow(ctx, `SELECT count(*) FROM distcache_generations`).Scan(&n); err != nil || n != 0 {
		t.Fatalf("%d generations left after deleting the projection (%v), want 0", n, err)
	}
}
