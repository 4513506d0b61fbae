package projector

import (
	"context"
	"sync"
	"sync/atomic"

	"github.com/distcache/distcache/services/cache-producer/internal/ledger"
)

// DefaultIndexCacheEntries bounds the index caches of a Writer, all
// generations together (about 100 bytes an entry). Past it, keys not cached
// are read from Redis.
const DefaultIndexCacheEntries = 1_000_000

// indexCache is a generation's source-key index as this Writer last
// committed it on the transactional path, so that a batch need not read the
// entries back from Redis. It is trusted only while the stored offset is the
// one it was left at (nobody else committed since); complete means it holds
// every stored entry, so a key it lacks has none.
//
// Memory. The Writer's budget (WithIndexCache, PRODUCER_INDEX_CACHE_ENTRIES)
// bounds the entries of all its caches together: a cache takes room for new
// entries from the budget under the Writer's lock, so the total never
// exceeds it, and it may hold at most its share (the budget divided by the
// number of caches). A cache over its share, because generations were added
// since it filled, is rebuilt smaller (a fresh map, so the old one's memory
// goes): at once when it is idle while a generation is added, otherwise at
// its next batch. A key a cache has no room for is read from Redis.
type indexCache struct {
	// mu is held while the cache is read or changed: two writers of one
	// generation in one process (a zombie backfill attempt next to the live
	// consumer) must not touch it at once.
	mu sync.Mutex
	w  *Writer // whose budget the entries count against
	// size is len(entries) outside apply; within apply, len(entries) plus the
	// room taken for new entries. Raised only under w.mu, so the sum over
	// the Writer's caches never passes the budget.
	size     atomic.Int64
	at       int64 // stored offset the cache matches; -1: none
	complete bool
	dead     bool // forgotten: holds nothing and takes no room
	entries  map[string]ledger.Entry

	// log: the generation's index is in the log layout (ixlog.go) and
	// entries is the whole of it as of offset at (complete is true): the
	// truth this Writer plans from, never shrunk. snap is the current
	// snapshot's id, snapBytes and logBytes the stored sizes compaction
	// weighs.
	log                 bool
	snap                string
	snapBytes, logBytes int64
}

func (w *Writer) cacheOf(t Target) *indexCache {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.caches == nil {
		w.caches = map[string]*indexCache{}
	}
	c, ok := w.caches[t.String()]
	if !ok {
		c = &indexCache{w: w, at: -1}
		w.caches[t.String()] = c
		// Every share just shrank: the caches not writing now give back
		// what is past theirs (a busy one does at its next batch).
		share := w.shareLocked()
		for _, o := range w.caches {
			if o != c && o.size.Load() > int64(share) && o.mu.TryLock() {
				o.shrink(share)
				o.mu.Unlock()
			}
		}
	}
	return c
}

// shareLocked is the most entries one cache may hold: the budget split
// evenly over the caches. w.mu is held.
func (w *Writer) shareLocked() int {
	return w.cacheMax / max(len(w.caches), 1)
}

// share is shareLocked for a caller that does not hold w.mu.
func (w *Writer) share() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.shareLocked()
}

// take reserves room for up to want new entries in c and returns how many:
// no more than the budget left over every cache, nor than c's share left.
func (w *Writer) take(c *indexCache, want int) int {
	if want <= 0 {
		return 0
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	var used int64
	for _, o := range w.caches {
		used += o.size.Load()
	}
	room := min(int64(w.cacheMax)-used, int64(w.shareLocked())-c.size.Load(), int64(want))
	if room <= 0 {
		return 0
	}
	c.size.Add(room)
	return int(room)
}

// IndexCacheEntries is how many index entries the Writer holds in memory,
// over every generation; never more than its budget.
func (w *Writer) IndexCacheEntries() int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	var n int64
	for _, c := range w.caches {
		n += c.size.Load()
	}
	return n
}

// Forget drops what the Writer keeps in memory for t (its index cache and
// its Mark), when t is retired or no longer written by this process. A batch of t in
// flight finishes first; its cache then holds nothing.
func (w *Writer) Forget(t Target) {
	w.mu.Lock()
	c := w.caches[t.String()]
	delete(w.caches, t.String())
	delete(w.marks, t.String())
	// The claim stays: a batch of t still in flight must keep checking it.
	w.mu.Unlock()
	if c == nil {
		return
	}
	c.mu.Lock()
	c.dead, c.complete, c.at = true, false, -1
	c.entries, c.log = nil, false
	c.size.Store(0)
	c.mu.Unlock()
}

// shrink keeps at most n entries (any n: the cache then stops being
// complete) in a fresh map, so the memory of the larger one is freed. c.mu
// is held.
func (c *indexCache) shrink(n int) {
	if c.log || len(c.entries) <= n {
		// A log-layout index is never shrunk: past its share it moves to
		// the bucketed layout at its next batch (moveToBuckets).
		return
	}
	kept := make(map[string]ledger.Entry, n)
	for k, e := range c.entries {
		if len(kept) == n {
			break
		}
		kept[k] = e
	}
	c.entries = kept
	c.complete = false
	c.size.Store(int64(len(kept)))
}

// sync makes the cache trustworthy for a batch planned against h: when
// someone else committed since the cache was left (or it is new), it starts
// over, empty, and complete only when the generation's index is known to be
// empty. end is the topic's end offset if known (else 0). A cache over its
// share gives back what is past it. (The budget is the Writer's; the last
// argument is kept for the callers' sake.)
func (c *indexCache) sync(h head, end int64, _ int) {
	share := c.w.share()
	if h.known && h.offset == c.at {
		c.shrink(share)
		return
	}
	c.at, c.log = -1, false
	c.complete = !h.known || (h.counted && h.count == 0) // nothing ever committed: no index either
	if c.dead {
		c.complete = false
	}
	// An empty index fills with up to a key per record to the topic's end:
	// size it for them (within the share) rather than grow it.
	size := 0
	if c.complete {
		size = int(min(int64(share), max(end-h.offset, 0)))
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
// stored offset stored. New keys are kept as far as the Writer's budget and
// the cache's share allow; past that the cache stops being complete.
func (c *indexCache) apply(p *Plan, stored int64, _ int) {
	c.at = stored
	if c.dead {
		if c.log {
			c.at, c.log = -1, false // holds nothing: read again if ever used
		}
		return
	}
	if c.log {
		// The whole index: every change is kept (writeTx took the room, or
		// moved the generation to the bucketed layout).
		for _, sl := range p.slots {
			if sl.after.Key == "" {
				delete(c.entries, sl.skey)
			} else {
				c.entries[sl.skey] = sl.after
			}
		}
		c.size.Store(int64(len(c.entries)))
		return
	}
	want := 0
	for _, sl := range p.slots {
		if _, ok := c.entries[sl.skey]; !ok && (sl.after.Key != "" || !c.complete) {
			want++ // an upper bound: a key may come twice in a plan
		}
	}
	room := c.w.take(c, want)
	for _, sl := range p.slots {
		k, e := sl.skey, sl.after
		if e.Key == "" && c.complete {
			delete(c.entries, k) // absent means no entry
			continue
		}
		// (An incomplete cache also remembers "no entry".)
		if _, ok := c.entries[k]; ok {
			c.entries[k] = e
		} else if room > 0 {
			c.entries[k] = e
			room--
		} else {
			c.complete = false // no room: keys not cached are read
		}
	}
	c.size.Store(int64(len(c.entries))) // gives back the room not used
}
