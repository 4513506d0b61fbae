package main

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/worker"

	"github.com/distcache/distcache/libs/distcache"
	"github.com/distcache/distcache/services/cache-producer/internal/prodtest"
	"github.com/distcache/distcache/tools/devstacktest"
	"github.com/distcache/distcache/workflows"
)

// TestBuildWorkflowEndToEnd runs workflows.BuildWorkflow on a real Temporal
// server with the control-plane's activities (registry, pointer) in this test
// and the cache-producer's activities served by the service process: the
// backfill replays the topic into generation 1, the registry moves it to
// tailing, the service's live consumer picks it up, CaughtUp reports it
// caught up, the pointer is cut over, and an edge-side read of the live
// generation equals the model. A record produced after the build is then
// applied by the live consumer.
func TestBuildWorkflowEndToEnd(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	tmp := devstacktest.Temporal(t)
	st := newStack(ctx, t)
	dbURL, reg, r, k, rdb := st.dbURL, st.reg, st.redis, st.kafka, st.rdb
	pub, err := distcache.NewPublisher(rdb)
	if err != nil {
		t.Fatal(err)
	}
	p := prodtest.NewProducer(t, k.Addr, "distcache", "users")
	var all []*kgo.Record
	for i := range 3000 {
		id := strconv.Itoa(i % 1000)
		all = append(all, p.Upsert(id, map[string]any{"id": id, "email": "U" + id + "@X.io", "status": []string{"active", "trial", "gone"}[i%3]}))
	}
	p.Produce(all...)

	svc := startChild(t, []string{
		"PRODUCER_DATABASE_URL=" + dbURL, "PRODUCER_REDIS_ADDRS=" + r.Addr, "PRODUCER_KAFKA_BROKERS=" + k.Addr,
		"PRODUCER_HTTP_ADDR=" + freeAddr(t), "PRODUCER_TEMPORAL_HOSTPORT=" + tmp.HostPort,
		"PRODUCER_TEMPORAL_NAMESPACE=" + tmp.Namespace, "PRODUCER_BACKFILL_BATCH_SIZE=500",
	})
	_ = svc

	tc, err := client.Dial(client.Options{HostPort: tmp.HostPort, Namespace: tmp.Namespace})
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	w := worker.New(tc, workflows.ControlPlaneTaskQueue, worker.Options{})
	workflows.Register(w)
	workflows.RegisterActivities(w, &workflows.Activities{
		Registry: reg, Pointer: pub, Temporal: tc,
	})
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	defer w.Stop()

	if err := reg.CreateProjection(ctx, usersByEmail); err != nil {
		t.Fatal(err)
	}
	run, err := tc.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
		ID: workflows.BuildWorkflowID(usersByEmail.Name) + "-" + strconv.FormatInt(time.Now().UnixNano(), 10), TaskQueue: workflows.ControlPlaneTaskQueue,
	}, workflows.WorkflowBuild, workflows.BuildParams{
		Definition: usersByEmail, Topic: p.Topic, Reason: workflows.ReasonCreate, ProgressInterval: 200 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 90*time.Second)
	defer cancel()
	var res workflows.BuildResult
	if err := run.Get(wctx, &res); err != nil {
		t.Fatalf("build workflow: %v", err)
	}
	if res.Generation != 1 || res.Backfill.EndOffset != int64(len(all)) || res.Backfill.RecordsDone != int64(len(all)) {
		t.Errorf("build result = %+v, want generation 1 backfilled through offset %d", res, len(all))
	}
	if cur, err := pub.CurrentGeneration(ctx, usersByEmail.Name); err != nil || cur != 1 {
		t.Fatalf("pointer = %d, %v; want 1", cur, err)
	}
	g, err := reg.GetGeneration(ctx, usersByEmail.Name, 1)
	if err != nil || g.State != workflows.StateLive {
		t.Fatalf("generation 1 = %+v, %v; want live", g, err)
	}

	// After the cutover the live consumer keeps the generation current.
	all = append(all, p.Upsert("5", map[string]any{"id": "5", "email": "new5@x.io", "status": "active"}))
	p.Produce(all[len(all)-1])
	model := prodtest.NewModel(t, usersByEmail)
	for _, rec := range all {
		model.Apply(rec.Offset, string(rec.Key), rec.Value)
	}
	devstacktest.Eventually(t, 30*time.Second, func() bool {
		got, err := prodtest.ReadGeneration(ctx, rdb, usersByEmail.Name, 1)
		return err == nil && prodtest.Diff(got, model.Live()) == ""
	}, "live generation equals the model")
	if n, _ := rdb.Exists(ctx, distcache.ValueKey(usersByEmail.Name, 1, "u5@x.io")).Result(); n != 1 {
		t.Error("the re-keyed user's old key is gone entirely (want a tombstone)")
	}
}
