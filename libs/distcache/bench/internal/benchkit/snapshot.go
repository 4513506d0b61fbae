package benchkit

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/distcache/distcache/libs/distcache"
	"github.com/distcache/distcache/tools/devstack"
)

// SnapshotProj is the projection of the snapshot figures.
const SnapshotProj = "snap"

// SnapshotFigures are the local snapshot's figures (WithSnapshot) for one
// Client holding Entries entries, next to the restart it replaces.
//
// Durations are wall time; the *CPU fields are the CPU time (user and
// system, all threads) the process spent meanwhile, which a shared machine's
// load does not inflate as much.
type SnapshotFigures struct {
	Entries   int
	FileBytes int64         // size of the snapshot file
	Write     time.Duration // the final snapshot written by Close (Close's duration)
	WriteCPU  time.Duration
	// Restart: New loading the snapshot, until the first Get is served from
	// memory; RestartNew is New alone.
	Restart, RestartNew time.Duration
	RestartCPU          time.Duration
	// RestartRedisDown: the same restart with Redis stopped (New must not
	// need it).
	RestartRedisDown time.Duration
	// WarmStart is the peer: a restart that knows the keys but refetches
	// the values from Redis (what Hazelcast's Near Cache preloader does; here
	// New with WithWarmStart of the same keys, MGETs of 500), until the first
	// Get.
	WarmStart    time.Duration
	WarmStartCPU time.Duration
}

// SnapshotRestart starts a Redis of its own, writes n keys of valueSize
// bytes into projection SnapshotProj, has a Client hold them all (warm
// start), closes it (which writes its snapshot into a temporary directory)
// and measures the restarts, count times each (medians).
func SnapshotRestart(ctx context.Context, n, valueSize, count int) (f SnapshotFigures, err error) {
	f.Entries = n
	dir, err := os.MkdirTemp("", "distcache-snapshot-bench-")
	if err != nil {
		return f, err
	}
	defer os.RemoveAll(dir)
	r, err := devstack.StartRedis(ctx, devstack.RedisConfig{Dir: filepath.Join(dir, "redis"), Mode: devstack.Attached})
	if err != nil {
		return f, fmt.Errorf("start redis: %w", err)
	}
	defer func() { _ = r.Stop() }()
	rdb := redis.NewClient(&redis.Options{Addr: r.Addr})
	defer rdb.Close()
	// A short stream: the figures are about the values, not the change log.
	pub, err := distcache.NewPublisher(rdb, distcache.WithStreamMaxLen(1000))
	if err != nil {
		return f, err
	}
	value := make([]byte, valueSize)
	for i := range value {
		value[i] = byte('a' + i%26)
	}
	keys := make([]string, n)
	changes := make([]distcache.Change, 0, 1000)
	for i := range keys {
		keys[i] = "user:" + strconv.Itoa(10_000_000+i) + "@example.com"
		changes = append(changes, distcache.Change{Key: keys[i], Value: value, Version: 1})
		if len(changes) == cap(changes) || i == n-1 {
			if _, err := pub.Apply(ctx, SnapshotProj, 1, changes); err != nil {
				return f, err
			}
			changes = changes[:0]
		}
	}
	if err := pub.Cutover(ctx, SnapshotProj, 1); err != nil {
		return f, err
	}
	snapDir := filepath.Join(dir, "snapshots")
	opts := func(extra ...distcache.Option) []distcache.Option {
		return append([]distcache.Option{distcache.WithAddrs(r.Addr), distcache.WithProjections(SnapshotProj),
			distcache.WithSnapshot(snapDir), distcache.WithSnapshotInterval(time.Hour)}, extra...)
	}
	held, err := distcache.New(ctx, opts(distcache.WithWarmStart(SnapshotProj, distcache.WarmStart{Keys: keys}))...)
	if err != nil {
		return f, err
	}
	if got := items(held); got != int64(n) {
		_ = held.Close(ctx)
		return f, fmt.Errorf("the client holds %d entries, want %d", got, n)
	}
	runtime.GC()
	start, cpu0 := time.Now(), processCPU()
	if err := held.Close(ctx); err != nil {
		return f, err
	}
	f.Write, f.WriteCPU = time.Since(start), processCPU()-cpu0
	fi, err := os.Stat(filepath.Join(snapDir, SnapshotProj+".snapshot"))
	if err != nil {
		return f, err
	}
	f.FileBytes = fi.Size()

	// restart measures New and the first Get; the client must hold n
	// entries.
	restart := func(opts []distcache.Option) (total, newOnly, cpu time.Duration, err error) {
		runtime.GC()
		start, cpu0 := time.Now(), processCPU()
		c, err := distcache.New(ctx, opts...)
		if err != nil {
			return 0, 0, 0, err
		}
		newOnly = time.Since(start)
		v, err := c.Get(ctx, SnapshotProj, keys[n/2])
		total, cpu = time.Since(start), processCPU()-cpu0
		defer func() { _ = c.Close(context.WithoutCancel(ctx)) }()
		if err != nil {
			return 0, 0, 0, err
		}
		if len(v) != valueSize {
			return 0, 0, 0, fmt.Errorf("first Get: %d bytes, want %d", len(v), valueSize)
		}
		if got := items(c); got != int64(n) {
			return 0, 0, 0, fmt.Errorf("after the restart the client holds %d entries, want %d", got, n)
		}
		if s := stat(c); s.Misses != 0 {
			return 0, 0, 0, errors.New("the first Get was a miss")
		}
		return total, newOnly, cpu, nil
	}
	// Rounds alternate the two restarts, so that both see the same load of
	// a shared machine; medians are reported.
	var snap, snapNew, snapCPU, warm, warmCPU, down []time.Duration
	peer := []distcache.Option{distcache.WithAddrs(r.Addr), distcache.WithProjections(SnapshotProj),
		distcache.WithWarmStart(SnapshotProj, distcache.WarmStart{Keys: keys})} // no snapshot
	for range count {
		total, newOnly, cpu, err := restart(opts())
		if err != nil {
			return f, fmt.Errorf("restart from the snapshot: %w", err)
		}
		snap, snapNew, snapCPU = append(snap, total), append(snapNew, newOnly), append(snapCPU, cpu)
		if total, _, cpu, err = restart(peer); err != nil {
			return f, fmt.Errorf("restart with a warm start: %w", err)
		}
		warm, warmCPU = append(warm, total), append(warmCPU, cpu)
	}
	if err := r.Stop(); err != nil {
		return f, err
	}
	for range count {
		total, _, _, err := restart(opts())
		if err != nil {
			return f, fmt.Errorf("restart from the snapshot with Redis down: %w", err)
		}
		down = append(down, total)
	}
	f.Restart, f.RestartNew, f.WarmStart, f.RestartRedisDown = median(snap), median(snapNew), median(warm), median(down)
	f.RestartCPU, f.WarmStartCPU = median(snapCPU), median(warmCPU)
	return f, nil
}

func stat(c *distcache.Client) distcache.ProjectionStats {
	for _, p := range c.Stats().Projections {
		if p.Name == SnapshotProj {
			return p
		}
	}
	return distcache.ProjectionStats{}
}

func items(c *distcache.Client) int64 { return stat(c).Items }

func median(d []time.Duration) time.Duration {
	d = slices.Clone(d)
	slices.Sort(d)
	return d[len(d)/2]
}

// processCPU returns the CPU time (user and system) the process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
