package distcache

import (
	"fmt"
	"testing"
)

// TestPresizedStore: a store made for a hint reserves its queues up front,
// so filling it to the hint grows none of them, and an eviction scan does
// not take the reserved space for dead space; the bounds apply.
func TestPresizedStore(t *testing.T) {
	t.Parallel()
	c := testClient(t, t.TempDir())
	c.cfg.presize = DefaultLocalPresize
	p := newProjection(c, "users")
	const n, value = 60_000, 200 // reserved past compactMinBytes
	key := func(i int) string { return fmt.Sprintf("user-%06d", i) }
	entryBytes := len(key(0)) + entryHeaderLen + value + bigcacheEntryOverhead

	small, err := newStore("users", 1, c.cfg.shards, c.base, sizeHint{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(small.close)
	st, err := newStore("users", 1, c.cfg.shards, c.base, sizeHint{entries: n, entryBytes: entryBytes})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.close)
	if st.reserved < int64(n*entryBytes) || st.reserved > int64(n*entryBytes)*5/4 {
		t.Fatalf("a store for %d entries of %d bytes reserved %d bytes", n, entryBytes, st.reserved)
	}
	if small.reserved >= st.reserved/4 {
		t.Fatalf("a store with no hint reserved %d bytes (the hinted one %d)", small.reserved, st.reserved)
	}
	if len(st.ring.hashes) < n {
		t.Fatalf("the eviction ring has room for %d records, want %d", len(st.ring.hashes), n)
	}

	// Fill a tenth: an eviction scan must not ask for a compaction of space
	// that was reserved, not freed.
	payload := make([]byte, value)
	for i := range n / 10 {
		k := key(i)
		if err := st.put(k, hashKey(k), appendPositive(nil, 1, payload), nil); err != nil {
			t.Fatal(err)
		}
	}
	p.store.Store(st)
	c.projs.Store(&map[string]*projection{"users": p})
	c.evictOnce()
	if p.wantCompact.Load() {
		t.Fatalf("a presized store holding %d of %d reserved bytes was marked for compaction", st.bytes.Load(), st.reserved)
	}
	for i := n / 10; i < n; i++ {
		k := key(i)
		if err := st.put(k, hashKey(k), appendPositive(nil, 1, payload), nil); err != nil {
			t.Fatal(err)
		}
	}
	// An eighth of headroom covers the shards' uneven shares: at most a few
	// queues grew.
	if grown := int64(st.cache.Capacity()) - st.reserved; grown > st.reserved/8 {
		t.Fatalf("filling the hinted store to %d entries grew its queues by %d bytes (reserved %d)", n, grown, st.reserved)
	}

	// A rebuild sizes from what the store it replaces holds.
	if h := p.hintFrom(st); h.entries != n || h.entryBytes < entryBytes-2 || h.entryBytes > entryBytes+2 {
		t.Fatalf("hint from a store of %d entries of %d bytes: %+v", n, entryBytes, h)
	}
	// Bounds: WithLocalPresize, then the projection's MaxBytes.
	c.cfg.presize = 1 << 20
	if h := p.hintFrom(st); int64(h.entries*h.entryBytes) > 1<<20 || h.entries < (1<<20)/entryBytes-1 {
		t.Fatalf("hint bounded to 1 MiB: %+v", h)
	}
	p.limits.MaxBytes = 256 << 10
	if h := p.hintFrom(st); int64(h.entries*h.entryBytes) > 256<<10 {
		t.Fatalf("hint bounded by MaxBytes 256 KiB: %+v", h)
	}
	// A capped reservation is a step of the unsized store's doubling, so
	// that the queues end where they would have unsized.
	capped := p.hintFrom(st)
	cst, err := newStore("users", 2, c.cfg.shards, c.base, capped)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cst.close)
	if steps := cst.reserved / small.reserved; !capped.capped || cst.reserved%small.reserved != 0 || steps&(steps-1) != 0 ||
		cst.reserved > 256<<10 || cst.reserved <= 128<<10 {
		t.Fatalf("a capped hint (%+v) reserved %d bytes; unsized %d", capped, cst.reserved, small.reserved)
	}
	c.cfg.presize = 0
	if h := p.hintFrom(st); h != (sizeHint{}) {
		t.Fatalf("WithLocalPresize(0) still sized: %+v", h)
	}
}
