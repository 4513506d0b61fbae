package benchrun

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// persistenceCounts are the AOF rewrites and RDB saves a Redis has begun
// (INFO persistence), to tell a run in which one began; rewriting says one is
// in progress or scheduled.
type persistenceCounts struct {
	aofRewrites, rdbSaves int64
	rewriting             bool
}

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
		case "aof_rewrite_in_progress", "aof_rewrite_scheduled":
			c.rewriting = c.rewriting || n != 0
		}
	}
	return c, nil
}

// rewriteAOF rewrites the primary's append-only file (BGREWRITEAOF) and waits until it is done.
// Between runs, as PostgreSQL is vacuumed: the AOF of a 10,000 events/s run grows past Redis's
// auto-aof-rewrite-percentage, and the rewrite it triggers otherwise starts in the middle of the
// next run, where its child process takes a core (the stalls notes show it, with the fork).
func rewriteAOF(ctx context.Context, rdb *redis.Client) error {
	if err := rdb.Do(ctx, "BGREWRITEAOF").Err(); err != nil && !strings.Contains(err.Error(), "already in progress") {
		return fmt.Errorf("redis BGREWRITEAOF: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		c, err := persistence(ctx, rdb)
		if err != nil {
			return err
		}
		if !c.rewriting {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("redis AOF rewrite between runs: not done after 2 minutes: %w", ctx.Err())
		case <-tick.C:
		}
	}
}
