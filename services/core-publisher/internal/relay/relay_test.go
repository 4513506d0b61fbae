package relay

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/distcache/distcache/libs/events"
	"github.com/distcache/distcache/services/core-publisher/internal/producer"
	"github.com/distcache/distcache/services/core-publisher/internal/pubmetrics"
	"github.com/distcache/distcache/services/core-publisher/internal/pubtest"
	"github.com/distcache/distcache/tools/devstacktest"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

func TestMain(m *testing.M) { devstacktest.Main(m) }

// startRelay runs a relay until the test ends (or stop is called).
func startRelay(t *testing.T, dbURL, broker string, opts ...Option) (r *Relay, stop func()) {
	t.Helper()
	return startRelayTxn(t, dbURL, broker, true, nil, opts...)
}

// startRelayTxn is startRelay with Kafka transactions on or off and extra
// producer options.
func startRelayTxn(t *testing.T, dbURL, broker string, txn bool, extra []producer.Option, opts ...Option) (r *Relay, stop func()) {
	t.Helper()
	connCfg, err := pgx.ParseConfig(dbURL)
	if err != nil {
		t.Fatal(err)
	}
	newProducer := func(id string) (Producer, error) {
		popts := append([]producer.Option{producer.WithReplicationFactor(1)}, extra...)
		if txn {
			popts = append(popts, producer.WithTransactionalID(id))
		}
		return producer.New([]kgo.Opt{kgo.SeedBrokers(broker)}, popts...)
	}
	opts = append([]Option{WithPollInterval(200 * time.Millisecond), WithLeaseRetryInterval(100 * time.Millisecond)}, opts...)
	r, err = New(connCfg, newProducer, opts...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("relay Run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return r, stop
}

func checkAllOrdered(t *testing.T, evs []pubtest.Event, want map[string]int64, maxRewinds int) {
	t.Helper()
	for k, vs := range pubtest.Versions(evs) {
		if err := pubtest.CheckOrder(k, vs, maxRewinds); err != nil {
			t.Error(err)
		}
		if _, ok := want[k]; !ok {
			t.Errorf("key %s on the topic but never written", k)
		}
	}
}

func finalVersions(t *testing.T, pool *pgxpool.Pool, aggregate string) map[string]int64 {
	t.Helper()
	rows, err := pool.Query(context.Background(), `SELECT agg_key, version FROM distcache_outbox_versions WHERE aggregate = $1`, aggregate)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for rows.Next() {
		var k string
		var v int64
		if err := rows.Scan(&k, &v); err != nil {
			t.Fatal(err)
		}
		out[k] = v
	}
	return out
}

// TestRelayCommitOrderConcurrentWriters: many writers with random commit
// delays, some holding old transaction ids open while younger ones commit;
// every event reaches the topic and each key's events arrive in commit
// order (the payload counter n, incremented under the row lock, equals the
// version and increases along the topic).
//
// It runs with the commit fence (the default) and without it: per-key order
// does not depend on the fence (see WithCommitFence).
func TestRelayCommitOrderConcurrentWriters(t *testing.T) {
	t.Parallel()
	for _, fence := range []bool{true, false} {
		t.Run(fmt.Sprintf("fence=%v", fence), func(t *testing.T) {
			t.Parallel()
			testCommitOrder(t, fence)
		})
	}
}

func testCommitOrder(t *testing.T, fence bool) {
	dbURL := devstacktest.Database(t)
	k := devstacktest.Kafka(t)
	pool := pubtest.Migrate(t, dbURL)
	pubtest.Exec(t, pool, pubtest.CapturedTableSQL("items"))
	startRelay(t, dbURL, k.Addr, WithBatchSize(50), WithCommitFence(fence))
	reader := pubtest.NewReader(t, k.Addr, "distcache.items")

	const writers, txPerWriter, keys = 12, 25, 10
	var wg sync.WaitGroup
	errc := make(chan error, writers)
	for w := range writers {
		wg.Go(func() {
			rnd := rand.New(rand.NewPCG(uint64(w), 7))
			for range txPerWriter {
				if err := writeTx(pool, rnd, keys); err != nil {
					errc <- err
					return
				}
			}
		})
	}
	// Transactions that take an xid early and stay open: rows committed by
	// younger transactions meanwhile are not final until these end.
	stopHolders := make(chan struct{})
	var holders sync.WaitGroup
	for range 2 {
		holders.Go(func() {
			for {
				select {
				case <-stopHolders:
					return
				default:
				}
				tx, err := pool.Begin(context.Background())
				if err != nil {
					return
				}
				_, _ = tx.Exec(context.Background(), `SELECT pg_current_xact_id(), pg_sleep(0.05)`)
				_ = tx.Rollback(context.Background())
			}
		})
	}
	wg.Wait()
	close(stopHolders)
	holders.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}

	want := finalVersions(t, pool, "items")
	var total int64
	for _, v := range want {
		total += v
	}
	if total != writers*txPerWriter {
		t.Fatalf("versions allocated: got %d, want %d", total, writers*txPerWriter)
	}
	reader.ReadUntil(t, 30*time.Second, func(evs []pubtest.Event) bool { return pubtest.HasAllVersions(evs, want) }, "every version of every key")
	if got := len(reader.Events); int64(got) != total {
		t.Errorf("events on topic: got %d, want %d (no duplicates without a failure)", got, total)
	}
	checkAllOrdered(t, reader.Events, want, 0)
	for _, e := range reader.Events {
		var p struct{ N int64 }
		if err := jsonUnmarshal(e.Value, &p); err != nil {
			t.Fatalf("payload %s: %v", e.Value, err)
		}
		if p.N != e.Version {
			t.Errorf("key %s version %d carries n=%d: events not in commit order", e.Key, e.Version, p.N)
		}
	}
	devstacktest.Eventually(t, 10*time.Second, func() bool {
		return pubtest.Count(t, pool, `SELECT count(*) FROM distcache_outbox`) == 0
	}, "outbox drained after acks")
}

// writeTx runs one writer transaction: it takes an xid by touching an
// unrelated key first, waits a random time, bumps n of a contended key,
// waits again and commits, so transaction id order differs from commit order.
func writeTx(pool *pgxpool.Pool, rnd *rand.Rand, keys int) error {
	ctx := context.Background()
	tx, err := pool.Begin(ctx)
	if err != nil {
		return err
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `SELECT pg_current_xact_id()`); err != nil {
		return err
	}
	time.Sleep(time.Duration(rnd.IntN(5)) * time.Millisecond) // workload shape, not a wait
	key := rnd.IntN(keys)
	if _, err := tx.Exec(ctx, `INSERT INTO items (id, n) VALUES ($1, 1) ON CONFLICT (id) DO UPDATE SET n = items.n + 1`, key); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, `SELECT pg_sleep($1)`, float64(rnd.IntN(10))/1000); err != nil {
		return err
	}
	return tx.Commit(ctx)
}

// TestRelayDeadLetters: rows that are not valid events move to
// distcache_outbox_dead with the reason, are counted, and the relay goes on
// publishing the valid rows around them.
func TestRelayDeadLetters(t *testing.T) {
	t.Parallel()
	dbURL := devstacktest.Database(t)
	k := devstacktest.Kafka(t)
	pool := pubtest.Migrate(t, dbURL)
	// The schema's checks keep such rows out; drop them to play a writer
	// that bypassed them (an older schema, a manual insert).
	pubtest.Exec(t, pool, `ALTER TABLE distcache_outbox DROP CONSTRAINT distcache_outbox_payload,
		DROP CONSTRAINT distcache_outbox_key_not_empty`)
	ins := `INSERT INTO distcache_outbox (aggregate, agg_key, version, op, payload, headers) VALUES ($1, $2, $3, $4, $5::jsonb, $6::jsonb)`
	type bad struct {
		key, op, payload, headers, reason string
	}
	bads := []bad{
		{"b1", "upsert", `[1, 2]`, `{}`, "not a JSON object"},
		{"b2", "upsert", `"text"`, `{}`, "not a JSON object"},
		{"", "upsert", `{"id": 3}`, `{}`, "key: empty"},
		{"b4", "upsert", `{"id": 4}`, `{"dc-version": "9"}`, "reserved prefix"},
		{"b5", "upsert", `{"id": 5}`, `{"n": 1}`, "headers"},
	}
	pubtest.Exec(t, pool, ins, "things", "g1", 1, "upsert", `{"id": "g1"}`, `{}`)
	for i, b := range bads {
		pubtest.Exec(t, pool, ins, "things", b.key, i+1, b.op, b.payload, b.headers)
	}
	pubtest.Exec(t, pool, ins, "things", "g2", 1, "upsert", `{"id": "g2"}`, `{"traceparent": "00-abc"}`)
	m := pubmetrics.New()
	startRelay(t, dbURL, k.Addr, WithMetrics(m))

	reader := pubtest.NewReader(t, k.Addr, "distcache.things")
	reader.ReadUntil(t, 20*time.Second, func(evs []pubtest.Event) bool { return len(evs) >= 2 }, "the two valid events")
	if got := []string{reader.Events[0].Key, reader.Events[1].Key}; got[0] != "g1" || got[1] != "g2" {
		t.Errorf("valid events: got keys %v, want [g1 g2]", got)
	}
	devstacktest.Eventually(t, 10*time.Second, func() bool {
		return pubtest.Count(t, pool, `SELECT count(*) FROM distcache_outbox`) == 0
	}, "outbox drained")
	rows, err := pool.Query(context.Background(), `SELECT agg_key, reason FROM distcache_outbox_dead ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	var got [][2]string
	for rows.Next() {
		var k, reason string
		if err := rows.Scan(&k, &reason); err != nil {
			t.Fatal(err)
		}
		got = append(got, [2]string{k, reason})
	}
	if len(got) != len(bads) {
		t.Fatalf("dead letters: got %d %v, want %d", len(got), got, len(bads))
	}
	for i, b := range bads {
		if got[i][0] != b.key || !strings.Contains(got[i][1], b.reason) {
			t.Errorf("dead letter %d: got key %q reason %q, want key %q reason containing %q", i, got[i][0], got[i][1], b.key, b.reason)
		}
	}
	// The counters move right after the delete commits.
	devstacktest.Eventually(t, 5*time.Second, func() bool {
		return testutil.ToFloat64(m.DeadLetters.WithLabelValues("things")) == float64(len(bads)) &&
			testutil.ToFloat64(m.EventsPublished.WithLabelValues("things")) == 2
	}, "distcache_publisher_dead_letters_total = %d and distcache_publisher_events_total = 2", len(bads))
}

// TestRelayTopics: a missing topic is created compacted with one partition;
// rows of a model whose existing topic is not compacted or has two
// partitions are refused (and stay in the outbox) while other models go on.
func TestRelayTopics(t *testing.T) {
	t.Parallel()
	dbURL := devstacktest.Database(t)
	k := devstacktest.Kafka(t)
	pool := pubtest.Migrate(t, dbURL)
	adm := newAdmin(t, k.Addr)
	ctx := context.Background()
	del := "delete"
	if _, err := adm.CreateTopic(ctx, 1, 1, map[string]*string{"cleanup.policy": &del}, "distcache.deleting"); err != nil {
		t.Fatal(err)
	}
	compact := "compact"
	if _, err := adm.CreateTopic(ctx, 2, 1, map[string]*string{"cleanup.policy": &compact}, "distcache.split"); err != nil {
		t.Fatal(err)
	}
	w, _ := events.NewOutboxWriter()
	tx, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, agg := range []string{"deleting", "split", "fresh"} {
		if err := w.Write(ctx, tx, events.Envelope{Aggregate: agg, Key: "k", Op: events.OpUpsert, Payload: []byte(`{"k":1}`)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	m := pubmetrics.New()
	startRelay(t, dbURL, k.Addr, WithMetrics(m))

	pubtest.NewReader(t, k.Addr, "distcache.fresh").ReadUntil(t, 20*time.Second, func(evs []pubtest.Event) bool { return len(evs) == 1 }, "fresh model published")
	rcs, err := adm.DescribeTopicConfigs(ctx, "distcache.fresh")
	if err != nil {
		t.Fatal(err)
	}
	rc, err := rcs.On("distcache.fresh", nil)
	if err != nil {
		t.Fatal(err)
	}
	policy := ""
	for _, c := range rc.Configs {
		if c.Key == "cleanup.policy" && c.Value != nil {
			policy = *c.Value
		}
	}
	if policy != "compact" {
		t.Errorf("created topic cleanup.policy: got %q, want compact", policy)
	}
	td, err := adm.ListTopics(ctx, "distcache.fresh")
	if err != nil {
		t.Fatal(err)
	}
	if n := len(td["distcache.fresh"].Partitions); n != 1 {
		t.Errorf("created topic partitions: got %d, want 1", n)
	}
	devstacktest.Eventually(t, 10*time.Second, func() bool {
		return pubtest.Count(t, pool, `SELECT count(*) FROM distcache_outbox WHERE aggregate = 'fresh'`) == 0
	}, "fresh row deleted")
	if got := pubtest.Count(t, pool, `SELECT count(*) FROM distcache_outbox WHERE aggregate IN ('deleting', 'split')`); got != 2 {
		t.Errorf("refused rows left in the outbox: got %d, want 2", got)
	}
	// The refused rows are unpublished: the lag is their age and grows.
	devstacktest.Eventually(t, 10*time.Second, func() bool {
		return testutil.ToFloat64(m.Lag) > 0.3
	}, "lag counts the refused rows (got %v)", testutil.ToFloat64(m.Lag))

	p, err := producer.New([]kgo.Opt{kgo.SeedBrokers(k.Addr)})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	for topic, want := range map[string]string{"distcache.deleting": "cleanup.policy", "distcache.split": "2 partitions"} {
		err := p.EnsureTopic(ctx, topic)
		var te *producer.TopicError
		if !errors.Is(err, producer.ErrTopicUnsuitable) || !errors.As(err, &te) || !strings.Contains(te.Reason, want) {
			t.Errorf("EnsureTopic(%s): got %v, want a TopicError mentioning %q", topic, err, want)
		}
	}
}

func newAdmin(t *testing.T, addr string) *kadm.Client {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return kadm.NewClient(cl)
}

// pump writes n transactions of one key bump each over keys keys, from
// several goroutines, until done; it returns when all are committed.
func pump(t *testing.T, pool *pgxpool.Pool, table string, n, keys, workers int) {
	t.Helper()
	var wg sync.WaitGroup
	errc := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			for i := w; i < n; i += workers {
				_, err := pool.Exec(context.Background(), fmt.Sprintf(`INSERT INTO %[1]s (id, n) VALUES ($1, 1) ON CONFLICT (id) DO UPDATE SET n = %[1]s.n + 1`, table), i%keys)
				if err != nil {
					errc <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
}

// TestRelayBrokerRestart: the broker is killed and restarted while events
// flow; nothing is lost and each key's events stay in order.
func TestRelayBrokerRestart(t *testing.T) {
	t.Parallel()
	dbURL := devstacktest.Database(t)
	k := devstacktest.Kafka(t)
	pool := pubtest.Migrate(t, dbURL)
	pubtest.Exec(t, pool, pubtest.CapturedTableSQL("items"))
	startRelay(t, dbURL, k.Addr, WithBatchSize(100))
	reader := pubtest.NewReader(t, k.Addr, "distcache.items")

	pump(t, pool, "items", 400, 20, 4)
	reader.ReadUntil(t, 20*time.Second, func(evs []pubtest.Event) bool { return len(evs) >= 100 }, "first events")
	done := make(chan struct{})
	go func() {
		defer close(done)
		pump(t, pool, "items", 400, 20, 4)
	}()
	if err := k.Restart(context.Background()); err != nil {
		t.Fatal(err)
	}
	<-done
	want := finalVersions(t, pool, "items")
	reader.ReadUntil(t, 60*time.Second, func(evs []pubtest.Event) bool { return pubtest.HasAllVersions(evs, want) }, "every version after the broker restart")
	checkAllOrdered(t, reader.Events, want, 1)
	devstacktest.Eventually(t, 20*time.Second, func() bool {
		return pubtest.Count(t, pool, `SELECT count(*) FROM distcache_outbox`) == 0
	}, "outbox drained")
}

// TestRelayPostgresRestart: PostgreSQL is killed and restarted while events
// flow; the relay reconnects, retakes the lease and loses nothing.
func TestRelayPostgresRestart(t *testing.T) {
	t.Parallel()
	pg := devstacktest.OwnPostgres(t)
	dbURL := devstacktest.DatabaseOn(t, pg)
	k := devstacktest.Kafka(t)
	pool := pubtest.Migrate(t, dbURL)
	pubtest.Exec(t, pool, pubtest.CapturedTableSQL("items"))
	r, _ := startRelay(t, dbURL, k.Addr, WithBatchSize(100))
	reader := pubtest.NewReader(t, k.Addr, "distcache.items")

	pump(t, pool, "items", 300, 20, 4)
	reader.ReadUntil(t, 20*time.Second, func(evs []pubtest.Event) bool { return len(evs) >= 50 }, "first events")
	if err := pg.Restart(context.Background()); err != nil {
		// devstack.Postgres.Restart waits for the port, not for the killed
		// postmaster's backends to release shared memory; start again once
		// they are gone.
		t.Logf("restart: %v; starting again", err)
		devstacktest.Eventually(t, 30*time.Second, func() bool { return pg.Start(context.Background()) == nil }, "postgres starts again")
	}
	pool.Reset()
	pump(t, pool, "items", 300, 20, 4)
	want := finalVersions(t, pool, "items")
	reader.ReadUntil(t, 60*time.Second, func(evs []pubtest.Event) bool { return pubtest.HasAllVersions(evs, want) }, "every version after the PostgreSQL restart")
	checkAllOrdered(t, reader.Events, want, 1)
	devstacktest.Eventually(t, 20*time.Second, func() bool { return r.Status().Active }, "relay active again")
}

// TestRelayLeaseOneActive: of two relays on one outbox exactly one is
// active; when it stops the other takes over within the retry interval and
// publishes what follows.
func TestRelayLeaseOneActive(t *testing.T) {
	t.Parallel()
	dbURL := devstacktest.Database(t)
	k := devstacktest.Kafka(t)
	pool := pubtest.Migrate(t, dbURL)
	pubtest.Exec(t, pool, pubtest.CapturedTableSQL("items"))
	a, stopA := startRelay(t, dbURL, k.Addr)
	devstacktest.Eventually(t, 10*time.Second, func() bool { return a.Status().Active }, "first relay active")
	b, _ := startRelay(t, dbURL, k.Addr)
	devstacktest.Eventually(t, 10*time.Second, func() bool { return !b.Status().LastOK.IsZero() }, "second relay standing by")
	if b.Status().Active {
		t.Fatal("both relays active")
	}
	reader := pubtest.NewReader(t, k.Addr, "distcache.items")
	pump(t, pool, "items", 50, 5, 2)
	reader.ReadUntil(t, 20*time.Second, func(evs []pubtest.Event) bool { return len(evs) == 50 }, "events through the first relay")

	stopA()
	start := time.Now()
	devstacktest.Eventually(t, 5*time.Second, func() bool { return b.Status().Active }, "standby takes over")
	t.Logf("takeover after %v", time.Since(start))
	pump(t, pool, "items", 50, 5, 2)
	want := finalVersions(t, pool, "items")
	reader.ReadUntil(t, 20*time.Second, func(evs []pubtest.Event) bool { return pubtest.HasAllVersions(evs, want) }, "events through the second relay")
	if len(reader.Events) != 100 {
		t.Errorf("events: got %d, want 100 (graceful handover without duplicates)", len(reader.Events))
	}
	checkAllOrdered(t, reader.Events, want, 0)
}

// TestRelayFenceHoldsBackUntilOlderTxEnds: a row committed while an older
// transaction is still open is not final: the relay leaves it (and every row
// after it) in the outbox, pass after pass, until that transaction ends;
// then it publishes both in id order, the older transaction's row first.
func TestRelayFenceHoldsBackUntilOlderTxEnds(t *testing.T) {
	t.Parallel()
	dbURL := devstacktest.Database(t)
	k := devstacktest.Kafka(t)
	pool := pubtest.Migrate(t, dbURL)
	ctx := context.Background()
	w, _ := events.NewOutboxWriter()
	write := func(tx pgx.Tx, key string) {
		t.Helper()
		if err := w.Write(ctx, tx, events.Envelope{Aggregate: "fence", Key: key, Op: events.OpUpsert, Payload: []byte(`{}`)}); err != nil {
			t.Fatal(err)
		}
	}
	// Publish one event first so the topic exists and the relay is warm.
	warm, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	write(warm, "warm")
	if err := warm.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	r, _ := startRelay(t, dbURL, k.Addr, WithPollInterval(20*time.Millisecond))
	reader := pubtest.NewReader(t, k.Addr, "distcache.fence")
	reader.ReadUntil(t, 20*time.Second, func(evs []pubtest.Event) bool { return len(evs) == 1 }, "warm-up event")

	older, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer older.Rollback(ctx)
	write(older, "older") // takes an xid and the lower outbox id
	younger, err := pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	write(younger, "younger")
	if err := younger.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	// Let the relay make several passes over the committed row.
	for range 5 {
		before := r.Status().LastOK
		devstacktest.Eventually(t, 5*time.Second, func() bool { return r.Status().LastOK.After(before) }, "a relay pass")
	}
	if got := pubtest.Count(t, pool, `SELECT count(*) FROM distcache_outbox WHERE agg_key = 'younger'`); got != 1 {
		t.Fatalf("younger row while an older transaction is open: %d in the outbox, want 1 (held back)", got)
	}
	if err := older.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	reader.ReadUntil(t, 10*time.Second, func(evs []pubtest.Event) bool { return len(evs) == 3 }, "both events after the older transaction ended")
	if got := []string{reader.Events[1].Key, reader.Events[2].Key}; got[0] != "older" || got[1] != "younger" {
		t.Errorf("order: got %v, want [older younger] (id order once both are final)", got)
	}
}

// TestRelayWakeUp: an idle relay with a long poll interval publishes a new
// event within moments of its commit (LISTEN/NOTIFY); a row inserted without
// a notification is still published by the polling fallback.
func TestRelayWakeUp(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	w, _ := events.NewOutboxWriter()
	t.Run("notify", func(t *testing.T) {
		t.Parallel()
		dbURL := devstacktest.Database(t)
		k := devstacktest.Kafka(t)
		pool := pubtest.Migrate(t, dbURL)
		r, _ := startRelay(t, dbURL, k.Addr, WithPollInterval(time.Hour))
		devstacktest.Eventually(t, 10*time.Second, func() bool { return r.Status().Active }, "relay active")
		reader := pubtest.NewReader(t, k.Addr, "distcache.wake")
		for i := range 3 {
			tx, err := pool.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if err := w.Write(ctx, tx, events.Envelope{Aggregate: "wake", Key: strconv.Itoa(i), Op: events.OpUpsert, Payload: []byte(`{}`)}); err != nil {
				t.Fatal(err)
			}
			if err := tx.Commit(ctx); err != nil {
				t.Fatal(err)
			}
			committed := time.Now()
			// An hour-long poll cannot be what publishes it.
			reader.ReadUntil(t, 10*time.Second, func(evs []pubtest.Event) bool { return len(evs) == i+1 }, "event published after NOTIFY")
			t.Logf("event %d on the topic %v after commit", i, time.Since(committed))
		}
	})
	t.Run("stale notifications", func(t *testing.T) {
		// Notifications whose rows a read has seen wake no read of their own:
		// a burst of 200 (one transaction, distinct payloads, so none is
		// folded) costs two reads, not 200.
		t.Parallel()
		dbURL := devstacktest.Database(t)
		k := devstacktest.Kafka(t)
		pool := pubtest.Migrate(t, dbURL)
		m := pubmetrics.New()
		r, _ := startRelay(t, dbURL, k.Addr, WithPollInterval(time.Hour), WithMetrics(m))
		devstacktest.Eventually(t, 10*time.Second, func() bool { return r.Status().Active }, "relay active")
		reads := func() float64 {
			return testutil.ToFloat64(m.Reads.WithLabelValues("rows")) + testutil.ToFloat64(m.Reads.WithLabelValues("empty"))
		}
		devstacktest.Eventually(t, 10*time.Second, func() bool { return reads() > 0 }, "a first (empty) read")
		before := reads()
		pubtest.Exec(t, pool, `SELECT pg_notify('`+events.OutboxChannel+`', 'stale-' || i) FROM generate_series(1, 200) i`)
		// The event's notification comes after the burst's: once it is on
		// the topic, the relay has handled every notification of the burst.
		tx, err := pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := w.Write(ctx, tx, events.Envelope{Aggregate: "stale", Key: "k", Op: events.OpUpsert, Payload: []byte(`{}`)}); err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		pubtest.NewReader(t, k.Addr, "distcache.stale").ReadUntil(t, 10*time.Second, func(evs []pubtest.Event) bool { return len(evs) == 1 }, "event published after the burst")
		got := reads() - before
		t.Logf("200 notifications with no rows and one event: %v reads (%v with rows)", got, testutil.ToFloat64(m.Reads.WithLabelValues("rows")))
		if got > 10 {
			t.Errorf("the relay read the outbox %v times for a burst of 200 notifications and one event: a read per stale notification", got)
		}
	})
	t.Run("poll", func(t *testing.T) {
		t.Parallel()
		dbURL := devstacktest.Database(t)
		k := devstacktest.Kafka(t)
		pool := pubtest.Migrate(t, dbURL)
		r, _ := startRelay(t, dbURL, k.Addr, WithPollInterval(300*time.Millisecond))
		devstacktest.Eventually(t, 10*time.Second, func() bool { return r.Status().Active }, "relay active")
		before := r.Status().LastOK
		devstacktest.Eventually(t, 10*time.Second, func() bool { return r.Status().LastOK.After(before) }, "a first (empty) pass")
		// A plain INSERT sends no notification.
		pubtest.Exec(t, pool, `INSERT INTO distcache_outbox (aggregate, agg_key, version, op, payload) VALUES ('quiet', 'k', 1, 'upsert', '{}')`)
		pubtest.NewReader(t, k.Addr, "distcache.quiet").ReadUntil(t, 10*time.Second, func(evs []pubtest.Event) bool { return len(evs) == 1 }, "event published by polling")
	})
}
