package workflows_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"
	enumspb "go.temporal.io/api/enums/v1"
	historypb "go.temporal.io/api/history/v1"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"
	tlog "go.temporal.io/sdk/log"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/worker"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/distcache/distcache/libs/distcache"
	"github.com/distcache/distcache/libs/projection"
	"github.com/distcache/distcache/migrations"
	"github.com/distcache/distcache/tools/devstacktest"
	"github.com/distcache/distcache/workflows"
	"github.com/distcache/distcache/workflows/registry"
)

func TestMain(m *testing.M) { devstacktest.Main(m) }

// fakeProducer is a test-local stand-in for the cache-producer's activities (the real ones live
// in services/cache-producer): Backfill projects a fixed set of payloads into the generation
// through the real distcache.Publisher, heartbeating its progress; CaughtUp reports "not caught
// up" a few times before it reports success, exercising the workflow's poll.
type fakeProducer struct {
	pub      *distcache.Publisher
	payloads []map[string]any
	// gate, when not nil, holds the backfill after its first heartbeat until it is closed.
	mu        sync.Mutex
	gate      chan struct{}
	notYet    atomic.Int32
	backfills atomic.Int32
}

func (f *fakeProducer) Backfill(ctx context.Context, p workflows.BackfillParams) (workflows.BackfillProgress, error) {
	f.backfills.Add(1)
	proj, err := projection.Compile(p.Definition)
	if err != nil {
		return workflows.BackfillProgress{}, temporal.NewNonRetryableApplicationError(err.Error(), workflows.ErrTypeInvalidDefinition, err)
	}
	end := int64(len(f.payloads))
	var pr workflows.BackfillProgress
	for i, payload := range f.payloads {
		raw, _ := json.Marshal(payload)
		key, value, keep, err := proj.Apply(raw)
		if err != nil {
			return pr, err
		}
		if keep {
			if _, err := f.pub.SetGen(ctx, p.Projection, p.Generation, key, value, 1); err != nil {
				return pr, err
			}
		}
		pr = workflows.BackfillProgress{Offset: int64(i + 1), EndOffset: end, RecordsDone: int64(i + 1), RatePerSec: 1000}
	}
	activity.RecordHeartbeat(ctx, pr)
	f.mu.Lock()
	gate := f.gate
	f.mu.Unlock()
	if gate != nil {
		for {
			select {
			case <-gate:
				return pr, nil
			case <-ctx.Done():
				return pr, ctx.Err()
			case <-time.After(100 * time.Millisecond):
				activity.RecordHeartbeat(ctx, pr)
			}
		}
	}
	return pr, nil
}

func (f *fakeProducer) CaughtUp(_ context.Context, p workflows.CaughtUpParams) (workflows.CaughtUpResult, error) {
	if f.notYet.Add(-1) >= 0 {
		return workflows.CaughtUpResult{}, temporal.NewApplicationError("lag 3", workflows.ErrTypeNotCaughtUp)
	}
	return workflows.CaughtUpResult{Offset: 10, HighWatermark: 10}, nil
}

type env struct {
	tc    client.Client
	store *registry.Store
	rdb   *redis.Client
	pub   *distcache.Publisher
	prod  *fakeProducer
}

// newEnv starts the real components (PostgreSQL registry, Redis, the Temporal dev server), the
// control-plane worker with the real activities and a cache-producer worker with fakeProducer.
// Task queues are fixed names, so one pair of workers serves every subtest of TestIntegration
// (each uses its own projection names, hence workflow ids).
func newEnv(t *testing.T) (*env, error) {
	ctx := context.Background()
	// Components shared by the package; they live until devstacktest.Main stops them.
	dbURL := devstacktest.Database(t)
	if err := migrations.Up(ctx, dbURL, migrations.Control); err != nil {
		return nil, fmt.Errorf("migrate: %w", err)
	}
	pool, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		return nil, err
	}
	r := devstacktest.Redis(t)
	rdb := redis.NewClient(&redis.Options{Addr: r.Addr})
	pub, err := distcache.NewPublisher(rdb)
	if err != nil {
		return nil, err
	}
	tmp := devstacktest.Temporal(t)
	tc, err := client.Dial(client.Options{HostPort: tmp.HostPort, Namespace: tmp.Namespace,
		Logger: tlog.NewStructuredLogger(slog.New(slog.DiscardHandler))})
	if err != nil {
		return nil, err
	}
	e := &env{tc: tc, store: registry.New(pool), rdb: rdb, pub: pub, prod: &fakeProducer{pub: pub}}
	for i := range 20 {
		e.prod.payloads = append(e.prod.payloads, map[string]any{
			"id": i, "email": fmt.Sprintf("User%d@Example.com", i), "name": fmt.Sprintf("user %d", i),
			"status": map[bool]string{true: "active", false: "banned"}[i%5 != 0],
		})
	}
	cp := worker.New(tc, workflows.ControlPlaneTaskQueue, worker.Options{})
	workflows.Register(cp)
	workflows.RegisterActivities(cp, &workflows.Activities{
		Registry: e.store, Pointer: pub, Temporal: tc,
		RetireDrain: 200 * time.Millisecond, UnlinkBatch: 7,
	})
	prod := worker.New(tc, workflows.CacheProducerTaskQueue, worker.Options{})
	prod.RegisterActivityWithOptions(e.prod.Backfill, activity.RegisterOptions{Name: workflows.ActivityBackfill})
	prod.RegisterActivityWithOptions(e.prod.CaughtUp, activity.RegisterOptions{Name: workflows.ActivityCaughtUp})
	if err := cp.Start(); err != nil {
		return nil, err
	}
	if err := prod.Start(); err != nil {
		return nil, err
	}
	t.Cleanup(func() {
		prod.Stop()
		cp.Stop()
		tc.Close()
		_ = rdb.Close()
		pool.Close()
	})
	return e, nil
}

func startBuild(ctx context.Context, tc client.Client, p workflows.BuildParams) (client.WorkflowRun, error) {
	return tc.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
		ID:                                       workflows.BuildWorkflowID(p.Definition.Name),
		TaskQueue:                                workflows.ControlPlaneTaskQueue,
		WorkflowIDReusePolicy:                    enumspb.WORKFLOW_ID_REUSE_POLICY_ALLOW_DUPLICATE,
		WorkflowIDConflictPolicy:                 enumspb.WORKFLOW_ID_CONFLICT_POLICY_FAIL,
		WorkflowExecutionErrorWhenAlreadyStarted: true,
	}, workflows.WorkflowBuild, p)
}

// countKeys counts the value keys of a generation with SCAN.
func countKeys(t *testing.T, rdb *redis.Client, proj string, gen int64) int {
	t.Helper()
	n := 0
	iter := rdb.Scan(context.Background(), 0, distcache.GenerationPattern(proj, gen), 100).Iterator()
	for iter.Next(context.Background()) {
		n++
	}
	if err := iter.Err(); err != nil {
		t.Fatal(err)
	}
	return n
}

func generationState(t *testing.T, s *registry.Store, proj string, gen int64) string {
	t.Helper()
	g, err := s.GetGeneration(context.Background(), proj, gen)
	if err != nil {
		t.Fatal(err)
	}
	return g.State
}

// TestIntegration runs the workflows on the Temporal dev server with the real registry
// (PostgreSQL), pointer and values (Redis).
func TestIntegration(t *testing.T) {
	e, err := newEnv(t)
	if err != nil {
		t.Fatal(err)
	}
	t.Run("CreateUpdateRetire", func(t *testing.T) { testCreateUpdateRetire(t, e) })
	t.Run("RollbackAndDelete", func(t *testing.T) { testRollbackAndDelete(t, e) })
}

// testCreateUpdateRetire runs the workflows on the Temporal dev server with the real
// registry (PostgreSQL) and pointer (Redis): create (generation 1 live), a second build refused
// while the first runs, progress visible by query and in the registry while the backfill runs,
// an update (generation 2 live, generation 1 retired after the grace, its keys unlinked).
func testCreateUpdateRetire(t *testing.T, e *env) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const name = "it_users_by_email"
	def := projection.Definition{Name: name, Model: "users", KeyTemplate: "{email}", LowercaseKey: true,
		Fields: []string{"id", "email"}, Filter: &projection.Filter{Field: "status", Op: projection.OpEq, Values: []string{"active"}}}
	if err := e.store.CreateProjection(ctx, def); err != nil {
		t.Fatal(err)
	}

	gate := make(chan struct{})
	e.prod.mu.Lock()
	e.prod.gate = gate
	e.prod.mu.Unlock()
	e.prod.notYet.Store(2)
	params := workflows.BuildParams{Definition: def, Topic: "distcache.users", Reason: workflows.ReasonCreate,
		RetireGrace: time.Second, ProgressInterval: 200 * time.Millisecond, CatchUpTimeout: time.Minute}
	run, err := startBuild(ctx, e.tc, params)
	if err != nil {
		t.Fatal(err)
	}

	// While the backfill is held: a second build of the projection is refused...
	_, err = startBuild(ctx, e.tc, params)
	var started *serviceerror.WorkflowExecutionAlreadyStarted
	if !errors.As(err, &started) {
		t.Fatalf("second build error = %v, want WorkflowExecutionAlreadyStarted", err)
	}
	// ...and its progress shows in the query, the memo and the registry.
	devstacktest.Eventually(t, 30*time.Second, func() bool {
		v, err := e.tc.QueryWorkflow(ctx, run.GetID(), run.GetRunID(), workflows.QueryProgress)
		if err != nil {
			return false
		}
		var pr workflows.Progress
		return v.Get(&pr) == nil && pr.Phase == workflows.PhaseBackfilling && pr.Backfill.RecordsDone == 20 && pr.Backfill.EndOffset == 20
	}, "progress query shows 20 records done")
	devstacktest.Eventually(t, 10*time.Second, func() bool {
		g, err := e.store.GetGeneration(ctx, name, 1)
		return err == nil && g.State == registry.StateBackfilling && g.RecordsDone == 20 && g.EndOffset == 20
	}, "registry records the backfill's progress")
	desc, err := e.tc.DescribeWorkflow(ctx, run.GetID(), run.GetRunID())
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := desc.RawResponse.GetWorkflowExecutionInfo().GetMemo().GetFields()[workflows.MemoProgress]; !ok {
		t.Errorf("memo lacks %q: %v", workflows.MemoProgress, desc.RawResponse.GetWorkflowExecutionInfo().GetMemo())
	}
	close(gate)

	var res workflows.BuildResult
	if err := run.Get(ctx, &res); err != nil {
		t.Fatalf("build: %v", err)
	}
	if res.Generation != 1 || res.Previous != 0 || res.Backfill.RecordsDone != 20 {
		t.Errorf("build result = %+v, want generation 1, no previous, 20 records", res)
	}
	if cur, err := e.pub.CurrentGeneration(ctx, name); err != nil || cur != 1 {
		t.Fatalf("pointer = %d, %v; want 1", cur, err)
	}
	if st := generationState(t, e.store, name, 1); st != registry.StateLive {
		t.Errorf("generation 1 state = %s, want live", st)
	}
	if n := countKeys(t, e.rdb, name, 1); n != 16 { // 20 records, every fifth banned
		t.Errorf("generation 1 holds %d keys, want 16", n)
	}
	raw, err := e.rdb.Get(ctx, distcache.ValueKey(name, 1, "user1@example.com")).Result()
	if err != nil || len(raw) < 17 || raw[17:] != `{"id":1,"email":"User1@Example.com"}` {
		t.Errorf("stored value = %q, %v", raw, err)
	}
	recordHistory(t, e.tc, run, "build_create.json")

	// Update: a new field, generation 2, then generation 1 retires after the 1s grace.
	e.prod.mu.Lock()
	e.prod.gate = nil
	e.prod.mu.Unlock()
	def2 := def
	def2.Fields = []string{"id", "email", "name"}
	params.Definition, params.Reason = def2, workflows.ReasonUpdate
	// The update keeps its search attributes current (the shared dev server has them).
	params.SearchAttributes = true
	run2, err := startBuild(ctx, e.tc, params)
	if err != nil {
		t.Fatal(err)
	}
	if err := run2.Get(ctx, &res); err != nil {
		t.Fatalf("update build: %v", err)
	}
	desc, err = e.tc.DescribeWorkflow(ctx, run2.GetID(), run2.GetRunID())
	if err != nil {
		t.Fatal(err)
	}
	sa := desc.RawResponse.GetWorkflowExecutionInfo().GetSearchAttributes().GetIndexedFields()
	var phase string
	var gen int64
	if err := converter.GetDefaultDataConverter().FromPayload(sa[workflows.SearchAttrPhaseName], &phase); err != nil || phase != workflows.PhaseLive {
		t.Errorf("update build's %s = %q, %v; want %s", workflows.SearchAttrPhaseName, phase, err, workflows.PhaseLive)
	}
	if err := converter.GetDefaultDataConverter().FromPayload(sa[workflows.SearchAttrGenerationName], &gen); err != nil || gen != 2 {
		t.Errorf("update build's %s = %d, %v; want 2", workflows.SearchAttrGenerationName, gen, err)
	}
	recordHistory(t, e.tc, run2, "build_update_search_attributes.json")
	if res.Generation != 2 || res.Previous != 1 {
		t.Errorf("update result = %+v, want generation 2, previous 1", res)
	}
	if cur, _ := e.pub.CurrentGeneration(ctx, name); cur != 2 {
		t.Fatalf("pointer after update = %d, want 2", cur)
	}
	raw, _ = e.rdb.Get(ctx, distcache.ValueKey(name, 2, "user1@example.com")).Result()
	if len(raw) < 17 || raw[17:] != `{"id":1,"email":"User1@Example.com","name":"user 1"}` {
		t.Errorf("generation 2 value = %q, want the added field", raw)
	}
	devstacktest.Eventually(t, 60*time.Second, func() bool {
		return generationState(t, e.store, name, 1) == registry.StateRetired && countKeys(t, e.rdb, name, 1) == 0
	}, "generation 1 retired and its keys unlinked after the grace")
	if n := countKeys(t, e.rdb, name, 2); n != 16 {
		t.Errorf("generation 2 holds %d keys after the retirement of 1, want 16", n)
	}
	p, _ := e.store.GetProjection(ctx, name)
	if p.Current != 2 || p.Previous != 0 {
		t.Errorf("projection pointers = %d/%d, want 2/0", p.Current, p.Previous)
	}
	// A rollback has nothing retained now: FailedPrecondition from the pointer workflow.
	prun, err := e.tc.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
		ID: workflows.PointerWorkflowID(name), TaskQueue: workflows.ControlPlaneTaskQueue,
	}, workflows.WorkflowPointer, workflows.PointerParams{Projection: name, Rollback: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := prun.Get(ctx, nil); !hasAppErrorType(err, workflows.ErrTypePrecondition) {
		t.Errorf("rollback with nothing retained: %v, want a %s application error", err, workflows.ErrTypePrecondition)
	}
}

// testRollbackAndDelete: after an update with a long grace, a rollback moves the
// pointer back to generation 1 and retires generation 2; a delete then unlinks everything.
func testRollbackAndDelete(t *testing.T, e *env) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const name = "it_rollback"
	def := projection.Definition{Name: name, Model: "users", KeyTemplate: "u:{id}", Fields: []string{"id", "name"}}
	if err := e.store.CreateProjection(ctx, def); err != nil {
		t.Fatal(err)
	}
	params := workflows.BuildParams{Definition: def, Topic: "distcache.users", RetireGrace: time.Hour,
		ProgressInterval: time.Second}
	for gen := int64(1); gen <= 2; gen++ {
		run, err := startBuild(ctx, e.tc, params)
		if err != nil {
			t.Fatal(err)
		}
		if err := run.Get(ctx, nil); err != nil {
			t.Fatalf("build %d: %v", gen, err)
		}
	}
	t.Cleanup(func() { // the 1h retirement of generation 1 scheduled by the second build
		_ = e.tc.TerminateWorkflow(context.Background(), workflows.RetireWorkflowID(name, 1), "", "test over")
	})
	if st := generationState(t, e.store, name, 1); st != registry.StateRetiring {
		t.Fatalf("generation 1 = %s, want retiring (retained for the 1h grace)", st)
	}
	run, err := e.tc.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
		ID: workflows.PointerWorkflowID(name), TaskQueue: workflows.ControlPlaneTaskQueue,
	}, workflows.WorkflowPointer, workflows.PointerParams{Projection: name, Rollback: true, RetireGrace: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	var cut workflows.CutoverResult
	if err := run.Get(ctx, &cut); err != nil {
		t.Fatalf("rollback: %v", err)
	}
	if cut.Current != 1 || cut.Previous != 2 {
		t.Errorf("rollback = %+v, want current 1, previous 2", cut)
	}
	if cur, _ := e.pub.CurrentGeneration(ctx, name); cur != 1 {
		t.Errorf("pointer after rollback = %d, want 1", cur)
	}
	devstacktest.Eventually(t, 60*time.Second, func() bool {
		return generationState(t, e.store, name, 2) == registry.StateRetired && countKeys(t, e.rdb, name, 2) == 0
	}, "generation 2 retired after the rollback's grace")
	if n := countKeys(t, e.rdb, name, 1); n != 20 {
		t.Errorf("generation 1 holds %d keys, want 20", n)
	}
	recordHistory(t, e.tc, run, "pointer_rollback.json")

	drun, err := e.tc.ExecuteWorkflow(ctx, client.StartWorkflowOptions{
		ID: workflows.BuildWorkflowID(name), TaskQueue: workflows.ControlPlaneTaskQueue,
	}, workflows.WorkflowDelete, workflows.DeleteParams{Projection: name, Drain: 200 * time.Millisecond, SearchAttributes: true})
	if err != nil {
		t.Fatal(err)
	}
	var un workflows.UnlinkResult
	if err := drun.Get(ctx, &un); err != nil {
		t.Fatalf("delete: %v", err)
	}
	recordHistory(t, e.tc, drun, "delete_search_attributes.json")
	if un.KeysUnlinked != 20 {
		t.Errorf("delete unlinked %d keys, want 20", un.KeysUnlinked)
	}
	if n := countKeys(t, e.rdb, name, 1); n != 0 {
		t.Errorf("generation 1 holds %d keys after delete", n)
	}
	if cur, _ := e.pub.CurrentGeneration(ctx, name); cur != 0 {
		t.Errorf("pointer after delete = %d, want none", cur)
	}
	if _, err := e.store.GetProjection(ctx, name); !errors.Is(err, registry.ErrNotFound) {
		t.Errorf("projection after delete: %v, want ErrNotFound", err)
	}
}

// recordHistory replays the run's history against the current workflow code (the determinism
// check) and, with DISTCACHE_RECORD_HISTORY=1, stores it as testdata/<file> for
// TestReplayRecordedHistories.
func recordHistory(t *testing.T, tc client.Client, run client.WorkflowRun, file string) {
	t.Helper()
	ctx := context.Background()
	hist := &historypb.History{}
	iter := tc.GetWorkflowHistory(ctx, run.GetID(), run.GetRunID(), false, enumspb.HISTORY_EVENT_FILTER_TYPE_ALL_EVENT)
	for iter.HasNext() {
		ev, err := iter.Next()
		if err != nil {
			t.Fatal(err)
		}
		hist.Events = append(hist.Events, ev)
	}
	r := newReplayer()
	if err := r.ReplayWorkflowHistory(tlog.NewStructuredLogger(slog.New(slog.DiscardHandler)), hist); err != nil {
		t.Fatalf("replay of %s: %v", run.GetID(), err)
	}
	if os.Getenv("DISTCACHE_RECORD_HISTORY") == "1" {
		b, err := protojson.MarshalOptions{Indent: "  "}.Marshal(hist)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join("testdata", file), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func newReplayer() worker.WorkflowReplayer {
	r := worker.NewWorkflowReplayer()
	workflows.Register(r)
	return r
}

// hasAppErrorType reports whether any application error in err's chain has type typ.
func hasAppErrorType(err error, typ string) bool {
	for ; err != nil; err = errors.Unwrap(err) {
		var appErr *temporal.ApplicationError
		if !errors.As(err, &appErr) {
			return false
		}
		if appErr.Type() == typ {
			return true
		}
		err = appErr
	}
	return false
}
