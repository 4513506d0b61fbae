package backload

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/distcache/distcache/services/core-publisher/internal/pubtest"
	"github.com/distcache/distcache/tools/devstacktest"
	"github.com/jackc/pgx/v5/pgxpool"
)

func TestMain(m *testing.M) { devstacktest.Main(m) }

// setup returns a pool on a migrated database with table name holding rows
// rows that predate the capture trigger (the outbox is empty).
func setup(t *testing.T, name string, rows int) *pgxpool.Pool {
	t.Helper()
	pool := pubtest.Migrate(t, devstacktest.Database(t))
	pubtest.Exec(t, pool, pubtest.CapturedTableSQL(name))
	pubtest.Exec(t, pool, `ALTER TABLE `+name+` DISABLE TRIGGER `+name+`_distcache`)
	pubtest.Exec(t, pool, `INSERT INTO `+name+` (id, body) SELECT g, 'b' || g FROM generate_series(1, $1) g`, rows)
	pubtest.Exec(t, pool, `ALTER TABLE `+name+` ENABLE TRIGGER `+name+`_distcache`)
	return pool
}

// TestBackloadResumesAfterCrash: a backload stopped mid-way (its context
// cancelled between or during chunks, as a crash would leave it) resumes
// from its checkpoint: every row is written to the outbox exactly once.
func TestBackloadResumesAfterCrash(t *testing.T) {
	t.Parallel()
	const rows = 1000
	pool := setup(t, "users", rows)
	b, err := New(pool, WithChunkSize(100))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := b.Run(ctx, "users", Fresh)
		done <- err
	}()
	devstacktest.Eventually(t, 20*time.Second, func() bool {
		st, ok, err := b.State(context.Background(), "users")
		return err == nil && ok && st.Rows >= 300
	}, "backload under way")
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted Run: got %v, want context.Canceled", err)
	}
	st, _, err := b.State(context.Background(), "users")
	if err != nil {
		t.Fatal(err)
	}
	if st.Status != StatusRunning || st.Rows >= rows || st.Rows%100 != 0 {
		t.Fatalf("checkpoint after the crash: got %+v, want running with whole chunks done", st)
	}
	if got := pubtest.Count(t, pool, `SELECT count(*) FROM distcache_outbox`); got != st.Rows {
		t.Fatalf("outbox rows after the crash: got %d, want %d (the checkpoint commits with its chunk)", got, st.Rows)
	}

	// The interrupted run's connection was closed; its session (and the
	// model's lock) ends asynchronously on the server, until then
	// RunPending leaves the model to the other holder.
	devstacktest.Eventually(t, 10*time.Second, func() bool {
		if err := b.RunPending(context.Background()); err != nil {
			t.Fatal(err)
		}
		st, _, _ = b.State(context.Background(), "users")
		return st.Status == StatusDone
	}, "resumed backload done")
	if st.Status != StatusDone || st.Rows != rows || st.Total != rows || st.FinishedAt == nil {
		t.Errorf("state after resuming: got %+v, want done with %d rows", st, rows)
	}
	if got := pubtest.Count(t, pool, `SELECT count(DISTINCT agg_key) FROM distcache_outbox WHERE version = 1 AND op = 'upsert'`); got != rows {
		t.Errorf("distinct keys backloaded: got %d, want %d", got, rows)
	}
	if got := pubtest.Count(t, pool, `SELECT count(*) FROM distcache_outbox`); got != rows {
		t.Errorf("outbox rows: got %d, want %d (each row once)", got, rows)
	}
	if got := pubtest.Count(t, pool, `SELECT count(*) FROM distcache_outbox o JOIN users u ON u.id::text = o.agg_key
		WHERE o.payload = to_jsonb(u)`); got != rows {
		t.Errorf("payloads equal to_jsonb(row): got %d, want %d", got, rows)
	}

	// Done models are not backloaded again by RunPending; a Fresh run is.
	if err := b.RunPending(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := pubtest.Count(t, pool, `SELECT count(*) FROM distcache_outbox`); got != rows {
		t.Errorf("outbox rows after a second RunPending: got %d, want %d", got, rows)
	}
	if _, err := b.Run(context.Background(), "users", Fresh); err != nil {
		t.Fatal(err)
	}
	if got := pubtest.Count(t, pool, `SELECT count(*) FROM distcache_outbox WHERE version = 2`); got != rows {
		t.Errorf("rows of a fresh second backload (version 2): got %d, want %d", got, rows)
	}
}

// TestBackloadModelsAndErrors: models come from the capture triggers and the
// configuration; unknown models and concurrent backloads are refused with
// their sentinel errors; a schema-qualified text-keyed table backloads.
func TestBackloadModelsAndErrors(t *testing.T) {
	t.Parallel()
	pool := setup(t, "orgs", 10)
	pubtest.Exec(t, pool, `CREATE SCHEMA app; CREATE TABLE app.teams (slug text PRIMARY KEY, name text); INSERT INTO app.teams VALUES ('a', 'A'), ('b', 'B')`)
	b, err := New(pool, WithModels(Model{Aggregate: "teams", Table: "app.teams", KeyColumn: "slug"}, Model{Aggregate: "ghost", Table: "nope", KeyColumn: "id"}))
	if err != nil {
		t.Fatal(err)
	}
	ms, err := b.Models(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := []Model{{"ghost", "nope", "id", ""}, {"orgs", "orgs", "id", ""}, {"teams", "app.teams", "slug", ""}}
	if len(ms) != len(want) {
		t.Fatalf("models: got %v, want %v", ms, want)
	}
	for i := range want {
		if ms[i] != want[i] {
			t.Errorf("model %d: got %+v, want %+v", i, ms[i], want[i])
		}
	}
	for _, m := range []string{"nobody", "ghost"} {
		if _, err := b.Run(context.Background(), m, Fresh); !errors.Is(err, ErrUnknownModel) {
			t.Errorf("Run(%s): got %v, want ErrUnknownModel", m, err)
		}
	}
	if _, err := New(pool, WithModels(Model{Aggregate: "bad.name", Table: "x", KeyColumn: "id"})); err == nil {
		t.Error("New with an invalid aggregate name: got nil error")
	}

	conn, err := pool.Acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(context.Background(), `SELECT pg_advisory_lock(hashtextextended('distcache_backload:orgs', 0))`); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Run(context.Background(), "orgs", Fresh); !errors.Is(err, ErrRunning) {
		t.Errorf("Run while locked: got %v, want ErrRunning", err)
	}
	if err := b.Start(context.Background(), "orgs"); !errors.Is(err, ErrRunning) {
		t.Errorf("Start while locked: got %v, want ErrRunning", err)
	}
	if _, err := conn.Exec(context.Background(), `SELECT pg_advisory_unlock_all()`); err != nil {
		t.Fatal(err)
	}
	conn.Release()

	st, err := b.Run(context.Background(), "teams", Fresh)
	if err != nil {
		t.Fatal(err)
	}
	if st.Rows != 2 || st.Status != StatusDone {
		t.Errorf("teams backload: got %+v, want done, 2 rows", st)
	}
	if got := pubtest.Count(t, pool, `SELECT count(*) FROM distcache_outbox WHERE aggregate = 'teams' AND agg_key IN ('a', 'b') AND payload ? 'name'`); got != 2 {
		t.Errorf("teams outbox rows: got %d, want 2 keyed by slug", got)
	}
}

// TestBackloadPublishedColumns: a backload renders rows as the capture trigger does, through
// the model's column spec: a trigger's 'except:' spec (read from pg_trigger, statement-level
// triggers attached by distcache_attach) and a configured
// model's 'only:' spec keep the left-out columns out of the outbox.
func TestBackloadPublishedColumns(t *testing.T) {
	t.Parallel()
	pool := pubtest.Migrate(t, devstacktest.Database(t))
	pubtest.Exec(t, pool, `CREATE TABLE accounts (id bigint PRIMARY KEY, email text, password_hash text)`)
	pubtest.Exec(t, pool, `INSERT INTO accounts SELECT g, 'u' || g || '@x.io', 'hash-' || g FROM generate_series(1, 20) g`)
	// Statement-level capture: three triggers with the same arguments, one model.
	pubtest.Exec(t, pool, `SELECT distcache_attach('accounts', 'accounts', 'id', 'except:password_hash')`)
	pubtest.Exec(t, pool, `CREATE TABLE people (id bigint PRIMARY KEY, name text, ssn text)`)
	pubtest.Exec(t, pool, `INSERT INTO people SELECT g, 'n' || g, 'ssn-' || g FROM generate_series(1, 20) g`)
	b, err := New(pool, WithModels(Model{Aggregate: "people", Table: "people", KeyColumn: "id", Columns: "only:id|name"}))
	if err != nil {
		t.Fatal(err)
	}
	ms, err := b.Models(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 2 || ms[0].Columns != "except:password_hash" || ms[1].Columns != "only:id|name" {
		t.Fatalf("models: got %+v, want accounts except:password_hash and people only:id|name", ms)
	}
	for _, agg := range []string{"accounts", "people"} {
		if _, err := b.Run(context.Background(), agg, Fresh); err != nil {
			t.Fatal(err)
		}
	}
	if n := pubtest.Count(t, pool, `SELECT count(*) FROM distcache_outbox WHERE op = 'upsert'`); n != 40 {
		t.Errorf("backloaded rows: got %d, want 40", n)
	}
	if n := pubtest.Count(t, pool, `SELECT count(*) FROM distcache_outbox WHERE payload ? 'password_hash' OR payload ? 'ssn'`); n != 0 {
		t.Errorf("rows with a left-out column: got %d, want 0", n)
	}
	if n := pubtest.Count(t, pool, `SELECT count(*) FROM distcache_outbox WHERE aggregate = 'accounts' AND payload ? 'email'
		OR aggregate = 'people' AND payload ? 'name' AND NOT payload ? 'email'`); n != 40 {
		t.Errorf("rows with their published columns: got %d, want 40", n)
	}
}

func TestValidateColumns(t *testing.T) {
	t.Parallel()
	for spec, ok := range map[string]bool{"": true, "only:a": true, "except:a|b": true, "only:": false,
		"except:a||b": false, "hide:a": false, "a|b": false} {
		if err := ValidateColumns(spec); (err == nil) != ok {
			t.Errorf("ValidateColumns(%q) = %v, want ok=%v", spec, err, ok)
		}
	}
}
