package backfill_test

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
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
	"github.com/distcache/distcache/migrations"
	"github.com/distcache/distcache/services/cache-producer/internal/backfill"
	"github.com/distcache/distcache/services/cache-producer/internal/fanout"
	"github.com/distcache/distcache/services/cache-producer/internal/ledger"
	"github.com/distcache/distcache/services/cache-producer/internal/prodtest"
	"github.com/distcache/distcache/services/cache-producer/internal/projector"
	"github.com/distcache/distcache/tools/devstacktest"
	"github.com/distcache/distcache/workflows"
	"github.com/distcache/distcache/workflows/registry"
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
	reg := registered(t, byEmail, workflows.StateBackfilling)
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
	backfill.Register(w1, &backfill.Activities{KafkaOpts: kopts, Writer: w1Writer, BatchSize: 1000, HeartbeatEvery: time.Millisecond, Registry: reg})
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
	acts := &backfill.Activities{KafkaOpts: kopts, Writer: projector.NewWriter(pub, led), BatchSize: 1000, Observer: c, Registry: reg}
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
	end64 := end
	if err := reg.SetState(ctx, byEmail.Name, 1, workflows.StateTailing, &end64); err != nil {
		t.Fatal(err)
	}
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

// registered returns a registry on a database of its own in which def has generation 1, in
// state.
func registered(t *testing.T, def projection.Definition, state string) *registry.Store {
	t.Helper()
	ctx := context.Background()
	dbURL := devstacktest.Database(t)
	if err := migrations.Up(ctx, dbURL, migrations.Control); err != nil {
		t.Fatal(err)
	}
	pool, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	reg := registry.New(pool)
	if err := reg.CreateProjection(ctx, def); err != nil {
		t.Fatal(err)
	}
	gen, _, err := reg.AllocateGeneration(ctx, def, "wf-"+def.Name)
	if err != nil || gen != 1 {
		t.Fatalf("allocate: %d, %v", gen, err)
	}
	if state != workflows.StateAllocated {
		if err := reg.SetState(ctx, def.Name, 1, state, nil); err != nil {
			t.Fatal(err)
		}
	}
	return reg
}

// TestActivitiesCheckTheRegistry: Backfill and CaughtUp trust no parameter they can check. With
// the real registry (PostgreSQL), each refuses with a non-retryable error of the right type that
// names what does not match: a generation or projection the registry does not list, a
// generation in another state, a topic that is not the registry model's under the producer's
// prefix, a definition (key template, fields, filter, model, name) that is not the one recorded;
// and a worker without a registry refuses everything. The broker is unreachable and there is no
// writer: a call that got past the check would fail otherwise (retryably).
func TestActivitiesCheckTheRegistry(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	reg := registered(t, byEmail, workflows.StateBackfilling)
	orgs := projection.Definition{Name: "org_by_slug", Model: "orgs", KeyTemplate: "{slug}", Fields: []string{"slug"}}
	if err := reg.CreateProjection(ctx, orgs); err != nil {
		t.Fatal(err)
	}
	if _, _, err := reg.AllocateGeneration(ctx, orgs, "wf-orgs"); err != nil { // stays allocated
		t.Fatal(err)
	}
	unreachable := []kgo.Opt{kgo.SeedBrokers("127.0.0.1:1"), kgo.DialTimeout(time.Second), kgo.RequestRetries(1), kgo.RetryTimeout(2 * time.Second)}
	acts := &backfill.Activities{KafkaOpts: unreachable, Registry: reg, TopicPrefix: "distcache", CaughtUpWait: time.Millisecond}
	var ts testsuite.WorkflowTestSuite
	env := ts.NewTestActivityEnvironment()
	env.RegisterActivityWithOptions(acts.Backfill, activityOpts(workflows.ActivityBackfill))
	env.RegisterActivityWithOptions(acts.CaughtUp, activityOpts(workflows.ActivityCaughtUp))
	noRegistry := ts.NewTestActivityEnvironment()
	bare := &backfill.Activities{KafkaOpts: acts.KafkaOpts}
	noRegistry.RegisterActivityWithOptions(bare.Backfill, activityOpts(workflows.ActivityBackfill))

	with := func(f func(*projection.Definition)) projection.Definition {
		d := byEmail
		d.Fields = slices.Clone(byEmail.Fields)
		f(&d)
		return d
	}
	good := workflows.BackfillParams{Projection: byEmail.Name, Generation: 1, Topic: "distcache.users", Definition: byEmail}
	tests := []struct {
		name     string
		env      *testsuite.TestActivityEnvironment
		activity string
		params   any
		wantType string
		wantText string
	}{
		{"generation not listed", env, workflows.ActivityBackfill,
			workflows.BackfillParams{Projection: byEmail.Name, Generation: 2, Topic: good.Topic, Definition: byEmail},
			workflows.ErrTypeNotFound, "users_by_email/g2: the registry lists no such generation"},
		{"projection not listed", env, workflows.ActivityBackfill,
			workflows.BackfillParams{Projection: "ghost", Generation: 1, Topic: good.Topic, Definition: with(func(d *projection.Definition) { d.Name = "ghost" })},
			workflows.ErrTypeNotFound, "ghost/g1"},
		{"generation not backfilling", env, workflows.ActivityBackfill,
			workflows.BackfillParams{Projection: orgs.Name, Generation: 1, Topic: "distcache.orgs", Definition: orgs},
			workflows.ErrTypePrecondition, "in state allocated, not backfilling"},
		{"another model's topic", env, workflows.ActivityBackfill,
			workflows.BackfillParams{Projection: byEmail.Name, Generation: 1, Topic: "distcache.orgs", Definition: byEmail},
			workflows.ErrTypeInvalidDefinition, `topic "distcache.orgs" is not the registry's "distcache.users"`},
		{"another prefix", env, workflows.ActivityBackfill,
			workflows.BackfillParams{Projection: byEmail.Name, Generation: 1, Topic: "other.users", Definition: byEmail},
			workflows.ErrTypeInvalidDefinition, `topic "other.users" is not the registry's "distcache.users"`},
		{"another key template", env, workflows.ActivityBackfill,
			workflows.BackfillParams{Projection: byEmail.Name, Generation: 1, Topic: good.Topic, Definition: with(func(d *projection.Definition) { d.KeyTemplate = "{id}" })},
			workflows.ErrTypeInvalidDefinition, `key_template "{id}", the registry's "{email}"`},
		{"more fields", env, workflows.ActivityBackfill,
			workflows.BackfillParams{Projection: byEmail.Name, Generation: 1, Topic: good.Topic, Definition: with(func(d *projection.Definition) { d.Fields = append(d.Fields, "password_hash") })},
			workflows.ErrTypeInvalidDefinition, `fields ["id" "email" "password_hash"], the registry's ["id" "email"]`},
		{"a filter added", env, workflows.ActivityBackfill,
			workflows.BackfillParams{Projection: byEmail.Name, Generation: 1, Topic: good.Topic, Definition: with(func(d *projection.Definition) {
				d.Filter = &projection.Filter{Field: "id", Op: projection.OpEq, Values: []string{"1"}}
			})},
			workflows.ErrTypeInvalidDefinition, `filter id eq ["1"], the registry's none`},
		{"another model, same topic", env, workflows.ActivityBackfill,
			workflows.BackfillParams{Projection: byEmail.Name, Generation: 1, Topic: good.Topic, Definition: with(func(d *projection.Definition) { d.Model = "orgs" })},
			workflows.ErrTypeInvalidDefinition, `model "orgs", the registry's "users"`},
		{"another projection's definition", env, workflows.ActivityBackfill,
			workflows.BackfillParams{Projection: byEmail.Name, Generation: 1, Topic: good.Topic, Definition: with(func(d *projection.Definition) { d.Name = "org_by_slug" })},
			workflows.ErrTypeInvalidDefinition, `name "org_by_slug", the registry's "users_by_email"`},
		{"no registry", noRegistry, workflows.ActivityBackfill, good,
			workflows.ErrTypePrecondition, "no registry"},
		{"caught up: generation not tailing", env, workflows.ActivityCaughtUp,
			workflows.CaughtUpParams{Projection: byEmail.Name, Generation: 1, Topic: good.Topic},
			workflows.ErrTypePrecondition, "in state backfilling, not tailing"},
		{"caught up: generation not listed", env, workflows.ActivityCaughtUp,
			workflows.CaughtUpParams{Projection: byEmail.Name, Generation: 9, Topic: good.Topic},
			workflows.ErrTypeNotFound, "users_by_email/g9"},
	}
	for _, tt := range tests {
		_, err := tt.env.ExecuteActivity(tt.activity, tt.params)
		var appErr *temporal.ApplicationError
		if !errors.As(err, &appErr) || appErr.Type() != tt.wantType || !appErr.NonRetryable() || !strings.Contains(err.Error(), tt.wantText) {
			t.Errorf("%s: %v, want a non-retryable %s containing %q", tt.name, err, tt.wantType, tt.wantText)
		}
	}

	// CaughtUp of a tailing generation with another model's topic.
	if err := reg.SetState(ctx, byEmail.Name, 1, workflows.StateTailing, nil); err != nil {
		t.Fatal(err)
	}
	_, err := env.ExecuteActivity(workflows.ActivityCaughtUp, workflows.CaughtUpParams{Projection: byEmail.Name, Generation: 1, Topic: "distcache.orgs"})
	var appErr *temporal.ApplicationError
	if !errors.As(err, &appErr) || appErr.Type() != workflows.ErrTypeInvalidDefinition || !strings.Contains(err.Error(), `topic "distcache.orgs"`) {
		t.Errorf("caught up with another model's topic: %v, want a non-retryable %s", err, workflows.ErrTypeInvalidDefinition)
	}
	// The parameters the registry agrees with get past the check (and fail on the unreachable
	// broker, retryably).
	_, err = env.ExecuteActivity(workflows.ActivityCaughtUp, workflows.CaughtUpParams{Projection: byEmail.Name, Generation: 1, Topic: good.Topic})
	if err == nil || (errors.As(err, &appErr) && appErr.NonRetryable()) {
		t.Errorf("caught up with the registry's parameters: %v, want past the check", err)
	}
}
