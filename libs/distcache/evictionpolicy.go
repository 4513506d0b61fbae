package distcache

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/redis/go-redis/v9"
)

// ErrEvictionPolicy is returned (wrapped) by CheckEvictionPolicy when a Redis
// node may evict keys: the writers' bookkeeping (offsets, indexes, pointers)
// would then disappear silently.
var ErrEvictionPolicy = errors.New("distcache: redis may evict keys")

// CheckEvictionPolicy reads maxmemory-policy on every primary rdb reaches
// (each master of a Cluster) and returns an error wrapping ErrEvictionPolicy
// unless every one is "noeviction". A writer (cache-producer, control-plane)
// calls it at start: with an allkeys-* or volatile-* policy Redis drops
// producer offsets, indexes and generation pointers under memory pressure,
// and nothing notices. An error reading the policy (CONFIG disabled, a
// connection error) is returned as it is, naming what could not be checked.
func CheckEvictionPolicy(ctx context.Context, rdb redis.UniversalClient) error {
	check := func(ctx context.Context, c *redis.Client) error {
		res, err := c.ConfigGet(ctx, "maxmemory-policy").Result()
		if err != nil {
			return fmt.Errorf("read maxmemory-policy of %s: %w", c.Options().Addr, err)
		}
		policy, ok := res["maxmemory-policy"]
		if !ok {
			return fmt.Errorf("read maxmemory-policy of %s: not in CONFIG GET's reply", c.Options().Addr)
		}
		if !strings.EqualFold(policy, "noeviction") {
			return fmt.Errorf("%w: %s has maxmemory-policy %s; producer offsets, indexes and generation "+
				"pointers would be evicted under memory pressure without anyone noticing; set it to noeviction",
				ErrEvictionPolicy, c.Options().Addr, policy)
		}
		return nil
	}
	switch c := rdb.(type) {
	case *redis.ClusterClient:
		return c.ForEachMaster(ctx, check)
	case *redis.Client:
		return check(ctx, c)
	}
	return fmt.Errorf("read maxmemory-policy: a %T cannot be checked", rdb)
}
