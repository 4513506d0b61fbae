package distcache_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/distcache/distcache/libs/distcache"
)

// An edge service follows a projection and reads it from memory. (These
// examples need a Redis, so they are compiled but not run; the tests run the
// same calls against real servers.)
func ExampleNew() {
	ctx := context.Background()
	dc, err := distcache.New(ctx,
		distcache.WithAddrs("redis-primary:6379", "redis-replica-1:6379", "redis-replica-2:6379"),
		distcache.WithAuth("edge", "secret"),
		distcache.WithProjections("users_by_email"),
		distcache.WithMaxItems(1_000_000),
		distcache.WithMaxBytes(512<<20),
		distcache.WithMaxTTL(time.Hour),
		distcache.WithLogger(slog.Default()),
	)
	if err != nil {
		log.Fatal(err)
	}
	defer dc.Close(ctx)

	v, err := dc.Get(ctx, "users_by_email", "ada@example.com")
	switch {
	case errors.Is(err, distcache.ErrNotFound):
		fmt.Println("no such user")
	case err != nil:
		log.Print(err) // ErrUnavailable: a miss while Redis is down
	default:
		fmt.Printf("%s\n", v)
	}
}

// Redis Cluster, with replica reads; limits per projection.
func ExampleWithClusterAddrs() {
	ctx := context.Background()
	dc, err := distcache.New(ctx,
		distcache.WithClusterAddrs("redis-0:6379", "redis-1:6379", "redis-2:6379"),
		distcache.WithProjectionLimits("orgs_by_slug", distcache.Limits{MaxItems: 10_000, MaxTTL: 10 * time.Minute}),
		distcache.WithWarmStart("orgs_by_slug", distcache.WarmStart{Scan: true, Background: true}),
	)
	if err != nil {
		log.Fatal(err)
	}
	defer dc.Close(ctx)
}

// A primary and its replicas managed by Redis Sentinel: the Client asks the
// sentinels for the current primary (and follows failovers), and reads
// misses from a replica first.
func ExampleWithSentinel() {
	ctx := context.Background()
	dc, err := distcache.New(ctx,
		distcache.WithSentinel("distcache", "sentinel-0:26379", "sentinel-1:26379", "sentinel-2:26379"),
		distcache.WithSentinelAuth("", "sentinel-secret"),
		distcache.WithAuth("edge", "secret"),
		distcache.WithProjections("users_by_email"),
	)
	if err != nil {
		log.Fatal(err)
	}
	defer dc.Close(ctx)
}

// A core service writes a projection's live generation directly.
func ExamplePublisher_Set() {
	ctx := context.Background()
	rdb := redis.NewClient(&redis.Options{Addr: "redis-primary:6379"})
	pub, err := distcache.NewPublisher(rdb)
	if err != nil {
		log.Fatal(err)
	}
	applied, err := pub.Set(ctx, "users_by_email", "ada@example.com", []byte(`{"id":1,"name":"Ada"}`), 42)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(applied) // false if version 42 or newer was already there
	_, _ = pub.Delete(ctx, "users_by_email", "bob@example.com", 7)
}

// A cache-producer writes a batch into a generation it is building, then
// cuts readers over and retires the old generation.
func ExamplePublisher_Apply() {
	ctx := context.Background()
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{"redis-0:6379"}})
	pub, _ := distcache.NewPublisher(rdb, distcache.WithStreamMaxLen(100_000))
	res, err := pub.Apply(ctx, "users_by_email", 8, []distcache.Change{
		{Key: "ada@example.com", Value: []byte(`{"id":1}`), Version: 42},
		{Key: "bob@example.com", Version: 7, Op: distcache.OpDelete},
	})
	if err != nil {
		log.Fatal(err) // the whole batch may be retried: versions make it harmless
	}
	for _, r := range res {
		if r.Err != nil {
			log.Print(r.Err) // this change only (e.g. ErrValueTooLarge)
		}
	}
	if err := pub.Cutover(ctx, "users_by_email", 8); err != nil {
		log.Fatal(err)
	}
	if _, err := pub.RetireGeneration(ctx, "users_by_email", 7, 1000); err != nil {
		log.Fatal(err)
	}
}

// GetEntry tells whether a value was served while Redis was unreachable.
func ExampleClient_GetEntry() {
	ctx := context.Background()
	dc, _ := distcache.New(ctx, distcache.WithAddrs("redis:6379"))
	e, err := dc.GetEntry(ctx, "users_by_email", "ada@example.com")
	if err == nil && e.Stale {
		fmt.Println("served from memory; Redis unreachable")
	}
	buf := make([]byte, 0, 256)
	buf, _ = dc.GetAppend(ctx, "users_by_email", "ada@example.com", buf[:0])
	_ = buf
}

// An edge that restarts without Redis: its local snapshot is loaded by New,
// served (as Stale) at once, and brought current from the saved change-stream
// position once Redis answers.
func ExampleWithSnapshot() {
	ctx := context.Background()
	dc, err := distcache.New(ctx,
		distcache.WithAddrs("redis-primary:6379"),
		distcache.WithProjections("users_by_email"),
		distcache.WithSnapshot("/var/lib/edge-service/distcache"), // one directory per Client
		distcache.WithSnapshotInterval(30*time.Second),
	)
	if err != nil {
		log.Fatal(err)
	}
	defer dc.Close(ctx) // writes the final snapshot

	e, err := dc.GetEntry(ctx, "users_by_email", "ada@example.com")
	if err == nil && e.Stale {
		log.Print("served from the snapshot (or while Redis is unreachable)")
	}
}
