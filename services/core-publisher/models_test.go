package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/distcache/distcache/libs/events"
	"github.com/distcache/distcache/services/core-publisher/internal/pubtest"
	"github.com/distcache/distcache/tools/devstacktest"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// TestOnlyModelsGetTopics: the service publishes rows of a capture-trigger
// table, of a PUBLISHER_MODELS entry and of a PUBLISHER_OUTBOX_MODELS entry,
// and dead-letters a row of any other aggregate as "unknown model" without
// creating its topic; a capture trigger installed while the service runs
// makes its table a model at once.
func TestOnlyModelsGetTopics(t *testing.T) {
	t.Parallel()
	dbURL := devstacktest.Database(t)
	k := devstacktest.Kafka(t)
	pool := pubtest.Migrate(t, dbURL)
	pubtest.Exec(t, pool, pubtest.CapturedTableSQL("people"))
	pubtest.Exec(t, pool, `CREATE TABLE teams (slug text PRIMARY KEY)`)
	startService(t, serviceEnv(t, dbURL, k.Addr,
		"PUBLISHER_MODELS", "teams:slug",
		"PUBLISHER_OUTBOX_MODELS", "orders",
		"PUBLISHER_AUTO_BACKLOAD", "false"))

	ctx := context.Background()
	w, err := events.NewOutboxWriter()
	if err != nil {
		t.Fatal(err)
	}
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, agg := range []string{"orders", "teams", "stray"} {
		if err := w.Write(ctx, tx, events.Envelope{Aggregate: agg, Key: "k1", Op: events.OpUpsert, Payload: []byte(`{"x": 1}`)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	pubtest.Exec(t, pool, `INSERT INTO people (id) VALUES (1)`)
	waitOutboxEmpty(t, pool, 30*time.Second)

	var reason string
	if err := pool.QueryRow(ctx, `SELECT reason FROM distcache_outbox_dead WHERE aggregate = 'stray'`).Scan(&reason); err != nil {
		t.Fatalf("stray's dead letter: %v", err)
	}
	if !strings.HasPrefix(reason, `unknown model "stray"`) {
		t.Errorf("stray's dead-letter reason: got %q, want unknown model", reason)
	}
	if n := pubtest.Count(t, pool, `SELECT count(*) FROM distcache_outbox_dead`); n != 1 {
		t.Errorf("dead letters: got %d, want 1 (stray's)", n)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(k.Addr))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	topics, err := kadm.NewClient(cl).ListTopics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"people", "teams", "orders"} {
		if !topics.Has(events.Topic("", want)) {
			t.Errorf("no topic for model %s", want)
		}
	}
	if topics.Has(events.Topic("", "stray")) {
		t.Errorf("a topic was created for the unknown aggregate stray")
	}

	// A trigger installed now: its table is a model from its first row.
	pubtest.Exec(t, pool, pubtest.CapturedTableSQL("latecomers"))
	pubtest.Exec(t, pool, `INSERT INTO latecomers (id) VALUES (1)`)
	reader := pubtest.NewReader(t, k.Addr, events.Topic("", "latecomers"))
	reader.ReadUntil(t, 30*time.Second, func(got []pubtest.Event) bool { return len(got) >= 1 }, "latecomers events")
}

// TestSecretColumnNeverReachesTheBroker: a table whose capture trigger leaves password_hash out
// ('except:password_hash') is backloaded (rows from before the trigger) and written live; every
// record on its topic carries the other columns and no record carries the hash, by name or by
// value.
func TestSecretColumnNeverReachesTheBroker(t *testing.T) {
	t.Parallel()
	dbURL := devstacktest.Database(t)
	k := devstacktest.Kafka(t)
	pool := pubtest.Migrate(t, dbURL)
	pubtest.Exec(t, pool, `CREATE TABLE accounts (id bigint PRIMARY KEY, email text NOT NULL, password_hash text NOT NULL)`)
	pubtest.Exec(t, pool, `INSERT INTO accounts SELECT g, 'u' || g || '@x.io', 'bcrypt-secret-' || g FROM generate_series(1, 50) g`)
	pubtest.Exec(t, pool, `CREATE TRIGGER accounts_distcache AFTER INSERT OR UPDATE OR DELETE ON accounts
		FOR EACH ROW EXECUTE FUNCTION distcache_capture('accounts', 'id', 'except:password_hash')`)
	startService(t, serviceEnv(t, dbURL, k.Addr)) // the first sight of the model backloads it
	pubtest.Exec(t, pool, `INSERT INTO accounts SELECT g, 'u' || g || '@x.io', 'bcrypt-secret-' || g FROM generate_series(51, 60) g`)
	pubtest.Exec(t, pool, `UPDATE accounts SET password_hash = 'bcrypt-secret-new' WHERE id <= 5`)

	reader := pubtest.NewReader(t, k.Addr, events.Topic("", "accounts"))
	reader.ReadUntil(t, 60*time.Second, func(got []pubtest.Event) bool { return len(pubtest.Latest(got)) >= 60 && len(got) >= 65 },
		"accounts events (backload, inserts, updates)")
	for _, e := range reader.Events {
		if strings.Contains(string(e.Value), "password_hash") || strings.Contains(string(e.Value), "bcrypt-secret") {
			t.Fatalf("record %s v%d carries the secret column: %s", e.Key, e.Version, e.Value)
		}
		if !strings.Contains(string(e.Value), `"email"`) {
			t.Errorf("record %s v%d lacks the published column email: %s", e.Key, e.Version, e.Value)
		}
	}
	t.Logf("%d records on the topic, none with password_hash", len(reader.Events))
}
