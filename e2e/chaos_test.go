package e2e_test

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/distcache/distcache/e2e/chaos"
	"github.com/distcache/distcache/e2e/pipeline"
	"github.com/distcache/distcache/tools/devstacktest"
)

// TestChaosShort runs the chaos scenario in its short form on its own stack: the publisher, the
// producer replica that writes the projection (the other of two takes over; then the owner is
// paused past the session timeout and resumed), the Redis primary, its replica, the broker and
// PostgreSQL are each killed with SIGKILL and restarted under a steady write load, Redis loses
// its data (FLUSHALL) and restarts empty, and an edge's connection is cut. It asserts the
// invariants themselves: every
// committed change is in Redis and at both edges (by version and seq), no edge returned a
// version older than one it had returned, zero read errors for cached keys, and every fault was
// injected and recovered from.
func TestMain(m *testing.M) {
	pipeline.QuietRedisLog()
	devstacktest.Main(m)
}

func TestChaosShort(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 12*time.Minute)
	defer cancel()
	root, err := devstacktest.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	// Not t.TempDir: its parent is private to this user, and PostgreSQL runs as the postgres user.
	dir, err := os.MkdirTemp("", "chaos-short-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			// The service logs and the stack's data stay for a post-mortem.
			t.Logf("chaos: kept %s for inspection (services/*.log)", dir)
			return
		}
		_ = os.RemoveAll(dir)
	})
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := chaos.Short(root, dir)
	cfg.Out = &out
	rep, err := chaos.Run(ctx, cfg)
	rep.Print(&out)
	t.Logf("chaos output:\n%s", out.String())
	if err != nil {
		t.Fatalf("chaos: %v", err)
	}
	if got, want := len(rep.Faults), 10; got != want {
		t.Errorf("faults injected = %d, want %d", got, want)
	}
	if rep.Checked != cfg.Items || rep.RedisMismatch != 0 {
		t.Errorf("checked %d of %d items, %d lost or stale in Redis; want all checked and 0", rep.Checked, cfg.Items, rep.RedisMismatch)
	}
	for i, m := range rep.EdgeMismatch {
		if m != 0 {
			t.Errorf("edge %d: %d items lost or stale", i, m)
		}
	}
	if len(rep.Edges) != 2 {
		t.Fatalf("edges watched = %d, want 2", len(rep.Edges))
	}
	for _, e := range rep.Edges {
		if e.Errors != 0 || e.Regressions != 0 {
			t.Errorf("edge %s: %d read errors (%v), %d version regressions; want 0 and 0", e.Name, e.Errors, e.ErrorsByPhase, e.Regressions)
		}
		if e.Reads < 1000 {
			t.Errorf("edge %s: only %d reads, too few to mean anything", e.Name, e.Reads)
		}
	}
	// The load must have been real, including across the outages.
	if rep.Committed < int64(cfg.Rate)*10 {
		t.Errorf("committed %d updates, want at least %d", rep.Committed, cfg.Rate*10)
	}
}
