package projector

import (
	"context"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/distcache/distcache/libs/distcache"
	"github.com/distcache/distcache/libs/projection"
	"github.com/distcache/distcache/services/cache-producer/internal/feed"
	"github.com/distcache/distcache/services/cache-producer/internal/ledger"
)

// emailRecords are upserts of source keys from..from+n-1 at offsets at.., each projected to
// <prefix><id>@example.com.
func emailRecords(at, from, n int, prefix string) []feed.Record {
	recs := make([]feed.Record, n)
	for i := range recs {
		id := strconv.Itoa(from + i)
		recs[i] = feed.Record{Offset: int64(at + i), Topic: "t", Key: id,
			Payload: projection.Members{{Name: "id", Value: projection.Value{Kind: projection.KindNumber, Text: id}},
				{Name: "email", Value: projection.Value{Kind: projection.KindString, Text: prefix + id + "@example.com"}}}}
	}
	return recs
}

// heldEntries is the number of entries the Writer's caches hold, counted in their maps.
func heldEntries(w *Writer) (total int, per map[string]int) {
	w.mu.Lock()
	caches := make(map[string]*indexCache, len(w.caches))
	for k, c := range w.caches {
		caches[k] = c
	}
	w.mu.Unlock()
	per = map[string]int{}
	for k, c := range caches {
		c.mu.Lock()
		per[k] = len(c.entries)
		c.mu.Unlock()
		total += per[k]
	}
	return total, per
}

// TestIndexCacheBudgetAcrossGenerations: the index cache budget bounds all generations
// together. One generation alone fills the whole budget; seven more, written concurrently, each
// with four times the budget's worth of source keys, never make the caches hold more than the
// budget between them (sampled all along, and counted in the maps at the end); once all eight
// have written, each holds at most its share and the last one got room too; and a second pass that moves every source key to a new projected key
// (which needs each key's index entry, from the cache or from Redis) leaves exactly the new
// keys in every generation. Forgetting every generation releases every entry. (New
// generations start in the log layout, whose whole index must be in memory: past their share
// they move to the bucketed layout, which this test then exercises.)
func TestIndexCacheBudgetAcrossGenerations(t *testing.T) {
	t.Parallel()
	const budget, gens, keys, batch = 1000, 8, 4000, 500
	w, rdb, _ := txWriter(t)
	w.cacheMax = budget
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	targets := make([]Target, gens)
	for g := range targets {
		targets[g] = txTarget(t, "budget_"+strconv.Itoa(g))
	}
	// pass writes every key of each of tgs, in batches, all of them at once; a sampler checks
	// the total all along.
	pass := func(tgs []Target, at int, prefix string) {
		stop := make(chan struct{})
		sampled := make(chan int64)
		go func() {
			var most int64
			defer func() { sampled <- most }()
			tick := time.NewTicker(time.Millisecond)
			defer tick.Stop()
			for {
				most = max(most, w.IndexCacheEntries())
				select {
				case <-stop:
					return
				case <-tick.C:
				}
			}
		}()
		var wg sync.WaitGroup
		for _, tg := range tgs {
			wg.Go(func() {
				for from := 0; from < keys; from += batch {
					if _, err := w.WriteBatch(ctx, tg, emailRecords(at+from, from, batch, prefix), int64(at+from+batch)); err != nil {
						t.Errorf("%s: %v", tg, err)
						return
					}
				}
			})
		}
		wg.Wait()
		close(stop)
		if most := <-sampled; most > budget {
			t.Errorf("pass %q: the caches held %d entries together at one time, budget %d", prefix, most, budget)
		}
		if total, per := heldEntries(w); total > budget {
			t.Errorf("pass %q: the caches hold %d entries (%v), budget %d", prefix, total, per, budget)
		}
	}
	// The first generation alone may use the whole budget.
	pass(targets[:1], 0, "u")
	if total, _ := heldEntries(w); total != budget {
		t.Errorf("one generation of %d keys holds %d entries, want the whole budget %d", keys, total, budget)
	}
	// Seven more come: together they stay within the budget (the first one's records are
	// written already and skipped).
	pass(targets, 0, "u")
	// One more batch each (re-writing keys already written: offsets past the stored one) lets
	// every generation give back what is past its share.
	for _, tg := range targets {
		if _, err := w.WriteBatch(ctx, tg, emailRecords(keys, 0, 1, "u"), keys+1); err != nil {
			t.Fatal(err)
		}
	}
	share := budget / gens
	total, per := heldEntries(w)
	for k, n := range per {
		if n > share {
			t.Errorf("%s holds %d entries, its share is %d", k, n, share)
		}
	}
	// Each generation started in the log layout (its whole index in memory) and, its keys
	// outgrowing its share, moved to the bucketed layout rather than exceed the budget.
	for _, tg := range targets {
		if m := rdb.Get(ctx, ledger.IndexFormatKey(tg.Projection, 1)).Val(); m != "hash16" {
			t.Errorf("%s: layout mark %q, want hash16 (moved out of the log layout)", tg, m)
		}
	}
	if n := per[targets[gens-1].String()]; n == 0 {
		t.Errorf("the last generation holds no entry (%v): the first ones kept the whole budget", per)
	}
	t.Logf("after the first pass: %d entries held over %d generations (%v)", total, gens, per)

	pass(targets, keys+1, "v")
	for _, tg := range targets {
		for id := 0; id < keys; id += 97 {
			oldKey := distcache.ValueKey(tg.Projection, tg.Generation, "u"+strconv.Itoa(id)+"@example.com")
			newKey := distcache.ValueKey(tg.Projection, tg.Generation, "v"+strconv.Itoa(id)+"@example.com")
			// The old key is tombstoned (a value with the delete op) or gone; the new one set.
			if e, err := rdb.Get(ctx, newKey).Result(); err != nil || !isSet(e) {
				t.Fatalf("%s: %s = %q, %v; want the moved value", tg, newKey, e, err)
			}
			if e, err := rdb.Get(ctx, oldKey).Result(); err == nil && isSet(e) {
				t.Fatalf("%s: %s still holds a value after its source key moved to %s", tg, oldKey, newKey)
			}
		}
		if n, err := rdb.Get(ctx, ledger.IndexCountKey(tg.Projection, tg.Generation)).Int(); err != nil || n != keys {
			t.Errorf("%s: index count %d (%v), want %d", tg, n, err, keys)
		}
	}

	for _, tg := range targets {
		w.Forget(tg)
	}
	if n := w.IndexCacheEntries(); n != 0 {
		t.Errorf("after Forget of every generation: %d entries held, want 0", n)
	}
}

// isSet reports whether a stored value is a set (not a tombstone): 16 hex digits of version,
// then the op byte.
func isSet(stored string) bool { return len(stored) > 16 && stored[16] == 's' }

// TestIndexCacheDisabled: a budget of 0 keeps no entry, and the writes stay right.
func TestIndexCacheDisabled(t *testing.T) {
	t.Parallel()
	w, rdb, _ := txWriter(t)
	w.cacheMax = 0
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tg := txTarget(t, "nocache")
	if _, err := w.WriteBatch(ctx, tg, emailRecords(0, 0, 100, "u"), 100); err != nil {
		t.Fatal(err)
	}
	if _, err := w.WriteBatch(ctx, tg, emailRecords(100, 0, 100, "v"), 200); err != nil {
		t.Fatal(err)
	}
	if n := w.IndexCacheEntries(); n != 0 {
		t.Errorf("budget 0: %d entries held", n)
	}
	if e, err := rdb.Get(ctx, distcache.ValueKey(tg.Projection, 1, "u7@example.com")).Result(); err == nil && isSet(e) {
		t.Error("u7@example.com still set after its source key moved")
	}
}
