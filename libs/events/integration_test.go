package events_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/distcache/distcache/libs/events"
	"github.com/distcache/distcache/migrations"
	"github.com/distcache/distcache/tools/devstacktest"
)

func TestMain(m *testing.M) { devstacktest.Main(m) }

// outboxDB returns a connection to a fresh database with the migrations
// applied.
func outboxDB(t *testing.T) (string, *pgx.Conn) {
	t.Helper()
	ctx := context.Background()
	url := devstacktest.Database(t)
	if err := migrations.Up(ctx, url, migrations.Core); err != nil {
		t.Fatalf("migrations.Up: %v", err)
	}
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return url, conn
}

// readOutbox returns the outbox rows of aggregate as envelopes, in id order.
func readOutbox(t *testing.T, conn *pgx.Conn, aggregate string) []events.Envelope {
	t.Helper()
	rows, err := conn.Query(context.Background(), `SELECT aggregate, agg_key, version, op, payload, headers, event_id::text, created_at
		FROM distcache_outbox WHERE aggregate = $1 ORDER BY id`, aggregate)
	if err != nil {
		t.Fatal(err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (events.Envelope, error) {
		var e events.Envelope
		var payload []byte
		var headers map[string]string
		err := r.Scan(&e.Aggregate, &e.Key, &e.Version, &e.Op, &payload, &headers, &e.EventID, &e.SourceTime)
		if payload != nil {
			e.Payload = payload
		}
		if len(headers) > 0 {
			e.Headers = headers
		}
		return e, err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func countRows(t *testing.T, conn *pgx.Conn, table string) int {
	t.Helper()
	var n int
	if err := conn.QueryRow(context.Background(), "SELECT count(*) FROM "+table).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// execOnly hides SendBatch so Write takes its statement-by-statement path.
type execOnly struct{ events.Querier }

func TestOutboxWriterInCallersTransaction(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"batch", "exec"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			url, conn := outboxDB(t)
			w, err := events.NewOutboxWriter()
			if err != nil {
				t.Fatal(err)
			}
			wrap := func(tx pgx.Tx) events.Querier {
				if mode == "exec" {
					return execOnly{tx}
				}
				return tx
			}
			upsert := func(name string) events.Envelope {
				return events.Envelope{Aggregate: "users", Key: "7", Op: events.OpUpsert,
					Payload: json.RawMessage(fmt.Sprintf(`{"id":7,"name":%q}`, name))}
			}

			// Rolled back: no outbox rows, no version allocated, business row gone too.
			exec(t, conn, `CREATE TABLE users (id int PRIMARY KEY, name text)`)
			tx, err := conn.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := tx.Exec(ctx, `INSERT INTO users VALUES (7, 'a')`); err != nil {
				t.Fatal(err)
			}
			if err := w.Write(ctx, wrap(tx), upsert("a"), upsert("b")); err != nil {
				t.Fatalf("Write: %v", err)
			}
			if err := tx.Rollback(ctx); err != nil {
				t.Fatal(err)
			}
			if n, v := countRows(t, conn, "distcache_outbox"), countRows(t, conn, "distcache_outbox_versions"); n != 0 || v != 0 {
				t.Fatalf("after rollback: %d outbox rows, %d version rows; want 0, 0", n, v)
			}

			listener, err := pgx.Connect(ctx, url)
			if err != nil {
				t.Fatal(err)
			}
			defer listener.Close(ctx)
			exec(t, listener, `LISTEN distcache_outbox`)

			// Committed: rows with increasing versions, in one transaction and the next.
			src := time.Date(2026, 11, 27, 12, 0, 0, 123456000, time.UTC)
			id := events.NewEventID()
			withMeta := upsert("c")
			withMeta.EventID, withMeta.SourceTime, withMeta.Headers = id, src, map[string]string{"traceparent": "00-1-2-01"}
			for _, batch := range [][]events.Envelope{
				{upsert("a"), upsert("b")},
				{withMeta, {Aggregate: "users", Key: "7", Op: events.OpDelete}, {Aggregate: "users", Key: "8", Version: 5, Op: events.OpDelete}},
			} {
				tx, err := conn.Begin(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if err := w.Write(ctx, wrap(tx), batch...); err != nil {
					t.Fatalf("Write: %v", err)
				}
				if err := tx.Commit(ctx); err != nil {
					t.Fatal(err)
				}
			}
			got := readOutbox(t, conn, "users")
			type kv struct {
				Key     string
				Version int64
				Op      events.Op
				Payload string
			}
			var gotKV []kv
			for _, e := range got {
				gotKV = append(gotKV, kv{e.Key, e.Version, e.Op, string(e.Payload)})
			}
			wantKV := []kv{
				{"7", 1, events.OpUpsert, `{"id": 7, "name": "a"}`},
				{"7", 2, events.OpUpsert, `{"id": 7, "name": "b"}`},
				{"7", 3, events.OpUpsert, `{"id": 7, "name": "c"}`},
				{"7", 4, events.OpDelete, ""},
				{"8", 5, events.OpDelete, ""},
			}
			if !slices.Equal(gotKV, wantKV) {
				t.Fatalf("outbox rows\n got %+v\nwant %+v", gotKV, wantKV)
			}
			if e := got[2]; e.EventID != id || !e.SourceTime.Equal(src) || e.Headers["traceparent"] != "00-1-2-01" {
				t.Fatalf("row 3 event id %s source time %v headers %v; want %s, %v, traceparent", e.EventID, e.SourceTime, e.Headers, id, src)
			}
			for _, e := range got {
				if err := e.Validate(); err != nil {
					t.Errorf("outbox row %+v is not a valid envelope: %v", e, err)
				}
			}

			// An explicit version that is not newer is refused; the tx must roll back.
			tx, err = conn.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			stale := events.Envelope{Aggregate: "users", Key: "8", Version: 5, Op: events.OpDelete}
			if err := w.Write(ctx, wrap(tx), stale); !errors.Is(err, events.ErrStaleVersion) {
				t.Fatalf("Write(stale version) = %v, want ErrStaleVersion", err)
			}
			_ = tx.Rollback(ctx)

			// The commit notified channel distcache_outbox with the aggregate.
			wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			n, err := listener.WaitForNotification(wctx)
			if err != nil || n.Channel != events.OutboxChannel || n.Payload != "users" {
				t.Fatalf("notification %+v, %v; want distcache_outbox/users", n, err)
			}
		})
	}
}

func TestOutboxWriterSharesVersionsWithTrigger(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, conn := outboxDB(t)
	exec(t, conn, `CREATE TABLE orgs (slug text PRIMARY KEY, name text)`)
	exec(t, conn, `CREATE TRIGGER orgs_distcache AFTER INSERT OR UPDATE OR DELETE ON orgs
		FOR EACH ROW EXECUTE FUNCTION distcache_capture('orgs', 'slug')`)
	exec(t, conn, `INSERT INTO orgs VALUES ('acme', 'Acme')`)
	w, _ := events.NewOutboxWriter()
	err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
		return w.Write(ctx, tx, events.Envelope{Aggregate: "orgs", Key: "acme", Op: events.OpUpsert, Payload: json.RawMessage(`{"slug":"acme","name":"ACME"}`)})
	})
	if err != nil {
		t.Fatal(err)
	}
	exec(t, conn, `DELETE FROM orgs`)
	var versions []int64
	var ops []events.Op
	for _, e := range readOutbox(t, conn, "orgs") {
		versions = append(versions, e.Version)
		ops = append(ops, e.Op)
	}
	if fmt.Sprint(versions, ops) != "[1 2 3] [upsert upsert delete]" {
		t.Fatalf("versions %v ops %v, want [1 2 3] [upsert upsert delete]", versions, ops)
	}
}

func exec(t *testing.T, conn *pgx.Conn, sql string, args ...any) {
	t.Helper()
	if _, err := conn.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// compactedTopic creates "<prefix>.<aggregate>" as the contract says:
// one partition, cleanup.policy=compact.
func compactedTopic(t *testing.T, adm *kadm.Client, prefix, aggregate string) string {
	t.Helper()
	topic := events.Topic(prefix, aggregate)
	compact := "compact"
	resp, err := adm.CreateTopic(context.Background(), 1, 1, map[string]*string{"cleanup.policy": &compact}, topic)
	if err != nil || resp.Err != nil {
		t.Fatalf("create topic %s: %v %v", topic, err, resp.Err)
	}
	return topic
}

func kafkaClients(t *testing.T, addr string) (*kgo.Client, *kadm.Client) {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl, kadm.NewClient(cl)
}

func TestRecordRoundTripThroughCompactedTopic(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	k := devstacktest.Kafka(t)
	cl, adm := kafkaClients(t, k.Addr)
	prefix := devstacktest.UniqueName(t, "p")
	topic := compactedTopic(t, adm, prefix, "users")

	// The broker holds it as the contract says.
	details, err := adm.ListTopics(ctx, topic)
	if err != nil || details[topic].Err != nil || len(details[topic].Partitions) != 1 {
		t.Fatalf("topic %s: %+v, %v; want 1 partition", topic, details[topic], err)
	}
	cfgs, err := adm.DescribeTopicConfigs(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := cfgs.On(topic, nil)
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
		t.Fatalf("cleanup.policy = %q, want compact", policy)
	}

	sent := []events.Envelope{
		{Aggregate: "users", Key: "42", Version: 3, Op: events.OpUpsert, Payload: json.RawMessage(`{"id":42,"email":"a@example.com"}`),
			Headers: map[string]string{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "tracestate": "x=1"},
			EventID: events.NewEventID(), SourceTime: time.Date(2026, 11, 27, 19, 0, 0, 1, time.UTC)},
		{Aggregate: "users", Key: "42", Version: 4, Op: events.OpDelete,
			EventID: events.NewEventID(), SourceTime: time.Date(2026, 11, 27, 19, 0, 1, 0, time.UTC)},
	}
	for _, e := range sent {
		r, err := events.ToRecord(e, prefix)
		if err != nil {
			t.Fatal(err)
		}
		if err := cl.ProduceSync(ctx, r).FirstErr(); err != nil {
			t.Fatalf("produce: %v", err)
		}
	}

	consumer, err := kgo.NewClient(kgo.SeedBrokers(k.Addr), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer consumer.Close()
	var got []events.Envelope
	for len(got) < len(sent) {
		fetches := consumer.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			t.Fatalf("consumed %d of %d records: %v", len(got), len(sent), err)
		}
		for _, fe := range fetches.Errors() {
			t.Fatalf("fetch: %v", fe.Err)
		}
		fetches.EachRecord(func(r *kgo.Record) {
			if len(got) == 1 && r.Value != nil {
				t.Errorf("delete arrived with value %q, want a tombstone", r.Value)
			}
			e, err := events.FromRecord(r)
			if err != nil {
				t.Fatalf("FromRecord: %v", err)
			}
			got = append(got, e)
		})
	}
	for i := range sent {
		g, w := got[i], sent[i]
		if g.Aggregate != w.Aggregate || g.Key != w.Key || g.Version != w.Version || g.Op != w.Op ||
			string(g.Payload) != string(w.Payload) || fmt.Sprint(g.Headers) != fmt.Sprint(w.Headers) ||
			g.EventID != w.EventID || !g.SourceTime.Equal(w.SourceTime) {
			t.Errorf("record %d round trip:\n got %+v\nwant %+v", i, g, w)
		}
	}
}

func TestConsumerDeliversUpsertAndDelete(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	k := devstacktest.Kafka(t)
	cl, adm := kafkaClients(t, k.Addr)
	prefix := devstacktest.UniqueName(t, "p")
	compactedTopic(t, adm, prefix, "users")
	compactedTopic(t, adm, prefix, "orgs")

	produce := func(e events.Envelope) {
		t.Helper()
		e.EventID, e.SourceTime = events.NewEventID(), time.Now()
		r, err := events.ToRecord(e, prefix)
		if err != nil {
			t.Fatal(err)
		}
		if err := cl.ProduceSync(ctx, r).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	produce(events.Envelope{Aggregate: "users", Key: "1", Version: 1, Op: events.OpUpsert, Payload: json.RawMessage(`{"id":1}`)})
	// A malformed record is skipped and reported, not delivered.
	if err := cl.ProduceSync(ctx, &kgo.Record{Topic: events.Topic(prefix, "users"), Key: []byte("1"), Value: []byte(`{}`)}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	produce(events.Envelope{Aggregate: "users", Key: "1", Version: 2, Op: events.OpDelete})
	produce(events.Envelope{Aggregate: "orgs", Key: "acme", Version: 1, Op: events.OpUpsert, Payload: json.RawMessage(`{"slug":"acme"}`)})

	var mu sync.Mutex
	var got []string
	var invalid []error
	c, err := events.NewConsumer([]string{k.Addr}, []string{"users", "orgs"},
		func(_ context.Context, e events.Envelope) error {
			mu.Lock()
			defer mu.Unlock()
			got = append(got, fmt.Sprintf("%s/%s v%d %s %s", e.Aggregate, e.Key, e.Version, e.Op, e.Payload))
			return nil
		},
		events.WithTopicPrefix(prefix),
		events.WithInvalidRecordHandler(func(_ *kgo.Record, err error) {
			mu.Lock()
			defer mu.Unlock()
			invalid = append(invalid, err)
		}))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()

	snapshot := func() ([]string, []error) {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(got), slices.Clone(invalid)
	}
	devstacktest.Eventually(t, 30*time.Second, func() bool { g, _ := snapshot(); return len(g) >= 3 }, "3 changes delivered")
	g, inv := snapshot()
	slices.Sort(g) // order is per topic only
	want := []string{`orgs/acme v1 upsert {"slug":"acme"}`, `users/1 v1 upsert {"id":1}`, `users/1 v2 delete `}
	if !slices.Equal(g, want) {
		t.Fatalf("delivered\n got %q\nwant %q", g, want)
	}
	if len(inv) != 1 || !errors.Is(inv[0], events.ErrMalformedRecord) {
		t.Fatalf("invalid records reported: %v, want one ErrMalformedRecord", inv)
	}

	c.Close()
	select {
	case err := <-done:
		if !errors.Is(err, events.ErrConsumerClosed) {
			t.Fatalf("Run after Close = %v, want ErrConsumerClosed", err)
		}
	case <-ctx.Done():
		t.Fatal("Run did not return after Close")
	}
	c.Close() // idempotent
}

func TestConsumerStopsOnHandlerError(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	k := devstacktest.Kafka(t)
	cl, adm := kafkaClients(t, k.Addr)
	prefix := devstacktest.UniqueName(t, "p")
	compactedTopic(t, adm, prefix, "users")
	r, err := events.ToRecord(events.Envelope{Aggregate: "users", Key: "1", Version: 1, Op: events.OpDelete,
		EventID: events.NewEventID(), SourceTime: time.Now()}, prefix)
	if err != nil {
		t.Fatal(err)
	}
	if err := cl.ProduceSync(ctx, r).FirstErr(); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	c, err := events.NewConsumer([]string{k.Addr}, []string{"users"},
		func(context.Context, events.Envelope) error { return boom }, events.WithTopicPrefix(prefix))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Run(ctx); !errors.Is(err, boom) {
		t.Fatalf("Run = %v, want the handler's error", err)
	}

	// And a canceled context ends Run with nil.
	c2, err := events.NewConsumer([]string{k.Addr}, []string{"users"},
		func(context.Context, events.Envelope) error { return nil }, events.WithTopicPrefix(prefix))
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	cctx, ccancel := context.WithCancel(ctx)
	ccancel()
	if err := c2.Run(cctx); err != nil {
		t.Fatalf("Run(canceled) = %v, want nil", err)
	}
}

func TestNewConsumerRejectsBadConfig(t *testing.T) {
	t.Parallel()
	h := func(context.Context, events.Envelope) error { return nil }
	tests := []struct {
		name       string
		brokers    []string
		aggregates []string
		h          events.Handler
		opts       []events.ConsumerOption
	}{
		{"no brokers", nil, []string{"users"}, h, nil},
		{"no aggregates", []string{"127.0.0.1:1"}, nil, h, nil},
		{"nil handler", []string{"127.0.0.1:1"}, []string{"users"}, nil, nil},
		{"bad aggregate", []string{"127.0.0.1:1"}, []string{"a.b"}, h, nil},
		{"bad prefix", []string{"127.0.0.1:1"}, []string{"users"}, h, []events.ConsumerOption{events.WithTopicPrefix("a b")}},
	}
	for _, tt := range tests {
		if c, err := events.NewConsumer(tt.brokers, tt.aggregates, tt.h, tt.opts...); err == nil {
			c.Close()
			t.Errorf("%s: NewConsumer = nil error, want one", tt.name)
		}
	}
}

func TestOutboxWriterConcurrentWritersOfOneKey(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url, conn := outboxDB(t)
	w, _ := events.NewOutboxWriter()
	const writers, each = 4, 10
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for i := range writers {
		wg.Go(func() {
			c, err := pgx.Connect(ctx, url)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close(ctx)
			for j := range each {
				err := pgx.BeginFunc(ctx, c, func(tx pgx.Tx) error {
					return w.Write(ctx, tx, events.Envelope{Aggregate: "users", Key: "hot", Op: events.OpUpsert,
						Payload: json.RawMessage(fmt.Sprintf(`{"writer":%d,"n":%d}`, i, j))})
				})
				if err != nil {
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
	// In id order (the relay's order) the key's versions are exactly 1..40.
	got := readOutbox(t, conn, "users")
	if len(got) != writers*each {
		t.Fatalf("%d rows, want %d", len(got), writers*each)
	}
	for i, e := range got {
		if e.Version != int64(i+1) {
			t.Fatalf("row %d (id order) has version %d, want %d", i, e.Version, i+1)
		}
	}
}

func TestConsumerStartAtEndSkipsHistory(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	k := devstacktest.Kafka(t)
	cl, adm := kafkaClients(t, k.Addr)
	prefix := devstacktest.UniqueName(t, "p")
	compactedTopic(t, adm, prefix, "users")
	produce := func(key string) {
		t.Helper()
		r, err := events.ToRecord(events.Envelope{Aggregate: "users", Key: key, Version: 1, Op: events.OpDelete,
			EventID: events.NewEventID(), SourceTime: time.Now()}, prefix)
		if err != nil {
			t.Fatal(err)
		}
		if err := cl.ProduceSync(ctx, r).FirstErr(); err != nil {
			t.Fatal(err)
		}
	}
	produce("old")

	var mu sync.Mutex
	var keys []string
	c, err := events.NewConsumer([]string{k.Addr}, []string{"users"}, func(_ context.Context, e events.Envelope) error {
		mu.Lock()
		defer mu.Unlock()
		keys = append(keys, e.Key)
		return nil
	}, events.WithTopicPrefix(prefix), events.WithStartOffset(kgo.NewOffset().AtEnd()))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	go func() { _ = c.Run(ctx) }()
	// The consumer resolves "end" at some point after it starts: keep
	// producing new changes until one arrives.
	devstacktest.Eventually(t, 30*time.Second, func() bool {
		produce("new")
		mu.Lock()
		defer mu.Unlock()
		return len(keys) > 0
	}, "a new change delivered")
	mu.Lock()
	defer mu.Unlock()
	if slices.Contains(keys, "old") {
		t.Fatalf("delivered keys %q include the change produced before the consumer started", keys)
	}
}
