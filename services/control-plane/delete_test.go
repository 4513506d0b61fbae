package main

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	enumspb "go.temporal.io/api/enums/v1"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/client"
	tlog "go.temporal.io/sdk/log"
	"go.temporal.io/sdk/worker"

	"github.com/distcache/distcache/libs/distcache"
	"github.com/distcache/distcache/tools/devstacktest"
	"github.com/distcache/distcache/workflows"
)

// TestDeleteDuringBuild, on a real Temporal dev server, PostgreSQL and Redis: a projection whose
// backfill never ends (the test-local producer holds it) is deleted over REST. The delete is
// accepted (not "already running"), the build is terminated, the backfill activity learns it and
// returns, GetStatus says "deleting" while the delete drains, and then the projection and every
// key of its generation are gone.
func TestDeleteDuringBuild(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dbURL := devstacktest.Database(t)
	r := devstacktest.Redis(t)
	tmp := devstacktest.Temporal(t)
	env := serviceEnv(dbURL, r.Addr, tmp.HostPort,
		"CONTROLPLANE_RETIRE_DRAIN", "200ms",
	)
	l, logs, stop := startService(ctx, t, env)
	defer func() {
		if err := stop(); err != nil {
			t.Error(err)
		}
	}()

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
	prod := &producer{pub: pub, gate: make(chan struct{})} // never opened: the backfill runs until cancelled
	backfillDone := make(chan error, 1)
	w := worker.New(tc, workflows.CacheProducerTaskQueue, worker.Options{})
	w.RegisterActivityWithOptions(func(ctx context.Context, bp workflows.BackfillParams) (workflows.BackfillProgress, error) {
		pr, err := prod.Backfill(ctx, bp)
		backfillDone <- err
		return pr, err
	}, activity.RegisterOptions{Name: workflows.ActivityBackfill})
	w.RegisterActivityWithOptions(prod.CaughtUp, activity.RegisterOptions{Name: workflows.ActivityCaughtUp})
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	defer w.Stop()

	c := restClient{t: t, base: "http://" + l.http.Addr().String()}
	const name = "deleted_while_building"
	def := map[string]any{"name": name, "model": "users", "key_template": "{email}", "fields": []string{"id", "email"}}
	code, op := c.call("POST", "/v1/projections", def)
	if code != 200 {
		t.Fatalf("create: %d %v\n%s", code, op, logs)
	}
	buildRun := op["workflow"].(map[string]any)["run_id"].(string)
	devstacktest.Eventually(t, 30*time.Second, func() bool {
		_, _, running := c.status(name)
		return running["phase"] == workflows.PhaseBackfilling
	}, "the build is backfilling")
	devstacktest.Eventually(t, 30*time.Second, func() bool {
		keys, _ := rdb.Keys(ctx, "dc:"+name+":*").Result()
		return len(keys) >= 50
	}, "the backfill wrote generation 1's keys")

	deleted := time.Now()
	code, body := c.call("DELETE", "/v1/projections/"+name, nil)
	if code != 200 {
		t.Fatalf("delete during the build: %d %v, want 200 (the build is cancelled, not 'already running')", code, body)
	}
	desc, err := tc.DescribeWorkflow(ctx, workflows.BuildWorkflowID(name), buildRun)
	if err != nil {
		t.Fatal(err)
	}
	if st := desc.RawResponse.GetWorkflowExecutionInfo().GetStatus(); st != enumspb.WORKFLOW_EXECUTION_STATUS_TERMINATED {
		t.Errorf("the build's status after the delete: %v, want terminated", st)
	}
	code, st := c.call("GET", "/v1/projections/"+name+"/status", nil)
	if running, _ := st["running"].(map[string]any); code != 200 || running["phase"] != "deleting" {
		t.Errorf("status while the delete drains: %d %v, want 200 with running.phase deleting", code, st)
	}
	select {
	case err := <-backfillDone:
		if err == nil || !errors.Is(err, context.Canceled) {
			t.Errorf("the backfill activity returned %v, want it cancelled", err)
		}
		t.Logf("the backfill activity stopped %v after the delete", time.Since(deleted).Round(time.Millisecond))
	case <-time.After(2 * workflows.BackfillHeartbeatTimeout):
		t.Fatalf("the backfill activity still runs %v after its build was terminated", 2*workflows.BackfillHeartbeatTimeout)
	}
	devstacktest.Eventually(t, 60*time.Second, func() bool {
		code, _ := c.call("GET", "/v1/projections/"+name+"/status", nil)
		keys, _, err := rdb.Scan(ctx, 0, "dc:"+name+":*", 10000).Result()
		return code == http.StatusNotFound && err == nil && len(keys) == 0
	}, "projection deleted and its keys unlinked")
	t.Logf("delete finished %v after it was asked for", time.Since(deleted).Round(time.Millisecond))
}
