package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/distcache/distcache/libs/distcache"
	"github.com/distcache/distcache/services/cache-producer/internal/backfill"
	"github.com/distcache/distcache/services/cache-producer/internal/fanout"
	"github.com/distcache/distcache/services/cache-producer/internal/ledger"
	"github.com/distcache/distcache/services/cache-producer/internal/prodtest"
	"github.com/distcache/distcache/services/cache-producer/internal/projector"
	"github.com/distcache/distcache/tools/devstacktest"
	"github.com/distcache/distcache/workflows"
)

// TestRedisDataLossRebuilt (issue #15 §2) runs the service as a real process on a live generation
// that was backfilled (the registry records its backfill end, as the build workflow leaves it),
// under a steady write load on the topic, with an edge client reading the projection, and makes
// Redis lose everything in three ways:
//
//   - restart_empty: the redis-server is killed and started again without persistence, empty;
//   - flushall: FLUSHALL while the producer runs;
//   - flushall_while_down: FLUSHALL while the producer is stopped, so that the producer that
//     starts again has no memory of the generation (only the registry says it was backfilled).
//
// Nobody acts: the producer notices that the generation's bookkeeping is gone, rebuilds it in
// place from the topic's start (reason data_loss, counted in
// distcache_producer_generation_rebuilds_total), and at the end every key of the generation equals
// the projection of the topic's latest record per key (a model computed from every record
// produced), with no key lost, and the change stream's versions never go back. The edge never
// reads a version older than one it read before. (The pointer, which the control-plane's
// reconciler restores in production, is restored by the test.)
//
// Before the producer knew a generation's epoch, restart_empty and flushall left only the records
// written after the loss (the writer created the offset again at the batch it was writing), and
// flushall_while_down re-initialised the offset at the registry's backfill end: every key written
// before it was lost.
func TestRedisDataLossRebuilt(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		loss func(t *testing.T, ctx context.Context, st stack, restartProducer func(lose func()))
	}{
		{"restart_empty", func(t *testing.T, ctx context.Context, st stack, _ func(func())) {
			if err := st.redis.Restart(ctx); err != nil {
				t.Fatalf("restart redis: %v", err)
			}
		}},
		{"flushall", func(t *testing.T, ctx context.Context, st stack, _ func(func())) {
			if err := st.rdb.FlushAll(ctx).Err(); err != nil {
				t.Fatal(err)
			}
		}},
		{"flushall_while_down", func(t *testing.T, ctx context.Context, st stack, restartProducer func(func())) {
			restartProducer(func() {
				if err := st.rdb.FlushAll(ctx).Err(); err != nil {
					t.Fatal(err)
				}
			})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			testRedisDataLoss(t, tc.loss)
		})
	}
}

func testRedisDataLoss(t *testing.T, loss func(t *testing.T, ctx context.Context, st stack, restartProducer func(lose func()))) {
	ctx := context.Background()
	st := newStack(ctx, t)
	reg, rdb := st.reg, st.rdb
	proj := usersByEmail.Name
	led := ledger.New(rdb, 0)
	pub, err := distcache.NewPublisher(rdb)
	if err != nil {
		t.Fatal(err)
	}
	p := prodtest.NewProducer(t, st.kafka.Addr, "distcache", "users")

	// Records of 1,000 users, some deleted, some filtered out, some re-keyed; the load after the
	// backfill changes the first 200 only, so the others are found only in what was written
	// before the loss.
	var (
		mu  sync.Mutex
		all []*kgo.Record
		seq int
	)
	build := func(n, users int) []*kgo.Record {
		recs := make([]*kgo.Record, 0, n)
		for range n {
			seq++
			id := strconv.Itoa(rand.IntN(users))
			switch {
			case seq%23 == 0:
				recs = append(recs, p.Tombstone(id))
			default:
				status := []string{"active", "trial", "gone", "active"}[seq%4]
				recs = append(recs, p.Upsert(id, map[string]any{"id": id, "email": fmt.Sprintf("U%s-%d@X.io", id, seq%3), "status": status}))
			}
		}
		return recs
	}
	first := build(5000, 1000)
	p.Produce(first...)
	all = append(all, first...)
	end := int64(len(first))

	// The build workflow's part: a generation backfilled to the topic's end, then tailing and live.
	if err := reg.CreateProjection(ctx, usersByEmail); err != nil {
		t.Fatal(err)
	}
	gen, _, err := reg.AllocateGeneration(ctx, usersByEmail, "wf-1")
	if err != nil {
		t.Fatal(err)
	}
	tg, err := fanout.CompileTarget(proj, gen, usersByEmail)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := backfill.Replay(ctx, backfill.ReplayConfig{
		KafkaOpts: []kgo.Opt{kgo.SeedBrokers(st.kafka.Addr)}, Writer: projector.NewWriter(pub, led), BatchSize: 500,
	}, tg, p.Topic, workflows.BackfillProgress{EndOffset: end}, nil); err != nil {
		t.Fatal(err)
	}
	for _, state := range []string{workflows.StateTailing, workflows.StateLive} {
		if err := reg.SetState(ctx, proj, gen, state, &end); err != nil {
			t.Fatal(err)
		}
	}
	if err := pub.Cutover(ctx, proj, gen); err != nil {
		t.Fatal(err)
	}

	httpAddr := freeAddr(t)
	env := []string{
		"PRODUCER_DATABASE_URL=" + st.dbURL, "PRODUCER_REDIS_ADDRS=" + st.redis.Addr, "PRODUCER_KAFKA_BROKERS=" + st.kafka.Addr,
		"PRODUCER_HTTP_ADDR=" + httpAddr, "PRODUCER_BATCH_SIZE=200",
	}
	svc := startChild(t, env)
	base := "http://" + httpAddr
	devstacktest.Eventually(t, 30*time.Second, func() bool { c, _ := get(base + "/readyz"); return c == 200 }, "/readyz answers 200")

	// A steady write load: 20 records every 10 ms, until stopped.
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
			mu.Lock()
			recs := build(20, 200)
			mu.Unlock()
			if _, err := p.TryProduce(recs...); err != nil {
				loadErr <- err
				return
			}
			mu.Lock()
			all = append(all, recs...)
			mu.Unlock()
		}
	}()

	// What the control-plane's pointer reconciler does, every 200 ms.
	stopPointer, pointerDone := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(pointerDone)
		for {
			select {
			case <-stopPointer:
				return
			case <-time.After(200 * time.Millisecond):
			}
			if _, err := pub.CurrentGeneration(ctx, proj); errors.Is(err, distcache.ErrNoGeneration) {
				_ = pub.Cutover(ctx, proj, gen)
			}
		}
	}()

	// An edge follows the projection. It holds the keys of users 200–999 that exist after the
	// backfill (the load never changes them) and reads them the whole time: every read answers
	// the value, at a version never lower than one returned before, through the loss. Another
	// reader reads random keys: their versions never go back either.
	edge, err := distcache.New(ctx, distcache.WithRedis(rdb), distcache.WithProjections(proj),
		distcache.WithTailBlock(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer edge.Close(ctx)
	initial := prodtest.NewModel(t, usersByEmail)
	for _, rec := range first {
		initial.Apply(rec.Offset, string(rec.Key), rec.Value)
	}
	var held []string
	for k := range initial.Live() {
		if id, _ := strconv.Atoi(strings.TrimPrefix(strings.Split(k, "-")[0], "u")); id >= 200 {
			held = append(held, k)
		}
	}
	for _, k := range held {
		if _, err := edge.Get(ctx, proj, k); err != nil {
			t.Fatalf("edge Get %s before the loss: %v", k, err)
		}
	}
	type edgeLog struct {
		mu        sync.Mutex
		seen      map[string]int64
		reads     int
		failures  []string // held keys: any error or not-found
		backwards []string
		errs      map[string]int // random keys: errors by kind
		lastErr   time.Time
	}
	el := &edgeLog{seen: map[string]int64{}, errs: map[string]int{}}
	stopEdge := make(chan struct{})
	var edgeWG sync.WaitGroup
	read := func(key string, mustHold bool) {
		e, err := edge.GetEntry(ctx, proj, key)
		el.mu.Lock()
		defer el.mu.Unlock()
		el.reads++
		switch {
		case err == nil && e.Found:
			if prev := el.seen[key]; e.Version < prev {
				el.backwards = append(el.backwards, fmt.Sprintf("%s: %d after %d", key, e.Version, prev))
			}
			el.seen[key] = max(el.seen[key], e.Version)
		case mustHold:
			el.failures = append(el.failures, fmt.Sprintf("%s: %v (found %v)", key, err, e.Found))
		case err != nil && !errors.Is(err, distcache.ErrNotFound):
			kind := "other"
			if errors.Is(err, distcache.ErrRedisDataLost) {
				kind = "ErrRedisDataLost"
			}
			el.errs[kind]++
			el.lastErr = time.Now()
		}
	}
	edgeWG.Add(2)
	go func() {
		defer edgeWG.Done()
		for i := 0; ; i++ {
			select {
			case <-stopEdge:
				return
			default:
			}
			read(held[i%len(held)], true)
			time.Sleep(200 * time.Microsecond)
		}
	}()
	go func() {
		defer edgeWG.Done()
		for {
			select {
			case <-stopEdge:
				return
			default:
			}
			read(fmt.Sprintf("u%d-%d@x.io", rand.IntN(1000), rand.IntN(3)), false)
			time.Sleep(time.Millisecond)
		}
	}()

	waitPast := func(off int64) {
		t.Helper()
		devstacktest.Eventually(t, 30*time.Second, func() bool {
			got, ok, err := led.Offset(ctx, proj, gen)
			return err == nil && ok && got > off
		}, "the generation's offset passes %d", off)
	}
	waitPast(end + 200)

	restartProducer := func(lose func()) {
		if err := svc.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		_ = svc.cmd.Wait()
		lose()
		svc = startChild(t, env)
	}
	// The producer reports its rebuilds in the registry (GetStatus reads it), each second: a short
	// rebuild may end before a report, so what the registry showed is logged, not required.
	stopReg, regDone := make(chan struct{}), make(chan struct{})
	var regSeen string
	go func() {
		defer close(regDone)
		for {
			select {
			case <-stopReg:
				return
			case <-time.After(50 * time.Millisecond):
			}
			if rs, err := reg.Rebuilds(ctx, proj); err == nil && regSeen == "" {
				if r, ok := rs[gen]; ok {
					regSeen = r.Reason + ": " + r.Detail
				}
			}
		}
	}()
	loss(t, ctx, st, restartProducer)
	lostAt := time.Now()

	// The load goes on for a while, then stops; everything produced must arrive.
	time.Sleep(2 * time.Second) // the load runs meanwhile: not waiting for a condition
	close(stopLoad)
	<-loadDone
	select {
	case err := <-loadErr:
		t.Fatalf("produce: %v", err)
	default:
	}
	mu.Lock()
	last := all[len(all)-1].Offset + 1
	records := cloneRecords(all)
	mu.Unlock()
	devstacktest.Eventually(t, 60*time.Second, func() bool {
		off, ok, err := led.Offset(ctx, proj, gen)
		_, rebuilding, rerr := led.RebuildOf(ctx, proj, gen)
		return err == nil && rerr == nil && ok && off == last && !rebuilding
	}, "the generation is rebuilt and reaches offset %d", last)
	t.Logf("rebuilt %d records %v after the loss", last, time.Since(lostAt).Round(time.Millisecond))
	devstacktest.Eventually(t, 10*time.Second, func() bool {
		rs, err := reg.Rebuilds(ctx, proj)
		return err == nil && len(rs) == 0
	}, "the registry shows no rebuild once it is done")
	close(stopReg)
	<-regDone
	t.Logf("the registry showed the rebuild: %q", regSeen)
	close(stopPointer)
	<-pointerDone
	close(stopEdge)
	edgeWG.Wait()

	vbase, err := led.VersionBase(ctx, proj, gen)
	if err != nil {
		t.Fatal(err)
	}
	model := prodtest.NewModel(t, usersByEmail)
	model.Base = vbase
	for _, rec := range records {
		model.Apply(rec.Offset, string(rec.Key), rec.Value)
	}
	got, err := prodtest.ReadGeneration(ctx, rdb, proj, gen)
	if err != nil {
		t.Fatal(err)
	}
	if d := prodtest.Diff(got, model.Live()); d != "" {
		t.Errorf("generation %d after the loss differs from the projection of the topic (%d keys held, %d expected):\n%s",
			gen, len(got), len(model.Live()), d)
	}
	if err := prodtest.StreamVersionsIncrease(ctx, rdb, proj, gen); err != nil {
		t.Errorf("change stream: %v", err)
	}
	want := fmt.Sprintf(`distcache_producer_generation_rebuilds_total{generation="%d",projection="%s",reason="data_loss"} 1`, gen, proj)
	if _, metrics := get(base + "/metrics"); !strings.Contains(metrics, want) {
		t.Errorf("/metrics lacks %s", want)
	}
	if _, status := get(base + "/status"); strings.Contains(status, `"rebuild"`) {
		t.Errorf("/status still shows a rebuild: %s", status)
	}
	el.mu.Lock()
	defer el.mu.Unlock()
	t.Logf("edge: %d reads; %d held keys read throughout; random keys not held: errors %v, the last %v after the loss",
		el.reads, len(held), el.errs, el.lastErr.Sub(lostAt).Round(time.Millisecond))
	if len(el.failures) > 0 {
		t.Errorf("the edge failed %d reads of keys it held, e.g. %v", len(el.failures), el.failures[:min(len(el.failures), 5)])
	}
	if len(el.backwards) > 0 {
		t.Errorf("the edge returned older versions than before: %v", el.backwards[:min(len(el.backwards), 5)])
	}
}

func cloneRecords(recs []*kgo.Record) []*kgo.Record { return append([]*kgo.Record(nil), recs...) }
