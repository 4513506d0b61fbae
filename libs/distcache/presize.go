package distcache

import (
	"context"
	"errors"
	"math"
	"strings"

	"github.com/redis/go-redis/v9"
)

// Local store sizing. bigcache keeps each shard's entries in one byte queue
// that, when full, is replaced by one twice as large (a new array and a
// copy): a store filled from empty to n entries allocates two to four times
// their bytes on the way, garbage the edge's collector then has to catch up
// with. On a start that fills by misses it was most of what a miss allocated
// (libs/distcache/bench, 32 goroutines: 620 of 1,312 bytes a miss). A new
// store is therefore made at the size it is expected to reach, within a
// bound:
//
//   - a rebuild (cutover, revalidation, compaction) knows it: what the store
//     it replaces holds;
//   - a start samples Redis in the round trip it makes anyway: DBSIZE and
//     presizeSamples RANDOMKEYs give the generation's share of the keys (plus
//     two standard errors of the estimate), and the STRLEN of the sampled
//     ones their size (a second round trip, made only when some matched). A
//     projection too small to show in the sample starts small, as before.
//
// The reservation counts in the Go heap whether or not it fills (the
// collector's pacing, GOMEMLIMIT), which matters for an edge that reads a
// small part of a large projection: WithLocalPresize bounds it (default
// DefaultLocalPresize a store; 0 turns sizing off), and so do the
// projection's and the global MaxBytes. Not on Redis Cluster, whose keyless
// commands go to one node.

// DefaultLocalPresize is the most a new local store reserves up front
// unless WithLocalPresize says otherwise.
const DefaultLocalPresize = 64 << 20

// presizeSamples is how many random keys a start samples: with a
// generation holding a fraction f of the keys, the estimate's relative
// error is sqrt((1-f)/(f·n)), 2.8% at f = 0.7 (about 20 KB of replies).
const presizeSamples = 512

// bigcacheEntryOverhead is what bigcache adds to each entry in its queue:
// its header (timestamp, hash, key length) and the queue's length prefix.
const bigcacheEntryOverhead = 18 + 2

// sizeHint is the expected content of a new store: entries of entryBytes
// each (key, local entry and bigcache's overhead). Zero: unknown.
// capped: the store is expected to outgrow it (the bound cut it).
type sizeHint struct {
	entries    int
	entryBytes int
	capped     bool
}

// bounded returns h limited to maxBytes in all (fewer entries, capped).
func (h sizeHint) bounded(maxBytes int64) sizeHint {
	if h.entries <= 0 || h.entryBytes <= 0 || maxBytes <= 0 {
		return sizeHint{}
	}
	if int64(h.entries)*int64(h.entryBytes) > maxBytes {
		h.entries, h.capped = int(maxBytes/int64(h.entryBytes)), true
	}
	return h
}

// presizeLimit is the most a new store of p may reserve: WithLocalPresize,
// the projection's MaxBytes and the global MaxBytes, whichever is least.
func (p *projection) presizeLimit() int64 {
	limit := p.c.cfg.presize
	for _, mb := range []int64{p.limits.MaxBytes, p.c.cfg.global.MaxBytes} {
		if mb > 0 && mb < limit {
			limit = mb
		}
	}
	return limit
}

// hintFrom is the size of a store that will hold what st holds.
func (p *projection) hintFrom(st *store) sizeHint {
	if st == nil {
		return sizeHint{}
	}
	items, bytes := st.items.Load(), st.bytes.Load()
	if items <= 0 || bytes <= 0 {
		return sizeHint{}
	}
	return sizeHint{entries: int(items), entryBytes: int(bytes/items) + bigcacheEntryOverhead}.bounded(p.presizeLimit())
}

// presizeSample is a start's sample of the keys of a Redis node.
type presizeSample struct {
	dbsize *redis.IntCmd
	keys   []*redis.StringCmd
}

// queueSample adds the sample's commands to pipe; nil when sizing is off or
// the client is a Cluster client.
func (p *projection) queueSample(ctx context.Context, pipe redis.Pipeliner) *presizeSample {
	if p.c.reader.cluster || p.presizeLimit() <= 0 {
		return nil
	}
	s := &presizeSample{dbsize: pipe.DBSize(ctx), keys: make([]*redis.StringCmd, presizeSamples)}
	for i := range s.keys {
		s.keys[i] = pipe.RandomKey(ctx)
	}
	return s
}

// failedWith reports whether err, a pipeline's error, is the failure of
// one of the sample's own commands (not of the connection).
func (s *presizeSample) failedWith(err error) bool {
	if s == nil {
		return false
	}
	if errors.Is(s.dbsize.Err(), err) {
		return true
	}
	for _, k := range s.keys {
		if errors.Is(k.Err(), err) {
			return true
		}
	}
	return false
}

// hint estimates, from the sample, the store generation gen will fill:
// the share of the sampled keys that are gen's value keys times DBSIZE,
// each of the sampled values' mean size. It reads the sampled values'
// lengths with one pipelined STRLEN each (no values are moved). Errors
// give no hint: sizing is an optimisation.
func (s *presizeSample) hint(ctx context.Context, p *projection, rdb redis.UniversalClient, gen int64) sizeHint {
	if s == nil || gen <= 0 {
		return sizeHint{}
	}
	dbsize, err := s.dbsize.Result()
	if err != nil || dbsize <= 0 {
		return sizeHint{}
	}
	prefix := string(appendGenPrefix(nil, p.name, gen))
	var matched []string
	sampled := 0
	for _, k := range s.keys {
		key, err := k.Result()
		if err != nil {
			continue // redis.Nil: an empty database
		}
		sampled++
		if strings.HasPrefix(key, prefix) && len(key) > len(prefix) {
			matched = append(matched, key)
		}
	}
	if len(matched) == 0 {
		return sizeHint{}
	}
	pipe := rdb.Pipeline()
	lens := make([]*redis.IntCmd, len(matched))
	for i, k := range matched {
		lens[i] = pipe.StrLen(ctx, k)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return sizeHint{}
	}
	var total, n int64
	for i, l := range lens {
		v := l.Val()
		if v < valueHeaderLen { // gone since the sample, or not a value
			continue
		}
		// The local entry is the stored value with its header re-encoded.
		total += int64(len(matched[i])-len(prefix)) + v - valueHeaderLen + entryHeaderLen
		n++
	}
	if n == 0 {
		return sizeHint{}
	}
	// Two standard errors more: an underestimate makes shards outgrow
	// their queues (the doubling this avoids), an overestimate only
	// reserves that much more.
	f := float64(n) / float64(sampled)
	sigma := math.Sqrt((1 - f) / (f * float64(sampled)))
	entries := float64(dbsize) * f * (1 + 2*sigma)
	return sizeHint{entries: int(entries), entryBytes: int(total/n) + bigcacheEntryOverhead}.bounded(p.presizeLimit())
}
