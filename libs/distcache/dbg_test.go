package distcache_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/distcache/distcache/tools/devstacktest"
)

func TestDbgCluster(t *testing.T) {
	cl := devstacktest.RedisCluster(t)
	ctx := context.Background()
	x := redis.NewClient(&redis.Options{Addr: cl.Addrs()[0]})
	for i := 0; i < 50; i++ {
		t.Log(time.Now().Format("05.000"), x.ClusterSlots(ctx).Val())
		time.Sleep(200 * time.Millisecond)
		if len(x.ClusterSlots(ctx).Val()[0].Nodes) > 1 { break }
	}
	ro := redis.NewClusterClient(&redis.ClusterOptions{Addrs: cl.Addrs(), ReadOnly: true, RouteRandomly: true})
	for i := 0; i < 100; i++ {
		ro.Get(ctx, "k"+string(rune('a'+i%26)))
	}
	for _, a := range cl.Addrs() {
		n := redis.NewClient(&redis.Options{Addr: a})
		info := n.Info(ctx, "commandstats", "replication").Val()
		for _, l := range strings.Split(info, "\n") {
			if strings.HasPrefix(l, "cmdstat_get") || strings.HasPrefix(l, "role") || strings.HasPrefix(l, "master_link") {
				t.Log(a, l)
			}
		}
	}
}
