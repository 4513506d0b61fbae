package relay

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/distcache/distcache/services/core-publisher/internal/pubmetrics"
	"github.com/distcache/distcache/services/core-publisher/internal/pubtest"
	"github.com/distcache/distcache/tools/devstacktest"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// insertVersion inserts an outbox row with a version of the writer's own
// choosing, as a writer that owns ordering (or gets it wrong) would.
func insertVersion(t *testing.T, pool *pgxpool.Pool, aggregate, key string, version int64) {
	t.Helper()
	pubtest.Exec(t, pool, `INSERT INTO distcache_outbox (aggregate, agg_key, version, op, payload)
		VALUES ($1, $2, $3, 'upsert', jsonb_build_object('v', $3::bigint))`, aggregate, key, version)
}

// TestRelayRefusesOlderVersions: a row whose version does not exceed the
// version already published for its key is dead-lettered with both numbers,
// whether the newer version was published by an earlier batch, by the batch
// in flight (pipelined reads) or earlier in the same batch; with the check
// off (the writer owns ordering) the same rows are published.
func TestRelayRefusesOlderVersions(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		batch int
		check bool
	}{
		{"batch=1", 1, true},
		{"batch=2", 2, true},
		{"batch=100", 100, true},
		{"check off", 100, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dbURL := devstacktest.Database(t)
			k := devstacktest.Kafka(t)
			pool := pubtest.Migrate(t, dbURL)
			agg := strings.NewReplacer(" ", "", "=", "").Replace("ord" + tc.name)
			// In one read: a2 b1 a1 (older than a2), c1 c1 (equal).
			insertVersion(t, pool, agg, "a", 2)
			insertVersion(t, pool, agg, "b", 1)
			insertVersion(t, pool, agg, "a", 1)
			insertVersion(t, pool, agg, "c", 1)
			insertVersion(t, pool, agg, "c", 1)
			m := pubmetrics.New()
			startRelay(t, dbURL, k.Addr, WithMetrics(m), WithBatchSize(tc.batch), WithVersionCheck(tc.check))
			drained := func() bool { return pubtest.Count(t, pool, `SELECT count(*) FROM distcache_outbox`) == 0 }
			devstacktest.Eventually(t, 20*time.Second, drained, "outbox drained")
			// Later reads: b5 is published, then b3 comes (older), then b6.
			insertVersion(t, pool, agg, "b", 5)
			devstacktest.Eventually(t, 20*time.Second, drained, "outbox drained")
			insertVersion(t, pool, agg, "b", 3)
			insertVersion(t, pool, agg, "b", 6)
			devstacktest.Eventually(t, 20*time.Second, drained, "outbox drained")

			reader := pubtest.NewReader(t, k.Addr, "distcache."+agg)
			wantEvents := 5
			if !tc.check {
				wantEvents = 8
			}
			reader.ReadUntil(t, 30*time.Second, func(got []pubtest.Event) bool { return len(got) >= wantEvents }, agg+" events")
			got := pubtest.Versions(reader.Events)
			dead := deadLetters(t, pool, agg)
			if !tc.check {
				if want := "map[a:[2 1] b:[1 5 3 6] c:[1 1]]"; fmt.Sprint(got) != want || len(dead) != 0 {
					t.Errorf("check off: published %v, dead %v; want %s and no dead letters", got, dead, want)
				}
				return
			}
			if want := "map[a:[2] b:[1 5 6] c:[1]]"; fmt.Sprint(got) != want {
				t.Errorf("published versions: got %v, want %s", got, want)
			}
			var reasons []string
			for _, d := range dead {
				reasons = append(reasons, d.key+": "+d.reason)
			}
			want := []string{
				`a: version not newer than the published one: version 1 does not exceed version 2 already published for key "a"`,
				`c: version not newer than the published one: version 1 does not exceed version 1 already published for key "c"`,
				`b: version not newer than the published one: version 3 does not exceed version 5 already published for key "b"`,
			}
			if !slices.Equal(reasons, want) {
				t.Errorf("dead letters:\n got %q\nwant %q", reasons, want)
			}
			if n := testutil.ToFloat64(m.DeadLetters.WithLabelValues(agg)); n != 3 {
				t.Errorf("distcache_publisher_dead_letters_total: got %v, want 3", n)
			}
		})
	}
}

// TestRelayUnknownModel: with a catalog, rows of an aggregate that is no
// model are dead-lettered as "unknown model" and get no topic; a model added
// to the catalog while the relay runs is published.
func TestRelayUnknownModel(t *testing.T) {
	t.Parallel()
	dbURL := devstacktest.Database(t)
	k := devstacktest.Kafka(t)
	pool := pubtest.Migrate(t, dbURL)
	var mu sync.Mutex
	models := []string{"known"}
	catalog := func(context.Context) ([]string, error) {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(models), nil
	}
	for i := range 3 {
		insertRaw(t, pool, "known", fmt.Sprintf("k%d", i), `{"x": 1}`)
		insertRaw(t, pool, "stray", fmt.Sprintf("s%d", i), `{"x": 1}`)
	}
	startRelay(t, dbURL, k.Addr, WithCatalog(catalog))
	drained := func() bool { return pubtest.Count(t, pool, `SELECT count(*) FROM distcache_outbox`) == 0 }
	devstacktest.Eventually(t, 20*time.Second, drained, "outbox drained")

	dead := deadLetters(t, pool, "stray")
	if len(dead) != 3 || !strings.HasPrefix(dead[0].reason, `unknown model "stray": no table has the distcache_capture trigger`) {
		t.Errorf("stray dead letters: got %+v, want 3 with reason unknown model", dead)
	}
	if got := deadLetters(t, pool, "known"); len(got) != 0 {
		t.Errorf("known dead letters: got %+v, want none", got)
	}
	adm := newAdmin(t, k.Addr)
	topics, err := adm.ListTopics(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if topics.Has("distcache.stray") || !topics.Has("distcache.known") {
		t.Errorf("topics: got %v, want distcache.known and no distcache.stray", topics.Names())
	}

	mu.Lock()
	models = append(models, "late")
	mu.Unlock()
	insertRaw(t, pool, "late", "l0", `{"x": 1}`)
	devstacktest.Eventually(t, 20*time.Second, drained, "outbox drained")
	reader := pubtest.NewReader(t, k.Addr, "distcache.late")
	reader.ReadUntil(t, 30*time.Second, func(got []pubtest.Event) bool { return len(got) >= 1 }, "late events")
	if got := deadLetters(t, pool, "late"); len(got) != 0 {
		t.Errorf("late dead letters: got %+v, want none (the catalog is read again)", got)
	}
}

// TestRelayPrunesDeadLetters: dead letters older than the retention are
// deleted by the active relay; newer ones stay.
func TestRelayPrunesDeadLetters(t *testing.T) {
	t.Parallel()
	dbURL := devstacktest.Database(t)
	k := devstacktest.Kafka(t)
	pool := pubtest.Migrate(t, dbURL)
	for i, age := range []string{"8 days", "30 days", "1 hour", "6 days"} {
		pubtest.Exec(t, pool, `INSERT INTO distcache_outbox_dead (id, txid, aggregate, agg_key, version, op, payload, event_id, created_at, reason, failed_at)
			VALUES ($1, pg_current_xact_id(), 'm', $2, 1, 'upsert', '{}', gen_random_uuid(), now(), 'test', now() - $3::interval)`,
			-1-i, fmt.Sprint("k", i), age)
	}
	m := pubmetrics.New()
	startRelay(t, dbURL, k.Addr, WithMetrics(m), WithDeadLetterRetention(7*24*time.Hour))
	devstacktest.Eventually(t, 20*time.Second, func() bool {
		return pubtest.Count(t, pool, `SELECT count(*) FROM distcache_outbox_dead`) == 2
	}, "dead letters past 7 days pruned")
	if got := pubtest.Count(t, pool, `SELECT count(*) FROM distcache_outbox_dead WHERE agg_key IN ('k2', 'k3')`); got != 2 {
		t.Errorf("recent dead letters kept: got %d, want 2", got)
	}
	if n := testutil.ToFloat64(m.DeadLettersPruned); n != 2 {
		t.Errorf("distcache_publisher_dead_letters_pruned_total: got %v, want 2", n)
	}
}
