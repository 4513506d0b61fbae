package projector

import (
	"context"
	"errors"

	"github.com/redis/go-redis/v9"

	"github.com/distcache/distcache/services/cache-producer/internal/ledger"
)

// The log-layout index on the transactional path (ledger/ixlog.go has the
// stored form). While this Writer commits a log-layout generation, its
// indexCache holds the whole index (log true, complete true) and is the
// truth the batches plan from: nothing of the index is read from Redis per
// batch. Each batch's index changes go out as one packed entry appended to
// the log inside the batch's MULTI/EXEC; the cache is read from snapshot and
// log only when it is not the stored index (first batch, takeover, another
// writer committed, a transaction that may or may not have landed).
//
// Memory. The whole index must be in memory, so it counts against the
// Writer's budget (PRODUCER_INDEX_CACHE_ENTRIES) like any cache. A batch
// whose new keys do not fit (the budget left, or the generation's share)
// moves the generation to the bucketed layout instead, in its own
// transaction: the whole index is written to the hash buckets, the log
// layout's keys are removed, and the mark becomes "hash16"; from then on the
// generation is an ordinary bucketed one whose cache holds what fits. (A log
// generation read back from Redis larger than its share is held whole for
// that one batch.)
//
// Compaction. Once the log's stored size reaches the snapshot's (and at
// least compactMin), the batch first writes the cache as a new snapshot list
// (as of the stored offset the batch starts from) and its transaction
// switches it in: the pointer is set, the log and the old snapshot list
// removed, and the batch's entry starts the new log. Written entries are
// thereby stored at most about twice.

// DefaultCompactBytes is the least stored log size that makes a log-layout
// index compacted.
const DefaultCompactBytes = 1 << 20

// logCommit is what a batch of a log-layout generation commits besides its
// log entry.
type logCommit struct {
	// leave moves the generation to the bucketed layout (its new keys do
	// not fit in memory); full is then the whole index after the batch.
	leave bool
	full  []ledger.SourceEntry
	old   string // the current snapshot's id
	// snap, when not empty, is a new snapshot (as of the batch's start)
	// to switch in; snapBytes its size.
	snap      string
	snapBytes int64
	entryLen  int64 // the size of the log entry committed
	proj      string
	gen       int64
}

// syncLog makes cache hold generation t's whole log-layout index as of h,
// read through c under the caller's WATCH, unless it does already. It
// reports whether it read it.
func (w *Writer) syncLog(ctx context.Context, c redis.Cmdable, t Target, cache *indexCache, h head, end int64) (bool, error) {
	if cache.log && h.known && cache.at == h.offset && !cache.dead {
		return false, nil
	}
	var li ledger.LogIndex
	if h.known {
		var err error
		if li, err = w.ledger.LoadLogIndex(ctx, c, t.Projection, t.Generation, 0); err != nil {
			cache.at, cache.log = -1, false
			return false, err
		}
	}
	if len(li.Entries) == 0 {
		// Nothing indexed yet: nothing was ever committed (no index either,
		// as sync assumes for every layout), or a new generation's start
		// offset was stored before its first batch. Sized for a key per
		// record from the stored offset to the topic's end: grown from empty
		// instead, the map rehashed its way up (5.5% of producer-bench's
		// fan-out CPU).
		from := int64(0)
		if h.known {
			from = h.offset
		}
		li.Entries = make(map[string]ledger.Entry, min(int64(w.share()), max(end-from, 0)))
	}
	cache.entries, cache.complete, cache.log = li.Entries, true, true
	cache.snap, cache.snapBytes, cache.logBytes = li.Snapshot, li.SnapBytes, li.LogBytes
	cache.size.Store(int64(len(li.Entries)))
	if h.known {
		cache.at = h.offset
	}
	return true, nil
}

// planLog decides how p, planned from cache (a log-layout index), is
// committed: moved to the bucketed layout when its new keys do not fit in
// the budget, else as a log entry, after writing a new snapshot through c
// when the log has grown enough.
func (w *Writer) planLog(ctx context.Context, c redis.Cmdable, t Target, cache *indexCache, p *Plan, h head) (*logCommit, error) {
	lc := &logCommit{old: cache.snap, proj: t.Projection, gen: t.Generation}
	want := 0
	for _, sl := range p.slots {
		if _, ok := cache.entries[sl.skey]; !ok && sl.after.Key != "" {
			want++
		}
	}
	share := w.share()
	switch {
	case cache.dead:
		// Forgotten while this batch waited: it takes no room, and its
		// copy is dropped after the commit (apply).
	case len(cache.entries)+want > share:
		lc.leave = true
	default:
		if room := w.take(cache, want); room < want {
			cache.size.Store(int64(len(cache.entries))) // give the room back
			lc.leave = true
		}
	}
	if lc.leave {
		w.log.Warn("index moves from the log layout to the bucketed layout: its keys outgrow the in-memory index budget (PRODUCER_INDEX_CACHE_ENTRIES)",
			"generation", t.String(), "entries", len(cache.entries)+want, "share", share, "budget", w.cacheMax)
		full := make(map[string]ledger.Entry, len(cache.entries)+want)
		for k, e := range cache.entries {
			full[k] = e
		}
		for _, sl := range p.slots {
			if sl.after.Key == "" {
				delete(full, sl.skey)
			} else {
				full[sl.skey] = sl.after
			}
		}
		lc.full = make([]ledger.SourceEntry, 0, len(full))
		for k, e := range full {
			lc.full = append(lc.full, ledger.SourceEntry{Source: k, Entry: e})
		}
		return lc, nil
	}
	if h.known && cache.logBytes >= max(cache.snapBytes, w.compactMin) {
		id, size, err := w.ledger.WriteSnapshot(ctx, c, t.Projection, t.Generation, cache.entries)
		if err != nil {
			return nil, err
		}
		lc.snap, lc.snapBytes = id, size
		if w.fault != nil {
			if err := w.fault(ctx, t, SnapshotWritten); err != nil {
				return nil, err // as a crash would: the snapshot stays unreferenced
			}
		}
	}
	return lc, nil
}

// commit fills c (p.commit() of the batch) for the log layout.
func (lc *logCommit) commit(c *ledger.Commit, h head) {
	if lc.leave {
		c.Bucketed, c.LeaveLog, c.Mark = true, true, true
		c.OldSnapshot = lc.old
		c.Set, c.Delete, c.DeleteBefore = lc.full, nil, nil
		c.Count, c.CountFresh, c.CountDelta = true, true, int64(len(lc.full))
		if c.Next < 0 && h.known {
			c.Next = h.offset // every other writer's WATCH sees the change (a sweep)
		}
		return
	}
	c.Log = true
	if len(c.Set) > 0 || len(c.Delete) > 0 {
		tag := c.Next
		if tag < 0 {
			tag = h.offset
		}
		c.LogEntry = ledger.AppendLogEntry(nil, tag, c.Set, c.Delete)
	}
	lc.entryLen = int64(len(c.LogEntry))
	c.SwitchSnapshot, c.OldSnapshot = lc.snap, lc.old
	if c.Next < 0 && h.known && (len(c.LogEntry) > 0 || lc.snap != "") {
		// The index changes without the offset moving (a sweep): the
		// offset is written all the same, so that every other writer's
		// WATCH sees the change.
		c.Next = h.offset
	}
}

// logDone cleans up after a batch's transaction that definitely did not
// land (err is redis.TxFailedErr): the snapshot it wrote is removed.
func (w *Writer) logDone(ctx context.Context, t Target, lc *logCommit, err error) {
	if lc == nil || lc.snap == "" || !errors.Is(err, redis.TxFailedErr) {
		return
	}
	_ = w.ledger.DropSnapshot(context.WithoutCancel(ctx), t.Projection, t.Generation, lc.snap)
}

// applyLog records in the cache what a committed lc changed of the stored
// log layout (before apply records the entries).
func (c *indexCache) applyLog(lc *logCommit) {
	switch {
	case lc == nil || !c.log:
	case lc.leave:
		c.log, c.snap, c.snapBytes, c.logBytes = false, "", 0, 0
	case lc.snap != "":
		c.snap, c.snapBytes, c.logBytes = lc.snap, lc.snapBytes, lc.entryLen
	default:
		c.logBytes += lc.entryLen
	}
}
