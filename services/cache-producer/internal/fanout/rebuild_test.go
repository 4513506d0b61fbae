package fanout_test

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/distcache/distcache/libs/distcache"
	"github.com/distcache/distcache/services/cache-producer/internal/fanout"
	"github.com/distcache/distcache/services/cache-producer/internal/ledger"
	"github.com/distcache/distcache/services/cache-producer/internal/prodmetrics"
	"github.com/distcache/distcache/services/cache-producer/internal/prodtest"
	"github.com/distcache/distcache/services/cache-producer/internal/projector"
	"github.com/distcache/distcache/services/cache-producer/internal/rebuild"
	"github.com/distcache/distcache/tools/devstacktest"
)

// gate holds every batch (and sweep) of the Writer while closed, so a test
// can look at a rebuild in progress.
type gate struct {
	closed  atomic.Bool
	release chan struct{}
	at      projector.Step // where a batch stops (BeforeValues unless set)
}

func newGate() *gate { return &gate{release: make(chan struct{}), at: projector.BeforeValues} }

func (g *gate) fault(ctx context.Context, _ projector.Target, step projector.Step) error {
	if step != g.at || !g.closed.Load() {
		return nil
	}
	select {
	case <-g.release:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (g *gate) open() {
	g.closed.Store(false)
	close(g.release)
}

// metricValue is the value of the sample of metric name whose labels
// include want (-1 when there is none).
func metricValue(t *testing.T, m *prodmetrics.Metrics, name string, want map[string]string) float64 {
	t.Helper()
	mfs, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	samples:
		for _, s := range mf.GetMetric() {
			have := map[string]string{}
			for _, lp := range s.GetLabel() {
				have[lp.GetName()] = lp.GetValue()
			}
			for k, v := range want {
				if have[k] != v {
					continue samples
				}
			}
			return sampleValue(s)
		}
	}
	return -1
}

func sampleValue(s *dto.Metric) float64 {
	switch {
	case s.GetCounter() != nil:
		return s.GetCounter().GetValue()
	case s.GetGauge() != nil:
		return s.GetGauge().GetValue()
	}
	return -1
}

func statusOf(m *fanout.Manager, proj string, gen int64) (fanout.Status, bool) {
	for _, s := range m.Statuses() {
		if s.Projection == proj && s.Generation == gen {
			return s, true
		}
	}
	return fanout.Status{}, false
}

// TestTopicResetRebuildsGeneration: a live generation consumes a topic that
// is then deleted and re-created with fewer records (a value changed, a key
// re-keyed, a source filtered out, one source missing). The consumer detects
// that its stored offset is past the new topic's end, reports the rebuild in
// Status and in the metrics while it runs, rebuilds the generation in place
// from offset 0 (same generation number), sweeps the missing source's key,
// and goes on with new records; Redis then holds exactly the new topic's
// projection (versions above every old one), and an edge that held the old
// values ends with the new ones and no longer finds the missing key.
func TestTopicResetRebuildsGeneration(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	ctx := context.Background()
	p := prodtest.NewProducer(t, s.kafka, "distcache", "users")
	g := newGate()
	w := projector.NewWriter(s.pub, s.led, projector.WithFault(g.fault))
	metrics := prodmetrics.New()
	defer metrics.Close()
	m, err := fanout.NewManager(fanout.Config{
		KafkaOpts: []kgo.Opt{kgo.SeedBrokers(s.kafka)}, Writer: w, BatchSize: 100, DrainTimeout: time.Millisecond,
		Observer: metrics,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	m.Update(ctx, []fanout.Generation{s.gen(t, byEmail, 1, p.Topic)})

	// The old topic: 10 records, ending at offset 10.
	p.Produce(
		p.Upsert("1", user("1", "ann@x.io", "Ann", "active")),
		p.Upsert("2", user("2", "bob@x.io", "Bob", "active")),
		p.Upsert("3", user("3", "cy@x.io", "Cy", "active")),
		p.Upsert("4", user("4", "dee@x.io", "Dee", "active")),
		p.Upsert("5", user("5", "eve@x.io", "Eve", "active")),
		p.Upsert("1", user("1", "ann@x.io", "Ann v2", "active")),
		p.Upsert("2", user("2", "bob@x.io", "Bob v2", "active")),
		p.Upsert("6", user("6", "fay@x.io", "Fay", "active")),
		p.Upsert("6", user("6", "fay@x.io", "Fay v2", "active")),
		p.Upsert("5", user("5", "eve@x.io", "Eve v2", "active")),
	)
	s.waitOffset(t, byEmail, 1, 10)

	// An edge follows the projection and holds every key.
	if err := s.pub.Cutover(ctx, byEmail.Name, 1); err != nil {
		t.Fatal(err)
	}
	edge, err := distcache.New(ctx, distcache.WithRedis(s.rdb), distcache.WithProjections(byEmail.Name),
		distcache.WithTailBlock(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer edge.Close(ctx)
	for _, k := range []string{"ann@x.io", "bob@x.io", "cy@x.io", "dee@x.io", "eve@x.io", "fay@x.io"} {
		if _, err := edge.Get(ctx, byEmail.Name, k); err != nil {
			t.Fatalf("edge Get %s before the reset: %v", k, err)
		}
	}

	// The topic is deleted and re-created with 4 records: Ann renamed, Bob
	// unchanged, Cy re-keyed, Eve filtered out; Dee and Fay are gone.
	g.closed.Store(true) // hold the rebuild's writes so its status can be seen
	if _, err := kadm.NewClient(p.Client).DeleteTopics(ctx, p.Topic); err != nil {
		t.Fatal(err)
	}
	p2 := prodtest.NewProducer(t, s.kafka, "distcache", "users")
	newRecs := []*kgo.Record{
		p2.Upsert("1", user("1", "ann@x.io", "Ann v3", "active")),
		p2.Upsert("2", user("2", "bob@x.io", "Bob v2", "active")),
		p2.Upsert("3", user("3", "cy2@x.io", "Cy", "active")),
		p2.Upsert("5", user("5", "eve@x.io", "Eve v2", "blocked")),
	}
	p2.Produce(newRecs...)

	var st fanout.Status
	devstacktest.Eventually(t, 30*time.Second, func() bool {
		var ok bool
		st, ok = statusOf(m, byEmail.Name, 1)
		return ok && st.Rebuild != nil
	}, "Status reports the rebuild")
	if st.Rebuild.Reason != rebuild.ReasonTopicReset || !strings.HasPrefix(st.Rebuild.Detail, "topic reset: stored offset 10 > end ") ||
		st.Rebuild.ReplacedOffset != 10 {
		t.Errorf("rebuild status = %+v, want reason %q, detail \"topic reset: stored offset 10 > end …\", replaced offset 10",
			*st.Rebuild, rebuild.ReasonTopicReset)
	}
	if len(m.Rebuilding()) != 1 {
		t.Errorf("Rebuilding() = %+v, want the generation", m.Rebuilding())
	}
	if err := m.CheckRebuilds(); !errors.Is(err, fanout.ErrRebuilding) || !strings.Contains(err.Error(), "users_by_email/g1 (topic reset: stored offset 10 > end") {
		t.Errorf("CheckRebuilds (readiness) = %v, want ErrRebuilding naming the generation and the reset", err)
	}
	labels := map[string]string{"projection": byEmail.Name, "generation": "1"}
	if v := metricValue(t, metrics, "distcache_producer_generation_rebuilds_total",
		map[string]string{"projection": byEmail.Name, "generation": "1", "reason": rebuild.ReasonTopicReset}); v != 1 {
		t.Errorf("distcache_producer_generation_rebuilds_total = %v, want 1", v)
	}
	if v := metricValue(t, metrics, "distcache_producer_generation_rebuilding", labels); v != 1 {
		t.Errorf("distcache_producer_generation_rebuilding while rebuilding = %v, want 1", v)
	}
	if _, ok, _ := s.led.RebuildOf(ctx, byEmail.Name, 1); !ok {
		t.Error("no rebuild marker in Redis while rebuilding")
	}

	g.open()
	devstacktest.Eventually(t, 30*time.Second, func() bool {
		st, ok := statusOf(m, byEmail.Name, 1)
		return ok && st.Rebuild == nil && st.Next == 4
	}, "the rebuild finishes at offset 4")
	if err := m.CheckRebuilds(); err != nil {
		t.Errorf("CheckRebuilds after the rebuild = %v", err)
	}
	if v := metricValue(t, metrics, "distcache_producer_generation_rebuilding", labels); v != 0 {
		t.Errorf("distcache_producer_generation_rebuilding after the rebuild = %v, want 0", v)
	}
	if v := metricValue(t, metrics, "distcache_producer_rebuild_removed_source_keys_total", labels); v < 2 {
		t.Errorf("distcache_producer_rebuild_removed_source_keys_total = %v, want at least 2 (Dee, Fay)", v)
	}
	if _, ok, _ := s.led.RebuildOf(ctx, byEmail.Name, 1); ok {
		t.Error("the rebuild marker is left in Redis")
	}

	// New records keep flowing.
	late := p2.Upsert("7", user("7", "gus@x.io", "Gus", "active"))
	p2.Produce(late)
	newRecs = append(newRecs, late)
	s.waitOffset(t, byEmail, 1, 5)

	base, err := s.led.VersionBase(ctx, byEmail.Name, 1)
	if err != nil || base < 10 {
		t.Fatalf("version base = %d, %v; want above every old version (10)", base, err)
	}
	model := prodtest.NewModel(t, byEmail)
	model.Base = base
	for _, r := range newRecs {
		model.Apply(r.Offset, string(r.Key), r.Value)
	}
	got, err := prodtest.ReadGeneration(ctx, s.rdb, byEmail.Name, 1)
	if err != nil {
		t.Fatal(err)
	}
	if d := prodtest.Diff(got, model.Live()); d != "" {
		t.Errorf("generation 1 after the rebuild differs from the new topic's projection:\n%s", d)
	}
	if err := prodtest.StreamVersionsIncrease(ctx, s.rdb, byEmail.Name, 1); err != nil {
		t.Error(err)
	}
	for _, skey := range []string{"4", "6", "5"} {
		if e, err := s.led.ReadIndex(ctx, byEmail.Name, 1, []string{skey}); err != nil || e[0].Key != "" {
			t.Errorf("index entry of source %s left: %+v, %v", skey, e, err)
		}
	}

	// The edge converges on the new content.
	want := map[string]string{
		"ann@x.io": `{"id":"1","name":"Ann v3","email":"ann@x.io"}`,
		"bob@x.io": `{"id":"2","name":"Bob v2","email":"bob@x.io"}`,
		"cy2@x.io": `{"id":"3","name":"Cy","email":"cy2@x.io"}`,
		"gus@x.io": `{"id":"7","name":"Gus","email":"gus@x.io"}`,
	}
	gone := []string{"cy@x.io", "dee@x.io", "eve@x.io", "fay@x.io"}
	devstacktest.Eventually(t, 20*time.Second, func() bool {
		for k, v := range want {
			if b, err := edge.Get(ctx, byEmail.Name, k); err != nil || string(b) != v {
				return false
			}
		}
		for _, k := range gone {
			if _, err := edge.Get(ctx, byEmail.Name, k); !errors.Is(err, distcache.ErrNotFound) {
				return false
			}
		}
		return true
	}, "the edge serves the new topic's values and no longer finds %v", gone)
}

// TestRebuildOnRequest, on a single Redis node and on Redis Cluster: Manager.Rebuild (the entry
// point for a generation whose Redis state was lost, issue #15) rebuilds a generation in place:
// an index entry and value that no record of the topic explains are swept, every other value is
// rewritten from the topic with a higher version, and consumption goes on.
func TestRebuildOnRequest(t *testing.T) {
	t.Parallel()
	t.Run("standalone", func(t *testing.T) { t.Parallel(); testRebuildOnRequest(t, newStack(t), false) })
	t.Run("cluster", func(t *testing.T) { t.Parallel(); testRebuildOnRequest(t, newStackOn(t, true), true) })
}

func testRebuildOnRequest(t *testing.T, s *stack, cluster bool) {
	ctx := context.Background()
	p := prodtest.NewProducer(t, s.kafka, "distcache", "users")
	w := projector.NewWriter(s.pub, s.led)
	m := s.manager(t, w, 100)
	defer m.Close()
	m.Update(ctx, []fanout.Generation{s.gen(t, byID, 1, p.Topic)})
	recs := []*kgo.Record{
		p.Upsert("1", user("1", "a@x.io", "A", "active")),
		p.Upsert("2", user("2", "b@x.io", "B", "active")),
		p.Tombstone("2"),
		p.Upsert("3", user("3", "c@x.io", "C", "blocked")),
	}
	p.Produce(recs...)
	s.waitOffset(t, byID, 1, 4)

	// A value and index entry nobody wrote from this topic (what a lost
	// offset leaves behind, or a source key deleted while nobody read).
	tg, err := fanout.CompileTarget(byID.Name, 1, byID)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.WriteBatch(ctx, tg, nil, -1); err != nil {
		t.Fatal(err)
	}
	if _, err := s.pub.Apply(ctx, byID.Name, 1, []distcache.Change{{Key: "user:ghost", Value: []byte(`{"id":"ghost"}`), Version: 3, Op: distcache.OpSet}}); err != nil {
		t.Fatal(err)
	}
	ghost := ledger.Entry{Key: "user:ghost", Version: 3}.Encode()
	if cluster {
		err = s.rdb.Set(ctx, ledger.IndexKey(byID.Name, 1, "ghost"), ghost, 0).Err()
	} else {
		// A generation created now keeps its index in the log layout.
		err = s.led.AppendIndexLog(ctx, byID.Name, 1, []ledger.SourceEntry{{Source: "ghost", Entry: ledger.Entry{Key: "user:ghost", Version: 3}}}, nil)
	}
	if err != nil {
		t.Fatal(err)
	}

	if err := m.Rebuild(byID.Name, 1, rebuild.Cause{Reason: rebuild.ReasonDataLoss, Detail: "test"}); err != nil {
		t.Fatal(err)
	}
	if err := m.Rebuild(byID.Name, 9, rebuild.Cause{}); !errors.Is(err, fanout.ErrNotConsumed) {
		t.Errorf("Rebuild of a generation not consumed = %v, want ErrNotConsumed", err)
	}
	devstacktest.Eventually(t, 30*time.Second, func() bool {
		base, err := s.led.VersionBase(ctx, byID.Name, 1)
		_, rebuilding, _ := s.led.RebuildOf(ctx, byID.Name, 1)
		off, _, _ := s.led.Offset(ctx, byID.Name, 1)
		return err == nil && base > 0 && !rebuilding && off == 4
	}, "the rebuild begins and finishes")
	d := p.Upsert("4", user("4", "d@x.io", "D", "active"))
	p.Produce(d)
	recs = append(recs, d)
	s.waitOffset(t, byID, 1, 5)

	base, _ := s.led.VersionBase(ctx, byID.Name, 1)
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
		t.Errorf("generation after the requested rebuild:\n%s", d)
	}
	if e, err := s.led.ReadIndex(ctx, byID.Name, 1, []string{"ghost", "1"}); err != nil || e[0].Key != "" || e[1].Version <= base {
		t.Errorf("index after the rebuild = %+v, %v; want the ghost swept and user 1 rewritten above base %d", e, err, base)
	}
	if c, _ := s.rdb.Get(ctx, ledger.IndexCountKey(byID.Name, 1)).Result(); !cluster && c != "3" {
		t.Errorf("index count = %s, want 3 (users 1, 3, 4)", c)
	}
}

// TestLogStartPassedOffset: a generation whose stored offset the topic's
// log start passed (records deleted before it read them) goes on from the
// log start, and the offsets it skipped are counted, not silently lost.
func TestLogStartPassedOffset(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	ctx := context.Background()
	p := prodtest.NewProducer(t, s.kafka, "distcache", "users")
	metrics := prodmetrics.New()
	defer metrics.Close()
	start := func() *fanout.Manager {
		m, err := fanout.NewManager(fanout.Config{
			KafkaOpts: []kgo.Opt{kgo.SeedBrokers(s.kafka)}, Writer: projector.NewWriter(s.pub, s.led), BatchSize: 100,
			DrainTimeout: time.Millisecond, Observer: metrics,
		})
		if err != nil {
			t.Fatal(err)
		}
		m.Update(ctx, []fanout.Generation{s.gen(t, byID, 1, p.Topic)})
		return m
	}
	var recs []*kgo.Record
	for i := range 20 {
		id := string(rune('a' + i))
		recs = append(recs, p.Upsert(id, user(id, id+"@x.io", id, "active")))
	}
	p.Produce(recs[:10]...)
	m := start()
	s.waitOffset(t, byID, 1, 10)
	m.Close()

	p.Produce(recs[10:]...)
	res, err := kadm.NewClient(p.Client).DeleteRecords(ctx, kadm.Offsets{p.Topic: {0: kadm.Offset{Topic: p.Topic, Partition: 0, At: 15}}})
	if err == nil {
		err = res.Error()
	}
	if err != nil {
		t.Fatal(err)
	}
	m = start()
	defer m.Close()
	s.waitOffset(t, byID, 1, 20)
	labels := map[string]string{"projection": byID.Name, "generation": "1"}
	if v := metricValue(t, metrics, "distcache_producer_unread_offsets_skipped_total", labels); v != 5 {
		t.Errorf("distcache_producer_unread_offsets_skipped_total = %v, want 5 (offsets 10–14)", v)
	}
	got, err := prodtest.ReadGeneration(ctx, s.rdb, byID.Name, 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 15 {
		t.Errorf("generation holds %d keys, want 15 (offsets 0–9 and 15–19)", len(got))
	}
	if v := metricValue(t, metrics, "distcache_producer_generation_rebuilds_total", labels); v > 0 {
		t.Errorf("a passed log start began a rebuild (%v)", v)
	}
}

// TestTopicRecreatedLonger: a topic re-created with more records than the
// generation had read is told apart by its topic ID (the stored offset fits
// in the new topic but counts in the old one), and the generation is rebuilt
// from offset 0 instead of skipping the new topic's first records.
func TestTopicRecreatedLonger(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	ctx := context.Background()
	p := prodtest.NewProducer(t, s.kafka, "distcache", "users")
	m := s.manager(t, projector.NewWriter(s.pub, s.led), 100)
	defer m.Close()
	m.Update(ctx, []fanout.Generation{s.gen(t, byID, 1, p.Topic)})
	p.Produce(
		p.Upsert("1", user("1", "a@x.io", "A", "active")),
		p.Upsert("2", user("2", "b@x.io", "B", "active")),
		p.Upsert("3", user("3", "c@x.io", "C", "active")),
	)
	s.waitOffset(t, byID, 1, 3)
	m.Close() // the producer is down while the topic is re-created

	if _, err := kadm.NewClient(p.Client).DeleteTopics(ctx, p.Topic); err != nil {
		t.Fatal(err)
	}
	p2 := prodtest.NewProducer(t, s.kafka, "distcache", "users")
	var recs []*kgo.Record
	for _, id := range []string{"1", "2", "4", "5", "6", "7"} {
		recs = append(recs, p2.Upsert(id, user(id, id+"@x.io", "new "+id, "blocked")))
	}
	p2.Produce(recs...)

	m = s.manager(t, projector.NewWriter(s.pub, s.led), 100)
	defer m.Close()
	m.Update(ctx, []fanout.Generation{s.gen(t, byID, 1, p.Topic)})
	s.waitOffset(t, byID, 1, 6)
	devstacktest.Eventually(t, 20*time.Second, func() bool {
		_, rebuilding, err := s.led.RebuildOf(ctx, byID.Name, 1)
		return err == nil && !rebuilding
	}, "the rebuild is swept")
	base, _ := s.led.VersionBase(ctx, byID.Name, 1)
	if base == 0 {
		t.Fatal("no rebuild began: the new topic's offsets 0–2 were skipped")
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
		t.Errorf("generation after the re-created topic:\n%s", d)
	}
}
