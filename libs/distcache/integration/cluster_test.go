package integration_test

import (
	"bytes"
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/distcache/distcache/libs/distcache"
	"github.com/distcache/distcache/tools/devstacktest"
)

// TestCluster runs the main paths on a Redis Cluster of 3 masters and 3
// replicas: values spread over slots, written value-then-stream; reads go
// to replicas; pushed updates, GetMany pipelines, cutover and retire (SCAN
// on every master).
func TestCluster(t *testing.T) {
	t.Parallel()
	cl := devstacktest.RedisCluster(t)
	ctx := ctxT(t)
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: cl.Addrs()})
	t.Cleanup(func() { _ = rdb.Close() })
	pub := newPublisher(t, rdb)
	const n = 200
	changes := make([]distcache.Change, n)
	for i := range changes {
		changes[i] = distcache.Change{Key: keyN(i), Value: val(keyN(i), 1), Version: 1}
	}
	res, err := pub.Apply(ctx, proj, 1, changes)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range res {
		if !r.Applied || r.Err != nil {
			t.Fatalf("Apply[%d] = %+v", i, r)
		}
	}
	if got := rdb.XLen(ctx, distcache.StreamKey(proj, 1)).Val(); got != 1 {
		t.Fatalf("stream length = %d, want 1 (one entry per batch)", got)
	}
	// A replay re-appends the stream entry (repairing a crash between the
	// two writes) without applying the value again.
	if applied, err := pub.SetGen(ctx, proj, 1, keyN(0), val(keyN(0), 1), 1); err != nil || applied {
		t.Fatalf("replay = %v, %v; want not applied", applied, err)
	}
	if got := rdb.XLen(ctx, distcache.StreamKey(proj, 1)).Val(); got != 2 {
		t.Fatalf("stream length after replay = %d, want 2", got)
	}
	mustCutover(t, pub, proj, 1)
	// go-redis builds the client's slot map from CLUSTER SLOTS, which lists a
	// replica only once it has synced; wait for that so that the map has
	// replicas to read from. (A replica counts as available once it has not
	// failed and its replication offset, gossiped over the cluster bus, is
	// non-zero: after the first write. CLUSTER SHARDS reports that same
	// condition as the replica's health "online".) Every node must report
	// them, since the client asks any one of them.
	devstacktest.Eventually(t, wait, func() bool {
		for _, addr := range cl.Addrs() {
			node := redis.NewClient(&redis.Options{Addr: addr})
			shards, err := node.ClusterShards(ctx).Result()
			_ = node.Close()
			if err != nil || len(shards) == 0 {
				return false
			}
			for _, s := range shards {
				if len(s.Slots) > 0 && !slices.ContainsFunc(s.Nodes, func(n redis.Node) bool {
					return n.Role == "replica" && n.Health == "online"
				}) {
					return false
				}
			}
		}
		return true
	}, "replicas never reported online in CLUSTER SHARDS")

	c := newClient(t, distcache.WithClusterAddrs(cl.Addrs()...), distcache.WithProjections(proj))
	for i := range n {
		devstacktest.Eventually(t, wait, func() bool {
			v, err := c.Get(ctx, proj, keyN(i))
			return err == nil && bytes.Equal(v, val(keyN(i), 1))
		}, "Get %s", keyN(i))
	}
	if got := replicaGets(t, ctx, rdb); got == 0 {
		t.Fatal("no GET reached a replica")
	}
	ents, err := c.GetMany(ctx, proj, []string{keyN(0), "absent", keyN(5)})
	if err != nil || !ents[0].Found || ents[1].Found || !ents[2].Found {
		t.Fatalf("GetMany = %+v, %v", ents, err)
	}
	mustSet(t, pub, proj, 1, keyN(3), 2)
	devstacktest.Eventually(t, wait, func() bool {
		e, err := c.GetEntry(ctx, proj, keyN(3))
		return err == nil && e.Version == 2
	}, "update not pushed")

	if _, err := pub.Apply(ctx, proj, 2, changes); err != nil {
		t.Fatal(err)
	}
	misses := stats(c, proj).Misses
	mustCutover(t, pub, proj, 2)
	devstacktest.Eventually(t, wait, func() bool { return c.Generation(proj) == 2 }, "cutover not followed")
	if got := stats(c, proj).Misses; got != misses {
		t.Fatalf("misses during cutover = %d", got-misses)
	}
	deleted, err := pub.RetireGeneration(ctx, proj, 1, 64)
	if err != nil || deleted != n {
		t.Fatalf("RetireGeneration = %d, %v; want %d", deleted, err, n)
	}
}

// replicaGets sums the GET calls served by replica nodes.
func replicaGets(t *testing.T, ctx context.Context, rdb *redis.ClusterClient) int64 {
	t.Helper()
	var total int64
	var mu = make(chan struct{}, 1)
	err := rdb.ForEachSlave(ctx, func(ctx context.Context, node *redis.Client) error {
		info, err := node.Info(ctx, "commandstats").Result()
		if err != nil {
			return err
		}
		for _, line := range strings.Split(info, "\n") {
			if strings.HasPrefix(line, "cmdstat_get:calls=") {
				var calls int64
				for _, ch := range strings.TrimPrefix(line, "cmdstat_get:calls=") {
					if ch < '0' || ch > '9' {
						break
					}
					calls = calls*10 + int64(ch-'0')
				}
				mu <- struct{}{}
				total += calls
				<-mu
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return total
}
