package benchrun

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/distcache/distcache/tools/devstacktest"
)

func TestMain(m *testing.M) { devstacktest.Main(m) }

// TestRedisStalls: a command that keeps the real Redis busy for 20 ms between redisStallsReset
// and redisStalls is reported as a latency event with its worst time; a quiet interval as none.
func TestRedisStalls(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r := devstacktest.Redis(t)
	rdb := r.Client()
	if err := rdb.ConfigSet(ctx, "latency-monitor-threshold", "5").Err(); err != nil {
		t.Fatal(err)
	}
	before, err := redisStallsReset(ctx, rdb)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := redisStalls(ctx, rdb, before); err != nil || got != "none" {
		t.Fatalf("quiet interval = %q, %v; want none", got, err)
	}
	busy := redis.NewScript(`
local s = redis.call('TIME')
local start = s[1] * 1000000 + s[2]
repeat
  local n = redis.call('TIME')
until n[1] * 1000000 + n[2] - start > 20000
return 1`)
	if err := busy.Run(ctx, rdb, nil).Err(); err != nil {
		t.Fatal(err)
	}
	got, err := redisStalls(ctx, rdb, before)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(got, "command max ") {
		t.Errorf("after a 20 ms script: %q, want a command event", got)
	}
}
