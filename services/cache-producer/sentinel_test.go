package main

import (
	"context"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/distcache/distcache/libs/distcache"
	"github.com/distcache/distcache/services/cache-producer/internal/ledger"
	"github.com/distcache/distcache/services/cache-producer/internal/prodtest"
	"github.com/distcache/distcache/tools/devstacktest"
	"github.com/distcache/distcache/workflows"
)

// TestProducerFollowsSentinelFailover (issue #15 §2) runs the service as a real process that
// finds its Redis through three sentinels (PRODUCER_REDIS_SENTINEL_*), under a steady write load
// on the topic, with an edge built with WithSentinel reading the projection. The primary is killed
// with SIGKILL; the sentinels promote the replica. The producer follows it: it writes the topic's
// new records to the promoted replica (what the old primary had not replicated yet is found
// missing there and rebuilt from the topic, as any loss), the edge receives changes written after
// the promotion, it never returned an older version of a key than one it had returned, and its
// reads never failed; at the end the generation on the new primary equals the topic's projection.
func TestProducerFollowsSentinelFailover(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	st := newStack(ctx, t)
	const master = "producer-failover"
	primary, replica, sentinels := devstacktest.RedisSentinels(t, master, 3)
	addrs := make([]string, len(sentinels))
	for i, s := range sentinels {
		addrs[i] = s.Addr
	}
	clients, err := distcache.RedisConfig{SentinelMaster: master, SentinelAddrs: addrs}.NewClients()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = clients.Close() })
	rdb := clients.Primary
	led := ledger.New(rdb, 0)
	pub, err := distcache.NewPublisher(rdb)
	if err != nil {
		t.Fatal(err)
	}
	def := takeoverModels[0]
	p := prodtest.NewProducer(t, st.kafka.Addr, "distcache", def.Model)
	zero := int64(0)
	if err := st.reg.CreateProjection(ctx, def); err != nil {
		t.Fatal(err)
	}
	gen, _, err := st.reg.AllocateGeneration(ctx, def, "wf-1")
	if err != nil {
		t.Fatal(err)
	}
	for _, state := range []string{workflows.StateTailing, workflows.StateLive} {
		if err := st.reg.SetState(ctx, def.Name, gen, state, &zero); err != nil {
			t.Fatal(err)
		}
	}
	if err := pub.Cutover(ctx, def.Name, gen); err != nil {
		t.Fatal(err)
	}
	httpAddr := freeAddr(t)
	startChild(t, []string{
		"PRODUCER_DATABASE_URL=" + st.dbURL, "PRODUCER_KAFKA_BROKERS=" + st.kafka.Addr, "PRODUCER_HTTP_ADDR=" + httpAddr,
		"PRODUCER_REDIS_SENTINEL_MASTER=" + master, "PRODUCER_REDIS_SENTINEL_ADDRS=" + strings.Join(addrs, ","),
		"PRODUCER_BATCH_SIZE=200", "PRODUCER_GROUP_SESSION_TIMEOUT=6s",
	})
	devstacktest.Eventually(t, 60*time.Second, func() bool { c, _ := get("http://" + httpAddr + "/readyz"); return c == 200 }, "/readyz answers 200")

	var (
		mu   sync.Mutex
		recs []*kgo.Record
		seq  int
	)
	stopLoad, loadDone, loadErr := make(chan struct{}), make(chan struct{}), make(chan error, 1)
	go func() { // not the test's goroutine: no t.Fatal here
		defer close(loadDone)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stopLoad:
				return
			case <-tick.C:
			}
			var b []*kgo.Record
			for range 5 {
				seq++
				id := strconv.Itoa(rand.IntN(200))
				b = append(b, p.Upsert(id, map[string]any{"id": id, "n": seq}))
			}
			if _, err := p.TryProduce(b...); err != nil {
				loadErr <- err
				return
			}
			mu.Lock()
			recs = append(recs, b...)
			mu.Unlock()
		}
	}()
	endNow := func() int64 {
		mu.Lock()
		defer mu.Unlock()
		if len(recs) == 0 {
			return 0
		}
		return recs[len(recs)-1].Offset + 1
	}
	waitPast := func(what string) time.Duration {
		t.Helper()
		t0, target := time.Now(), endNow()
		devstacktest.Eventually(t, 90*time.Second, func() bool {
			off, ok, err := led.Offset(ctx, def.Name, gen)
			return err == nil && ok && off >= target
		}, "%s: the generation passes offset %d", what, target)
		return time.Since(t0)
	}
	waitPast("before the failover")

	edge, err := distcache.New(ctx, distcache.WithSentinel(master, addrs...), distcache.WithProjections(def.Name),
		distcache.WithTailBlock(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer edge.Close(ctx)
	el := readEdge(ctx, edge, func() (string, string) { return def.Name, "u:" + strconv.Itoa(rand.IntN(200)) })

	killed := time.Now()
	if err := primary.Kill(); err != nil {
		t.Fatal(err)
	}
	devstacktest.Eventually(t, 60*time.Second, func() bool {
		a, err := sentinels[0].MasterAddr(ctx)
		return err == nil && a == replica.Addr
	}, "the sentinels promote the replica %s", replica.Addr)
	promoted := time.Now()
	took := waitPast("after the promotion")
	// A record produced now, and the time until the edge serves it.
	probe := p.Upsert("probe", map[string]any{"id": "probe", "n": -1})
	p.Produce(probe)
	mu.Lock()
	recs = append(recs, probe)
	mu.Unlock()
	devstacktest.Eventually(t, 60*time.Second, func() bool {
		e, err := edge.GetEntry(ctx, def.Name, "u:probe")
		return err == nil && e.Found
	}, "the edge receives a record produced after the promotion")
	t.Logf("primary killed; promoted after %v; the producer wrote the topic's end as of the promotion %v later; the edge served a record produced after it %v after the promotion",
		promoted.Sub(killed).Round(10*time.Millisecond), took.Round(10*time.Millisecond), time.Since(promoted).Round(10*time.Millisecond))

	close(stopLoad)
	<-loadDone
	select {
	case err := <-loadErr:
		t.Fatalf("produce: %v", err)
	default:
	}
	waitPast("at the end")
	devstacktest.Eventually(t, 60*time.Second, func() bool {
		_, rebuilding, err := led.RebuildOf(ctx, def.Name, gen)
		return err == nil && !rebuilding
	}, "no rebuild in progress")
	el.stop()
	base, err := led.VersionBase(ctx, def.Name, gen)
	if err != nil {
		t.Fatal(err)
	}
	model := prodtest.NewModel(t, def)
	model.Base = base
	mu.Lock()
	for _, r := range recs {
		model.Apply(r.Offset, string(r.Key), r.Value)
	}
	mu.Unlock()
	got, err := prodtest.ReadGeneration(ctx, rdb, def.Name, gen)
	if err != nil {
		t.Fatal(err)
	}
	if d := prodtest.Diff(got, model.Live()); d != "" {
		t.Errorf("the generation on the promoted replica differs from the topic's projection:\n%s", d)
	}
	el.check(t)
}
