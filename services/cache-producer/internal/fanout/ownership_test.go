package fanout_test

import (
	"context"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/distcache/distcache/libs/distcache"
	"github.com/distcache/distcache/libs/projection"
	"github.com/distcache/distcache/services/cache-producer/internal/fanout"
	"github.com/distcache/distcache/services/cache-producer/internal/ledger"
	"github.com/distcache/distcache/services/cache-producer/internal/prodmetrics"
	"github.com/distcache/distcache/services/cache-producer/internal/prodtest"
	"github.com/distcache/distcache/services/cache-producer/internal/projector"
	"github.com/distcache/distcache/services/cache-producer/internal/rebuild"
	"github.com/distcache/distcache/tools/devstacktest"
)

// assignedManager is a Manager of replica name that consumes only the topics assigned to it
// (as the consumer group does in the service), following gens.
func (s *stack) assignedManager(t *testing.T, name string, w *projector.Writer, metrics *prodmetrics.Metrics, gens ...fanout.Generation) *fanout.Manager {
	t.Helper()
	m, err := fanout.NewManager(fanout.Config{
		KafkaOpts: []kgo.Opt{kgo.SeedBrokers(s.kafka)}, Writer: w, BatchSize: 3, DrainTimeout: time.Millisecond,
		LossCheckInterval: 50 * time.Millisecond, Observer: metrics, Replica: name, Assigned: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	m.Update(context.Background(), gens)
	return m
}

// TestAssignedTopicsOnly: a Manager of a consumer group's member consumes a topic only while it
// is assigned; Revoke stops the consumer and Assign starts one again, which goes on from the
// generation's stored offset; the claim names the replica.
func TestAssignedTopicsOnly(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	ctx := context.Background()
	p := prodtest.NewProducer(t, s.kafka, "distcache", "users")
	metrics := prodmetrics.New()
	defer metrics.Close()
	m := s.assignedManager(t, "replica-a", projector.NewWriter(s.pub, s.led), metrics, s.gen(t, byID, 1, p.Topic))
	if got := m.Topics(); !slices.Equal(got, []string{p.Topic}) {
		t.Fatalf("Topics() = %v, want [%s]", got, p.Topic)
	}
	recs := history(p)
	p.Produce(recs[:6]...)
	if sts := m.Statuses(); len(sts) != 0 || len(m.Owned()) != 0 {
		t.Fatalf("before Assign: statuses %v, owned %v; want none", sts, m.Owned())
	}
	if _, ok, err := s.led.Offset(ctx, byID.Name, 1); err != nil || ok {
		t.Fatalf("before Assign the generation has an offset (%v, %v): something consumed an unassigned topic", ok, err)
	}

	m.Assign([]string{p.Topic})
	s.waitOffset(t, byID, 1, 6)
	st, ok := statusOf(m, byID.Name, 1)
	if !ok || st.Owner != "replica-a" {
		t.Errorf("status after Assign: %+v (found %v), want owner replica-a", st, ok)
	}
	if w, err := s.led.Writer(ctx, byID.Name, 1); err != nil || ledger.ClaimReplica(w) != "replica-a" {
		t.Errorf("writer claim = %q (%v), want replica-a's", w, err)
	}

	m.Revoke([]string{p.Topic})
	if sts := m.Statuses(); len(sts) != 0 {
		t.Fatalf("after Revoke: statuses %v, want none", sts)
	}
	p.Produce(recs[6:]...)
	// Nothing consumes it: the offset stays for a second (twenty loss-check intervals; a
	// consumer reads a produced batch within a few milliseconds).
	for end := time.Now().Add(time.Second); time.Now().Before(end); {
		if off, _, _ := s.led.Offset(ctx, byID.Name, 1); off != 6 {
			t.Fatalf("after Revoke the offset moved to %d: the revoked topic is still consumed", off)
		}
		<-time.After(50 * time.Millisecond)
	}
	m.Assign([]string{p.Topic})
	s.waitOffset(t, byID, 1, int64(len(recs)))
}

// TestZombieIsFenced, on a single Redis node and on Redis Cluster (issue #15 §1): replica A owns
// the topic and is stopped in the middle of a batch (as a process paused past the group's
// session timeout); the group gives the topic to replica B, which claims the generation and
// writes on. When A resumes, its batch is refused: it writes nothing, counts a fenced write,
// stops consuming the topic and does not claim it back; B keeps writing. When the group gives
// the topic back to A, A takes it over again from where B left it, and the generation equals
// the topic's projection.
func TestZombieIsFenced(t *testing.T) {
	t.Parallel()
	t.Run("standalone", func(t *testing.T) {
		t.Parallel()
		testZombieIsFenced(t, newStack(t), byID, projector.BeforeValues)
	})
	t.Run("cluster", func(t *testing.T) {
		t.Parallel()
		testZombieIsFenced(t, newStackOn(t, true), byID, projector.BeforeValues)
	})
	// On Redis Cluster a batch's values are written before its index and offset: the zombie
	// stops between them, and its index entries must not replace newer ones (the projection
	// re-keys, so a stale entry would leave a projected key behind).
	t.Run("cluster_after_values", func(t *testing.T) {
		t.Parallel()
		testZombieIsFenced(t, newStackOn(t, true), byEmail, projector.AfterValues)
	})
}

func testZombieIsFenced(t *testing.T, s *stack, def projection.Definition, at projector.Step) {
	ctx := context.Background()
	p := prodtest.NewProducer(t, s.kafka, "distcache", "users")
	gen := s.gen(t, def, 1, p.Topic)
	g := newGate()
	g.at = at
	aMetrics, bMetrics := prodmetrics.New(), prodmetrics.New()
	defer aMetrics.Close()
	defer bMetrics.Close()
	a := s.assignedManager(t, "replica-a", projector.NewWriter(s.pub, s.led, projector.WithFault(g.fault)), aMetrics, gen)
	b := s.assignedManager(t, "replica-b", projector.NewWriter(s.pub, s.led), bMetrics, gen)
	recs := history(p)
	a.Assign([]string{p.Topic})
	p.Produce(recs[:3]...)
	s.waitOffset(t, def, 1, 3)
	writesOf := func(m *prodmetrics.Metrics) float64 {
		return metricValue(t, m, "distcache_producer_events_total", map[string]string{"projection": def.Name, "generation": "1"})
	}
	devstacktest.Eventually(t, 10*time.Second, func() bool { return writesOf(aMetrics) == 3 }, "replica A counted its first batch")
	aBefore := writesOf(aMetrics)

	g.closed.Store(true) // A's next batch stops before it writes anything
	p.Produce(recs[3:6]...)
	devstacktest.Eventually(t, 10*time.Second, func() bool {
		st, ok := statusOf(a, def.Name, 1)
		return ok && st.HighWatermark >= 6
	}, "replica A read the next batch")

	b.Assign([]string{p.Topic}) // A's session expired: the group gave the topic to B
	s.waitOffset(t, def, 1, 6)
	w, _ := s.led.Writer(ctx, def.Name, 1)
	if ledger.ClaimReplica(w) != "replica-b" {
		t.Fatalf("writer after the takeover = %q, want replica-b's claim", w)
	}
	if s.led.Cluster() {
		// The change stream (another slot) is claimed too, so that A's entries cannot follow B's.
		if sw, _ := s.rdb.Get(ctx, distcache.StreamWriterKey(def.Name, 1)).Result(); sw != w {
			t.Errorf("stream writer after the takeover = %q, want B's claim %q", sw, w)
		}
	}

	p.Produce(recs[6:]...) // B writes newer records of the same source keys before A resumes
	s.waitOffset(t, def, 1, int64(len(recs)))

	g.open() // A resumes
	labels := map[string]string{"projection": def.Name, "generation": "1"}
	devstacktest.Eventually(t, 10*time.Second, func() bool {
		return metricValue(t, aMetrics, "distcache_producer_fenced_writes_total", labels) == 1
	}, "replica A counts its batch fenced")
	devstacktest.Eventually(t, 10*time.Second, func() bool {
		_, ok := statusOf(a, def.Name, 1)
		return !ok
	}, "replica A stops consuming the topic")
	if got := writesOf(aMetrics); got != aBefore {
		t.Errorf("replica A wrote %v records after it was fenced (before %v)", got-aBefore, aBefore)
	}
	goOn := p.Upsert("5", user("5", "eve2@x.io", "Eve", "active")) // B goes on
	p.Produce(goOn)
	recs = append(recs, goOn)
	s.waitOffset(t, def, 1, int64(len(recs)))
	if w, _ := s.led.Writer(ctx, def.Name, 1); ledger.ClaimReplica(w) != "replica-b" {
		t.Errorf("writer after A resumed = %q: the zombie claimed the generation back", w)
	}
	if got := writesOf(aMetrics); got != aBefore {
		t.Errorf("replica A wrote %v records after it was fenced", got-aBefore)
	}

	// The group moves the topic back to A (B revoked first, as cooperative rebalancing does).
	b.Revoke([]string{p.Topic})
	a.Revoke([]string{p.Topic})
	a.Assign([]string{p.Topic})
	// Re-keys of source keys the zombie's batch touched: a stale index entry would leave their
	// previous projected keys behind.
	more := []*kgo.Record{
		p.Upsert("9", user("9", "nine@x.io", "Nine", "active")),
		p.Upsert("1", user("1", "ann3@x.io", "Ann v5", "active")),
		p.Upsert("2", user("2", "bob2@x.io", "Bob v3", "active")),
		p.Upsert("3", user("3", "cy2@x.io", "Cy v4", "active")),
	}
	p.Produce(more...)
	s.waitOffset(t, def, 1, int64(len(recs)+len(more)))
	if w, _ := s.led.Writer(ctx, def.Name, 1); ledger.ClaimReplica(w) != "replica-a" {
		t.Errorf("writer after the topic came back = %q, want replica-a's", w)
	}
	model := prodtest.NewModel(t, def)
	for _, r := range append(recs, more...) {
		model.Apply(r.Offset, string(r.Key), r.Value)
	}
	got, err := prodtest.ReadGeneration(ctx, s.rdb, def.Name, 1)
	if err != nil {
		t.Fatal(err)
	}
	if d := prodtest.Diff(got, model.Live()); d != "" {
		t.Errorf("the generation after two takeovers:\n%s", d)
	}
	if err := prodtest.StreamVersionsIncrease(ctx, s.rdb, def.Name, 1); err != nil {
		t.Errorf("change stream after two takeovers: %v", err)
	}
}

// TestTakeoverMidRebuildIsNotALoss: replica A begins rebuilding a generation in place (a new
// epoch) and loses the topic before the rebuild ends; replica B, taking it over, finds the
// rebuild's marker naming the stored epoch and finishes that rebuild instead of counting a data
// loss and beginning another.
func TestTakeoverMidRebuildIsNotALoss(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	ctx := context.Background()
	p := prodtest.NewProducer(t, s.kafka, "distcache", "users")
	gen := s.gen(t, byID, 1, p.Topic)
	g := newGate()
	aMetrics, bMetrics := prodmetrics.New(), prodmetrics.New()
	defer aMetrics.Close()
	defer bMetrics.Close()
	a := s.assignedManager(t, "replica-a", projector.NewWriter(s.pub, s.led, projector.WithFault(g.fault)), aMetrics, gen)
	b := s.assignedManager(t, "replica-b", projector.NewWriter(s.pub, s.led), bMetrics, gen)
	recs := history(p)
	p.Produce(recs...)
	a.Assign([]string{p.Topic})
	s.waitOffset(t, byID, 1, int64(len(recs)))

	g.closed.Store(true) // A's rebuild stays in progress
	if err := a.Rebuild(byID.Name, 1, rebuild.Cause{Reason: rebuild.ReasonDataLoss, Detail: "test"}); err != nil {
		t.Fatal(err)
	}
	devstacktest.Eventually(t, 20*time.Second, func() bool {
		_, rebuilding, err := s.led.RebuildOf(ctx, byID.Name, 1)
		return err == nil && rebuilding
	}, "replica A began the rebuild")
	a.Revoke([]string{p.Topic})
	b.Assign([]string{p.Topic})
	devstacktest.Eventually(t, 30*time.Second, func() bool {
		_, rebuilding, err := s.led.RebuildOf(ctx, byID.Name, 1)
		return err == nil && !rebuilding
	}, "replica B finishes the rebuild")
	labels := map[string]string{"projection": byID.Name, "generation": "1", "reason": rebuild.ReasonDataLoss}
	if v := metricValue(t, aMetrics, "distcache_producer_generation_rebuilds_total", labels); v != 1 {
		t.Errorf("replica A: rebuilds begun = %v, want 1", v)
	}
	if v := metricValue(t, bMetrics, "distcache_producer_generation_rebuilds_total", labels); v > 0 {
		t.Errorf("replica B: rebuilds begun = %v, want none (it finishes A's)", v)
	}
	base, err := s.led.VersionBase(ctx, byID.Name, 1)
	if err != nil {
		t.Fatal(err)
	}
	model := prodtest.NewModel(t, byID)
	model.Base = base
	for _, r := range recs {
		model.Apply(r.Offset, string(r.Key), r.Value)
	}
	got, err := prodtest.ReadGeneration(ctx, s.rdb, byID.Name, 1)
	if err != nil {
		t.Fatal(err)
	}
	if d := prodtest.Diff(got, model.Live()); d != "" {
		t.Errorf("the generation after the takeover mid-rebuild:\n%s", d)
	}
}

// TestRevokeLeavesOtherTopics: revoking one topic (cooperative rebalancing moves only the topics
// that change owner) stops that topic's consumer only; the other topic's consumer keeps running
// under the same writer claim, without a restart, and keeps writing.
func TestRevokeLeavesOtherTopics(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	ctx := context.Background()
	users := prodtest.NewProducer(t, s.kafka, "distcache", "users")
	orders := prodtest.NewProducer(t, s.kafka, "distcache", "orders")
	byOrder := projection.Definition{Name: "orders_by_id", Model: "orders", KeyTemplate: "order:{id}", Fields: []string{"id", "status"}}
	var logs syncLog
	m, err := fanout.NewManager(fanout.Config{
		KafkaOpts: []kgo.Opt{kgo.SeedBrokers(s.kafka)}, Writer: projector.NewWriter(s.pub, s.led), BatchSize: 3,
		DrainTimeout: time.Millisecond, Replica: "replica-a", Assigned: true,
		Logger: slog.New(slog.NewJSONHandler(&logs, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	m.Update(ctx, []fanout.Generation{s.gen(t, byID, 1, users.Topic), s.gen(t, byOrder, 1, orders.Topic)})
	m.Assign([]string{users.Topic, orders.Topic})
	users.Produce(history(users)[:4]...)
	orders.Produce(orders.Upsert("o1", map[string]any{"id": "o1", "status": "new"}))
	s.waitOffset(t, byID, 1, 4)
	s.waitOffset(t, byOrder, 1, 1)
	claim, err := s.led.Writer(ctx, byID.Name, 1)
	if err != nil || claim == "" {
		t.Fatalf("users claim = %q (%v)", claim, err)
	}

	m.Revoke([]string{orders.Topic})
	if _, ok := statusOf(m, byOrder.Name, 1); ok {
		t.Error("the revoked topic's generation is still consumed")
	}
	if _, ok := statusOf(m, byID.Name, 1); !ok {
		t.Fatal("the other topic's generation is no longer consumed")
	}
	users.Produce(users.Upsert("7", user("7", "g@x.io", "G", "active")))
	s.waitOffset(t, byID, 1, 5)
	if got, _ := s.led.Writer(ctx, byID.Name, 1); got != claim {
		t.Errorf("users claim changed from %q to %q: its consumer was restarted by the other topic's revoke", claim, got)
	}
	if got := m.Owned(); len(got) != 1 || got[0] != users.Topic {
		t.Errorf("Owned() = %v, want [%s]", got, users.Topic)
	}
	if n := strings.Count(logs.String(), `"msg":"consumer started","topic":"`+users.Topic+`"`); n != 1 {
		t.Errorf("the users consumer started %d times, want once (the revoke of orders restarted it)\n%s", n, logs.String())
	}
}

// syncLog is a log sink safe for concurrent writes.
type syncLog struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *syncLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *syncLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
