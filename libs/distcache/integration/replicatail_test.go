package integration_test

import (
	"context"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/distcache/distcache/libs/distcache"
	"github.com/distcache/distcache/tools/devstacktest"
)

// xreadCalls returns the XREAD calls a Redis server has executed (INFO commandstats).
func xreadCalls(t *testing.T, ctx context.Context, rdb *redis.Client) int64 {
	t.Helper()
	info, err := rdb.Info(ctx, "commandstats").Result()
	if err != nil {
		t.Fatalf("INFO commandstats: %v", err)
	}
	for line := range strings.Lines(info) {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), "cmdstat_xread:calls="); ok {
			n, err := strconv.ParseInt(rest[:strings.IndexByte(rest, ',')], 10, 64)
			if err != nil {
				t.Fatalf("cmdstat_xread %q: %v", line, err)
			}
			return n
		}
	}
	return 0
}

// blockedXRead reports whether a client of the server is blocked in XREAD (CLIENT LIST).
func blockedXRead(ctx context.Context, rdb *redis.Client) bool {
	list, err := rdb.ClientList(ctx).Result()
	if err != nil {
		return false
	}
	for line := range strings.Lines(list) {
		if strings.Contains(line, " cmd=xread ") && strings.Contains(line, " flags=b ") {
			return true
		}
	}
	return false
}

// TestTailFromReplica: with a primary and a replica (WithAddrs), the edge's blocking XREAD runs on
// the replica (CLIENT LIST shows it blocked there; the primary executes none), and pushed updates
// arrive through it. Stopped, the replica is left for the primary at once and updates keep
// arriving; started again, the tail moves back. A hung replica (SIGSTOP) is left as well, and a
// hung primary does not disturb a tail on the replica: the edge stays in contact and fresh. A
// writer runs throughout the moves: every update arrives (lag on a switch loses nothing) and no
// read returns a lower version than before.
func TestTailFromReplica(t *testing.T) {
	t.Parallel()
	primary, replica := devstacktest.RedisReplicated(t)
	prdb, rrdb := primary.Client(), replica.Client()
	t.Cleanup(func() { _ = prdb.Close(); _ = rrdb.Close() })
	pub := newPublisher(t, prdb)
	ctx := ctxT(t)
	const keys = 100
	seed := make([]distcache.Change, keys)
	for i := range seed {
		seed[i] = distcache.Change{Key: keyN(i), Value: val(keyN(i), 1), Version: 1}
	}
	if _, err := pub.Apply(ctx, proj, 1, seed); err != nil {
		t.Fatal(err)
	}
	mustCutover(t, pub, proj, 1)
	devstacktest.Eventually(t, wait, func() bool {
		return rrdb.Exists(ctx, distcache.ValueKey(proj, 1, keyN(keys-1)), distcache.PointerKey(proj)).Val() == 2
	}, "the replica did not sync")

	c := newClient(t, distcache.WithAddrs(primary.Addr, replica.Addr), distcache.WithProjections(proj),
		distcache.WithLogger(testLogger(t, nil)))
	rd := &versionReader{t: t, c: c, seen: map[string]int64{}}
	for i := range keys {
		rd.read(ctx, keyN(i))
	}
	// converged reads every key until each is at Redis's version on the primary.
	converged := func(what string) {
		t.Helper()
		devstacktest.Eventually(t, wait, func() bool {
			for i := range keys {
				if e := rd.read(ctx, keyN(i)); e.Version != redisVersion(t, ctx, prdb, 1, keyN(i)) {
					return false
				}
			}
			return true
		}, "updates did not arrive: %s", what)
	}

	// arriving waits until the edge has seen 400 more changes of the write load.
	arriving := func(what string) {
		t.Helper()
		from := stats(c, proj).ChangesSeen
		devstacktest.Eventually(t, wait, func() bool { return stats(c, proj).ChangesSeen >= from+400 }, "updates did not arrive: %s", what)
		for i := range keys {
			rd.read(ctx, keyN(i))
		}
	}

	devstacktest.Eventually(t, wait, func() bool { return stats(c, proj).TailFromReplica }, "the tail did not move to the replica")
	devstacktest.Eventually(t, wait, func() bool { return blockedXRead(ctx, rrdb) }, "no XREAD blocked on the replica")
	load := startWriteLoad(pub, keys)
	arriving("on the replica")
	if n := xreadCalls(t, ctx, prdb); n != 0 {
		t.Fatalf("the primary executed %d XREADs; want none (the tail reads the replica)", n)
	}
	if n := xreadCalls(t, ctx, rrdb); n == 0 {
		t.Fatal("the replica executed no XREAD")
	}

	// The replica stops: the tail falls back to the primary, updates keep arriving.
	if err := replica.Stop(); err != nil {
		t.Fatal(err)
	}
	devstacktest.Eventually(t, wait, func() bool {
		s := stats(c, proj)
		return s.TailReplicaFallbacks == 1 && !s.TailFromReplica
	}, "the tail did not fall back to the primary")
	arriving("replica stopped")
	// commandstats counts a blocking XREAD once it returns: the load makes the next one return.
	devstacktest.Eventually(t, wait, func() bool { return xreadCalls(t, ctx, prdb) > 0 },
		"the primary executed no XREAD while the replica was down")

	// Started again (empty, it syncs from the primary): the tail moves back.
	if err := replica.Start(ctx); err != nil {
		t.Fatal(err)
	}
	devstacktest.Eventually(t, wait, func() bool { return stats(c, proj).TailFromReplica }, "the tail did not move back to the replica")
	onPrimary := xreadCalls(t, ctx, prdb)
	arriving("replica back")
	load.end(t)
	converged("replica back")
	if n := xreadCalls(t, ctx, prdb); n != onPrimary {
		t.Fatalf("the primary executed %d XREADs after the tail moved back (%d before); want none", n-onPrimary, onPrimary)
	}

	// A hung replica is left too (the XREAD's deadline is the block plus a second).
	if err := syscall.Kill(replica.PID(), syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	resumed := false
	t.Cleanup(func() {
		if !resumed {
			_ = syscall.Kill(replica.PID(), syscall.SIGCONT)
		}
	})
	devstacktest.Eventually(t, wait, func() bool { return stats(c, proj).TailReplicaFallbacks == 2 }, "the tail did not leave the hung replica")
	mustSet(t, pub, proj, 1, keyN(0), 1_000_000)
	converged("replica hung")
	resumed = true
	if err := syscall.Kill(replica.PID(), syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	devstacktest.Eventually(t, wait, func() bool { return stats(c, proj).TailFromReplica }, "the tail did not move back after SIGCONT")

	// A hung primary does not disturb a tail on the replica: in contact, fresh, for several tail
	// blocks (reads all along, no sleep).
	if err := syscall.Kill(primary.PID(), syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	primaryResumed := false
	t.Cleanup(func() {
		if !primaryResumed {
			_ = syscall.Kill(primary.PID(), syscall.SIGCONT)
		}
	})
	for end := time.Now().Add(2 * time.Second); time.Now().Before(end); {
		for i := range keys {
			if e := rd.read(ctx, keyN(i)); e.Stale {
				t.Fatalf("%s served stale with the primary hung and the replica tailed", keyN(i))
			}
		}
	}
	if s := stats(c, proj); !s.Connected || !s.TailFromReplica || s.TailReplicaFallbacks != 2 {
		t.Fatalf("stats with the primary hung = %+v; want connected, on the replica", s)
	}
	primaryResumed = true
	if err := syscall.Kill(primary.PID(), syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	mustSet(t, pub, proj, 1, keyN(1), 1_000_000)
	converged("primary resumed")
	if s := stats(c, proj); s.LossesTotal() != 0 || s.Gaps != 0 {
		t.Fatalf("stats = %+v; want no loss and no gap", s)
	}
}
