package integration_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/distcache/distcache/libs/distcache"
	"github.com/distcache/distcache/tools/devstacktest"
	"github.com/distcache/distcache/tools/tcpproxy"
)

// TestReplicaKilledDuringReads: misses go to the replica; when it dies, they
// fall back to the primary with no error.
func TestReplicaKilledDuringReads(t *testing.T) {
	t.Parallel()
	start := time.Now()
	primary, replica := devstacktest.RedisReplicated(t)
	t.Logf("replicated redis started in %v", time.Since(start))
	prdb := primary.Client()
	t.Cleanup(func() { _ = prdb.Close() })
	pub := newPublisher(t, prdb)
	ctx := ctxT(t)
	const n = 600
	changes := make([]distcache.Change, n)
	for i := range changes {
		changes[i] = distcache.Change{Key: keyN(i), Value: val(keyN(i), 1), Version: 1}
	}
	if _, err := pub.Apply(ctx, proj, 1, changes); err != nil {
		t.Fatal(err)
	}
	mustCutover(t, pub, proj, 1)
	// Wait for the replica to have everything.
	rrdb := redis.NewClient(&redis.Options{Addr: replica.Addr, MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	t.Cleanup(func() { _ = rrdb.Close() })
	devstacktest.Eventually(t, wait, func() bool { return rrdb.Exists(ctx, distcache.ValueKey(proj, 1, keyN(n-1))).Val() == 1 }, "replica did not sync")
	replicaGets := &cmdCounter{}
	rrdb.AddHook(replicaGets)

	t.Logf("synced at %v", time.Since(start))
	c := newClient(t, distcache.WithRedis(prdb), distcache.WithReplicas(rrdb), distcache.WithProjections(proj))
	for i := range n {
		if i == n/3 {
			if err := replica.Kill(); err != nil {
				t.Fatal(err)
			}
		}
		got, err := c.Get(ctx, proj, keyN(i))
		if err != nil || !bytes.Equal(got, val(keyN(i), 1)) {
			t.Fatalf("Get %d (replica killed at %d) = %q, %v", i, n/3, got, err)
		}
	}
	if got := replicaGets.gets.Load(); got < n/3 {
		t.Fatalf("reads tried on the replica = %d, want >= %d (replica first)", got, n/3)
	}
}

// TestRedisKilled: with Redis dead, cached keys keep being served from memory
// with zero errors (and are marked stale); misses fail fast within the
// caller's deadline with ErrUnavailable.
func TestRedisKilled(t *testing.T) {
	t.Parallel()
	r, rdb, pub := standalone(t)
	ctx := ctxT(t)
	const n = 100
	for i := range n {
		mustSet(t, pub, proj, 1, keyN(i), 1)
	}
	mustCutover(t, pub, proj, 1)
	c := newClient(t, distcache.WithRedis(rdb), distcache.WithProjections(proj),
		distcache.WithStalenessBound(time.Minute))
	for i := range n {
		if _, err := c.Get(ctx, proj, keyN(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Kill(); err != nil {
		t.Fatal(err)
	}
	for round := range 20 {
		for i := range n {
			got, err := c.Get(ctx, proj, keyN(i))
			if err != nil || !bytes.Equal(got, val(keyN(i), 1)) {
				t.Fatalf("round %d: cached Get %d with Redis down = %q, %v", round, i, got, err)
			}
		}
	}
	devstacktest.Eventually(t, wait, func() bool {
		e, err := c.GetEntry(ctx, proj, keyN(0))
		return err == nil && e.Stale
	}, "reads never marked stale")
	if s := stats(c, proj); s.StaleServes == 0 || s.Connected || !s.Stale {
		t.Fatalf("stats with Redis down = %+v; want stale serves, not connected", s)
	}
	for _, deadline := range []time.Duration{50 * time.Millisecond, 300 * time.Millisecond} {
		dctx, cancel := context.WithTimeout(ctx, deadline)
		start := time.Now()
		_, err := c.Get(dctx, proj, "not-cached")
		took := time.Since(start)
		cancel()
		if !errors.Is(err, distcache.ErrUnavailable) {
			t.Fatalf("miss with Redis down = %v, want ErrUnavailable", err)
		}
		if took > deadline+100*time.Millisecond {
			t.Fatalf("miss with Redis down took %v, deadline %v", took, deadline)
		}
	}
}

// TestStalenessBound: past the bound, local entries are no longer served.
func TestStalenessBound(t *testing.T) {
	t.Parallel()
	r, rdb, pub := standalone(t)
	ctx := ctxT(t)
	mustSet(t, pub, proj, 1, "k", 1)
	mustCutover(t, pub, proj, 1)
	c := newClient(t, distcache.WithRedis(rdb), distcache.WithProjections(proj),
		distcache.WithStalenessBound(300*time.Millisecond))
	if _, err := c.Get(ctx, proj, "k"); err != nil {
		t.Fatal(err)
	}
	if err := r.Kill(); err != nil {
		t.Fatal(err)
	}
	devstacktest.Eventually(t, wait, func() bool {
		_, err := c.Get(ctx, proj, "k")
		return errors.Is(err, distcache.ErrUnavailable)
	}, "entries still served past the staleness bound")
}

// TestConnectionCutDuringUpdates: the tail's connection is cut while 1,000
// updates happen; after it is restored the client resumes from its
// position, replays what it missed, and no key is stale.
func TestConnectionCutDuringUpdates(t *testing.T) {
	t.Parallel()
	r, _, pub := standalone(t)
	ctx := ctxT(t)
	proxy, err := tcpproxy.Start("127.0.0.1:0", r.Addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = proxy.Close() })
	const keys, updates = 100, 1000
	for i := range keys {
		mustSet(t, pub, proj, 1, keyN(i), 1)
	}
	mustCutover(t, pub, proj, 1)
	c := newClient(t, distcache.WithAddrs(proxy.Addr()), distcache.WithProjections(proj, "other"))
	for i := range keys {
		if _, err := c.Get(ctx, proj, keyN(i)); err != nil {
			t.Fatal(err)
		}
	}

	proxy.Cut()
	devstacktest.Eventually(t, wait, func() bool { return !stats(c, proj).Connected }, "the cut was not noticed")
	final := make([]int64, keys)
	for u := range updates {
		i := u % keys
		final[i] = int64(2 + u/keys)
		mustSet(t, pub, proj, 1, keyN(i), final[i])
		if u == updates/2 {
			// Reads during the cut are served from memory.
			if _, err := c.Get(ctx, proj, keyN(0)); err != nil {
				t.Fatalf("cached read during the cut: %v", err)
			}
		}
	}
	proxy.Restore()
	devstacktest.Eventually(t, wait, func() bool {
		for i := range keys {
			e, err := c.GetEntry(ctx, proj, keyN(i))
			if err != nil || e.Version != final[i] || !bytes.Equal(e.Value, val(keyN(i), final[i])) {
				return false
			}
		}
		return true
	}, "keys still stale after the connection came back")
	s := stats(c, proj)
	if s.Gaps != 0 || s.Rebuilds != 0 {
		t.Fatalf("stats = %+v; want no gap and no revalidation (the stream still held the position)", s)
	}
	if s.Replays == 0 || s.Misses != keys {
		t.Fatalf("stats = %+v; want replayed changes and no extra misses", s)
	}
	devstacktest.Eventually(t, wait, func() bool { return stats(c, proj).Connected }, "contact not restored")
	if s := stats(c, proj); s.Reconnects < 1 {
		t.Errorf("Reconnects = %d after one cut and restore, want at least 1", s.Reconnects)
	}
	// Each of the keys' first reads was a fetch from Redis.
	if h := stats(c, proj).FetchLatency; h.Count != keys || h.Counts[len(h.Counts)-1] > h.Count {
		t.Errorf("FetchLatency = %+v, want %d fetches", h, keys)
	}
}

// TestGapPastStreamCap: when the client's position was trimmed away, it
// revalidates that projection (and only it), ending current.
func TestGapPastStreamCap(t *testing.T) {
	t.Parallel()
	r, _, pub := standalone(t, distcache.WithStreamMaxLen(50))
	ctx := ctxT(t)
	proxy, err := tcpproxy.Start("127.0.0.1:0", r.Addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = proxy.Close() })
	const keys = 40
	for i := range keys {
		mustSet(t, pub, proj, 1, keyN(i), 1)
		mustSet(t, pub, "other", 1, keyN(i), 1)
	}
	mustCutover(t, pub, proj, 1)
	mustCutover(t, pub, "other", 1)
	c := newClient(t, distcache.WithAddrs(proxy.Addr()), distcache.WithProjections(proj, "other"))
	for i := range keys {
		if _, err := c.Get(ctx, proj, keyN(i)); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Get(ctx, "other", keyN(i)); err != nil {
			t.Fatal(err)
		}
	}
	proxy.Cut()
	devstacktest.Eventually(t, wait, func() bool { return !stats(c, proj).Connected }, "the cut was not noticed")
	var last int64
	for u := range 1000 {
		last = int64(2 + u/keys)
		mustSet(t, pub, proj, 1, keyN(u%keys), last)
	}
	if _, err := pub.DeleteGen(ctx, proj, 1, keyN(0), 10_000); err != nil {
		t.Fatal(err)
	}
	proxy.Restore()
	devstacktest.Eventually(t, wait, func() bool { return stats(c, proj).Gaps == 1 }, "no gap detected")
	devstacktest.Eventually(t, wait, func() bool {
		if _, err := c.Get(ctx, proj, keyN(0)); !errors.Is(err, distcache.ErrNotFound) {
			return false
		}
		for i := 1; i < keys; i++ {
			e, err := c.GetEntry(ctx, proj, keyN(i))
			if err != nil || e.Version != last {
				return false
			}
		}
		return true
	}, "keys not current after the gap")
	if s := stats(c, proj); s.Misses != keys || s.Rebuilds != 1 {
		t.Fatalf("stats = %+v; want the revalidation to refetch without misses", s)
	}
	if s := stats(c, "other"); s.Gaps != 0 || s.Rebuilds != 0 {
		t.Fatalf("other projection stats = %+v; want untouched", s)
	}
}

// TestConcurrentGetAndSet runs readers and writers together (run with
// -race); at the end every key reads as its final state.
func TestConcurrentGetAndSet(t *testing.T) {
	t.Parallel()
	_, rdb, pub := standalone(t)
	ctx := ctxT(t)
	mustCutover(t, pub, proj, 1)
	c := newClient(t, distcache.WithRedis(rdb), distcache.WithProjections(proj),
		distcache.WithNegativeTTL(time.Hour), distcache.WithMaxItems(40))
	const keys = 50
	var wg, writers sync.WaitGroup
	stop := make(chan struct{})
	var failure atomic.Value
	for w := range 2 {
		wg.Add(1)
		writers.Add(1)
		go func() {
			defer wg.Done()
			defer writers.Done()
			for v := int64(1); v <= 150; v++ {
				for i := w; i < keys; i += 2 {
					var err error
					if v%3 == 0 {
						_, err = pub.DeleteGen(ctx, proj, 1, keyN(i), v)
					} else {
						_, err = pub.SetGen(ctx, proj, 1, keyN(i), val(keyN(i), v), v)
					}
					if err != nil {
						failure.Store(err)
						return
					}
				}
			}
		}()
	}
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				ks := []string{keyN(rand.IntN(keys)), keyN(rand.IntN(keys))}
				if v, err := c.Get(ctx, proj, ks[0]); err != nil && !errors.Is(err, distcache.ErrNotFound) {
					failure.Store(err)
				} else if err == nil && !bytes.HasPrefix(v, []byte(ks[0]+"@v")) {
					failure.Store(fmt.Errorf("Get(%s) = %q", ks[0], v))
				}
				if _, err := c.GetMany(ctx, proj, ks); err != nil {
					failure.Store(err)
				}
			}
		}()
	}
	go func() {
		writers.Wait()
		close(stop)
	}()
	wg.Wait()
	if err, _ := failure.Load().(error); err != nil {
		t.Fatal(err)
	}
	// The last write of every key is a delete at v150.
	devstacktest.Eventually(t, wait, func() bool {
		for i := range keys {
			if _, err := c.Get(ctx, proj, keyN(i)); !errors.Is(err, distcache.ErrNotFound) {
				return false
			}
		}
		return true
	}, "final state (every key deleted) not reached")
}

// TestNoGoroutineLeak: after Close (even with Redis down), no goroutine of
// the package is left. Not parallel, so that no other test's client runs.
func TestNoGoroutineLeak(t *testing.T) {
	r, rdb, pub := standalone(t)
	ctx := ctxT(t)
	mustSet(t, pub, proj, 1, "k", 1)
	mustCutover(t, pub, proj, 1)
	c, err := distcache.New(ctx, append(fastOpts(), distcache.WithRedis(rdb), distcache.WithProjections(proj),
		distcache.WithWarmStart(proj, distcache.WarmStart{Scan: true, Background: true}))...)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Get(ctx, proj, "k"); err != nil {
		t.Fatal(err)
	}
	if err := r.Kill(); err != nil {
		t.Fatal(err)
	}
	devstacktest.Eventually(t, wait, func() bool { return !stats(c, proj).Connected }, "Redis loss not noticed")
	if err := c.Close(ctx); err != nil {
		t.Fatal(err)
	}
	devstacktest.Eventually(t, wait, func() bool { return !strings.Contains(goroutines(), "libs/distcache.") }, "goroutines left:\n%s", goroutines())
}

func goroutines() string {
	var b bytes.Buffer
	_ = pprof.Lookup("goroutine").WriteTo(&b, 2)
	var out []string
	for _, g := range strings.Split(b.String(), "\n\n") {
		if strings.Contains(g, "libs/distcache.") && !strings.Contains(g, "distcache_test.") && !strings.Contains(g, "testing.tRunner") {
			out = append(out, g)
		}
	}
	return fmt.Sprint(strings.Join(out, "\n\n"))
}
