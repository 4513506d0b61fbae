package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/client"
	tlog "go.temporal.io/sdk/log"
	"go.temporal.io/sdk/worker"

	"github.com/distcache/distcache/libs/distcache"
	"github.com/distcache/distcache/libs/projection"
	"github.com/distcache/distcache/migrations"
	"github.com/distcache/distcache/tools/devstacktest"
	"github.com/distcache/distcache/workflows"
	"github.com/distcache/distcache/workflows/registry"
)

func TestMain(m *testing.M) { devstacktest.Main(m) }

const testToken = "main-test-token-0123456789"

// producer is a test-local stand-in for services/cache-producer's activities: Backfill writes
// 50 users into the generation through the real distcache.Publisher; it waits at gate (when set)
// so the test can observe a running build.
type producer struct {
	pub  *distcache.Publisher
	mu   sync.Mutex
	gate chan struct{}
}

func (p *producer) Backfill(ctx context.Context, bp workflows.BackfillParams) (workflows.BackfillProgress, error) {
	proj, err := projection.Compile(bp.Definition)
	if err != nil {
		return workflows.BackfillProgress{}, err
	}
	const n = 50
	var pr workflows.BackfillProgress
	for i := range n {
		raw := fmt.Sprintf(`{"id":%d,"email":"u%d@x.io","name":"n%d","status":"active"}`, i, i, i)
		key, val, keep, err := proj.Apply([]byte(raw))
		if err != nil {
			return pr, err
		}
		if keep {
			if _, err := p.pub.SetGen(ctx, bp.Projection, bp.Generation, key, val, 1); err != nil {
				return pr, err
			}
		}
		pr = workflows.BackfillProgress{Offset: int64(i + 1), EndOffset: n, RecordsDone: int64(i + 1), RatePerSec: 500}
	}
	activity.RecordHeartbeat(ctx, pr)
	p.mu.Lock()
	gate := p.gate
	p.mu.Unlock()
	for gate != nil {
		select {
		case <-gate:
			gate = nil
		case <-ctx.Done():
			return pr, ctx.Err()
		case <-time.After(100 * time.Millisecond):
			activity.RecordHeartbeat(ctx, pr)
		}
	}
	return pr, nil
}

func (p *producer) CaughtUp(context.Context, workflows.CaughtUpParams) (workflows.CaughtUpResult, error) {
	return workflows.CaughtUpResult{Offset: 50, HighWatermark: 50}, nil
}

type restClient struct {
	t    *testing.T
	base string
}

func (c restClient) call(method, path string, body any) (int, map[string]any) {
	c.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, c.base+path, rd)
	req.Header.Set("Authorization", "Bearer "+testToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	b, _ := io.ReadAll(resp.Body)
	if len(b) > 0 && json.Unmarshal(b, &out) != nil {
		c.t.Fatalf("%s %s: body %q is not a JSON object", method, path, b)
	}
	return resp.StatusCode, out
}

// status returns the generations of GET /status as generation → state, the current generation and
// the running build (nil when none).
func (c restClient) status(name string) (map[string]string, string, map[string]any) {
	c.t.Helper()
	code, st := c.call("GET", "/v1/projections/"+name+"/status", nil)
	if code != 200 {
		c.t.Fatalf("status: %d %v", code, st)
	}
	states := map[string]string{}
	for _, g := range st["generations"].([]any) {
		gm := g.(map[string]any)
		states[fmt.Sprint(gm["generation"])] = gm["state"].(string)
	}
	cur := fmt.Sprint(st["projection"].(map[string]any)["current_generation"])
	running, _ := st["running"].(map[string]any)
	return states, cur, running
}

// TestServiceEndToEnd runs the whole control-plane (run, as main does) on a real PostgreSQL,
// Redis and Temporal dev server, with a test-local cache-producer worker, and drives it over
// REST: create, progress while building, "already running", update, rollback, cutover, delete,
// then a graceful shutdown.
func TestServiceEndToEnd(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	dbURL := devstacktest.Database(t)
	r := devstacktest.Redis(t)
	tmp := devstacktest.Temporal(t)
	env := serviceEnv(dbURL, r.Addr, tmp.HostPort,
		"CONTROLPLANE_TEMPORAL_UI_URL", "http://ui.example",
		"CONTROLPLANE_RETIRE_GRACE", "1h",
		"CONTROLPLANE_RETIRE_DRAIN", "200ms",
		"CONTROLPLANE_LOG_LEVEL", "debug",
	)
	l, logs, stop := startService(ctx, t, env)

	// The cache-producer side, test-local.
	rdb := redis.NewClient(&redis.Options{Addr: r.Addr})
	defer rdb.Close()
	pub, err := distcache.NewPublisher(rdb)
	if err != nil {
		t.Fatal(err)
	}
	tc, err := client.Dial(client.Options{HostPort: tmp.HostPort, Namespace: tmp.Namespace,
		Logger: tlog.NewStructuredLogger(slog.New(slog.DiscardHandler))})
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	prod := &producer{pub: pub, gate: make(chan struct{})}
	w := worker.New(tc, workflows.CacheProducerTaskQueue, worker.Options{})
	w.RegisterActivityWithOptions(prod.Backfill, activity.RegisterOptions{Name: workflows.ActivityBackfill})
	w.RegisterActivityWithOptions(prod.CaughtUp, activity.RegisterOptions{Name: workflows.ActivityCaughtUp})
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	defer w.Stop()

	c := restClient{t: t, base: "http://" + l.http.Addr().String()}
	const name = "e2e_users"
	def := map[string]any{"name": name, "model": "users", "key_template": "{email}", "fields": []string{"id", "email"}}
	code, op := c.call("POST", "/v1/projections", def)
	if code != 200 {
		t.Fatalf("create: %d %v\n%s", code, op, logs)
	}
	wf := op["workflow"].(map[string]any)
	if wf["workflow_id"] != "projection/"+name || !strings.HasPrefix(wf["ui_url"].(string), "http://ui.example/namespaces/default/workflows/projection%2F"+name+"/") {
		t.Errorf("workflow = %v", wf)
	}

	// While the backfill is held: status shows the running build's progress, and a replay is
	// refused as already running.
	devstacktest.Eventually(t, 30*time.Second, func() bool {
		_, _, running := c.status(name)
		bf, _ := running["backfill"].(map[string]any)
		return running["phase"] == workflows.PhaseBackfilling && fmt.Sprint(bf["records_done"]) == "50"
	}, "status shows the running backfill's progress")
	if code, body := c.call("POST", "/v1/projections/"+name+":replay", map[string]any{}); code != http.StatusConflict ||
		!strings.Contains(fmt.Sprint(body["message"]), "already running") {
		t.Errorf("replay during build: %d %v, want 409 already running", code, body)
	}
	prod.mu.Lock()
	close(prod.gate)
	prod.gate = nil
	prod.mu.Unlock()

	devstacktest.Eventually(t, 60*time.Second, func() bool {
		states, cur, running := c.status(name)
		return states["1"] == "live" && cur == "1" && running == nil
	}, "generation 1 live")
	if got, _ := pub.CurrentGeneration(ctx, name); got != 1 {
		t.Fatalf("Redis pointer = %d, want 1", got)
	}

	// Update: a field is added; generation 2 goes live, 1 is retained (1h grace) as retiring.
	def["fields"] = []string{"id", "email", "name"}
	if code, body := c.call("PUT", "/v1/projections/"+name, def); code != 200 {
		t.Fatalf("update: %d %v", code, body)
	}
	devstacktest.Eventually(t, 60*time.Second, func() bool {
		states, cur, _ := c.status(name)
		return states["2"] == "live" && states["1"] == "retiring" && cur == "2"
	}, "generation 2 live, 1 retiring")
	t.Cleanup(func() {
		for g := int64(1); g <= 2; g++ {
			_ = tc.TerminateWorkflow(context.Background(), workflows.RetireWorkflowID(name, g), "", "test over")
		}
	})
	v, err := rdb.Get(ctx, distcache.ValueKey(name, 2, "u7@x.io")).Result()
	if err != nil || !strings.HasSuffix(v, `{"id":7,"email":"u7@x.io","name":"n7"}`) {
		t.Errorf("generation 2 value = %q, %v", v, err)
	}

	// Rollback to 1, then cut over to 2 again.
	code, body := c.call("POST", "/v1/projections/"+name+":rollback", map[string]any{})
	if code != 200 || fmt.Sprint(body["current_generation"]) != "1" || fmt.Sprint(body["previous_generation"]) != "2" {
		t.Fatalf("rollback: %d %v", code, body)
	}
	if got, _ := pub.CurrentGeneration(ctx, name); got != 1 {
		t.Errorf("Redis pointer after rollback = %d, want 1", got)
	}
	code, body = c.call("POST", "/v1/projections/"+name+":cutover", map[string]any{"generation": 2})
	if code != 200 || fmt.Sprint(body["current_generation"]) != "2" {
		t.Fatalf("cutover: %d %v", code, body)
	}
	code, body = c.call("POST", "/v1/projections/"+name+":cutover", map[string]any{"generation": 9})
	if code != http.StatusNotFound {
		t.Errorf("cutover to a missing generation: %d %v, want 404", code, body)
	}

	// Delete: every generation's keys go, the projection is gone.
	if code, body := c.call("DELETE", "/v1/projections/"+name, nil); code != 200 {
		t.Fatalf("delete: %d %v", code, body)
	}
	devstacktest.Eventually(t, 60*time.Second, func() bool {
		code, _ := c.call("GET", "/v1/projections/"+name, nil)
		keys, _, err := rdb.Scan(ctx, 0, "dc:"+name+":*", 10000).Result()
		return code == http.StatusNotFound && err == nil && len(keys) == 0
	}, "projection deleted and its keys unlinked")

	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(logs.String(), testToken) {
		t.Error("the token appears in the service's logs")
	}
}

// startService runs the service with env until stop, which ends it and reports how it ended;
// it returns once both listeners are bound.
func startService(ctx context.Context, t *testing.T, env map[string]string) (listeners, *lockedBuffer, func() error) {
	t.Helper()
	addrs := make(chan listeners, 1)
	onListen = func(l listeners) { addrs <- l }
	t.Cleanup(func() { onListen = nil })
	// The registry is migrated before the service starts, as `make migrate` or the chart's Job
	// does; with CONTROLPLANE_MIGRATE=true the service applies it itself.
	if u := env["CONTROLPLANE_DATABASE_URL"]; u != "" && env["CONTROLPLANE_MIGRATE"] != "true" {
		if err := migrations.Up(ctx, u, migrations.Control); err != nil {
			t.Fatalf("migrate the registry: %v", err)
		}
	}
	logs := &lockedBuffer{}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- run(runCtx, nil, func(k string) string { return env[k] }, logs) }()
	var l listeners
	select {
	case l = <-addrs:
	case err := <-done:
		cancel()
		t.Fatalf("run: %v\n%s", err, logs)
	case <-ctx.Done():
		cancel()
		t.Fatal("run did not start")
	}
	stop := func() error {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				return fmt.Errorf("run returned %w after shutdown", err)
			}
			return nil
		case <-time.After(30 * time.Second):
			return errors.New("run did not return after its context ended")
		}
	}
	return l, logs, stop
}

// TestServiceWithoutTemporal: the control-plane starts while Temporal is down; Get, List and
// Status answer from the registry, Create and Replay answer 503 UNAVAILABLE naming Temporal (and
// leave nothing registered), /readyz is 200 "degraded"; once Temporal is started again the worker
// attaches, /readyz says "ok" and Create starts its workflow.
func TestServiceWithoutTemporal(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	dbURL := devstacktest.Database(t)
	r := devstacktest.Redis(t)
	tmp := devstacktest.OwnTemporal(t)
	if err := tmp.Stop(); err != nil {
		t.Fatalf("stop temporal: %v", err)
	}
	env := serviceEnv(dbURL, r.Addr, tmp.HostPort)
	l, logs, stop := startService(ctx, t, env)
	defer func() {
		if err := stop(); err != nil {
			t.Error(err)
		}
	}()

	// A projection already in the registry (run migrated the database).
	pool, err := pgxpool.New(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	const name = "offline_users"
	if err := registry.New(pool).CreateProjection(ctx, projection.Definition{
		Name: name, Model: "users", KeyTemplate: "{email}", Fields: []string{"id", "email"},
	}); err != nil {
		t.Fatal(err)
	}

	c := restClient{t: t, base: "http://" + l.http.Addr().String()}
	for _, path := range []string{"/v1/projections/" + name, "/v1/projections", "/v1/projections/" + name + "/status"} {
		if code, body := c.call("GET", path, nil); code != 200 || !strings.Contains(fmt.Sprint(body), name) {
			t.Errorf("GET %s while Temporal is down: %d %v, want 200 naming %s", path, code, body, name)
		}
	}
	def := map[string]any{"name": "new_users", "model": "users", "key_template": "{email}", "fields": []string{"id", "email"}}
	for _, w := range []struct {
		path string
		body any
	}{{"/v1/projections", def}, {"/v1/projections/" + name + ":replay", map[string]any{}}} {
		code, body := c.call("POST", w.path, w.body)
		if code != http.StatusServiceUnavailable || fmt.Sprint(body["code"]) != "14" || !strings.Contains(fmt.Sprint(body["message"]), "Temporal") {
			t.Errorf("POST %s while Temporal is down: %d %v, want 503 UNAVAILABLE naming Temporal", w.path, code, body)
		}
	}
	if code, body := c.call("GET", "/v1/projections/new_users", nil); code != http.StatusNotFound {
		t.Errorf("the refused create left new_users registered: %d %v", code, body)
	}
	readyz := func() (int, string) {
		resp, err := http.Get(c.base + "/readyz")
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := readyz(); code != 200 || !strings.Contains(body, `"status":"degraded: temporal"`) {
		t.Errorf("/readyz while Temporal is down: %d %s, want 200 \"degraded: temporal\"", code, body)
	}

	// Temporal comes back: the worker attaches and Create starts its workflow.
	if err := tmp.Start(ctx); err != nil {
		t.Fatalf("start temporal again: %v", err)
	}
	devstacktest.Eventually(t, time.Minute, func() bool {
		code, body := readyz()
		return code == 200 && strings.Contains(body, `"status":"ok"`)
	}, "/readyz says ok once Temporal is back")
	code, op := c.call("POST", "/v1/projections", def)
	if code != 200 {
		t.Fatalf("create once Temporal is back: %d %v\n%s", code, op, logs)
	}
	if wf, _ := op["workflow"].(map[string]any); wf["workflow_id"] != "projection/new_users" {
		t.Errorf("create once Temporal is back: workflow %v, want projection/new_users", op["workflow"])
	}
	if n := strings.Count(logs.String(), "temporal is unavailable; retrying"); n != 1 {
		t.Errorf("the outage was logged %d times, want once", n)
	}
}

func TestRunRefusesBadConfig(t *testing.T) {
	err := run(context.Background(), nil, func(k string) string {
		if k == "CONTROLPLANE_GRPC_ADDR" {
			return "nope"
		}
		return ""
	}, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "CONTROLPLANE_GRPC_ADDR") || !strings.Contains(err.Error(), "CONTROLPLANE_DATABASE_URL") {
		t.Fatalf("run with bad config = %v, want errors naming the variables", err)
	}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// serviceEnv is the environment of a control-plane under test: the registry database dbURL,
// Redis at redisAddr, the Temporal frontend temporalHostPort (namespace default), the model
// users=id,email,name,status, listeners on free ports and the test token. extra holds variable,
// value pairs that add to or override these.
func serviceEnv(dbURL, redisAddr, temporalHostPort string, extra ...string) map[string]string {
	env := map[string]string{
		"CONTROLPLANE_DATABASE_URL":       dbURL,
		"CONTROLPLANE_MODELS":             "users=id,email,name,status",
		"CONTROLPLANE_REDIS_ADDRS":        redisAddr,
		"CONTROLPLANE_TEMPORAL_HOSTPORT":  temporalHostPort,
		"CONTROLPLANE_TEMPORAL_NAMESPACE": "default",
		"CONTROLPLANE_GRPC_ADDR":          "127.0.0.1:0",
		"CONTROLPLANE_HTTP_ADDR":          "127.0.0.1:0",
		"CONTROLPLANE_TOKENS":             testToken,
	}
	for i := 0; i+1 < len(extra); i += 2 {
		env[extra[i]] = extra[i+1]
	}
	return env
}
