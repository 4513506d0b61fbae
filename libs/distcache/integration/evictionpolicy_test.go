package integration_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/distcache/distcache/libs/distcache"
	"github.com/distcache/distcache/tools/devstacktest"
)

// TestCheckEvictionPolicy: noeviction passes; any policy that may evict keys is refused with an
// error naming it, on a single node and on every master of a Cluster.
func TestCheckEvictionPolicy(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	_, rdb, _ := standalone(t)
	if err := distcache.CheckEvictionPolicy(ctx, rdb); err != nil {
		t.Fatalf("noeviction: %v", err)
	}
	for _, policy := range []string{"allkeys-lru", "volatile-ttl"} {
		if err := rdb.ConfigSet(ctx, "maxmemory-policy", policy).Err(); err != nil {
			t.Fatal(err)
		}
		err := distcache.CheckEvictionPolicy(ctx, rdb)
		if !errors.Is(err, distcache.ErrEvictionPolicy) || !strings.Contains(err.Error(), policy) {
			t.Fatalf("%s: CheckEvictionPolicy = %v, want ErrEvictionPolicy naming it", policy, err)
		}
	}

	cl := devstacktest.RedisCluster(t)
	crdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: cl.Addrs()})
	t.Cleanup(func() { _ = crdb.Close() })
	if err := distcache.CheckEvictionPolicy(ctx, crdb); err != nil {
		t.Fatalf("cluster, noeviction: %v", err)
	}
	for _, n := range cl.Nodes {
		c := n.Client()
		err := c.ConfigSet(ctx, "maxmemory-policy", "allkeys-random").Err()
		_ = c.Close()
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := distcache.CheckEvictionPolicy(ctx, crdb); !errors.Is(err, distcache.ErrEvictionPolicy) {
		t.Fatalf("cluster with allkeys-random: CheckEvictionPolicy = %v, want ErrEvictionPolicy", err)
	}
}
