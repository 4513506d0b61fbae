package fanout_test

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/distcache/distcache/libs/distcache"
	"github.com/distcache/distcache/services/cache-producer/internal/backfill"
	"github.com/distcache/distcache/services/cache-producer/internal/fanout"
	"github.com/distcache/distcache/services/cache-producer/internal/ledger"
	"github.com/distcache/distcache/services/cache-producer/internal/prodmetrics"
	"github.com/distcache/distcache/services/cache-producer/internal/prodtest"
	"github.com/distcache/distcache/services/cache-producer/internal/projector"
	"github.com/distcache/distcache/services/cache-producer/internal/rebuild"
	"github.com/distcache/distcache/tools/devstacktest"
	"github.com/distcache/distcache/workflows"
)

// flushAll empties every master of s's Redis, as a restart without persistence would.
func (s *stack) flushAll(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	var err error
	if cc, ok := s.rdb.(*redis.ClusterClient); ok {
		err = cc.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error { return m.FlushAll(ctx).Err() })
	} else {
		err = s.rdb.FlushAll(ctx).Err()
	}
	if err != nil {
		t.Fatal(err)
	}
}

// history is a topic where most users have several records: re-keys, a delete and a re-insert,
// a user filtered out and back.
func history(p *prodtest.Producer) []*kgo.Record {
	return []*kgo.Record{
		p.Upsert("1", user("1", "ann@x.io", "Ann", "active")),
		p.Upsert("2", user("2", "bob@x.io", "Bob", "active")),
		p.Upsert("1", user("1", "ann@x.io", "Ann v2", "active")),
		p.Upsert("3", user("3", "cy@x.io", "Cy", "active")),
		p.Tombstone("2"),
		p.Upsert("1", user("1", "ann2@x.io", "Ann v3", "active")), // re-key
		p.Upsert("3", user("3", "cy@x.io", "Cy", "blocked")),      // filtered out (by_email)
		p.Upsert("2", user("2", "bob@x.io", "Bob again", "active")),
		p.Upsert("4", user("4", "dee@x.io", "Dee", "active")),
		p.Upsert("1", user("1", "ann@x.io", "Ann v4", "active")), // back to the first key
		p.Upsert("3", user("3", "cy@x.io", "Cy back", "active")),
		p.Upsert("5", user("5", "eve@x.io", "Eve", "active")),
	}
}

// TestDataLossRebuildsGeneration, on a single Redis node and on Redis Cluster (issue #15 §2): two
// live generations of one topic; Redis loses everything (FLUSHALL) while no record arrives. The
// consumer notices within its check interval (the generation's offset is gone although it
// committed one), reports the rebuild in Status (reason data_loss), in CheckDataLoss and
// CheckRebuilds (readiness) and in the metrics while it runs, rebuilds both generations in place
// from offset 0 under a new epoch and a version base above every version they held, and goes on
// with new records. Each generation then equals the projection of the topic; an edge that held
// the keys before the loss reads them with higher versions after it; and the rebuild applied each
// source key's last record only: no key of the rebuilt change stream went through the history
// again.
func TestDataLossRebuildsGeneration(t *testing.T) {
	t.Parallel()
	t.Run("standalone", func(t *testing.T) { t.Parallel(); testDataLoss(t, newStack(t), false) })
	t.Run("cluster", func(t *testing.T) { t.Parallel(); testDataLoss(t, newStackOn(t, true), true) })
}

func testDataLoss(t *testing.T, s *stack, cluster bool) {
	ctx := context.Background()
	p := prodtest.NewProducer(t, s.kafka, "distcache", "users")
	g := newGate()
	w := projector.NewWriter(s.pub, s.led, projector.WithFault(g.fault))
	metrics := prodmetrics.New()
	defer metrics.Close()
	m, err := fanout.NewManager(fanout.Config{
		KafkaOpts: []kgo.Opt{kgo.SeedBrokers(s.kafka)}, Writer: w, BatchSize: 100, DrainTimeout: time.Millisecond,
		LossCheckInterval: 100 * time.Millisecond, Observer: metrics,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	m.Update(ctx, []fanout.Generation{s.gen(t, byEmail, 1, p.Topic), s.gen(t, byID, 1, p.Topic)})
	recs := history(p)
	p.Produce(recs...)
	end := int64(len(recs))
	s.waitOffset(t, byEmail, 1, end)
	s.waitOffset(t, byID, 1, end)
	epoch, err := s.led.Position(ctx, byEmail.Name, 1)
	if err != nil || epoch.Epoch == "" {
		t.Fatalf("position before the loss = %+v, %v; want an epoch", epoch, err)
	}

	var edge *distcache.Client
	held := map[string]int64{}
	if !cluster { // the edge library's tests cover Cluster; one edge is enough here
		if err := s.pub.Cutover(ctx, byEmail.Name, 1); err != nil {
			t.Fatal(err)
		}
		edge, err = distcache.New(ctx, distcache.WithRedis(s.rdb), distcache.WithProjections(byEmail.Name),
			distcache.WithTailBlock(100*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		defer edge.Close(ctx)
		for _, k := range []string{"ann@x.io", "bob@x.io", "cy@x.io", "dee@x.io", "eve@x.io"} {
			e, err := edge.GetEntry(ctx, byEmail.Name, k)
			if err != nil || !e.Found {
				t.Fatalf("edge Get %s before the loss: %+v, %v", k, e, err)
			}
			held[k] = e.Version
		}
	}

	// The loss, while no record arrives: only the periodic check can notice it.
	g.closed.Store(true) // hold the rebuild's writes so its status can be seen
	lostAt := time.Now()
	s.flushAll(t)
	if !cluster {
		if err := s.pub.Cutover(ctx, byEmail.Name, 1); err != nil { // the control-plane's reconciler
			t.Fatal(err)
		}
	}
	var st fanout.Status
	devstacktest.Eventually(t, 20*time.Second, func() bool {
		var ok bool
		st, ok = statusOf(m, byEmail.Name, 1)
		other, ok2 := statusOf(m, byID.Name, 1)
		// Both generations of the topic lost their bookkeeping; each is noticed on its own, and
		// counted once its rebuild began.
		counted := true
		for _, proj := range []string{byEmail.Name, byID.Name} {
			counted = counted && metricValue(t, metrics, "distcache_producer_generation_rebuilds_total",
				map[string]string{"projection": proj, "generation": "1", "reason": rebuild.ReasonDataLoss}) == 1
		}
		return ok && st.Rebuild != nil && ok2 && other.Rebuild != nil && counted
	}, "Status reports and the metric counts the rebuild of both generations")
	t.Logf("loss noticed %v after the FLUSHALL", time.Since(lostAt).Round(time.Millisecond))
	if st.Rebuild.Reason != rebuild.ReasonDataLoss || !strings.Contains(st.Rebuild.Detail, "data loss: users_by_email/g1: its offset is gone") ||
		st.Rebuild.EndOffset != end {
		t.Errorf("rebuild status = %+v, want reason %s, a detail saying the offset is gone, end %d", *st.Rebuild, rebuild.ReasonDataLoss, end)
	}
	if err := m.CheckDataLoss(); !errors.Is(err, fanout.ErrDataLoss) || !strings.Contains(err.Error(), "users_by_email/g1") ||
		!strings.Contains(err.Error(), "users_by_id/g1") {
		t.Errorf("CheckDataLoss = %v, want ErrDataLoss naming both generations", err)
	}
	if err := m.CheckRebuilds(); !errors.Is(err, fanout.ErrRebuilding) {
		t.Errorf("CheckRebuilds = %v, want ErrRebuilding", err)
	}
	for _, proj := range []string{byEmail.Name, byID.Name} {
		if v := metricValue(t, metrics, "distcache_producer_generation_rebuilds_total",
			map[string]string{"projection": proj, "generation": "1", "reason": rebuild.ReasonDataLoss}); v != 1 {
			t.Errorf("%s: distcache_producer_generation_rebuilds_total{reason=data_loss} = %v, want 1", proj, v)
		}
	}
	rb, rebuilding, err := s.led.RebuildOf(ctx, byEmail.Name, 1)
	if err != nil || !rebuilding || rb.Epoch == "" || rb.Epoch == epoch.Epoch {
		t.Errorf("rebuild marker = %+v, %v, %v; want one with a new epoch (not %s)", rb, rebuilding, err, epoch.Epoch)
	}
	if floor := rebuild.ClockFloor(lostAt); rb.Base <= floor {
		t.Errorf("version base %d, want above the clock floor %d of the loss", rb.Base, floor)
	}

	g.open()
	devstacktest.Eventually(t, 30*time.Second, func() bool {
		a, _ := statusOf(m, byEmail.Name, 1)
		b, _ := statusOf(m, byID.Name, 1)
		return a.Rebuild == nil && b.Rebuild == nil && a.Next == end && b.Next == end
	}, "both rebuilds finish at offset %d", end)
	if err := m.CheckDataLoss(); err != nil {
		t.Errorf("CheckDataLoss after the rebuild = %v", err)
	}

	// New records keep flowing.
	late := p.Upsert("6", user("6", "fay@x.io", "Fay", "active"))
	p.Produce(late)
	recs = append(recs, late)
	s.waitOffset(t, byEmail, 1, end+1)
	s.waitOffset(t, byID, 1, end+1)

	for _, def := range []struct {
		name string
		gen  int64
	}{{byEmail.Name, 1}, {byID.Name, 1}} {
		base, err := s.led.VersionBase(ctx, def.name, def.gen)
		if err != nil {
			t.Fatal(err)
		}
		d := byEmail
		if def.name == byID.Name {
			d = byID
		}
		model := prodtest.NewModel(t, d)
		model.Base = base
		for _, r := range recs {
			model.Apply(r.Offset, string(r.Key), r.Value)
		}
		got, err := prodtest.ReadGeneration(ctx, s.rdb, def.name, def.gen)
		if err != nil {
			t.Fatal(err)
		}
		if diff := prodtest.Diff(got, model.Live()); diff != "" {
			t.Errorf("%s after the data-loss rebuild:\n%s", def.name, diff)
		}
		if err := prodtest.StreamVersionsIncrease(ctx, s.rdb, def.name, def.gen); err != nil {
			t.Errorf("%s: %v", def.name, err)
		}
		// The stream holds only what came after the loss: the rebuild wrote each projected key at
		// most once (the last record of each source key), then the late record.
		writes := map[string]int{}
		msgs, err := s.rdb.XRange(ctx, distcache.StreamKey(def.name, def.gen), "-", "+").Result()
		if err != nil {
			t.Fatal(err)
		}
		for _, msg := range msgs {
			if err := distcache.EachStreamChange(msg.Values, func(k, _ string) { writes[k]++ }); err != nil {
				t.Fatal(err)
			}
		}
		for k, n := range writes {
			if n > 1 {
				t.Errorf("%s: key %s written %d times by the rebuild, want once (the history was replayed)", def.name, k, n)
			}
		}
	}
	if p, err := s.led.Position(ctx, byEmail.Name, 1); err != nil || p.Epoch != rb.Epoch {
		t.Errorf("position after the rebuild = %+v, %v; want the rebuild's epoch %s", p, err, rb.Epoch)
	}
	if edge != nil {
		devstacktest.Eventually(t, 20*time.Second, func() bool {
			for k, v := range held {
				e, err := edge.GetEntry(ctx, byEmail.Name, k)
				if err != nil || !e.Found || e.Version <= v {
					return false
				}
			}
			return true
		}, "the edge reads every held key at a version above the one it held")
	}
}

// TestDataLossWhileStopped: Redis loses everything while no producer runs. A producer that starts
// with no memory of the generation finds no offset for a generation the registry says was
// backfilled to offset 12 (Generation.StartOffset): it rebuilds it from offset 0 (reason
// data_loss) instead of starting at 12, which would lose every key written before. A generation
// the registry records no backfill for (StartOffset 0) starts at 0 as on a first start, without
// a rebuild, and one whose offset exists without an epoch (written before epochs) gets one.
func TestDataLossWhileStopped(t *testing.T) {
	t.Parallel()
	s := newStack(t)
	ctx := context.Background()
	p := prodtest.NewProducer(t, s.kafka, "distcache", "users")
	recs := history(p)
	p.Produce(recs...)
	end := int64(len(recs))
	metrics := prodmetrics.New()
	defer metrics.Close()
	start := func(gens ...fanout.Generation) *fanout.Manager {
		m, err := fanout.NewManager(fanout.Config{
			KafkaOpts: []kgo.Opt{kgo.SeedBrokers(s.kafka)}, Writer: projector.NewWriter(s.pub, s.led), BatchSize: 100,
			DrainTimeout: time.Millisecond, Observer: metrics,
		})
		if err != nil {
			t.Fatal(err)
		}
		m.Update(ctx, gens)
		return m
	}
	backfilled := s.gen(t, byEmail, 1, p.Topic)
	backfilled.StartOffset = end // what the registry records once the backfill is done
	fresh := s.gen(t, byID, 1, p.Topic)
	legacy := s.gen(t, byID, 2, p.Topic)

	// The backfill writes every record and leaves the offset at the end; then Redis loses it all.
	if _, err := backfill.Replay(ctx, backfill.ReplayConfig{
		KafkaOpts: []kgo.Opt{kgo.SeedBrokers(s.kafka)}, Writer: projector.NewWriter(s.pub, s.led), BatchSize: 100,
	}, backfilled.Target, p.Topic, workflows.BackfillProgress{EndOffset: end}, nil); err != nil {
		t.Fatal(err)
	}
	if off, _, _ := s.led.Offset(ctx, byEmail.Name, 1); off != end {
		t.Fatalf("offset after the backfill = %d, want %d", off, end)
	}
	s.flushAll(t)

	// Generation 2 of by_id: an offset without an epoch (bookkeeping from before epochs).
	if err := s.rdb.Set(ctx, ledger.OffsetKey(byID.Name, 2), end, 0).Err(); err != nil {
		t.Fatal(err)
	}
	m := start(backfilled, fresh, legacy)
	defer m.Close()
	devstacktest.Eventually(t, 30*time.Second, func() bool {
		off, ok, err := s.led.Offset(ctx, byEmail.Name, 1)
		_, rebuilding, rerr := s.led.RebuildOf(ctx, byEmail.Name, 1)
		return err == nil && rerr == nil && ok && off == end && !rebuilding
	}, "by_email/g1 rebuilt to offset %d", end)
	s.waitOffset(t, byID, 1, end)
	if v := metricValue(t, metrics, "distcache_producer_generation_rebuilds_total",
		map[string]string{"projection": byEmail.Name, "generation": "1", "reason": rebuild.ReasonDataLoss}); v != 1 {
		t.Errorf("by_email/g1: rebuilds_total{reason=data_loss} = %v, want 1", v)
	}
	for _, gen := range []int64{1, 2} {
		if v := metricValue(t, metrics, "distcache_producer_generation_rebuilds_total",
			map[string]string{"projection": byID.Name, "generation": strconv.FormatInt(gen, 10)}); v > 0 {
			t.Errorf("by_id/g%d was rebuilt (%v): a first start and a generation from before epochs are not losses", gen, v)
		}
	}
	base, _ := s.led.VersionBase(ctx, byEmail.Name, 1)
	model := prodtest.NewModel(t, byEmail)
	model.Base = base
	for _, r := range recs {
		model.Apply(r.Offset, string(r.Key), r.Value)
	}
	got, err := prodtest.ReadGeneration(ctx, s.rdb, byEmail.Name, 1)
	if err != nil {
		t.Fatal(err)
	}
	if d := prodtest.Diff(got, model.Live()); d != "" {
		t.Errorf("by_email/g1 after a loss while stopped (the whole topic, not from offset %d):\n%s", end, d)
	}
	model = prodtest.NewModel(t, byID)
	for _, r := range recs {
		model.Apply(r.Offset, string(r.Key), r.Value)
	}
	if got, err = prodtest.ReadGeneration(ctx, s.rdb, byID.Name, 1); err != nil {
		t.Fatal(err)
	}
	if d := prodtest.Diff(got, model.Live()); d != "" {
		t.Errorf("by_id/g1 from a first start:\n%s", d)
	}
	devstacktest.Eventually(t, 10*time.Second, func() bool {
		pos, err := s.led.Position(ctx, byID.Name, 2)
		return err == nil && pos.OffsetKnown && pos.Offset == end && pos.Epoch != ""
	}, "by_id/g2 (offset without epoch) gets an epoch and keeps its offset")
}
