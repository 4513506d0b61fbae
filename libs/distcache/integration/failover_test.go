package integration_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/distcache/distcache/libs/distcache"
	"github.com/distcache/distcache/tools/devstacktest"
)

// TestSentinelFailover, on a real primary, replica and three sentinels (Debian's
// redis-sentinel, quorum 2): under a steady write load through a Sentinel-built Publisher and
// reads by an edge built with WithSentinel, the primary is killed with SIGKILL; the sentinels
// promote the replica, writes resume on it, the edge receives them, cached reads never fail, no
// read returns an older version than one returned before, and at the end the edge equals the new
// primary for every key. It logs the time to the promotion and from the promotion to the edge
// receiving a change written after it (the goal: within 10 s; measured, not asserted).
func TestSentinelFailover(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	const master, keys = "failover-master", 50
	primary, replica, sentinels := devstacktest.RedisSentinels(t, master, 3)
	addrs := make([]string, len(sentinels))
	for i, s := range sentinels {
		addrs[i] = s.Addr
	}
	rc := distcache.RedisConfig{SentinelMaster: master, SentinelAddrs: addrs}
	clients, err := rc.NewClients()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = clients.Close() })
	pub := newPublisher(t, clients.Primary)
	proj := devstacktest.UniqueName(t, "failover")
	versions := make([]atomic.Int64, keys) // the highest version written per key
	for i := range keys {
		mustSet(t, pub, proj, 1, fmt.Sprint("k", i), 1)
		versions[i].Store(1)
	}
	mustCutover(t, pub, proj, 1)
	// The edge reads replicas first: let the replica have the keys before warming it.
	if err := clients.Primary.Do(ctx, "WAIT", 1, 5000).Err(); err != nil {
		t.Fatalf("WAIT for the replica: %v", err)
	}
	edge := newClient(t, distcache.WithSentinel(master, addrs...), distcache.WithProjections(proj))
	for i := range keys {
		if _, err := edge.Get(ctx, proj, fmt.Sprint("k", i)); err != nil {
			t.Fatalf("warm k%d: %v", i, err)
		}
	}

	var (
		stop                                  = make(chan struct{})
		wg                                    sync.WaitGroup
		reads, readErrs, regressions, writeEr atomic.Int64
		firstProblem                          atomic.Value
	)
	wg.Add(2)
	go func() { // writer: one key every 10 ms, each write a newer version; failed writes retried
		defer wg.Done()
		for n := 0; ; n++ {
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
			i := n % keys
			v := versions[i].Load() + 1
			wctx, cancel := context.WithTimeout(ctx, time.Second)
			_, err := pub.SetGen(wctx, proj, 1, fmt.Sprint("k", i), val(fmt.Sprint("k", i), v), v)
			cancel()
			if err != nil {
				writeEr.Add(1)
				continue
			}
			versions[i].Store(v)
		}
	}()
	go func() { // reader: every key in turn, checking errors and version regressions
		defer wg.Done()
		seen := make([]int64, keys)
		for n := 0; ; n++ {
			select {
			case <-stop:
				return
			default:
			}
			i := n % keys
			rctx, cancel := context.WithTimeout(ctx, time.Second)
			e, err := edge.GetEntry(rctx, proj, fmt.Sprint("k", i))
			cancel()
			reads.Add(1)
			switch {
			case err != nil:
				readErrs.Add(1)
				firstProblem.CompareAndSwap(nil, fmt.Sprintf("read k%d: %v", i, err))
			case e.Version < seen[i]:
				regressions.Add(1)
				firstProblem.CompareAndSwap(nil, fmt.Sprintf("k%d: version %d after %d", i, e.Version, seen[i]))
			default:
				seen[i] = e.Version
			}
			if n%keys == 0 {
				time.Sleep(time.Millisecond) // pacing of the load, not a wait for a condition
			}
		}
	}()

	devstacktest.Eventually(t, wait, func() bool { return versions[0].Load() > 3 }, "the write load runs")
	killed := time.Now()
	if err := primary.Kill(); err != nil {
		t.Fatal(err)
	}
	devstacktest.Eventually(t, 60*time.Second, func() bool {
		a, err := sentinels[0].MasterAddr(ctx)
		return err == nil && a == replica.Addr
	}, "the sentinels promote the replica %s", replica.Addr)
	promoted := time.Now()
	// A change written after the promotion, and the time until the edge serves it.
	var after int64
	devstacktest.Eventually(t, 60*time.Second, func() bool {
		v := versions[7].Load() + 1000
		wctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		if _, err := pub.SetGen(wctx, proj, 1, "k7", val("k7", v), v); err != nil {
			return false
		}
		versions[7].Store(v)
		after = v
		return true
	}, "a write through the sentinel-built publisher succeeds on the promoted replica")
	devstacktest.Eventually(t, 60*time.Second, func() bool {
		e, err := edge.GetEntry(ctx, proj, "k7")
		return err == nil && e.Version >= after
	}, "the edge receives a change written after the promotion")
	received := time.Now()
	close(stop)
	wg.Wait()

	// Converged: every key on the edge equals the new primary's.
	newPrimary := replica.Client()
	t.Cleanup(func() { _ = newPrimary.Close() })
	devstacktest.Eventually(t, 30*time.Second, func() bool {
		for i := range keys {
			k := fmt.Sprint("k", i)
			raw, err := newPrimary.Get(ctx, distcache.ValueKey(proj, 1, k)).Result()
			if err != nil {
				return false
			}
			v, err := distcache.ParseVersionHex(raw) // 16 hex digits of version, the op, the value
			if err != nil || len(raw) < 17 {
				return false
			}
			e, err := edge.GetEntry(ctx, proj, k)
			if err != nil || e.Version != v || string(e.Value) != raw[17:] {
				return false
			}
		}
		return true
	}, "every key on the edge equals the promoted primary's")
	t.Logf("primary killed; promotion after %v; a change written after the promotion reached the edge %v later (%v after the kill); "+
		"%d reads, %d read errors, %d regressions, %d writes refused during the failover",
		promoted.Sub(killed).Round(time.Millisecond), received.Sub(promoted).Round(time.Millisecond),
		received.Sub(killed).Round(time.Millisecond), reads.Load(), readErrs.Load(), regressions.Load(), writeEr.Load())
	if readErrs.Load() != 0 || regressions.Load() != 0 {
		t.Errorf("%d read errors, %d regressions; first: %v", readErrs.Load(), regressions.Load(), firstProblem.Load())
	}
}
