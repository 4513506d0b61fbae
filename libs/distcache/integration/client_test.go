package integration_test

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/distcache/distcache/libs/distcache"
	"github.com/distcache/distcache/tools/devstacktest"
)

const proj = "users_by_email"

// TestGetFillsThenServesFromMemoryAndUpdatesInPlace: a miss reads Redis and
// fills the local cache; the next read makes no Redis call; a newer write is
// pushed into the local entry with no extra round trip; an older one never
// wins.
func TestGetFillsThenServesFromMemoryAndUpdatesInPlace(t *testing.T) {
	t.Parallel()
	r, _, pub := standalone(t)
	ctx := ctxT(t)
	mustSet(t, pub, proj, 1, "ada@example.com", 1)
	mustCutover(t, pub, proj, 1)

	hook := &cmdCounter{}
	rdb := redis.NewClient(&redis.Options{Addr: r.Addr})
	rdb.AddHook(hook)
	t.Cleanup(func() { _ = rdb.Close() })
	c := newClient(t, distcache.WithRedis(rdb), distcache.WithProjections(proj))

	for i := range 3 {
		got, err := c.Get(ctx, proj, "ada@example.com")
		if err != nil || !bytes.Equal(got, val("ada@example.com", 1)) {
			t.Fatalf("Get #%d = %q, %v; want %q", i, got, err, val("ada@example.com", 1))
		}
	}
	if got := hook.gets.Load(); got != 1 {
		t.Fatalf("Redis GETs after 3 reads = %d, want 1", got)
	}

	if applied, err := pub.Set(ctx, proj, "ada@example.com", val("ada@example.com", 2), 2); err != nil || !applied {
		t.Fatalf("Set v2 = %v, %v; want applied", applied, err)
	}
	devstacktest.Eventually(t, wait, func() bool {
		e, err := c.GetEntry(ctx, proj, "ada@example.com")
		return err == nil && e.Version == 2 && bytes.Equal(e.Value, val("ada@example.com", 2))
	}, "v2 never reached the local cache")
	if applied, err := pub.Set(ctx, proj, "ada@example.com", val("ada@example.com", 1), 1); err != nil || applied {
		t.Fatalf("Set v1 after v2 = %v, %v; want not applied", applied, err)
	}
	if got := hook.gets.Load(); got != 1 {
		t.Fatalf("Redis GETs after the pushed update = %d, want still 1", got)
	}
	if s := stats(c, proj); s.Hits < 3 || s.Misses != 1 || s.Updates != 1 || s.Generation != 1 {
		t.Fatalf("stats = %+v; want hits>=3 misses=1 updates=1 generation=1", s)
	}
}

// TestPublisherVersionGuard: in Redis, a write never replaces a newer or
// equal version, deletes included (tombstones).
func TestPublisherVersionGuard(t *testing.T) {
	t.Parallel()
	_, rdb, pub := standalone(t)
	ctx := ctxT(t)
	type step struct {
		op          distcache.Op
		version     int64
		wantApplied bool
	}
	steps := []step{
		{distcache.OpSet, 2, true},
		{distcache.OpSet, 1, false},   // older
		{distcache.OpSet, 2, false},   // equal: a replay
		{distcache.OpDelete, 3, true}, // delete
		{distcache.OpSet, 2, false},   // older than the tombstone
		{distcache.OpDelete, 3, false},
		{distcache.OpSet, 4, true},
	}
	for i, s := range steps {
		var applied bool
		var err error
		if s.op == distcache.OpSet {
			applied, err = pub.SetGen(ctx, proj, 1, "k", val("k", s.version), s.version)
		} else {
			applied, err = pub.DeleteGen(ctx, proj, 1, "k", s.version)
		}
		if err != nil || applied != s.wantApplied {
			t.Fatalf("step %d (%v v%d) = %v, %v; want %v", i, s.op, s.version, applied, err, s.wantApplied)
		}
	}
	n, err := rdb.XLen(ctx, distcache.StreamKey(proj, 1)).Result()
	if err != nil || n != 3 {
		t.Fatalf("stream length = %d, %v; want 3 (one entry per applied write)", n, err)
	}
	ttl, err := rdb.PTTL(ctx, distcache.ValueKey(proj, 1, "k")).Result()
	if err != nil || ttl >= 0 {
		t.Fatalf("value after a re-set has TTL %v, %v; want none", ttl, err)
	}
	if _, err := pub.DeleteGen(ctx, proj, 1, "k", 5); err != nil {
		t.Fatal(err)
	}
	ttl, _ = rdb.PTTL(ctx, distcache.ValueKey(proj, 1, "k")).Result()
	if ttl <= 0 {
		t.Fatalf("tombstone TTL = %v, want > 0", ttl)
	}
}

func TestPublisherRejectsBadInput(t *testing.T) {
	t.Parallel()
	_, _, pub := standalone(t, distcache.WithPublisherMaxValueBytes(10))
	ctx := ctxT(t)
	tests := []struct {
		name    string
		proj    string
		gen     int64
		key     string
		value   []byte
		version int64
		want    error
	}{
		{"too large", proj, 1, "k", make([]byte, 11), 1, distcache.ErrValueTooLarge},
		{"bad projection", "a:b", 1, "k", nil, 1, distcache.ErrInvalidProjection},
		{"empty projection", "", 1, "k", nil, 1, distcache.ErrInvalidProjection},
		{"bad generation", proj, 0, "k", nil, 1, distcache.ErrInvalidGeneration},
		{"empty key", proj, 1, "", nil, 1, distcache.ErrInvalidKey},
		{"bad version", proj, 1, "k", nil, 0, distcache.ErrInvalidVersion},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := pub.SetGen(ctx, tt.proj, tt.gen, tt.key, tt.value, tt.version)
			if !errors.Is(err, tt.want) {
				t.Fatalf("SetGen = %v, want %v", err, tt.want)
			}
		})
	}
	// A bad change in a batch does not stop the good ones.
	res, err := pub.Apply(ctx, proj, 1, []distcache.Change{
		{Key: "a", Value: []byte("ok"), Version: 1},
		{Key: "b", Value: make([]byte, 11), Version: 1},
		{Key: "c", Value: []byte("ok"), Version: 1},
	})
	if err != nil {
		t.Fatal(err)
	}
	if !res[0].Applied || !errors.Is(res[1].Err, distcache.ErrValueTooLarge) || !res[2].Applied {
		t.Fatalf("Apply results = %+v; want applied, too large, applied", res)
	}
	if _, err := pub.Set(ctx, "nogen", "k", []byte("v"), 1); !errors.Is(err, distcache.ErrNoGeneration) {
		t.Fatalf("Set on a projection with no live generation = %v, want ErrNoGeneration", err)
	}
}

// TestConcurrentMissesCoalesce: N concurrent misses of one key make one
// Redis call; GetMany batches its misses into one MGET.
func TestConcurrentMissesCoalesce(t *testing.T) {
	t.Parallel()
	r, _, pub := standalone(t)
	ctx := ctxT(t)
	for i := range 10 {
		mustSet(t, pub, proj, 1, keyN(i), 1)
	}
	mustCutover(t, pub, proj, 1)

	const n = 50
	release := make(chan struct{})
	var c *distcache.Client
	hook := &cmdCounter{before: func(string) { <-release }}
	rdb := redis.NewClient(&redis.Options{Addr: r.Addr, PoolSize: 4})
	rdb.AddHook(hook)
	t.Cleanup(func() { _ = rdb.Close() })
	c = newClient(t, distcache.WithRedis(rdb), distcache.WithProjections(proj))

	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			v, err := c.Get(ctx, proj, keyN(0))
			if err == nil && !bytes.Equal(v, val(keyN(0), 1)) {
				err = errors.New("wrong value " + string(v))
			}
			errs <- err
		}()
	}
	devstacktest.Eventually(t, wait, func() bool { return stats(c, proj).Misses == n }, "not all %d reads missed", n)
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if got := hook.gets.Load(); got != 1 {
		t.Fatalf("Redis GETs for %d concurrent misses = %d, want 1", n, got)
	}

	mgets := &mgetCounter{}
	rdb.AddHook(mgets)
	keys := []string{keyN(0), keyN(1), keyN(2), "absent", keyN(3)}
	got, err := c.GetMany(ctx, proj, keys)
	if err != nil {
		t.Fatal(err)
	}
	for i, k := range keys {
		want := k != "absent"
		if got[i].Found != want || (want && !bytes.Equal(got[i].Value, val(k, 1))) {
			t.Fatalf("GetMany[%d] (%s) = %+v", i, k, got[i])
		}
	}
	if m := mgets.n.Load(); m != 1 {
		t.Fatalf("MGETs for GetMany = %d, want 1", m)
	}
}

// TestNegativeCaching: an absent key is remembered as absent for the
// negative TTL; a later Set replaces the absent entry at once.
func TestNegativeCaching(t *testing.T) {
	t.Parallel()
	r, _, pub := standalone(t)
	ctx := ctxT(t)
	mustSet(t, pub, proj, 1, "present", 1)
	mustCutover(t, pub, proj, 1)
	hook := &cmdCounter{}
	rdb := redis.NewClient(&redis.Options{Addr: r.Addr})
	rdb.AddHook(hook)
	t.Cleanup(func() { _ = rdb.Close() })
	c := newClient(t, distcache.WithRedis(rdb), distcache.WithProjections(proj),
		distcache.WithNegativeTTL(time.Hour))

	for i := range 3 {
		if _, err := c.Get(ctx, proj, "bob@example.com"); !errors.Is(err, distcache.ErrNotFound) {
			t.Fatalf("Get #%d of an absent key = %v, want ErrNotFound", i, err)
		}
	}
	if got := hook.gets.Load(); got != 1 {
		t.Fatalf("Redis GETs for 3 reads of an absent key = %d, want 1", got)
	}
	if s := stats(c, proj); s.NegativeHits != 2 {
		t.Fatalf("negative hits = %d, want 2", s.NegativeHits)
	}
	mustSet(t, pub, proj, 1, "bob@example.com", 7)
	devstacktest.Eventually(t, wait, func() bool {
		v, err := c.Get(ctx, proj, "bob@example.com")
		return err == nil && bytes.Equal(v, val("bob@example.com", 7))
	}, "the Set never replaced the absent entry")
	if got := hook.gets.Load(); got != 1 {
		t.Fatalf("Redis GETs after the pushed Set = %d, want still 1", got)
	}
	// A pushed delete makes the key absent locally, again without a read.
	if _, err := pub.DeleteGen(ctx, proj, 1, "bob@example.com", 8); err != nil {
		t.Fatal(err)
	}
	devstacktest.Eventually(t, wait, func() bool {
		_, err := c.Get(ctx, proj, "bob@example.com")
		return errors.Is(err, distcache.ErrNotFound)
	}, "the pushed delete never reached the local cache")
	if got := hook.gets.Load(); got != 1 {
		t.Fatalf("Redis GETs after the pushed delete = %d, want still 1", got)
	}
}

func TestNegativeEntriesExpire(t *testing.T) {
	t.Parallel()
	r, _, pub := standalone(t)
	ctx := ctxT(t)
	mustCutover(t, pub, proj, 1)
	hook := &cmdCounter{}
	rdb := redis.NewClient(&redis.Options{Addr: r.Addr})
	rdb.AddHook(hook)
	t.Cleanup(func() { _ = rdb.Close() })
	c := newClient(t, distcache.WithRedis(rdb), distcache.WithProjections(proj),
		distcache.WithNegativeTTL(50*time.Millisecond))
	if _, err := c.Get(ctx, proj, "nobody"); !errors.Is(err, distcache.ErrNotFound) {
		t.Fatal(err)
	}
	devstacktest.Eventually(t, wait, func() bool {
		_, _ = c.Get(ctx, proj, "nobody")
		return hook.gets.Load() >= 2
	}, "the negative entry never expired")
}

// TestFillRace: a change applied while a miss fetch of the key is in flight
// wins over the fetched (older) value.
func TestFillRace(t *testing.T) {
	t.Parallel()
	r, _, pub := standalone(t)
	ctx := ctxT(t)
	mustSet(t, pub, proj, 1, "k", 1)
	mustCutover(t, pub, proj, 1)

	var c *distcache.Client
	var once sync.Once
	hook := &cmdCounter{after: func(key string) {
		if key != distcache.ValueKey(proj, 1, "k") {
			return
		}
		once.Do(func() {
			// The fetch has read v1; now v2 is written and tailed before the
			// fetch returns.
			seen := stats(c, proj).ChangesSeen
			mustSet(t, pub, proj, 1, "k", 2)
			devstacktest.Eventually(t, wait, func() bool { return stats(c, proj).ChangesSeen > seen }, "v2 not tailed")
		})
	}}
	rdb := redis.NewClient(&redis.Options{Addr: r.Addr})
	rdb.AddHook(hook)
	t.Cleanup(func() { _ = rdb.Close() })
	c = newClient(t, distcache.WithRedis(rdb), distcache.WithProjections(proj))

	if _, err := c.Get(ctx, proj, "k"); err != nil {
		t.Fatal(err)
	}
	e, err := c.GetEntry(ctx, proj, "k")
	if err != nil || e.Version != 2 || !bytes.Equal(e.Value, val("k", 2)) {
		t.Fatalf("after the race: %+v, %v; want v2 (the fetched v1 must not be stored)", e, err)
	}
	if got := hook.gets.Load(); got != 1 {
		t.Fatalf("Redis GETs = %d, want 1", got)
	}
}

func keyN(i int) string { return "user" + string(rune('a'+i%26)) + "-" + itoa(i) }

func itoa(i int) string {
	if i == 0 {
		return "0"
	}
	var b []byte
	for ; i > 0; i /= 10 {
		b = append([]byte{byte('0' + i%10)}, b...)
	}
	return string(b)
}

type mgetCounter struct{ n atomicInt }

func (h *mgetCounter) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *mgetCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if cmd.Name() == "mget" {
			h.n.Add(1)
		}
		return next(ctx, cmd)
	}
}
func (h *mgetCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// TestBatchReachesClients: one Apply is one stream entry; a key written
// twice in the batch ends at its newest version in the client.
func TestBatchReachesClients(t *testing.T) {
	t.Parallel()
	_, rdb, pub := standalone(t)
	ctx := ctxT(t)
	mustSet(t, pub, proj, 1, "k", 1)
	mustSet(t, pub, proj, 1, "j", 1)
	mustCutover(t, pub, proj, 1)
	c := newClient(t, distcache.WithRedis(rdb), distcache.WithProjections(proj))
	for _, k := range []string{"k", "j"} {
		if _, err := c.Get(ctx, proj, k); err != nil {
			t.Fatal(err)
		}
	}
	before := rdb.XLen(ctx, distcache.StreamKey(proj, 1)).Val()
	res, err := pub.Apply(ctx, proj, 1, []distcache.Change{
		{Key: "k", Value: val("k", 2), Version: 2},
		{Key: "j", Version: 5, Op: distcache.OpDelete},
		{Key: "k", Value: val("k", 3), Version: 3},
		{Key: "k", Value: val("k", 2), Version: 2}, // older: not applied
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []bool{true, true, true, false}
	for i, r := range res {
		if r.Applied != want[i] || r.Err != nil {
			t.Fatalf("Apply[%d] = %+v, want applied=%v", i, r, want[i])
		}
	}
	if got := rdb.XLen(ctx, distcache.StreamKey(proj, 1)).Val(); got != before+1 {
		t.Fatalf("stream grew by %d entries, want 1", got-before)
	}
	devstacktest.Eventually(t, wait, func() bool {
		e, err := c.GetEntry(ctx, proj, "k")
		_, jerr := c.Get(ctx, proj, "j")
		return err == nil && e.Version == 3 && bytes.Equal(e.Value, val("k", 3)) && errors.Is(jerr, distcache.ErrNotFound)
	}, "batch not applied in the client")
	if s := stats(c, proj); s.Misses != 2 {
		t.Fatalf("misses = %d, want 2 (updates pushed, not refetched)", s.Misses)
	}
}
