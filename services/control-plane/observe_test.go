package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.temporal.io/api/serviceerror"
	"go.temporal.io/api/workflowservice/v1"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"
	tlog "go.temporal.io/sdk/log"
	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/worker"

	"github.com/distcache/distcache/libs/distcache"
	"github.com/distcache/distcache/libs/projection"
	"github.com/distcache/distcache/tools/devstack"
	"github.com/distcache/distcache/tools/devstacktest"
	"github.com/distcache/distcache/workflows"
)

// pacedProducer is a test-local cache-producer whose backfill takes a while: it writes a few
// users through the real distcache.Publisher, then reports progress through steps steps of every
// each (step records per step), heartbeating at every step, as the real backfill does after each
// batch. A projection named in fail fails its backfill (non-retryably). hold, when set, keeps
// the backfill at step holdAt until closed (release).
type pacedProducer struct {
	pub   *distcache.Publisher
	steps int
	step  int64
	every time.Duration
	fail  map[string]bool
	// holdAt is the step after which hold holds the backfill (0: the last).
	holdAt int

	mu   sync.Mutex
	hold chan struct{}
}

func (p *pacedProducer) Backfill(ctx context.Context, bp workflows.BackfillParams) (workflows.BackfillProgress, error) {
	p.mu.Lock()
	fail := p.fail[bp.Projection]
	p.mu.Unlock()
	if fail {
		return workflows.BackfillProgress{}, temporal.NewNonRetryableApplicationError("backfill of "+bp.Projection+" refused by the test",
			workflows.ErrTypeInvalidDefinition, nil)
	}
	proj, err := projection.Compile(bp.Definition)
	if err != nil {
		return workflows.BackfillProgress{}, err
	}
	for i := range 20 {
		key, val, keep, err := proj.Apply(fmt.Appendf(nil, `{"id":%d,"email":"u%d@x.io","name":"n%d","status":"active"}`, i, i, i))
		if err != nil {
			return workflows.BackfillProgress{}, err
		}
		if keep {
			if _, err := p.pub.SetGen(ctx, bp.Projection, bp.Generation, key, val, 1); err != nil {
				return workflows.BackfillProgress{}, err
			}
		}
	}
	end := int64(p.steps) * p.step
	pr := workflows.BackfillProgress{EndOffset: end}
	activity.RecordHeartbeat(ctx, pr.Heartbeat())
	started := time.Now()
	for i := 1; i <= p.steps; i++ {
		select {
		case <-ctx.Done():
			return pr, ctx.Err()
		case <-time.After(p.every):
		}
		pr.Offset, pr.RecordsDone = int64(i)*p.step, int64(i)*p.step
		pr.RatePerSec = float64(pr.RecordsDone) / time.Since(started).Seconds()
		activity.RecordHeartbeat(ctx, pr.Heartbeat())
		if i == p.holdAt || i == p.steps {
			if err := p.wait(ctx, pr); err != nil {
				return pr, err
			}
		}
	}
	return pr, nil
}

// wait holds the backfill, heartbeating, until release (when a hold is set).
func (p *pacedProducer) wait(ctx context.Context, pr workflows.BackfillProgress) error {
	p.mu.Lock()
	hold := p.hold
	p.mu.Unlock()
	for hold != nil {
		select {
		case <-hold:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
			activity.RecordHeartbeat(ctx, pr.Heartbeat())
		}
	}
	return nil
}

func (p *pacedProducer) release() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.hold != nil {
		close(p.hold)
		p.hold = nil
	}
}

func (p *pacedProducer) CaughtUp(context.Context, workflows.CaughtUpParams) (workflows.CaughtUpResult, error) {
	return workflows.CaughtUpResult{}, nil
}

// observeStack is a control-plane on real PostgreSQL, Redis and Temporal with a test-local
// cache-producer worker (pacedProducer), as services/cache-producer configures its worker.
type observeStack struct {
	c    restClient
	tc   client.Client
	rdb  *redis.Client
	prod *pacedProducer
	logs *lockedBuffer
}

func startObserveStack(ctx context.Context, t *testing.T, tmp *devstack.Temporal, uiURL string, prod *pacedProducer) *observeStack {
	t.Helper()
	r := devstacktest.Redis(t)
	env := serviceEnv(devstacktest.Database(t), r.Addr, tmp.HostPort,
		"CONTROLPLANE_MIGRATE", "true",
		"CONTROLPLANE_TEMPORAL_UI_URL", uiURL,
		"CONTROLPLANE_RETIRE_GRACE", "1h",
		"CONTROLPLANE_RETIRE_DRAIN", "200ms",
	)
	l, logs, stop := startService(ctx, t, env)
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Error(err)
		}
	})
	rdb := redis.NewClient(&redis.Options{Addr: r.Addr})
	t.Cleanup(func() { _ = rdb.Close() })
	pub, err := distcache.NewPublisher(rdb)
	if err != nil {
		t.Fatal(err)
	}
	prod.pub = pub
	tc, err := client.Dial(client.Options{HostPort: tmp.HostPort, Namespace: tmp.Namespace,
		Logger: tlog.NewStructuredLogger(slog.New(slog.DiscardHandler))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(tc.Close)
	w := worker.New(tc, workflows.CacheProducerTaskQueue, worker.Options{MaxHeartbeatThrottleInterval: workflows.BackfillHeartbeatThrottle})
	w.RegisterActivityWithOptions(prod.Backfill, activity.RegisterOptions{Name: workflows.ActivityBackfill})
	w.RegisterActivityWithOptions(prod.CaughtUp, activity.RegisterOptions{Name: workflows.ActivityCaughtUp})
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Stop)
	t.Cleanup(prod.release)
	return &observeStack{c: restClient{t: t, base: "http://" + l.http.Addr().String()}, tc: tc, rdb: rdb, prod: prod, logs: logs}
}

func (s *observeStack) create(name string) (runID string) {
	s.c.t.Helper()
	def := map[string]any{"name": name, "model": "users", "key_template": "{email}", "fields": []string{"id", "email"}}
	code, op := s.c.call("POST", "/v1/projections", def)
	if code != 200 {
		s.c.t.Fatalf("create %s: %d %v\n%s", name, code, op, s.logs)
	}
	return op["workflow"].(map[string]any)["run_id"].(string)
}

func (s *observeStack) waitLive(name string, gen string) {
	s.c.t.Helper()
	devstacktest.Eventually(s.c.t, 60*time.Second, func() bool {
		states, cur, running := s.c.status(name)
		return states[gen] == "live" && cur == gen && running == nil
	}, "generation %s of %s live", gen, name)
}

// listRuns returns the run ids of the workflows a visibility query finds.
func (s *observeStack) listRuns(ctx context.Context, query string) []string {
	s.c.t.Helper()
	resp, err := s.tc.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{Query: query})
	if err != nil {
		s.c.t.Fatalf("list workflows %q: %v", query, err)
	}
	var out []string
	for _, e := range resp.GetExecutions() {
		out = append(out, e.GetExecution().GetRunId())
	}
	return out
}

// TestBuildProgressMoves: a build whose backfill takes about 6 s shows its progress moving while
// it runs: GetStatus's running.backfill.records_done (the progress query) and the generation's
// records_done (the registry row) each take at least three values between 0 and the end, the
// backfill activity's heartbeat has reached the server with records done and a last heartbeat
// time after the activity started, and the workflow's memo holds the progress. Before, all of
// them read 0 until the build ended: the SDK sent heartbeats at most every 8 s and the workflow
// polled every 5. The generation's ui_url names the build's run.
func TestBuildProgressMoves(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	tmp := devstacktest.Temporal(t)
	s := startObserveStack(ctx, t, tmp, "http://ui.example", &pacedProducer{steps: 40, step: 1000, every: 150 * time.Millisecond})
	const name = "paced_users"
	const end = 40 * 1000
	runID := s.create(name)

	var fromQuery, fromRegistry []string
	heartbeatSeen, memoSeen := false, false
	deadline := time.Now().Add(time.Minute)
	for time.Now().Before(deadline) {
		code, st := s.c.call("GET", "/v1/projections/"+name+"/status", nil)
		if code != 200 {
			t.Fatalf("status: %d %v", code, st)
		}
		running, _ := st["running"].(map[string]any)
		if running == nil {
			break // the build ended
		}
		bf, _ := running["backfill"].(map[string]any)
		if v := fmt.Sprint(bf["records_done"]); running["phase"] == workflows.PhaseBackfilling && v != "0" && v != fmt.Sprint(end) && !slices.Contains(fromQuery, v) {
			fromQuery = append(fromQuery, v)
		}
		if gens, _ := st["generations"].([]any); len(gens) == 1 {
			gbf, _ := gens[0].(map[string]any)["backfill"].(map[string]any)
			if v := fmt.Sprint(gbf["records_done"]); v != "0" && v != fmt.Sprint(end) && !slices.Contains(fromRegistry, v) {
				fromRegistry = append(fromRegistry, v)
			}
		}
		if len(fromQuery) >= 2 && (!heartbeatSeen || !memoSeen) {
			heartbeatSeen, memoSeen = s.checkServerSide(ctx, t, name, runID)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("records_done while running: query %v, registry %v", fromQuery, fromRegistry)
	if len(fromQuery) < 3 {
		t.Errorf("GetStatus running.backfill.records_done took %d values between 0 and %d while the backfill ran (%v), want at least 3", len(fromQuery), end, fromQuery)
	}
	if len(fromRegistry) < 3 {
		t.Errorf("the generation's records_done took %d values between 0 and %d while the backfill ran (%v), want at least 3", len(fromRegistry), end, fromRegistry)
	}
	if !heartbeatSeen {
		t.Error("the backfill activity's heartbeat never reached the server with records done while it ran")
	}
	if !memoSeen {
		t.Error("the build's progress memo never held records done while it ran")
	}
	s.waitLive(name, "1")

	_, st := s.c.call("GET", "/v1/projections/"+name+"/status", nil)
	gen := st["generations"].([]any)[0].(map[string]any)
	wf := gen["workflow"].(map[string]any)
	if wf["run_id"] != runID || !strings.HasSuffix(fmt.Sprint(wf["ui_url"]), "/workflows/projection%2F"+name+"/"+runID) {
		t.Errorf("generation 1's workflow = %v, want run %s in run_id and ui_url", wf, runID)
	}
	if bf := gen["backfill"].(map[string]any); fmt.Sprint(bf["records_done"]) != fmt.Sprint(end) {
		t.Errorf("generation 1's records_done after the build = %v, want %d", bf["records_done"], end)
	}
}

// checkServerSide reports whether the build's pending backfill activity has a heartbeat with
// records done, sent after it started, and whether its memo holds records done.
func (s *observeStack) checkServerSide(ctx context.Context, t *testing.T, name, runID string) (heartbeat, memo bool) {
	t.Helper()
	desc, err := s.tc.DescribeWorkflow(ctx, workflows.BuildWorkflowID(name), runID)
	if err != nil {
		t.Fatalf("describe the build: %v", err)
	}
	for _, pa := range desc.RawResponse.GetPendingActivities() {
		if pa.GetActivityType().GetName() != workflows.ActivityBackfill || pa.GetHeartbeatDetails() == nil {
			continue
		}
		var pr workflows.BackfillProgress
		if err := converter.GetDefaultDataConverter().FromPayloads(pa.GetHeartbeatDetails(), &pr); err != nil {
			t.Fatalf("decode the heartbeat: %v", err)
		}
		heartbeat = pr.RecordsDone > 0 && pr.Phase == workflows.PhaseBackfilling &&
			pa.GetLastHeartbeatTime().AsTime().After(pa.GetLastStartedTime().AsTime().Add(500*time.Millisecond))
	}
	if f := desc.RawResponse.GetWorkflowExecutionInfo().GetMemo().GetFields()[workflows.MemoProgress]; f != nil {
		var pr workflows.Progress
		if err := converter.GetDefaultDataConverter().FromPayload(f, &pr); err != nil {
			t.Fatalf("decode the memo: %v", err)
		}
		memo = pr.Backfill.RecordsDone > 0
	}
	return heartbeat, memo
}

// TestBuildsFilterableInTemporalUI: on a namespace with distcache's search attributes, the
// Temporal UI's list filters builds and deletes by projection and phase, with the queries
// docs/operations.md gives: every workflow of a projection, the failed builds, a projection's
// live build with its generation, its delete once deleted. Pointer moves carry the projection
// and target generation.
func TestBuildsFilterableInTemporalUI(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	tmp := devstacktest.Temporal(t)
	s := startObserveStack(ctx, t, tmp, "", &pacedProducer{steps: 2, step: 10, every: 10 * time.Millisecond,
		fail: map[string]bool{"filter_broken": true}})
	okRun := s.create("filter_ok")
	badRun := s.create("filter_broken")
	s.waitLive("filter_ok", "1")
	devstacktest.Eventually(t, 60*time.Second, func() bool {
		states, _, running := s.c.status("filter_broken")
		return states["1"] == "failed" && running == nil
	}, "the broken build failed")

	eventually := func(query string, want func([]string) bool, what string) {
		t.Helper()
		var got []string
		devstacktest.Eventually(t, 30*time.Second, func() bool {
			got = s.listRuns(ctx, query)
			return want(got)
		}, "%s: query %q found runs %v", what, query, &got)
	}
	has := func(runs ...string) func([]string) bool {
		return func(got []string) bool {
			for _, r := range runs {
				if !slices.Contains(got, r) {
					return false
				}
			}
			return true
		}
	}
	eventually(`DistcachePhase = "failed"`, func(got []string) bool { return has(badRun)(got) && !slices.Contains(got, okRun) },
		"all failed builds: the broken one, not the good one")
	eventually(`DistcacheProjection = "filter_ok" AND DistcachePhase = "live" AND DistcacheGeneration = 1`, has(okRun),
		"filter_ok's live build of generation 1")

	// A cutover to the current generation runs a pointer workflow, which carries the projection
	// and the generation.
	if code, body := s.c.call("POST", "/v1/projections/filter_ok:cutover", map[string]any{"generation": 1}); code != 200 {
		t.Fatalf("cutover to the current generation: %d %v", code, body)
	}
	code, op := s.c.call("DELETE", "/v1/projections/filter_ok", nil)
	if code != 200 {
		t.Fatalf("delete: %d %v", code, op)
	}
	delRun := op["workflow"].(map[string]any)["run_id"].(string)
	eventually(`DistcacheProjection = "filter_ok" AND DistcachePhase = "deleted"`, has(delRun), "filter_ok's delete, done")
	eventually(`DistcacheProjection = "filter_ok"`, func(got []string) bool { return has(okRun, delRun)(got) && len(got) == 3 },
		"everything for filter_ok: its build, its pointer move, its delete")
	eventually(`DistcacheProjection = "filter_ok" AND WorkflowType = "distcache.Pointer" AND DistcacheGeneration = 1`,
		func(got []string) bool { return len(got) == 1 }, "filter_ok's pointer move to generation 1")
}

// TestWorkflowsRunWithoutSearchAttributes: on a namespace where nobody registered distcache's
// search attributes, builds, pointer moves and deletes still run to the end (an upsert of an
// unregistered attribute would fail every workflow task, and a start naming one is refused):
// the control-plane checks the namespace, starts them without, and logs once what is missing.
func TestWorkflowsRunWithoutSearchAttributes(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	tmp := devstacktest.OwnTemporal(t, devstacktest.WithoutSearchAttributes())
	s := startObserveStack(ctx, t, tmp, "", &pacedProducer{steps: 2, step: 10, every: 10 * time.Millisecond})
	runID := s.create("bare_users")
	s.waitLive("bare_users", "1")
	desc, err := s.tc.DescribeWorkflow(ctx, workflows.BuildWorkflowID("bare_users"), runID)
	if err != nil {
		t.Fatal(err)
	}
	for name := range desc.RawResponse.GetWorkflowExecutionInfo().GetSearchAttributes().GetIndexedFields() {
		if strings.HasPrefix(name, "Distcache") {
			t.Errorf("the build has search attribute %s on a namespace without it", name)
		}
	}
	if code, body := s.c.call("POST", "/v1/projections/bare_users:cutover", map[string]any{"generation": 1}); code != 200 {
		t.Fatalf("cutover: %d %v", code, body)
	}
	if code, body := s.c.call("DELETE", "/v1/projections/bare_users", nil); code != 200 {
		t.Fatalf("delete: %d %v", code, body)
	}
	devstacktest.Eventually(t, 60*time.Second, func() bool {
		code, _ := s.c.call("GET", "/v1/projections/bare_users/status", nil)
		return code == http.StatusNotFound
	}, "the delete finished")
	if n := strings.Count(s.logs.String(), "lacks distcache's search attributes"); n != 1 {
		t.Errorf("the missing search attributes were logged %d times, want once:\n%s", n, s.logs)
	}
}

// TestRefusedPointerMovesStartNoWorkflow: a cutover to a generation that does not exist, or that
// is not kept up to date, and a rollback with nothing to roll back to are refused from the
// registry, before any workflow starts: no distcache.Pointer run exists afterwards (there were 5
// failed ones in the UI after one round of such tries), and the messages say what is missing.
func TestRefusedPointerMovesStartNoWorkflow(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	tmp := devstacktest.Temporal(t)
	s := startObserveStack(ctx, t, tmp, "", &pacedProducer{steps: 2, step: 10, every: 10 * time.Millisecond,
		fail: map[string]bool{}})
	const name = "pointer_users"
	s.create(name)
	s.waitLive(name, "1")
	// Generation 2 fails: it exists, but is not kept up to date.
	s.prod.mu.Lock()
	s.prod.fail[name] = true
	s.prod.mu.Unlock()
	code, body := s.c.call("POST", "/v1/projections/"+name+":replay", map[string]any{})
	if code != 200 {
		t.Fatalf("replay: %d %v", code, body)
	}
	devstacktest.Eventually(t, 60*time.Second, func() bool {
		states, _, running := s.c.status(name)
		return states["2"] == "failed" && running == nil
	}, "generation 2 failed")

	for _, tt := range []struct {
		what, path string
		body       map[string]any
		code       int
		message    string
	}{
		{"cutover to a missing generation", ":cutover", map[string]any{"generation": 999999}, http.StatusNotFound,
			"generation 999999 does not exist (kept: 1)"},
		{"cutover to a failed generation", ":cutover", map[string]any{"generation": 2}, http.StatusBadRequest,
			"generation 2 is failed: a cutover needs a generation that is kept up to date (kept: 1)"},
		{"rollback with nothing retained", ":rollback", map[string]any{}, http.StatusBadRequest,
			"nothing to roll back to: no previous generation is retained"},
		{"cutover of a missing projection", ":cutover", map[string]any{"generation": 1}, http.StatusNotFound, `projection "no_such_projection" does not exist`},
	} {
		path := "/v1/projections/" + name + tt.path
		if tt.what == "cutover of a missing projection" {
			path = "/v1/projections/no_such_projection" + tt.path
		}
		code, body := s.c.call("POST", path, tt.body)
		if code != tt.code || !strings.Contains(fmt.Sprint(body["message"]), tt.message) {
			t.Errorf("%s: %d %q, want %d %q", tt.what, code, body["message"], tt.code, tt.message)
		}
		if strings.Contains(fmt.Sprint(body["message"]), "registry:") {
			t.Errorf("%s: message %q names the registry's sentinel", tt.what, body["message"])
		}
	}
	for _, id := range []string{workflows.PointerWorkflowID(name), workflows.PointerWorkflowID("no_such_projection")} {
		_, err := s.tc.DescribeWorkflow(ctx, id, "")
		var nf *serviceerror.NotFound
		if !errors.As(err, &nf) {
			t.Errorf("describe %s after the refused calls: %v, want NotFound (no workflow started)", id, err)
		}
	}
	// A cutover to the current generation is not refused.
	if code, body := s.c.call("POST", "/v1/projections/"+name+":cutover", map[string]any{"generation": 1}); code != 200 || fmt.Sprint(body["current_generation"]) != "1" {
		t.Errorf("cutover to the current generation: %d %v, want 200", code, body)
	}
}

// TestTemporalUIShowsBackfill opens a running backfill's workflow page (GetStatus's
// running.workflow.ui_url) in the Temporal UI with a real headless Chromium (installed if
// missing): once its scripts ran, the page shows the build's current details (phase backfilling,
// generation, records done). The screenshot is written to $DISTCACHE_SCREENSHOT when set
// (`make screenshot` writes docs/img/temporal-backfill.png with it), else to a temporary file.
func TestTemporalUIShowsBackfill(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	browser, err := devstack.EnsureChromium(ctx)
	if err != nil {
		t.Fatalf("chromium: %v", err)
	}
	tmp := devstacktest.OwnTemporal(t, devstacktest.WithUI())
	// 600,000 records in 30 steps; held at 360,000 (60%) for the page to be read.
	prod := &pacedProducer{steps: 30, step: 20000, every: 300 * time.Millisecond, holdAt: 18, hold: make(chan struct{})}
	s := startObserveStack(ctx, t, tmp, tmp.UIURL, prod)
	const name = "users_by_email"
	s.create(name)

	var uiURL string
	devstacktest.Eventually(t, time.Minute, func() bool {
		_, _, running := s.c.status(name)
		bf, _ := running["backfill"].(map[string]any)
		if running["phase"] != workflows.PhaseBackfilling || fmt.Sprint(bf["records_done"]) != "360000" {
			return false
		}
		uiURL = fmt.Sprint(running["workflow"].(map[string]any)["ui_url"])
		return true
	}, "the backfill is held with 360000 records done")
	if !strings.HasPrefix(uiURL, tmp.UIURL+"/namespaces/default/workflows/projection%2F"+name+"/") {
		t.Fatalf("running.workflow.ui_url = %q, want the build's run on %s", uiURL, tmp.UIURL)
	}

	// The workflow's User Metadata tab: its summary and current details.
	page, err := devstack.Chromium{Path: browser, Width: 1400, Height: 1000}.Open(ctx, uiURL+"/user-metadata")
	if err != nil {
		t.Fatalf("open the workflow page: %v", err)
	}
	defer page.Close()
	wctx, wcancel := context.WithTimeout(ctx, 90*time.Second)
	text, err := page.WaitForText(wctx, "backfilling", "records done: 360000", "offset 360000 of 600000 (60%)", "ETA", "generation 1", "projection users_by_email")
	wcancel()
	if err != nil {
		t.Fatalf("the workflow page: %v; its text:\n%s", err, text)
	}
	t.Logf("the page reads:\n%s", text)

	png := filepath.Join(t.TempDir(), "temporal-backfill.png")
	if out := os.Getenv("DISTCACHE_SCREENSHOT"); out != "" {
		png = out
		if err := os.MkdirAll(filepath.Dir(png), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := page.Screenshot(ctx, png); err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	b, err := os.ReadFile(png)
	if err != nil || len(b) < 10000 || string(b[:8]) != "\x89PNG\r\n\x1a\n" {
		t.Fatalf("screenshot %s: %d bytes, %v; want a PNG of the page", png, len(b), err)
	}
	t.Logf("screenshot of %s: %s (%d bytes)", uiURL, png, len(b))
	prod.release()
	s.waitLive(name, "1")
}
