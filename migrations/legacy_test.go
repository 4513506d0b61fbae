package migrations_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"slices"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/golang-migrate/migrate/v4"
	"github.com/golang-migrate/migrate/v4/source/iofs"
	"github.com/jackc/pgx/v5"

	"github.com/distcache/distcache/migrations"
	"github.com/distcache/distcache/tools/devstacktest"
)

// legacySequence is the single migration sequence of the releases before the split: its file
// names, and where each file is now. The SQL is the same.
var legacySequence = []struct{ old, now string }{
	{"000001_outbox", "core/000001_outbox"},
	{"000002_capture_trigger", "core/000002_capture_trigger"},
	{"000003_registry", "control/000001_registry"},
	{"000004_outbox_published", "core/000003_outbox_published"},
	{"000005_capture_columns", "core/000004_capture_columns"},
}

// legacyMigrate applies the single sequence up to version to the database at dbURL exactly as a
// release before the split did: golang-migrate, history in distcache_schema_migrations.
func legacyMigrate(t *testing.T, dbURL string, version uint) {
	t.Helper()
	mfs := fstest.MapFS{}
	for _, m := range legacySequence {
		for _, dir := range []string{"up", "down"} {
			b, err := fs.ReadFile(migrations.FS, m.now+"."+dir+".sql")
			if err != nil {
				t.Fatal(err)
			}
			mfs[m.old+"."+dir+".sql"] = &fstest.MapFile{Data: b}
		}
	}
	src, err := iofs.New(mfs, ".")
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	u.Scheme = "pgx5"
	q := u.Query()
	q.Set("x-migrations-table", migrations.LegacyTable)
	u.RawQuery = q.Encode()
	m, err := migrate.NewWithSourceInstance("iofs", src, u.String())
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := m.Migrate(version); err != nil {
		t.Fatalf("legacy migrate to %d: %v", version, err)
	}
}

func count(t *testing.T, conn *pgx.Conn, sql string, args ...any) int {
	t.Helper()
	var n int
	if err := conn.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

func hasTable(t *testing.T, conn *pgx.Conn, name string) bool {
	t.Helper()
	return count(t, conn, `SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tablename = $1`, name) == 1
}

// TestLegacyDatabaseUpgraded: a database migrated by the single sequence of the releases before
// the split (to each of its versions, with data in every table it had) is adopted by the sets:
// before anything is written, Check and Version read the legacy history (a database at legacy
// version 5 passes the control check; the core set has had one migration since, so its check
// names 000005_capture_statement); Up of both sets then records their versions in their own
// tables, applies only what the legacy history lacked, and keeps every row; the capture trigger
// goes on counting versions where it was; the legacy table is left as it was.
func TestLegacyDatabaseUpgraded(t *testing.T) {
	t.Parallel()
	for legacy := uint(1); legacy <= migrations.LegacyLatestVersion; legacy++ {
		t.Run(fmt.Sprintf("legacy_v%d", legacy), func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			dbURL := devstacktest.Database(t)
			legacyMigrate(t, dbURL, legacy)
			conn := connect(t, dbURL)

			// Data in every table the legacy schema had.
			exec(t, conn, `INSERT INTO distcache_publisher_state (name, value) VALUES ('relay', '{"n":1}')`)
			exec(t, conn, `INSERT INTO distcache_outbox (aggregate, agg_key, version, op, payload) VALUES ('orders', 'o1', 1, 'upsert', '{"id":"o1"}')`)
			if legacy >= 2 {
				exec(t, conn, `CREATE TABLE users (id bigint PRIMARY KEY, email text NOT NULL)`)
				exec(t, conn, `CREATE TRIGGER users_distcache AFTER INSERT OR UPDATE OR DELETE ON users
					FOR EACH ROW EXECUTE FUNCTION distcache_capture('users', 'id')`)
				exec(t, conn, `INSERT INTO users VALUES (1, 'a@x.io'), (2, 'b@x.io')`)
				exec(t, conn, `UPDATE users SET email = 'a2@x.io' WHERE id = 1`)
			}
			if legacy >= 3 {
				exec(t, conn, `INSERT INTO distcache_projections (name, model, key_template, fields) VALUES ('users_by_email', 'users', '{email}', '{id,email}')`)
				exec(t, conn, `INSERT INTO distcache_generations (projection, generation, definition, state) VALUES ('users_by_email', 1, '{}', 'live')`)
			}
			if legacy >= 4 {
				exec(t, conn, `INSERT INTO distcache_outbox_published (aggregate, agg_key, version) VALUES ('users', '1', 2)`)
			}
			outboxBefore := count(t, conn, `SELECT count(*) FROM distcache_outbox`)

			// Read-only, before the upgrade: the legacy history is read, nothing is written.
			wantCore := map[uint]uint{1: 1, 2: 2, 3: 2, 4: 3, 5: 4}[legacy]
			wantControl := map[bool]uint{true: 1, false: 0}[legacy >= 3]
			for _, c := range []struct {
				set  migrations.Set
				want uint
			}{{migrations.Core, wantCore}, {migrations.Control, wantControl}} {
				v, dirty, err := migrations.Version(ctx, dbURL, c.set)
				if err != nil || v != c.want || dirty {
					t.Errorf("%s Version before the upgrade = %d, %v, %v; want %d from the legacy history", c.set, v, dirty, err, c.want)
				}
				err = migrations.Check(ctx, dbURL, c.set)
				if ready := c.want == c.set.LatestVersion(); ready != (err == nil) {
					t.Errorf("%s Check before the upgrade = %v, want ready=%v", c.set, err, ready)
				}
				if hasTable(t, conn, c.set.Table()) {
					t.Fatalf("Version or Check created %s", c.set.Table())
				}
			}

			for _, set := range migrations.Sets() {
				if err := migrations.Up(ctx, dbURL, set); err != nil {
					t.Fatalf("Up %s on a legacy v%d database: %v", set, legacy, err)
				}
			}
			for _, set := range migrations.Sets() {
				if err := migrations.Check(ctx, dbURL, set); err != nil {
					t.Errorf("Check %s after the upgrade: %v", set, err)
				}
				if !hasTable(t, conn, set.Table()) {
					t.Errorf("%s has no %s after Up", set, set.Table())
				}
			}
			var lv int64
			var ldirty bool
			if err := conn.QueryRow(ctx, `SELECT version, dirty FROM distcache_schema_migrations`).Scan(&lv, &ldirty); err != nil || lv != int64(legacy) || ldirty {
				t.Errorf("legacy table after the upgrade: %d, %v, %v; want %d, clean (left as it was)", lv, ldirty, err, legacy)
			}
			var want []string
			for _, set := range migrations.Sets() {
				want = append(want, objectsOf[set.Name()]...)
			}
			want = append(want, "table "+migrations.LegacyTable)
			slices.Sort(want)
			if got := distcacheObjects(t, conn); fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("objects after the upgrade\n got %v\nwant %v", got, want)
			}

			// The data is intact.
			if n := count(t, conn, `SELECT count(*) FROM distcache_outbox`); n != outboxBefore {
				t.Errorf("outbox has %d rows after the upgrade, want %d", n, outboxBefore)
			}
			if n := count(t, conn, `SELECT count(*) FROM distcache_publisher_state WHERE value = '{"n":1}'`); n != 1 {
				t.Errorf("publisher state lost (%d rows)", n)
			}
			if legacy >= 3 {
				if n := count(t, conn, `SELECT count(*) FROM distcache_generations WHERE projection = 'users_by_email' AND state = 'live'`); n != 1 {
					t.Errorf("registry generation lost (%d rows)", n)
				}
			}
			if legacy >= 4 {
				if n := count(t, conn, `SELECT count(*) FROM distcache_outbox_published WHERE version = 2`); n != 1 {
					t.Errorf("published versions lost (%d rows)", n)
				}
			}
			// Capture goes on where it was: key 1's third change is its version 3; the
			// column spec of core migration 4 works.
			if legacy >= 2 {
				exec(t, conn, `UPDATE users SET email = 'a3@x.io' WHERE id = 1`)
				if n := count(t, conn, `SELECT max(version) FROM distcache_outbox WHERE aggregate = 'users' AND agg_key = '1'`); n != 3 {
					t.Errorf("key 1's version after the upgrade = %d, want 3", n)
				}
				exec(t, conn, `DROP TRIGGER users_distcache ON users`)
				exec(t, conn, `CREATE TRIGGER users_distcache AFTER INSERT OR UPDATE OR DELETE ON users
					FOR EACH ROW EXECUTE FUNCTION distcache_capture('users', 'id', 'only:id')`)
				exec(t, conn, `INSERT INTO users VALUES (3, 'c@x.io')`)
				var payload string
				if err := conn.QueryRow(ctx, `SELECT payload::text FROM distcache_outbox WHERE agg_key = '3'`).Scan(&payload); err != nil || payload != `{"id": 3}` {
					t.Errorf("payload with only:id = %s, %v; want {\"id\": 3}", payload, err)
				}
			}
		})
	}
}

// TestLegacyDirtyDatabase: a legacy history dirty at version 4 (outbox_published failed half-way)
// makes the core set dirty at its migration 3 and leaves the control set complete. Check names
// the failed migration and the repair; Up refuses; after the repair (force to 2) Up applies the
// rest.
func TestLegacyDirtyDatabase(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dbURL := devstacktest.Database(t)
	legacyMigrate(t, dbURL, 3)
	conn := connect(t, dbURL)
	exec(t, conn, `UPDATE distcache_schema_migrations SET version = 4, dirty = true`)

	err := migrations.Check(ctx, dbURL, migrations.Core)
	var se *migrations.SchemaError
	if !errors.As(err, &se) || !se.Dirty || se.Version != 3 || !se.Legacy ||
		!strings.Contains(err.Error(), "000003_outbox_published failed half-way") || !strings.Contains(err.Error(), "force core 2") {
		t.Fatalf("Check core = %v, want dirty at 3 naming 000003_outbox_published and the repair", err)
	}
	if v, dirty, err := migrations.Version(ctx, dbURL, migrations.Control); err != nil || v != 1 || dirty {
		t.Fatalf("Version control = %d, %v, %v, want 1, clean (the registry migration completed before)", v, dirty, err)
	}
	if err := migrations.Up(ctx, dbURL, migrations.Core); err == nil || !strings.Contains(err.Error(), "Dirty") {
		t.Fatalf("Up core on a dirty history = %v, want golang-migrate's dirty error", err)
	}
	if err := migrations.Force(ctx, dbURL, migrations.Core, 2); err != nil {
		t.Fatal(err)
	}
	if err := migrations.Up(ctx, dbURL, migrations.Core); err != nil {
		t.Fatalf("Up core after the repair: %v", err)
	}
	if err := migrations.Check(ctx, dbURL, migrations.Core); err != nil {
		t.Fatalf("Check core after the repair: %v", err)
	}
}

// TestCheck: Check and Version only read (they pass in a read-only session, and on an empty
// database they create nothing); an empty database lacks every migration of the set, by name; a
// database forced back to core version 2 lacks 3 and 4; a migrated one passes.
func TestCheck(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	dbURL := devstacktest.Database(t)
	readOnly := dbURL + "&default_transaction_read_only=on"
	if !strings.Contains(dbURL, "?") {
		readOnly = dbURL + "?default_transaction_read_only=on"
	}
	conn := connect(t, dbURL)

	err := migrations.Check(ctx, readOnly, migrations.Core)
	var se *migrations.SchemaError
	if !errors.As(err, &se) || se.Version != 0 || fmt.Sprint(se.Missing) != "[000001_outbox 000002_capture_trigger 000003_outbox_published 000004_capture_columns 000005_capture_statement]" ||
		!strings.Contains(err.Error(), "core schema not migrated") || !errors.Is(err, migrations.ErrSchemaNotReady) {
		t.Fatalf("Check core on an empty database = %v, want every migration named", err)
	}
	if err := migrations.Check(ctx, readOnly, migrations.Control); err == nil || !strings.Contains(err.Error(), "000001_registry") {
		t.Fatalf("Check control on an empty database = %v, want 000001_registry named", err)
	}
	if got := distcacheObjects(t, conn); len(got) != 0 {
		t.Fatalf("Check created %v", got)
	}

	if err := migrations.Up(ctx, dbURL, migrations.Core); err != nil {
		t.Fatal(err)
	}
	if err := migrations.Check(ctx, readOnly, migrations.Core); err != nil {
		t.Fatalf("Check core after Up: %v", err)
	}
	if v, dirty, err := migrations.Version(ctx, readOnly, migrations.Core); err != nil || v != migrations.LatestCoreVersion || dirty {
		t.Fatalf("Version core (read-only) = %d, %v, %v", v, dirty, err)
	}
	if err := migrations.Check(ctx, readOnly, migrations.Control); err == nil {
		t.Fatal("Check control passes on a database with the core set only")
	}
	if err := migrations.Force(ctx, dbURL, migrations.Core, 2); err != nil {
		t.Fatal(err)
	}
	err = migrations.Check(ctx, readOnly, migrations.Core)
	if !errors.As(err, &se) || se.Version != 2 || fmt.Sprint(se.Missing) != "[000003_outbox_published 000004_capture_columns 000005_capture_statement]" {
		t.Fatalf("Check core at version 2 = %v, want 000003 to 000005 missing", err)
	}
}
