package integration_test

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/distcache/distcache/libs/distcache"
	"github.com/distcache/distcache/tools/devstack"
	"github.com/distcache/distcache/tools/devstacktest"
)

// TestCluster runs the main paths on a Redis Cluster of 3 masters and 3
// replicas: values spread over slots, written value-then-stream; reads go
// to replicas; pushed updates, GetMany pipelines, cutover and retire (SCAN
// on every master).
func TestCluster(t *testing.T) {
	t.Parallel()
	cl, rdb, pub := newClusterPublisher(t)
	ctx := ctxT(t)
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

// TestClusterStreamFence: on Redis Cluster a batch's values are written before its change-stream
// entries (another slot). A writer paused between the two past another writer's ClaimStream
// (a zombie) must not append its older versions after the new writer's: ApplyAs refuses the
// append with ErrFenced, appends nothing, and its values stay version-guarded. Without a claim
// stored, and for the claim stored, ApplyAs appends as Apply does; RetireGeneration removes the
// stream writer key with the stream.
func TestClusterStreamFence(t *testing.T) {
	t.Parallel()
	_, rdb, pub := newClusterPublisher(t)
	ctx := ctxT(t)
	const gen = 3
	stream := distcache.StreamKey(proj, gen)
	batch := func(version int64, keys ...string) []distcache.Change {
		cs := make([]distcache.Change, len(keys))
		for i, k := range keys {
			cs[i] = distcache.Change{Key: k, Value: val(k, version), Version: version}
		}
		return cs
	}
	// No claim stored yet: ApplyAs appends.
	if _, err := pub.ApplyAs(ctx, proj, gen, "replica-a 01", batch(1, "k1", "k2")); err != nil {
		t.Fatalf("ApplyAs before any claim: %v", err)
	}
	if err := pub.ClaimStream(ctx, proj, gen, "replica-a 01"); err != nil {
		t.Fatal(err)
	}
	if _, err := pub.ApplyAs(ctx, proj, gen, "replica-a 01", batch(2, "k1")); err != nil {
		t.Fatalf("ApplyAs by the claim stored: %v", err)
	}
	// Replica B takes over and writes newer versions.
	if err := pub.ClaimStream(ctx, proj, gen, "replica-b 02"); err != nil {
		t.Fatal(err)
	}
	if _, err := pub.ApplyAs(ctx, proj, gen, "replica-b 02", batch(5, "k1", "k3")); err != nil {
		t.Fatalf("ApplyAs by the new claim: %v", err)
	}
	before := rdb.XLen(ctx, stream).Val()
	// The zombie: k1 at 3 is refused by the version guard, k2 at 3 and k4 at 3 are written
	// (nobody wrote newer ones), but none of their entries may follow B's.
	res, err := pub.ApplyAs(ctx, proj, gen, "replica-a 01", batch(3, "k1", "k2", "k4"))
	if !errors.Is(err, distcache.ErrFenced) {
		t.Fatalf("ApplyAs by the old claim = %v, %v; want ErrFenced", res, err)
	}
	if !strings.Contains(err.Error(), "replica-b 02") {
		t.Errorf("error %q does not name the claim stored", err)
	}
	if got := rdb.XLen(ctx, stream).Val(); got != before {
		t.Errorf("stream length after the fenced append = %d, want %d (nothing appended)", got, before)
	}
	if v := storedVersion(t, rdb, proj, gen, "k1"); v != 5 {
		t.Errorf("k1 version = %d, want 5 (the newer writer's)", v)
	}
	// B replays the zombie's records (same versions): their entries are appended by B, after.
	if _, err := pub.ApplyAs(ctx, proj, gen, "replica-b 02", batch(3, "k2", "k4")); err != nil {
		t.Fatalf("replay by the new claim: %v", err)
	}
	if got := rdb.XLen(ctx, stream).Val(); got != before+1 {
		t.Errorf("stream length after the replay = %d, want %d", got, before+1)
	}
	// Apply (no claim) is not fenced: writers that claim nothing keep working.
	if _, err := pub.Apply(ctx, proj, gen, batch(6, "k5")); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	if err := pub.ClaimStream(ctx, proj, gen, ""); !errors.Is(err, distcache.ErrInvalidOption) {
		t.Errorf("ClaimStream with an empty claim = %v, want ErrInvalidOption", err)
	}
	if _, err := pub.RetireGeneration(ctx, proj, gen, 100); err != nil {
		t.Fatal(err)
	}
	if n := rdb.Exists(ctx, stream, distcache.StreamWriterKey(proj, gen)).Val(); n != 0 {
		t.Errorf("after RetireGeneration %d of the stream and its writer key remain", n)
	}
}

// newClusterPublisher starts a Redis Cluster of its own and returns it, a client of it and a
// Publisher over that client.
func newClusterPublisher(t *testing.T) (*devstack.RedisCluster, *redis.ClusterClient, *distcache.Publisher) {
	t.Helper()
	cl := devstacktest.RedisCluster(t)
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: cl.Addrs()})
	t.Cleanup(func() { _ = rdb.Close() })
	return cl, rdb, newPublisher(t, rdb)
}

// storedVersion returns the version stored under key in generation gen (0 when absent).
func storedVersion(t *testing.T, rdb redis.UniversalClient, proj string, gen int64, key string) int64 {
	t.Helper()
	s, err := rdb.Get(context.Background(), distcache.ValueKey(proj, gen, key)).Result()
	if errors.Is(err, redis.Nil) {
		return 0
	}
	if err != nil || len(s) < 16 {
		t.Fatalf("GET %s: %q, %v", key, s, err)
	}
	v, err := distcache.ParseVersionHex(s[:16])
	if err != nil {
		t.Fatal(err)
	}
	return v
}
