package relay

import (
	"context"
	"fmt"
	"strconv"
	"strings"
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
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl/plain"
)

// sizedPayload returns a JSON object payload such that the event of
// aggregate and key has events.Envelope.Size exactly size once PostgreSQL's
// jsonb has normalised it ({"p": "xxx"}).
func sizedPayload(aggregate, key string, size int) string {
	const frame = len(`{"p": ""}`)
	return `{"p": "` + strings.Repeat("x", size-len(aggregate)-len(key)-frame) + `"}`
}

// insertRaw inserts an outbox row directly, as a writer without the outbox
// writer's size check would.
func insertRaw(t *testing.T, pool *pgxpool.Pool, aggregate, key, payload string) {
	t.Helper()
	pubtest.Exec(t, pool, `INSERT INTO distcache_outbox (aggregate, agg_key, version, op, payload, headers)
		VALUES ($1, $2, 1, 'upsert', $3::jsonb, '{}'::jsonb)`, aggregate, key, payload)
}

type deadLetter struct{ key, reason string }

func deadLetters(t *testing.T, pool *pgxpool.Pool, aggregate string) []deadLetter {
	t.Helper()
	rows, err := pool.Query(context.Background(), `SELECT agg_key, reason FROM distcache_outbox_dead WHERE aggregate = $1 ORDER BY id`, aggregate)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []deadLetter
	for rows.Next() {
		var d deadLetter
		if err := rows.Scan(&d.key, &d.reason); err != nil {
			t.Fatal(err)
		}
		out = append(out, d)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestRelayLargeEvents: events of 999,000, 1,000,100 and 1,048,000 bytes
// (all within the 1 MiB limit, the last two above franz-go's default batch
// limit of 1,000,012) between normal ones are all published, in order, in
// one session of the relay; an event over the limit is dead-lettered with
// the reason and the normal events after it still arrive.
func TestRelayLargeEvents(t *testing.T) {
	t.Parallel()
	dbURL := devstacktest.Database(t)
	k := devstacktest.Kafka(t)
	pool := pubtest.Migrate(t, dbURL)
	const agg = "big"
	type ev struct {
		key  string
		size int // 0: a small normal event
	}
	evs := []ev{
		{"n0", 0}, {"b999000", 999_000}, {"n1", 0}, {"b1000100", 1_000_100}, {"n2", 0},
		{"b1048000", 1_048_000}, {"n3", 0}, {"over", events.DefaultMaxEventBytes + 1}, {"n4", 0},
	}
	for _, e := range evs {
		p := `{"small": true}`
		if e.size > 0 {
			p = sizedPayload(agg, e.key, e.size)
		}
		insertRaw(t, pool, agg, e.key, p)
	}
	m := pubmetrics.New()
	r, _ := startRelay(t, dbURL, k.Addr, WithMetrics(m))

	// Read uncommitted on purpose: a record of an aborted attempt would show
	// as a duplicate, and there must be no failed attempt at all.
	reader := pubtest.NewReader(t, k.Addr, events.Topic("", agg))
	wantKeys := []string{"n0", "b999000", "n1", "b1000100", "n2", "b1048000", "n3", "n4"}
	reader.ReadUntil(t, 30*time.Second, func(got []pubtest.Event) bool { return len(got) >= len(wantKeys) }, "every event within the limit")
	var gotKeys []string
	for _, e := range reader.Events {
		gotKeys = append(gotKeys, e.Key)
	}
	if fmt.Sprint(gotKeys) != fmt.Sprint(wantKeys) {
		t.Errorf("keys on the topic: got %v, want %v (in outbox order)", gotKeys, wantKeys)
	}
	for _, e := range reader.Events {
		var want int
		if _, err := fmt.Sscanf(e.Key, "b%d", &want); err == nil {
			if got := len(agg) + len(e.Key) + len(e.Value); got != want {
				t.Errorf("event %s: size on the topic %d, want %d", e.Key, got, want)
			}
		}
	}
	devstacktest.Eventually(t, 10*time.Second, func() bool {
		return pubtest.Count(t, pool, `SELECT count(*) FROM distcache_outbox`) == 0
	}, "outbox drained")
	rcs, err := newAdmin(t, k.Addr).DescribeTopicConfigs(context.Background(), events.Topic("", agg))
	if err != nil {
		t.Fatal(err)
	}
	rc, err := rcs.On(events.Topic("", agg), nil)
	if err != nil {
		t.Fatal(err)
	}
	maxMessage := ""
	for _, c := range rc.Configs {
		if c.Key == "max.message.bytes" && c.Value != nil {
			maxMessage = *c.Value
		}
	}
	if want := strconv.Itoa(producer.BatchMaxBytes(events.DefaultMaxEventBytes)); maxMessage != want {
		t.Errorf("created topic max.message.bytes: got %q, want %s (the event limit plus the batch overhead)", maxMessage, want)
	}
	dead := deadLetters(t, pool, agg)
	if len(dead) != 1 || dead[0].key != "over" || !strings.Contains(dead[0].reason, "limit") {
		t.Errorf("dead letters: got %+v, want the one over the limit, with the size as reason", dead)
	}
	// One session did it all: no failed produce, no lease given up.
	if n := testutil.ToFloat64(m.Errors.WithLabelValues("produce")); n != 0 {
		t.Errorf("distcache_publisher_errors_total{stage=produce}: got %v, want 0 (the session must not end)", n)
	}
	if st := r.Status(); !st.Active || st.Err != nil {
		t.Errorf("relay status: got active=%v err=%v, want active without error", st.Active, st.Err)
	}
}

// TestRelayBrokerRefusesRecord: a topic created by someone else with a small
// max.message.bytes refuses one event the relay accepts; the broker's refusal
// is dead-lettered with the broker's reason and every other event of that
// model and of another model arrives, in order, in the same session.
func TestRelayBrokerRefusesRecord(t *testing.T) {
	t.Parallel()
	for _, txn := range []bool{true, false} {
		t.Run(fmt.Sprintf("transactions=%v", txn), func(t *testing.T) {
			t.Parallel()
			testBrokerRefusesRecord(t, txn)
		})
	}
}

func testBrokerRefusesRecord(t *testing.T, txn bool) {
	dbURL := devstacktest.Database(t)
	k := devstacktest.Kafka(t)
	pool := pubtest.Migrate(t, dbURL)
	adm := newAdmin(t, k.Addr)
	compact, small := "compact", "20000"
	if _, err := adm.CreateTopic(context.Background(), 1, 1, map[string]*string{"cleanup.policy": &compact, "max.message.bytes": &small}, "distcache.tight"); err != nil {
		t.Fatal(err)
	}
	for i, key := range []string{"t0", "t1", "huge", "t2", "t3"} {
		p := fmt.Sprintf(`{"i": %d}`, i)
		if key == "huge" {
			p = sizedPayload("tight", key, 100_000)
		}
		insertRaw(t, pool, "tight", key, p)
		insertRaw(t, pool, "other", fmt.Sprintf("o%d", i), p)
	}
	m := pubmetrics.New()
	// The broker checks max.message.bytes against the compressed batch, and 100,000 x's
	// compress far below 20,000 bytes: produce uncompressed, as the test means.
	r, _ := startRelayTxn(t, dbURL, k.Addr, txn, []producer.Option{producer.WithCompression("none")}, WithMetrics(m))

	for topic, want := range map[string]string{"tight": "[t0 t1 t2 t3]", "other": "[o0 o1 o2 o3 o4]"} {
		// Aborted attempts leave records on the log; consumers read committed.
		// Without transactions the reader sees every copy.
		reader := pubtest.NewReader(t, k.Addr, events.Topic("", topic), kgo.FetchIsolationLevel(kgo.ReadCommitted()))
		reader.ReadUntil(t, 30*time.Second, func(got []pubtest.Event) bool {
			return len(pubtest.Latest(got)) >= strings.Count(want, " ")+1
		}, topic+" events")
		var keys []string
		seen := map[string]bool{}
		for _, e := range reader.Events {
			if e.Key == "huge" {
				t.Errorf("%s: the refused record is on the topic", topic)
			}
			// Without transactions a retried attempt may write records
			// again (at least once); each key's first copy keeps the order.
			if txn || !seen[e.Key] {
				keys = append(keys, e.Key)
			}
			seen[e.Key] = true
		}
		if fmt.Sprint(keys) != want {
			t.Errorf("%s: got keys %v, want %s", topic, keys, want)
		}
	}
	devstacktest.Eventually(t, 10*time.Second, func() bool {
		return pubtest.Count(t, pool, `SELECT count(*) FROM distcache_outbox`) == 0
	}, "outbox drained")
	dead := deadLetters(t, pool, "tight")
	if len(dead) != 1 || dead[0].key != "huge" || !strings.Contains(dead[0].reason, "MESSAGE_TOO_LARGE") {
		t.Errorf("dead letters: got %+v, want huge with the broker's MESSAGE_TOO_LARGE", dead)
	}
	if n := testutil.ToFloat64(m.DeadLetters.WithLabelValues("tight")); n != 1 {
		t.Errorf("distcache_publisher_dead_letters_total{aggregate=tight}: got %v, want 1", n)
	}
	if n := testutil.ToFloat64(m.Errors.WithLabelValues("produce")); n != 0 {
		t.Errorf("distcache_publisher_errors_total{stage=produce}: got %v, want 0 (the session must not end)", n)
	}
	if st := r.Status(); !st.Active || st.Err != nil {
		t.Errorf("relay status: got active=%v err=%v, want active without error", st.Active, st.Err)
	}
}

// TestRelayTopicCreationRefused: the broker refuses to create a model's
// topic (here: its name collides with an existing topic once '.' and '_'
// are treated alike, which Kafka forbids); that model is held back, shown in
// Status and distcache_publisher_models_held, and keeps its rows, while
// another model flows in order.
func TestRelayTopicCreationRefused(t *testing.T) {
	t.Parallel()
	dbURL := devstacktest.Database(t)
	k := devstacktest.Kafka(t)
	pool := pubtest.Migrate(t, dbURL)
	adm := newAdmin(t, k.Addr)
	if _, err := adm.CreateTopic(context.Background(), 1, 1, nil, "distcache_refused"); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		insertRaw(t, pool, "refused", fmt.Sprintf("r%d", i), `{"x": 1}`)
		insertRaw(t, pool, "flowing", fmt.Sprintf("f%d", i), `{"x": 1}`)
	}
	m := pubmetrics.New()
	r, _ := startRelay(t, dbURL, k.Addr, WithMetrics(m))

	reader := pubtest.NewReader(t, k.Addr, "distcache.flowing")
	reader.ReadUntil(t, 30*time.Second, func(got []pubtest.Event) bool { return len(got) >= 5 }, "flowing events")
	var keys []string
	for _, e := range reader.Events {
		keys = append(keys, e.Key)
	}
	if got := fmt.Sprint(keys); got != "[f0 f1 f2 f3 f4]" {
		t.Errorf("flowing: got keys %s, want [f0 f1 f2 f3 f4]", got)
	}
	devstacktest.Eventually(t, 10*time.Second, func() bool {
		return testutil.ToFloat64(m.ModelsHeld.WithLabelValues("refused")) == 1
	}, "distcache_publisher_models_held{aggregate=refused} = 1")
	st := r.Status()
	if len(st.Held) != 1 || st.Held[0].Aggregate != "refused" || !strings.Contains(st.Held[0].Reason, "INVALID_TOPIC_EXCEPTION") {
		t.Errorf("held models: got %+v, want refused with the broker's INVALID_TOPIC_EXCEPTION", st.Held)
	}
	if !st.Active || st.Err != nil {
		t.Errorf("relay status: got active=%v err=%v, want active without error (the session goes on)", st.Active, st.Err)
	}
	if got := pubtest.Count(t, pool, `SELECT count(*) FROM distcache_outbox WHERE aggregate = 'refused'`); got != 5 {
		t.Errorf("held rows left in the outbox: got %d, want 5", got)
	}
	if got := pubtest.Count(t, pool, `SELECT count(*) FROM distcache_outbox_dead`); got != 0 {
		t.Errorf("dead letters: got %d, want 0 (held, not dropped)", got)
	}
	if n := testutil.ToFloat64(m.ModelsHeld.WithLabelValues("flowing")); n != 0 {
		t.Errorf("distcache_publisher_models_held{aggregate=flowing}: got %v, want 0", n)
	}
}

// TestRelayConfiguredMaxEventSize: with a limit of 3 MiB given to the relay
// and the producer (as PUBLISHER_MAX_EVENT_BYTES does), a 2.5 MB event,
// larger than the broker's default message.max.bytes, arrives between normal
// ones: the topic the relay created carries the same limit.
func TestRelayConfiguredMaxEventSize(t *testing.T) {
	t.Parallel()
	dbURL := devstacktest.Database(t)
	k := devstacktest.Kafka(t)
	pool := pubtest.Migrate(t, dbURL)
	const agg, limit = "roomy", 3 << 20
	insertRaw(t, pool, agg, "n0", `{"small": true}`)
	insertRaw(t, pool, agg, "large", sizedPayload(agg, "large", 2_500_000))
	insertRaw(t, pool, agg, "n1", `{"small": true}`)
	insertRaw(t, pool, agg, "over", sizedPayload(agg, "over", limit+1))
	insertRaw(t, pool, agg, "n2", `{"small": true}`)
	m := pubmetrics.New()
	// Uncompressed, so the 2.5 MB event is 2.5 MB on the wire too (x's compress to nothing).
	startRelayTxn(t, dbURL, k.Addr, true, []producer.Option{producer.WithMaxEventSize(limit), producer.WithCompression("none")}, WithMetrics(m), WithMaxEventSize(limit))

	reader := pubtest.NewReader(t, k.Addr, events.Topic("", agg))
	reader.ReadUntil(t, 30*time.Second, func(got []pubtest.Event) bool { return len(got) >= 4 }, "every event within the limit")
	var keys []string
	for _, e := range reader.Events {
		keys = append(keys, e.Key)
	}
	if got := fmt.Sprint(keys); got != "[n0 large n1 n2]" {
		t.Errorf("keys on the topic: got %s, want [n0 large n1 n2]", got)
	}
	devstacktest.Eventually(t, 10*time.Second, func() bool {
		return pubtest.Count(t, pool, `SELECT count(*) FROM distcache_outbox`) == 0
	}, "outbox drained")
	if dead := deadLetters(t, pool, agg); len(dead) != 1 || dead[0].key != "over" || !strings.Contains(dead[0].reason, strconv.Itoa(limit)) {
		t.Errorf("dead letters: got %+v, want over, with the configured limit in the reason", dead)
	}
	if n := testutil.ToFloat64(m.Errors.WithLabelValues("produce")); n != 0 {
		t.Errorf("distcache_publisher_errors_total{stage=produce}: got %v, want 0", n)
	}
}

// aclBroker starts an in-process broker (kfake, the broker the local stack's
// kafkad runs) with SASL and ACLs: user "publisher" may create, describe and
// write every distcache.* topic except distcache.locked, which it may create
// and describe but not write. It returns the broker's address and the
// publisher's connection options; the superuser admin/admin reads.
func aclBroker(t *testing.T) (addr string, pubOpts []kgo.Opt, adminOpts []kgo.Opt) {
	t.Helper()
	allow := func(res kmsg.ACLResourceType, name string, pat kmsg.ACLResourcePatternType, op kmsg.ACLOperation) kfake.ACL {
		return kfake.ACL{Resource: res, Name: name, Pattern: pat, Operation: op, Allow: true}
	}
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.EnableSASL(), kfake.EnableACLs(),
		kfake.Superuser("PLAIN", "admin", "admin"),
		kfake.User("PLAIN", "publisher", "publisher-secret",
			allow(kmsg.ACLResourceTypeTopic, "distcache.", kmsg.ACLResourcePatternTypePrefixed, kmsg.ACLOperationAll),
			allow(kmsg.ACLResourceTypeTransactionalId, "distcache-publisher-", kmsg.ACLResourcePatternTypePrefixed, kmsg.ACLOperationAll),
			allow(kmsg.ACLResourceTypeCluster, "kafka-cluster", kmsg.ACLResourcePatternTypeLiteral, kmsg.ACLOperationIdempotentWrite),
			kfake.ACL{Resource: kmsg.ACLResourceTypeTopic, Name: "distcache.locked", Pattern: kmsg.ACLResourcePatternTypeLiteral,
				Operation: kmsg.ACLOperationWrite, Allow: false},
		))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c.ListenAddrs()[0],
		[]kgo.Opt{kgo.SASL(plain.Auth{User: "publisher", Pass: "publisher-secret"}.AsMechanism())},
		[]kgo.Opt{kgo.SASL(plain.Auth{User: "admin", Pass: "admin"}.AsMechanism())}
}

// TestRelayTopicWritesRefused: the broker lets the publisher create a
// model's topic but refuses writes to it (an ACL): that model is held back,
// its rows kept in the outbox and shown in Status and
// distcache_publisher_models_held, while another model's events all arrive
// in order, in the same session; nothing is dead-lettered.
func TestRelayTopicWritesRefused(t *testing.T) {
	t.Parallel()
	for _, txn := range []bool{true, false} {
		t.Run(fmt.Sprintf("transactions=%v", txn), func(t *testing.T) {
			t.Parallel()
			dbURL := devstacktest.Database(t)
			addr, pubOpts, adminOpts := aclBroker(t)
			pool := pubtest.Migrate(t, dbURL)
			for i := range 5 {
				insertRaw(t, pool, "locked", fmt.Sprintf("l%d", i), `{"x": 1}`)
				insertRaw(t, pool, "flowing", fmt.Sprintf("f%d", i), `{"x": 1}`)
			}
			connCfg, err := pgx.ParseConfig(dbURL)
			if err != nil {
				t.Fatal(err)
			}
			newProducer := func(id string) (Producer, error) {
				popts := []producer.Option{producer.WithReplicationFactor(1)}
				if txn {
					popts = append(popts, producer.WithTransactionalID(id))
				}
				return producer.New(append([]kgo.Opt{kgo.SeedBrokers(addr)}, pubOpts...), popts...)
			}
			m := pubmetrics.New()
			r, err := New(connCfg, newProducer, WithMetrics(m), WithPollInterval(200*time.Millisecond), WithLeaseRetryInterval(100*time.Millisecond))
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- r.Run(ctx) }()
			t.Cleanup(func() { cancel(); <-done })

			reader := pubtest.NewReader(t, addr, "distcache.flowing", append(adminOpts, kgo.FetchIsolationLevel(kgo.ReadCommitted()))...)
			reader.ReadUntil(t, 30*time.Second, func(got []pubtest.Event) bool { return len(pubtest.Latest(got)) >= 5 }, "flowing events")
			var keys []string
			seen := map[string]bool{}
			for _, e := range reader.Events {
				if !seen[e.Key] { // without transactions a retried batch may repeat records (at least once)
					keys = append(keys, e.Key)
				}
				seen[e.Key] = true
			}
			if got := fmt.Sprint(keys); got != "[f0 f1 f2 f3 f4]" {
				t.Errorf("flowing: got keys %s, want [f0 f1 f2 f3 f4]", got)
			}
			devstacktest.Eventually(t, 10*time.Second, func() bool {
				return testutil.ToFloat64(m.ModelsHeld.WithLabelValues("locked")) == 1 &&
					pubtest.Count(t, pool, `SELECT count(*) FROM distcache_outbox WHERE aggregate = 'flowing'`) == 0
			}, "locked held and flowing drained")
			st := r.Status()
			if len(st.Held) != 1 || st.Held[0].Aggregate != "locked" || !strings.Contains(st.Held[0].Reason, "TOPIC_AUTHORIZATION_FAILED") {
				t.Errorf("held models: got %+v, want locked with the broker's TOPIC_AUTHORIZATION_FAILED", st.Held)
			}
			if !st.Active || st.Err != nil {
				t.Errorf("relay status: got active=%v err=%v, want active without error (the session goes on)", st.Active, st.Err)
			}
			if got := pubtest.Count(t, pool, `SELECT count(*) FROM distcache_outbox WHERE aggregate = 'locked'`); got != 5 {
				t.Errorf("held rows left in the outbox: got %d, want 5", got)
			}
			if got := pubtest.Count(t, pool, `SELECT count(*) FROM distcache_outbox_dead`); got != 0 {
				t.Errorf("dead letters: got %d, want 0 (held, not dropped)", got)
			}
			if n := testutil.ToFloat64(m.Errors.WithLabelValues("produce")); n != 0 {
				t.Errorf("distcache_publisher_errors_total{stage=produce}: got %v, want 0 (the session must not end)", n)
			}
		})
	}
}
