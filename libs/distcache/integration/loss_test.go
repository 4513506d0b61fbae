package integration_test

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/distcache/distcache/libs/distcache"
	"github.com/distcache/distcache/tools/devstack"
	"github.com/distcache/distcache/tools/devstacktest"
)

// redisServer is a test's Redis: the server and a client on it.
type redisServer struct {
	srv *devstack.Redis
	rdb *redis.Client
	c   *distcache.Client // the edge
}

// loadReaders read every held key in a loop, each read checked: no error, no not-found, the value
// matches its version, and no version lower than one already returned for that key.
type loadReaders struct {
	c     *distcache.Client
	keys  []string
	stop  chan struct{}
	wg    sync.WaitGroup
	reads atomic.Int64
	stale atomic.Int64

	mu       sync.Mutex
	failures []string
}

func startLoadReaders(c *distcache.Client, keys []string, n int) *loadReaders {
	l := &loadReaders{c: c, keys: keys, stop: make(chan struct{})}
	for r := range n {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			seen := make(map[string]int64, len(keys))
			ctx := context.Background()
			for i := r; ; i++ {
				select {
				case <-l.stop:
					return
				default:
				}
				k := keys[i%len(keys)]
				e, err := c.GetEntry(ctx, proj, k)
				l.reads.Add(1)
				switch {
				case err != nil:
					l.fail("GetEntry(%s): %v", k, err)
				case !bytes.Equal(e.Value, val(k, e.Version)):
					l.fail("GetEntry(%s) = %q at version %d", k, e.Value, e.Version)
				case e.Version < seen[k]:
					l.fail("GetEntry(%s): version %d after %d", k, e.Version, seen[k])
				default:
					seen[k] = e.Version
					if e.Stale {
						l.stale.Add(1)
					}
				}
			}
		}()
	}
	return l
}

func (l *loadReaders) fail(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.failures) < 20 {
		l.failures = append(l.failures, fmt.Sprintf(format, args...))
	}
}

// end stops the readers and fails the test with what they saw wrong.
func (l *loadReaders) end(t *testing.T) {
	t.Helper()
	close(l.stop)
	l.wg.Wait()
	t.Logf("load readers: %d reads, %d of them stale", l.reads.Load(), l.stale.Load())
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.failures) > 0 {
		t.Fatalf("load readers saw %d failures (first ones):\n%s", len(l.failures), fmt.Sprint(l.failures))
	}
}

// TestRedisLossKeepsHeldKeys: an edge holds keys; Redis loses its data (restarted empty on the
// same port, FLUSHALL, or only the pointer deleted); every held key keeps being served with no
// error, no not-found and no version regression, marked Stale once the loss is detected; then the
// data is written back as the cache-producer's rebuild and the control-plane's pointer restore
// would (Cutover to the same generation, values at equal or higher versions, in either order) and
// the edge converges to Redis's values, fresh again.
func TestRedisLossKeepsHeldKeys(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name         string
		damage       func(t *testing.T, ctx context.Context, r redisServer) error
		reason       distcache.LossReason
		valuesLost   bool // the damage took the values too (not only the pointer)
		pointerFirst bool // the pointer is restored before the values come back
	}{
		{"restarted empty", func(t *testing.T, ctx context.Context, r redisServer) error {
			// Down long enough for the edge to notice, then started again on its port, empty.
			if err := r.srv.Kill(); err != nil {
				return err
			}
			devstacktest.Eventually(t, wait, func() bool { return !stats(r.c, proj).Connected }, "the edge did not notice Redis die")
			return r.srv.Start(ctx)
		}, distcache.LossRestart, true, true},
		{"flushall", func(t *testing.T, ctx context.Context, r redisServer) error { return r.rdb.FlushAll(ctx).Err() },
			distcache.LossStreamVanished, true, false},
		{"pointer deleted", func(t *testing.T, ctx context.Context, r redisServer) error {
			return r.rdb.Del(ctx, distcache.PointerKey(proj)).Err()
		}, distcache.LossPointerVanished, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			srv, rdb, pub := standalone(t)
			ctx := ctxT(t)
			const n = 200
			keys := make([]string, n)
			seed := make([]distcache.Change, n)
			for i := range keys {
				keys[i] = keyN(i)
				seed[i] = distcache.Change{Key: keys[i], Value: val(keys[i], 10), Version: 10}
			}
			if _, err := pub.Apply(ctx, proj, 1, seed); err != nil {
				t.Fatal(err)
			}
			mustCutover(t, pub, proj, 1)
			c := newClient(t, distcache.WithAddrs(srv.Addr), distcache.WithProjections(proj),
				distcache.WithStalenessBound(time.Minute), distcache.WithLogger(testLogger(t, nil)))
			rd := &versionReader{t: t, c: c, seen: map[string]int64{}}
			for _, k := range keys {
				if e := rd.read(ctx, k); e.Version != 10 || e.Stale {
					t.Fatalf("%s before the loss: version %d stale %v", k, e.Version, e.Stale)
				}
			}
			load := startLoadReaders(c, keys, 2)
			defer func() {
				if load != nil {
					load.end(t)
				}
			}()

			if err := tt.damage(t, ctx, redisServer{srv: srv, rdb: rdb, c: c}); err != nil {
				t.Fatal(err)
			}
			devstacktest.Eventually(t, wait, func() bool { return stats(c, proj).InLoss }, "the loss was not detected")
			for round := range 3 {
				for _, k := range keys {
					if e := rd.read(ctx, k); !e.Stale || e.Version != 10 {
						t.Fatalf("round %d after the loss: %s version %d stale %v; want the held version 10, stale", round, k, e.Version, e.Stale)
					}
				}
			}

			if _, err := c.Get(ctx, proj, "never-held"); !errors.Is(err, distcache.ErrRedisDataLost) || !errors.Is(err, distcache.ErrUnavailable) {
				t.Fatalf("Get of a key not held during the loss = %v, want ErrRedisDataLost and ErrUnavailable", err)
			}

			// The rebuild writes every key back, half at the version held, half at a higher one;
			// the pointer comes back before or after the values.
			want := make(map[string]int64, n)
			if tt.pointerFirst {
				mustCutover(t, pub, proj, 1)
			}
			for b := 0; b < n && tt.valuesLost; b += 20 {
				batch := make([]distcache.Change, 0, 20)
				for _, k := range keys[b : b+20] {
					v := int64(10)
					if len(want)%2 == 1 {
						v = 11
					}
					want[k] = v
					batch = append(batch, distcache.Change{Key: k, Value: val(k, v), Version: v})
				}
				if _, err := pub.Apply(ctx, proj, 1, batch); err != nil {
					t.Fatal(err)
				}
				if b+20 < n {
					// Not every key is back: the edge is still in the loss, so reads stay stale.
					for _, k := range keys {
						if e := rd.read(ctx, k); !e.Stale {
							t.Fatalf("%s read fresh (version %d) while %d of %d keys are not back", k, e.Version, n-b-20, n)
						}
					}
				}
			}
			if !tt.pointerFirst {
				mustCutover(t, pub, proj, 1)
			}
			devstacktest.Eventually(t, wait, func() bool {
				for _, k := range keys {
					if e := rd.read(ctx, k); e.Version != cmp.Or(want[k], 10) || e.Stale {
						return false
					}
				}
				return true
			}, "the edge did not converge to Redis's values")
			s := stats(c, proj)
			if s.LossesTotal() != 1 || s.Losses[tt.reason] != 1 || s.InLoss || s.LossPendingKeys != 0 {
				t.Fatalf("stats = %+v; want one loss (%v), recovered", s, tt.reason)
			}
			if s.Misses != n+1 || s.FetchErrors != 0 {
				t.Fatalf("stats = %+v; want no miss but the first reads and the key never held", s)
			}
			l := load
			load = nil
			l.end(t)
			if _, err := c.Get(ctx, proj, "never-held"); !errors.Is(err, distcache.ErrNotFound) {
				t.Fatalf("Get of a key absent from Redis after the recovery = %v, want ErrNotFound", err)
			}
		})
	}
}

// TestRedisLossGrace: the rule for "the rebuild has caught up". After a FLUSHALL the pointer comes
// back and only some keys are written again: a third at a higher version (taken at once), a third
// at a lower version than held (the held one stays: an older version never wins), and one key is
// deleted by a tombstone (an explicit delete still deletes, during the loss too); the last third
// never comes back. Until the loss grace (the staleness bound, from the loss) is over, every held
// key but the deleted one is served, Stale; then the keys Redis never gave back are dropped
// (ErrNotFound), the loss ends, and the others are served fresh at their versions.
func TestRedisLossGrace(t *testing.T) {
	t.Parallel()
	_, rdb, pub := standalone(t)
	ctx := ctxT(t)
	const n, bound = 90, 3 * time.Second
	keys := make([]string, n)
	seed := make([]distcache.Change, n)
	for i := range keys {
		keys[i] = keyN(i)
		seed[i] = distcache.Change{Key: keys[i], Value: val(keys[i], 10), Version: 10}
	}
	if _, err := pub.Apply(ctx, proj, 1, seed); err != nil {
		t.Fatal(err)
	}
	mustCutover(t, pub, proj, 1)
	c := newClient(t, distcache.WithRedis(rdb), distcache.WithProjections(proj),
		distcache.WithStalenessBound(bound), distcache.WithLogger(testLogger(t, nil)))
	rd := &versionReader{t: t, c: c, seen: map[string]int64{}}
	for _, k := range keys {
		rd.read(ctx, k)
	}
	if err := rdb.FlushAll(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	devstacktest.Eventually(t, wait, func() bool { return stats(c, proj).InLoss }, "the loss was not detected")
	lossSeen := time.Now()
	mustCutover(t, pub, proj, 1)
	back := make([]distcache.Change, 0, 2*n/3)
	for i, k := range keys[:2*n/3] {
		v := int64(12)
		if i >= n/3 {
			v = 5
		}
		back = append(back, distcache.Change{Key: k, Value: val(k, v), Version: v})
	}
	if _, err := pub.Apply(ctx, proj, 1, back); err != nil {
		t.Fatal(err)
	}
	deleted := keys[0]
	if _, err := pub.DeleteGen(ctx, proj, 1, deleted, 20); err != nil {
		t.Fatal(err)
	}
	devstacktest.Eventually(t, wait, func() bool {
		_, err := c.Get(ctx, proj, deleted)
		return errors.Is(err, distcache.ErrNotFound)
	}, "the tombstone did not delete %s during the loss", deleted)
	devstacktest.Eventually(t, wait, func() bool {
		e, err := c.GetEntry(ctx, proj, keys[1])
		return err == nil && e.Version == 12
	}, "a higher version written back was not taken during the loss")
	// Within the grace: every key but the deleted one served, stale, never lower than held.
	for _, k := range keys[1:] {
		e := rd.read(ctx, k)
		if !e.Stale && time.Since(lossSeen) < bound/2 {
			t.Fatalf("%s read fresh (version %d) during the loss", k, e.Version)
		}
	}
	devstacktest.Eventually(t, wait, func() bool {
		s := stats(c, proj)
		return !s.InLoss || s.LossPendingKeys == int64(n-n/3)
	}, "want %d keys pending (a lower version or none in Redis): %+v", n-n/3, stats(c, proj))
	devstacktest.Eventually(t, wait, func() bool { return !stats(c, proj).InLoss }, "the loss did not end after its grace")
	for i, k := range keys[1:] {
		i++
		switch {
		case i < n/3:
			if e := rd.read(ctx, k); e.Version != 12 || e.Stale {
				t.Fatalf("%s after the loss: version %d stale %v; want 12, fresh", k, e.Version, e.Stale)
			}
		case i < 2*n/3:
			if e := rd.read(ctx, k); e.Version != 10 || e.Stale {
				t.Fatalf("%s after the loss: version %d stale %v; want the held 10 (Redis has 5), fresh", k, e.Version, e.Stale)
			}
		default:
			if _, err := c.Get(ctx, proj, k); !errors.Is(err, distcache.ErrNotFound) {
				t.Fatalf("%s, never written back, after the grace: %v; want ErrNotFound", k, err)
			}
		}
	}
	if s := stats(c, proj); s.LossesTotal() != 1 || s.LossPendingKeys != 0 {
		t.Fatalf("stats = %+v; want one loss, nothing pending", s)
	}
}
