package benchrun

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
)

// persistenceCounts are the AOF rewrites and RDB saves a Redis has begun
// (INFO persistence), to tell a run in which one began.
type persistenceCounts struct{ aofRewrites, rdbSaves int64 }

// redisStallsReset clears Redis's latency monitor and returns its
// persistence counts, before a run.
func redisStallsReset(ctx context.Context, rdb *redis.Client) (persistenceCounts, error) {
	if err := rdb.Do(ctx, "LATENCY", "RESET").Err(); err != nil {
		return persistenceCounts{}, fmt.Errorf("redis LATENCY RESET: %w", err)
	}
	return persistence(ctx, rdb)
}

// redisStalls describes what Redis recorded since redisStallsReset: every
// latency event (its worst, in ms) and the AOF rewrites and RDB saves begun.
func redisStalls(ctx context.Context, rdb *redis.Client, before persistenceCounts) (string, error) {
	v, err := rdb.Do(ctx, "LATENCY", "LATEST").Slice()
	if err != nil {
		return "", fmt.Errorf("redis LATENCY LATEST: %w", err)
	}
	var parts []string
	for _, e := range v {
		f, ok := e.([]any)
		if !ok || len(f) < 4 {
			continue
		}
		parts = append(parts, fmt.Sprintf("%v max %v ms", f[0], f[3]))
	}
	after, err := persistence(ctx, rdb)
	if err != nil {
		return "", err
	}
	if n := after.aofRewrites - before.aofRewrites; n > 0 {
		parts = append(parts, fmt.Sprintf("%d AOF rewrite(s)", n))
	}
	if n := after.rdbSaves - before.rdbSaves; n > 0 {
		parts = append(parts, fmt.Sprintf("%d RDB save(s)", n))
	}
	if len(parts) == 0 {
		return "none", nil
	}
	return strings.Join(parts, ", "), nil
}

func persistence(ctx context.Context, rdb *redis.Client) (persistenceCounts, error) {
	info, err := rdb.Info(ctx, "persistence").Result()
	if err != nil {
		return persistenceCounts{}, fmt.Errorf("redis INFO persistence: %w", err)
	}
	var c persistenceCounts
	for _, line := range strings.Split(info, "\r\n") {
		k, val, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSpace(val), 10, 64)
		if err != nil {
			continue
		}
		switch k {
		case "aof_rewrites":
			c.aofRewrites = n
		case "rdb_saves":
			c.rdbSaves = n
		}
	}
	return c, nil
}
