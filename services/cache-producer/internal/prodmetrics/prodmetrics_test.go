package prodmetrics

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/expfmt"

	"github.com/distcache/distcache/services/cache-producer/internal/projector"
)

func TestCommitToRedis(t *testing.T) {
	t.Parallel()
	m := New()
	defer m.Close()
	tg := projector.Target{Projection: "users_by_email", Generation: 3}
	// Observed: a batch that changed Redis, its oldest record committed 2 s ago.
	m.Batch(tg, projector.Stats{Records: 2, Applied: 2, OldestSourceTime: time.Now().Add(-2 * time.Second)}, time.Millisecond)
	// Not observed: replays only, and a batch without source times.
	m.Batch(tg, projector.Stats{Records: 2, Skipped: 2, OldestSourceTime: time.Now().Add(-time.Hour)}, time.Millisecond)
	m.Batch(tg, projector.Stats{Records: 1, Applied: 1}, time.Millisecond)
	const name = "distcache_producer_commit_to_redis_seconds"
	want := `# HELP distcache_producer_commit_to_redis_seconds Per live batch that changed Redis: from the core's commit of its oldest record (dc-source-ts) to the batch's commit in Redis.
# TYPE distcache_producer_commit_to_redis_seconds histogram
distcache_producer_commit_to_redis_seconds_bucket{projection="users_by_email",le="1.024"} 0
distcache_producer_commit_to_redis_seconds_bucket{projection="users_by_email",le="2.048"} 1
`
	got, err := testutil.CollectAndFormat(m.freshness, expfmt.TypeTextPlain, name)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(strings.TrimSpace(want), "\n") {
		if !strings.Contains(string(got), line+"\n") {
			t.Errorf("want the line\n%s\nin\n%s", line, got)
		}
	}
	if n := testutil.CollectAndCount(m.freshness, name); n != 1 {
		t.Errorf("%d series, want 1 (one projection)", n)
	}
	if !strings.Contains(string(got), "_count{projection=\"users_by_email\"} 1\n") {
		t.Errorf("want one observation:\n%s", got)
	}
}

func TestRebalanceKindsFromTheStart(t *testing.T) {
	t.Parallel()
	m := New()
	defer m.Close()
	if n := testutil.CollectAndCount(m.rebalances, "distcache_producer_rebalances_total"); n != 3 {
		t.Errorf("%d series of distcache_producer_rebalances_total before any rebalance, want 3 (assigned, revoked, lost)", n)
	}
}
