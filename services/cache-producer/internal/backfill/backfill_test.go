package backfill_test

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/testsuite"
	"go.temporal.io/sdk/worker"
	"go.temporal.io/sdk/workflow"

	"github.com/distcache/distcache/libs/distcache"
	"github.com/distcache/distcache/libs/projection"
	"github.com/distcache/distcache/services/cache-producer/internal/backfill"
	"github.com/distcache/distcache/services/cache-producer/internal/fanout"
	"github.com/distcache/distcache/services/cache-producer/internal/ledger"
	"github.com/distcache/distcache/services/cache-producer/internal/prodtest"
	"github.com/distcache/distcache/services/cache-producer/internal/projector"
	"github.com/distcache/distcache/tools/devstacktest"
	"github.com/distcache/distcache/workflows"
)

func TestMain(m *testing.M) { devstacktest.Main(m) }

var byEmail = projection.Definition{
	Name: "users_by_email", Model: "users", KeyTemplate: "{email}", Fields: []string{"id", "email"},
}

// backfillWorkflow runs ActivityBackfill as BuildWorkflow does, with a short
// heartbeat timeout so a dead worker is noticed quickly.
func backfillWorkflow(ctx workflow.Context, p workflows.BackfillParams) (workflows.BackfillProgress, error) {
	ctx = workflow.WithActivityOptions(ctx, workflow.ActivityOptions{
		ActivityID:          "backfill",
		TaskQueue:           workflows.CacheProducerTaskQueue,
		StartToCloseTimeout: time.Minute,
		HeartbeatTimeout:    3 * time.Second,
		RetryPolicy: &temporal.RetryPolicy{InitialInterval: 100 * time.Millisecond, MaximumInterval: time.Second,
			NonRetryableErrorTypes: []string{workflows.ErrTypeInvalidDefinition}},
	})
	var out workflows.BackfillProgress
	err := workflow.ExecuteActivity(ctx, workflows.ActivityBackfill, p).Get(ctx, &out)
	return out, err
}

type counter struct{ records atomic.Int64 }

func (c *counter) BackfillBatch(_ projector.Target, st projector.Stats, _ time.Duration) {
	c.records.Add(int64(st.Records))
}

// TestBackfillResumesAfterWorkerCrash runs ActivityBackfill on a real
// Temporal server. The first worker dies in the middle of the replay (its
// activity hangs, it is stopped); the activity is retried on a second worker,
// which resumes from the offset of the last heartbeat (it writes fewer
// records than the topic holds), keeps the end offset fixed at the first
// start (records produced meanwhile are left to the live consumer), and leaves
// the generation equal to the model with its offset stored at the end offset.
// The second part checks ActivityCaughtUp against that generation.
func TestBackfillResumesAfterWorkerCrash(t *testing.T) {
	ctx := context.Background()
	tmp := devstacktest.Temporal(t)
	r := devstacktest.Redis(t)
	k := devstacktest.Kafka(t)
	rdb := redis.NewClient(&redis.Options{Addr: r.Addr})
	defer rdb.Close()
	pub, err := distcache.NewPublisher(rdb)
	if err != nil {
		t.Fatal(err)
	}
	led := ledger.New(rdb, 0)
	p := prodtest.NewProducer(t, k.Addr, "distcache", "users")
	var recs []*kgo.Record
	for i := range 20000 {
		id := strconv.Itoa(i % 5000)
		recs = append(recs, p.Upsert(id, map[string]any{"id": id, "email": "u" + id + "-" + strconv.Itoa(i%3) + "@x.io"}))
	}
	p.Produce(recs...)
	end := int64(len(recs))

	tc, err := client.Dial(client.Options{HostPort: tmp.HostPort, Namespace: tmp.Namespace})
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	const wfQueue = "producer-backfill-test"
	ww := worker.New(tc, wfQueue, worker.Options{})
	ww.RegisterWorkflow(backfillWorkflow)
	if err := ww.Start(); err != nil {
		t.Fatal(err)
	}
	defer ww.Stop()

	kopts := []kgo.Opt{kgo.SeedBrokers(k.Addr)}
	hung := make(chan struct{})
	release := make(chan struct{})
	var batches atomic.Int32
	var once sync.Once
	w1Writer := projector.NewWriter(pub, led, projector.WithFault(func(ctx context.Context, _ projector.Target, s projector.Step) error {
		if s == projector.AfterValues && batches.Add(1) == 3 {
			once.Do(func() { close(hung) })
			<-release
			return errors.New("worker died")
		}
		return nil
	}))
	defer close(release)
	w1 := worker.New(tc, workflows.CacheProducerTaskQueue, worker.Options{WorkerStopTimeout: time.Millisecond})
	backfill.Register(w1, &backfill.Activities{KafkaOpts: kopts, Writer: w1Writer, BatchSize: 1000, HeartbeatEvery: time.Millisecond})
	if err := w1.Start(); err != nil {
		t.Fatal(err)
	}

	tg, _ := fanout.CompileTarget(byEmail.Name, 1, byEmail)
	run, err := tc.ExecuteWorkflow(ctx, client.StartWorkflowOptions{ID: "backfill-" + strconv.FormatInt(time.Now().UnixNano(), 10), TaskQueue: wfQueue},
		backfillWorkflow, workflows.BackfillParams{Projection: byEmail.Name, Generation: 1, Topic: p.Topic, Definition: byEmail})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-hung:
	case <-time.After(60 * time.Second):
		t.Fatal("the first worker never reached its third batch")
	}
	// Wait until the server holds a heartbeat past the start, then kill the
	// worker (its activity stays hung, as in a crashed process).
	var beat workflows.BackfillProgress
	devstacktest.Eventually(t, 20*time.Second, func() bool {
		desc, err := tc.DescribeWorkflow(ctx, run.GetID(), run.GetRunID())
		if err != nil {
			return false
		}
		for _, pa := range desc.RawResponse.GetPendingActivities() {
			if pa.GetHeartbeatDetails() == nil {
				continue
			}
			if err := converter.GetDefaultDataConverter().FromPayloads(pa.GetHeartbeatDetails(), &beat); err == nil && beat.Offset > 0 {
				return true
			}
		}
		return false
	}, "a heartbeat with progress reaches the server")
	w1.Stop()
	// Records produced after the backfill started are the live consumer's.
	p.Produce(p.Upsert("late", map[string]any{"id": "late", "email": "late@x.io"}))

	c := &counter{}
	w2 := worker.New(tc, workflows.CacheProducerTaskQueue, worker.Options{})
	acts := &backfill.Activities{KafkaOpts: kopts, Writer: projector.NewWriter(pub, led), BatchSize: 1000, Observer: c}
	backfill.Register(w2, acts)
	if err := w2.Start(); err != nil {
		t.Fatal(err)
	}
	defer w2.Stop()

	var out workflows.BackfillProgress
	if err := run.Get(ctx, &out); err != nil {
		t.Fatalf("backfill workflow: %v", err)
	}
	t.Logf("heartbeat at %d; second worker wrote %d records; result %+v", beat.Offset, c.records.Load(), out)
	if out.Offset != end || out.EndOffset != end {
		t.Errorf("result offsets = %d/%d, want %d/%d", out.Offset, out.EndOffset, end, end)
	}
	if got := c.records.Load(); got > end-beat.Offset || got == 0 {
		t.Errorf("second worker wrote %d records, want at most %d (resumed at heartbeat offset %d)", got, end-beat.Offset, beat.Offset)
	}
	if off, _, _ := led.Offset(ctx, byEmail.Name, 1); off != end {
		t.Errorf("stored offset = %d, want %d", off, end)
	}
	model := prodtest.NewModel(t, byEmail)
	for _, rec := range recs {
		model.Apply(rec.Offset, string(rec.Key), rec.Value)
	}
	got, err := prodtest.ReadGeneration(ctx, rdb, byEmail.Name, 1)
	if err != nil {
		t.Fatal(err)
	}
	if d := prodtest.Diff(got, model.Live()); d != "" {
		t.Errorf("generation differs from the model:\n%s", d)
	}

	// CaughtUp: one record past the backfill's end and no live consumer yet.
	var ts testsuite.WorkflowTestSuite
	env := ts.NewTestActivityEnvironment()
	acts.CaughtUpWait = 200 * time.Millisecond
	env.RegisterActivityWithOptions(acts.CaughtUp, activityOpts(workflows.ActivityCaughtUp))
	params := workflows.CaughtUpParams{Projection: byEmail.Name, Generation: 1, Topic: p.Topic, MaxLag: 0}
	_, err = env.ExecuteActivity(workflows.ActivityCaughtUp, params)
	var appErr *temporal.ApplicationError
	if !errors.As(err, &appErr) || appErr.Type() != workflows.ErrTypeNotCaughtUp || appErr.NonRetryable() {
		t.Fatalf("CaughtUp before the live consumer = %v, want a retryable %s", err, workflows.ErrTypeNotCaughtUp)
	}
	params.MaxLag = 1
	if _, err := env.ExecuteActivity(workflows.ActivityCaughtUp, params); err != nil {
		t.Errorf("CaughtUp with max lag 1 = %v, want caught up", err)
	}

	// The live consumer takes over from the stored offset.
	m, err := fanout.NewManager(fanout.Config{KafkaOpts: kopts, Writer: projector.NewWriter(pub, led)})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	m.Update(ctx, []fanout.Generation{{Target: tg, Topic: p.Topic, State: workflows.StateTailing, StartOffset: end}})
	params.MaxLag = 0
	acts.CaughtUpWait = 20 * time.Second
	val, err := env.ExecuteActivity(workflows.ActivityCaughtUp, params)
	if err != nil {
		t.Fatalf("CaughtUp with the live consumer = %v", err)
	}
	var cu workflows.CaughtUpResult
	if err := val.Get(&cu); err != nil {
		t.Fatal(err)
	}
	if cu.Lag != 0 || cu.Offset != end+1 || cu.HighWatermark != end+1 {
		t.Errorf("CaughtUp = %+v, want offset = high watermark = %d, lag 0", cu, end+1)
	}
	if n, _ := rdb.Exists(ctx, distcache.ValueKey(byEmail.Name, 1, "late@x.io")).Result(); n != 1 {
		t.Error("the live consumer did not write the record produced after the backfill's end")
	}
}

func activityOpts(name string) activity.RegisterOptions { return activity.RegisterOptions{Name: name} }

// TestBackfillRejectsInvalidDefinition checks that a definition that does not
// compile is a non-retryable InvalidDefinition error.
func TestBackfillRejectsInvalidDefinition(t *testing.T) {
	t.Parallel()
	var ts testsuite.WorkflowTestSuite
	env := ts.NewTestActivityEnvironment()
	acts := &backfill.Activities{}
	env.RegisterActivityWithOptions(acts.Backfill, activityOpts(workflows.ActivityBackfill))
	bad := byEmail
	bad.KeyTemplate = "{unclosed"
	_, err := env.ExecuteActivity(workflows.ActivityBackfill, workflows.BackfillParams{Projection: bad.Name, Generation: 1, Topic: "t", Definition: bad})
	var appErr *temporal.ApplicationError
	if !errors.As(err, &appErr) || appErr.Type() != workflows.ErrTypeInvalidDefinition || !appErr.NonRetryable() {
		t.Fatalf("err = %v, want a non-retryable %s", err, workflows.ErrTypeInvalidDefinition)
	}
}
