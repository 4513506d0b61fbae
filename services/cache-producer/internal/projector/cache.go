package projector

import (
	"context"
	"sync"
	"sync/atomic"

	"github.com/distcache/distcache/services/cache-producer/internal/ledger"
)

// DefaultIndexCacheEntries bounds a generation's index cache (about 100
// bytes an entry). Past it, keys not cached are read from Redis.
const DefaultIndexCacheEntries = 1_000_000

// indexCache is a generation's source-key index as this Writer last
// committed it on the transactional path, so that a batch need not read the
// entries back from Redis. It is trusted only while the stored offset is the
// one it was left at (nobody else committed since); complete means it holds
// every stored entry, so a key it lacks has none.
type indexCache struct {
	// mu is held while the cache is read or changed: two writers of one
	// generation in one process (a zombie backfill attempt next to the live
	// consumer) must not touch it at once.
	mu       sync.Mutex
	size     atomic.Int64 // len(entries), for IndexCacheEntries without mu
	at       int64        // stored offset the cache matches; -1: none
	complete bool
	entries  map[string]ledger.Entry
}

func (w *Writer) cacheOf(t Target) *indexCache {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.caches == nil {
		w.caches = map[string]*indexCache{}
	}
	c, ok := w.caches[t.String()]
	if !ok {
		c = &indexCache{at: -1}
		w.caches[t.String()] = c
	}
	return c
}

// IndexCacheEntries is how many index entries the Writer holds in memory,
// over every generation.
func (w *Writer) IndexCacheEntries() int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	var n int64
	for _, c := range w.caches {
		n += c.size.Load()
	}
	return n
}

// Forget drops what the Writer keeps in memory for t (its index cache),
// when t is retired or no longer written by this process.
func (w *Writer) Forget(t Target) {
	w.mu.Lock()
	delete(w.caches, t.String())
	w.mu.Unlock()
}

// sync makes the cache trustworthy for a batch planned against h: when
// someone else committed since the cache was left (or it is new), it starts
// over, empty, and complete only when the generation's index is known to be
// empty. end is the topic's end offset if known (else 0).
func (c *indexCache) sync(h head, end int64, cacheMax int) {
	if h.known && h.offset == c.at {
		return
	}
	c.at = -1
	c.complete = !h.known || (h.counted && h.count == 0) // nothing ever committed: no index either
	// An empty index fills with up to a key per record to the topic's end:
	// size it for them rather than grow it.
	size := 0
	if c.complete {
		size = int(min(int64(cacheMax), max(end-h.offset, 0)))
	}
	c.entries = make(map[string]ledger.Entry, size)
	c.size.Store(0)
}

// reader reads index entries from the cache, and those it cannot answer
// through l on tx (under the caller's WATCH), in the layout of h.
func (c *indexCache) reader(ctx context.Context, l *ledger.Ledger, tx txCmdable, t Target, h head) indexReader {
	return func(skeys []string) ([]ledger.Entry, error) {
		out := make([]ledger.Entry, len(skeys))
		var miss []string
		var missAt []int
		for i, k := range skeys {
			if e, ok := c.entries[k]; ok {
				out[i] = e
			} else if !c.complete {
				miss = append(miss, k)
				missAt = append(missAt, i)
			}
		}
		if len(miss) == 0 {
			return out, nil
		}
		got, err := l.IndexOn(ctx, tx, t.Projection, t.Generation, h.bucketed, miss)
		if err != nil {
			return nil, err
		}
		for j, i := range missAt {
			out[i] = got[j]
		}
		return out, nil
	}
}

// apply records a committed plan in the cache, which then matches the
// stored offset stored.
func (c *indexCache) apply(p *Plan, stored int64, cacheMax int) {
	for _, sl := range p.slots {
		k, e := sl.skey, sl.after
		if e.Key == "" && c.complete {
			delete(c.entries, k) // absent means no entry
			continue
		}
		// (An incomplete cache also remembers "no entry".)
		if len(c.entries) < cacheMax {
			c.entries[k] = e
		} else if _, ok := c.entries[k]; ok {
			c.entries[k] = e
		} else {
			c.complete = false // full: keys not cached are read
		}
	}
	c.at = stored
	c.size.Store(int64(len(c.entries)))
}
