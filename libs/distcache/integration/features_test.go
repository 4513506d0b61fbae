package integration_test

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/distcache/distcache/libs/distcache"
	"github.com/distcache/distcache/tools/devstacktest"
)

// TestEviction: MaxItems, MaxBytes and MaxTTL, per projection and global,
// oldest entries first, counted by reason.
func TestEviction(t *testing.T) {
	t.Parallel()
	_, rdb, pub := standalone(t)
	ctx := ctxT(t)
	for _, p := range []string{"a", "b", "c"} {
		for i := range 30 {
			mustSet(t, pub, p, 1, keyN(i), 1)
		}
		mustCutover(t, pub, p, 1)
	}

	t.Run("max items per projection, oldest first", func(t *testing.T) {
		t.Parallel()
		c := newClient(t, distcache.WithRedis(rdb),
			distcache.WithProjectionLimits("a", distcache.Limits{MaxItems: 10}), distcache.WithProjections("b"))
		for i := range 30 {
			if _, err := c.Get(ctx, "a", keyN(i)); err != nil {
				t.Fatal(err)
			}
			if _, err := c.Get(ctx, "b", keyN(i)); err != nil {
				t.Fatal(err)
			}
		}
		devstacktest.Eventually(t, wait, func() bool { return stats(c, "a").Items == 10 }, "a not trimmed to 10 items: %+v", stats(c, "a"))
		if s := stats(c, "a"); s.EvictedMaxItems != 20 {
			t.Fatalf("a evicted by max items = %d, want 20", s.EvictedMaxItems)
		}
		if s := stats(c, "b"); s.Items != 30 || s.EvictedMaxItems != 0 {
			t.Fatalf("b (no limits) = %+v; want untouched", s)
		}
		misses := stats(c, "a").Misses
		for i := 20; i < 30; i++ { // the newest ten stayed
			if _, err := c.Get(ctx, "a", keyN(i)); err != nil {
				t.Fatal(err)
			}
		}
		if got := stats(c, "a").Misses; got != misses {
			t.Fatalf("reading the 10 newest keys missed %d times, want 0", got-misses)
		}
		if _, err := c.Get(ctx, "a", keyN(0)); err != nil {
			t.Fatal(err)
		}
		if got := stats(c, "a").Misses; got != misses+1 {
			t.Fatalf("reading the oldest (evicted) key: misses %d, want %d", got, misses+1)
		}
	})

	t.Run("max bytes global, across projections", func(t *testing.T) {
		t.Parallel()
		c := newClient(t, distcache.WithRedis(rdb), distcache.WithProjections("a", "b"),
			distcache.WithMaxBytes(1000))
		for _, p := range []string{"a", "b"} { // all of a is older than all of b
			for i := range 30 {
				if _, err := c.Get(ctx, p, keyN(i)); err != nil {
					t.Fatal(err)
				}
			}
			// Fill times have millisecond resolution: keep a's and b's apart.
			filled := time.Now()
			devstacktest.Eventually(t, wait, func() bool { return time.Since(filled) > 5*time.Millisecond }, "clock")
		}
		devstacktest.Eventually(t, wait, func() bool { return stats(c, "a").Bytes+stats(c, "b").Bytes <= 1000 }, "not trimmed to 1000 bytes")
		a, b := stats(c, "a"), stats(c, "b")
		if a.EvictedMaxBytes == 0 || b.EvictedMaxBytes != 0 || b.Items != 30 {
			t.Fatalf("evictions a=%d b=%d (b items %d); want only a's (older) entries evicted", a.EvictedMaxBytes, b.EvictedMaxBytes, b.Items)
		}
	})

	t.Run("max ttl", func(t *testing.T) {
		t.Parallel()
		c := newClient(t, distcache.WithRedis(rdb), distcache.WithProjections("c"),
			distcache.WithMaxTTL(150*time.Millisecond))
		for i := range 10 {
			if _, err := c.Get(ctx, "c", keyN(i)); err != nil {
				t.Fatal(err)
			}
		}
		devstacktest.Eventually(t, wait, func() bool { return stats(c, "c").Items == 0 }, "entries older than MaxTTL not evicted")
		if s := stats(c, "c"); s.EvictedMaxTTL != 10 || s.Bytes != 0 {
			t.Fatalf("stats = %+v; want 10 evicted by max ttl and 0 bytes", s)
		}
	})
}

// TestCutover: the client follows a cutover to the new generation, serving
// the held keys from the new generation with no miss, and a rollback.
func TestCutover(t *testing.T) {
	t.Parallel()
	_, rdb, pub := standalone(t)
	ctx := ctxT(t)
	const n = 50
	for i := range n {
		mustSet(t, pub, proj, 1, keyN(i), 1)
		mustSet(t, pub, proj, 2, keyN(i), 2)
	}
	mustCutover(t, pub, proj, 1)
	c := newClient(t, distcache.WithRedis(rdb), distcache.WithProjections(proj))
	for i := range n {
		if _, err := c.Get(ctx, proj, keyN(i)); err != nil {
			t.Fatal(err)
		}
	}
	mustCutover(t, pub, proj, 2)
	if g, err := pub.CurrentGeneration(ctx, proj); err != nil || g != 2 {
		t.Fatalf("CurrentGeneration = %d, %v; want 2", g, err)
	}
	devstacktest.Eventually(t, wait, func() bool { return c.Generation(proj) == 2 }, "client did not follow the cutover")
	for i := range n {
		e, err := c.GetEntry(ctx, proj, keyN(i))
		if err != nil || e.Version != 2 || !bytes.Equal(e.Value, val(keyN(i), 2)) {
			t.Fatalf("after cutover, %s = %+v, %v; want the generation 2 value", keyN(i), e, err)
		}
	}
	if s := stats(c, proj); s.Misses != n || s.Cutovers != 1 || s.Rebuilds != 1 || s.Items != n {
		t.Fatalf("stats = %+v; want no miss after the cutover (prefetched), 1 cutover, %d items", s, n)
	}
	// Writes to the new generation reach the client; the old one is ignored.
	mustSet(t, pub, proj, 2, keyN(0), 3)
	mustSet(t, pub, proj, 1, keyN(1), 9)
	devstacktest.Eventually(t, wait, func() bool {
		e, err := c.GetEntry(ctx, proj, keyN(0))
		return err == nil && e.Version == 3
	}, "generation 2 update not applied")
	if e, _ := c.GetEntry(ctx, proj, keyN(1)); e.Version != 2 {
		t.Fatalf("old generation write leaked into the client: %+v", e)
	}
	// Rollback.
	mustCutover(t, pub, proj, 1)
	devstacktest.Eventually(t, wait, func() bool { return c.Generation(proj) == 1 }, "client did not follow the rollback")
	if e, err := c.GetEntry(ctx, proj, keyN(1)); err != nil || e.Version != 9 {
		t.Fatalf("after rollback %s = %+v, %v; want v9 from generation 1", keyN(1), e, err)
	}
	// A client started with no live generation picks up the first cutover.
	c2 := newClient(t, distcache.WithRedis(rdb), distcache.WithProjections("fresh"))
	if _, err := c2.Get(ctx, "fresh", "k"); !errors.Is(err, distcache.ErrNoGeneration) {
		t.Fatalf("Get before any generation = %v, want ErrNoGeneration", err)
	}
	mustSet(t, pub, "fresh", 1, "k", 1)
	mustCutover(t, pub, "fresh", 1)
	devstacktest.Eventually(t, wait, func() bool {
		v, err := c2.Get(ctx, "fresh", "k")
		return err == nil && bytes.Equal(v, val("k", 1))
	}, "first generation not picked up")
}

// TestRetireGeneration deletes a generation's keys and stream by SCAN, and
// refuses the live one.
func TestRetireGeneration(t *testing.T) {
	t.Parallel()
	_, rdb, pub := standalone(t)
	ctx := ctxT(t)
	testRetire(t, ctx, rdb, pub)
}

func testRetire(t *testing.T, ctx context.Context, rdb redis.UniversalClient, pub *distcache.Publisher) {
	t.Helper()
	const n = 250
	changes := make([]distcache.Change, n)
	for i := range changes {
		changes[i] = distcache.Change{Key: keyN(i), Value: val(keyN(i), 1), Version: 1}
	}
	for _, g := range []int64{1, 2, 12} {
		if _, err := pub.Apply(ctx, "r", g, changes); err != nil {
			t.Fatal(err)
		}
	}
	mustCutover(t, pub, "r", 2)
	if _, err := pub.RetireGeneration(ctx, "r", 2, 50); !errors.Is(err, distcache.ErrGenerationLive) {
		t.Fatalf("retiring the live generation = %v, want ErrGenerationLive", err)
	}
	deleted, err := pub.RetireGeneration(ctx, "r", 1, 50)
	if err != nil || deleted != n {
		t.Fatalf("RetireGeneration = %d, %v; want %d", deleted, err, n)
	}
	if got := rdb.Exists(ctx, distcache.StreamKey("r", 1)).Val(); got != 0 {
		t.Fatalf("stream of the retired generation still exists")
	}
	for _, g := range []int64{2, 12} {
		if got := rdb.Exists(ctx, distcache.ValueKey("r", g, keyN(7)), distcache.StreamKey("r", g)).Val(); got != 2 {
			t.Fatalf("generation %d lost keys: exists = %d", g, got)
		}
	}
}

// TestWarmStart preloads by SCAN and by a hot-key list before New returns.
func TestWarmStart(t *testing.T) {
	t.Parallel()
	_, rdb, pub := standalone(t)
	ctx := ctxT(t)
	for i := range 120 {
		mustSet(t, pub, proj, 1, keyN(i), 1)
	}
	mustCutover(t, pub, proj, 1)
	tests := []struct {
		name string
		warm distcache.WarmStart
		want int64
	}{
		{"scan", distcache.WarmStart{Scan: true}, 120},
		{"scan with limit", distcache.WarmStart{Scan: true, Limit: 30}, 30},
		{"hot keys", distcache.WarmStart{Keys: []string{keyN(1), keyN(2), keyN(3)}}, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newClient(t, distcache.WithRedis(rdb), distcache.WithWarmStart(proj, tt.warm))
			if s := stats(c, proj); s.Items != tt.want || s.Misses != 0 {
				t.Fatalf("after New: %+v; want %d items, no misses", s, tt.want)
			}
		})
	}
	c := newClient(t, distcache.WithRedis(rdb), distcache.WithWarmStart(proj, distcache.WarmStart{Scan: true, Background: true}))
	devstacktest.Eventually(t, wait, func() bool { return stats(c, proj).Items == 120 }, "background warm start did not finish")
	for i := range 120 {
		if _, err := c.Get(ctx, proj, keyN(i)); err != nil {
			t.Fatal(err)
		}
	}
	if s := stats(c, proj); s.Misses != 0 {
		t.Fatalf("misses after warm start = %d, want 0", s.Misses)
	}
}

// TestMaxValueSize: a value over the client's limit is refused with an
// error, not cached.
func TestMaxValueSize(t *testing.T) {
	t.Parallel()
	_, rdb, pub := standalone(t)
	ctx := ctxT(t)
	if _, err := pub.SetGen(ctx, proj, 1, "big", bytes.Repeat([]byte("x"), 100), 1); err != nil {
		t.Fatal(err)
	}
	mustSet(t, pub, proj, 1, "small", 1)
	mustCutover(t, pub, proj, 1)
	c := newClient(t, distcache.WithRedis(rdb), distcache.WithMaxValueBytes(50))
	if _, err := c.Get(ctx, proj, "big"); !errors.Is(err, distcache.ErrValueTooLarge) {
		t.Fatalf("Get of a 100-byte value with a 50-byte limit = %v, want ErrValueTooLarge", err)
	}
	if _, err := c.Get(ctx, proj, "small"); err != nil {
		t.Fatal(err)
	}
	if s := stats(c, proj); s.Items != 1 {
		t.Fatalf("items = %d, want 1 (the large value not cached)", s.Items)
	}
}

// TestAuthPassThrough: passwords and ACL users reach Redis.
func TestAuthPassThrough(t *testing.T) {
	t.Parallel()
	r, admin := edgeUserRedis(t)
	ctx := ctxT(t)
	pub := newPublisher(t, admin)
	mustSet(t, pub, proj, 1, "k", 1)
	mustCutover(t, pub, proj, 1)

	c := newClient(t, distcache.WithAddrs(r.Addr), distcache.WithAuth("edge", "edgepw"), distcache.WithProjections(proj))
	if v, err := c.Get(ctx, proj, "k"); err != nil || !bytes.Equal(v, val("k", 1)) {
		t.Fatalf("Get as ACL user = %q, %v", v, err)
	}
	if _, err := distcache.New(ctx, append(fastOpts(), distcache.WithAddrs(r.Addr), distcache.WithAuth("edge", "wrong"),
		distcache.WithProjections(proj))...); err == nil {
		t.Fatal("New with a wrong password succeeded")
	}
}

func TestNewRejectsBadOptions(t *testing.T) {
	t.Parallel()
	ctx := ctxT(t)
	tests := []struct {
		name string
		opts []distcache.Option
	}{
		{"no redis", nil},
		{"two sources", []distcache.Option{distcache.WithAddrs("127.0.0.1:1"), distcache.WithClusterAddrs("127.0.0.1:2")}},
		{"bad projection", []distcache.Option{distcache.WithAddrs("127.0.0.1:1"), distcache.WithProjections("a b")}},
		{"negative max items", []distcache.Option{distcache.WithAddrs("127.0.0.1:1"), distcache.WithMaxItems(-1)}},
		{"shards not a power of two", []distcache.Option{distcache.WithAddrs("127.0.0.1:1"), distcache.WithLocalShards(3)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := distcache.New(ctx, tt.opts...)
			if !errors.Is(err, distcache.ErrInvalidOption) && !errors.Is(err, distcache.ErrInvalidProjection) {
				t.Fatalf("New = %v, want an invalid option error", err)
			}
		})
	}
}

// TestCompaction: bigcache only reclaims space from the head of its queues,
// so updates in place leave dead copies behind; the client rebuilds a store
// whose queues hold mostly dead space, keeping every entry current.
func TestCompaction(t *testing.T) {
	t.Parallel()
	_, rdb, pub := standalone(t)
	ctx := ctxT(t)
	const keys = 30
	big := func(key string, v int64) []byte {
		return append(val(key, v), bytes.Repeat([]byte("x"), 20_000)...)
	}
	for i := range keys {
		if _, err := pub.SetGen(ctx, proj, 1, keyN(i), big(keyN(i), 1), 1); err != nil {
			t.Fatal(err)
		}
	}
	mustCutover(t, pub, proj, 1)
	c := newClient(t, distcache.WithRedis(rdb), distcache.WithProjections(proj))
	for i := range keys {
		if _, err := c.Get(ctx, proj, keyN(i)); err != nil {
			t.Fatal(err)
		}
	}
	const rounds = 25 // 25 × 30 × 20 KB = 15 MB of overwritten copies
	for v := int64(2); v <= rounds; v++ {
		changes := make([]distcache.Change, keys)
		for i := range keys {
			changes[i] = distcache.Change{Key: keyN(i), Value: big(keyN(i), v), Version: v}
		}
		if _, err := pub.Apply(ctx, proj, 1, changes); err != nil {
			t.Fatal(err)
		}
	}
	devstacktest.Eventually(t, wait, func() bool { return stats(c, proj).Compactions > 0 }, "no compaction: %+v", stats(c, proj))
	devstacktest.Eventually(t, wait, func() bool {
		for i := range keys {
			v, err := c.Get(ctx, proj, keyN(i))
			if err != nil || !bytes.Equal(v, big(keyN(i), rounds)) {
				return false
			}
		}
		return true
	}, "entries not current after compaction")
	if s := stats(c, proj); s.Items != keys || s.Misses != keys {
		t.Fatalf("stats = %+v; want %d items and no miss beyond the first reads", s, keys)
	}
}
