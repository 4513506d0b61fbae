package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/distcache/distcache/e2e/pipeline"
	"github.com/distcache/distcache/tools/devstack"
	"github.com/distcache/distcache/tools/devstacktest"
)

func TestMain(m *testing.M) { devstacktest.Main(m) }

// TestDemoShortRun runs the whole demo on its own stack (own ports) for a few seconds and checks
// its summary: changes reached the edge and the latency figures are present and sane.
func TestDemoShortRun(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	root, err := devstacktest.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	pg := devstacktest.Postgres(t)
	primary, replica := devstacktest.RedisReplicated(t)
	k := devstacktest.Kafka(t)
	tmp := devstacktest.Temporal(t)
	ports := Ports{}
	for _, p := range []*int{&ports.Publisher, &ports.Producer, &ports.ControlGRPC, &ports.ControlHTTP, &ports.Edge} {
		if *p, err = devstack.FreePort(); err != nil {
			t.Fatal(err)
		}
	}
	runDir := t.TempDir()
	var out bytes.Buffer
	cfg := Config{
		Stack: pipeline.Stack{
			CoreURL:           devstacktest.DatabaseOn(t, pg),
			ControlURL:        devstacktest.DatabaseOn(t, pg),
			RedisAddr:         primary.Addr,
			RedisReplicaAddrs: []string{replica.Addr},
			KafkaBrokers:      k.Addr,
			TemporalHostPort:  tmp.HostPort,
			TemporalUIURL:     "http://127.0.0.1:1", // headless in tests
		},
		RepoDir: root,
		RunDir:  runDir,
		Ports:   ports,
		Users:   3000,
		Orgs:    50,
		Rate:    100,
		Period:  6 * time.Second,
		Token:   "demo-test-token-0123456789",
		Out:     &out,
	}
	sum, err := Run(ctx, cfg)
	if err != nil {
		dumpLogs(t, runDir)
		t.Fatalf("demo: %v\n--- output ---\n%s", err, out.String())
	}
	PrintSummary(&out, sum)
	t.Logf("demo output:\n%s", out.String())
	if !sum.Seeded || sum.Users != 3000 {
		t.Errorf("seeded %v with %d users; want a fresh seed of 3000", sum.Seeded, sum.Users)
	}
	if sum.Updates == 0 || sum.EdgeChanges < uint64(sum.Updates) || sum.EdgeUpdates == 0 {
		t.Errorf("updates %d, edge received %d, applied %d; want every update received and some applied", sum.Updates, sum.EdgeChanges, sum.EdgeUpdates)
	}
	if sum.Samples == 0 {
		t.Fatalf("no latency samples reached the edge (unseen %d)", sum.Unseen)
	}
	if sum.P50 <= 0 || sum.P99 < sum.P50 || sum.Max < sum.P99 || sum.P99 > 5*time.Second {
		t.Errorf("latency p50 %v p99 %v max %v: want 0 < p50 <= p99 <= max and p99 < 5s", sum.P50, sum.P99, sum.Max)
	}
	if sum.Generations["users_by_email"] < 1 || sum.Generations["org_by_slug"] < 1 {
		t.Errorf("generations %v; want both projections live", sum.Generations)
	}
	if sum.HitRatio <= 0 || sum.HitRatio > 1 {
		t.Errorf("hit ratio %v; want in (0, 1]", sum.HitRatio)
	}
	for _, want := range []string{"commit -> edge-visible latency", "edge hit ratio", "generation of users_by_email"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("summary lacks %q", want)
		}
	}
}

func dumpLogs(t *testing.T, runDir string) {
	logs, _ := filepath.Glob(filepath.Join(runDir, "services", "*.log"))
	for _, l := range logs {
		b, _ := os.ReadFile(l)
		if len(b) > 4000 {
			b = b[len(b)-4000:]
		}
		t.Logf("--- %s ---\n%s", l, b)
	}
}
