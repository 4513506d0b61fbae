package distcache

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// EvictReason says why the eviction scan removed an entry.
type EvictReason int

const (
	EvictMaxTTL   EvictReason = iota // older than MaxTTL
	EvictMaxBytes                    // over MaxBytes
	EvictMaxItems                    // over MaxItems
)

// String returns "max_ttl", "max_bytes" or "max_items".
func (r EvictReason) String() string {
	switch r {
	case EvictMaxTTL:
		return "max_ttl"
	case EvictMaxBytes:
		return "max_bytes"
	case EvictMaxItems:
		return "max_items"
	}
	return "unknown"
}

// EvictReasons lists every EvictReason.
var EvictReasons = []EvictReason{EvictMaxTTL, EvictMaxBytes, EvictMaxItems}

func (c *Client) evictLoop() {
	defer c.wg.Done()
	t := time.NewTicker(c.cfg.evictEvery)
	defer t.Stop()
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-t.C:
			c.evictOnce()
		}
	}
}

// evictOnce runs one eviction scan: each projection against its own limits,
// then the global byte and item limits against the total, oldest first
// across projections. It also asks for a compaction of stores whose bigcache
// queues hold mostly dead space (bigcache reclaims space only from the head
// of its queues, and overwritten or deleted entries stay until then).
func (c *Client) evictOnce() {
	projs := *c.projs.Load()
	for _, p := range projs {
		p.evict(p.limits)
		if st := p.store.Load(); st != nil {
			// Space reserved up front (presize.go) is not dead: a store is
			// compacted once its queues grew past it.
			if capacity := int64(st.cache.Capacity()); capacity > max(compactMinBytes, st.reserved) && capacity > 3*st.bytes.Load() {
				p.wantCompact.Store(true)
			}
		}
	}
	g := c.cfg.global
	if g.MaxBytes == 0 && g.MaxItems == 0 {
		return
	}
	for {
		var items, bytes int64
		var oldest *projection
		var oldestAge uint32
		for _, p := range projs {
			st := p.store.Load()
			if st == nil {
				continue
			}
			items += st.items.Load()
			bytes += st.bytes.Load()
			now := st.nowMs()
			st.ringMu.Lock()
			_, t, ok := st.ring.peek()
			st.ringMu.Unlock()
			if ok && (oldest == nil || now-t > oldestAge) {
				oldest, oldestAge = p, now-t
			}
		}
		var reason EvictReason
		switch {
		case oldest == nil:
			return
		case g.MaxItems > 0 && items > g.MaxItems:
			reason = EvictMaxItems
		case g.MaxBytes > 0 && bytes > g.MaxBytes:
			reason = EvictMaxBytes
		default:
			return
		}
		if !oldest.evictOne(reason) {
			return
		}
	}
}

// compactMinBytes: stores smaller than this are never compacted.
const compactMinBytes = 8 << 20

// evict removes the oldest entries while lim is exceeded.
func (p *projection) evict(lim Limits) {
	st := p.store.Load()
	if st == nil || (lim.MaxTTL == 0 && lim.MaxBytes == 0 && lim.MaxItems == 0) {
		return
	}
	for {
		now := st.nowMs()
		st.ringMu.Lock()
		_, t, ok := st.ring.peek()
		st.ringMu.Unlock()
		if !ok {
			return
		}
		var reason EvictReason
		switch {
		case lim.MaxTTL > 0 && time.Duration(now-t)*time.Millisecond > lim.MaxTTL:
			reason = EvictMaxTTL
		case lim.MaxItems > 0 && st.items.Load() > lim.MaxItems:
			reason = EvictMaxItems
		case lim.MaxBytes > 0 && st.bytes.Load() > lim.MaxBytes:
			reason = EvictMaxBytes
		default:
			return
		}
		if !p.evictOne(reason) {
			return
		}
	}
}

// evictOne removes the oldest entry of the projection's store. It reports
// false when there was none.
func (p *projection) evictOne(reason EvictReason) bool {
	st := p.store.Load()
	if st == nil {
		return false
	}
	st.ringMu.Lock()
	h, _, ok := st.ring.peek()
	if ok {
		st.ring.pop()
	}
	st.ringMu.Unlock()
	if !ok {
		return false
	}
	s := p.stripe(h)
	s.Lock()
	deleted := st.deleteHash(h)
	s.Unlock()
	if deleted {
		switch reason {
		case EvictMaxTTL:
			p.evictTTL.Add(1)
		case EvictMaxBytes:
			p.evictBytes.Add(1)
		case EvictMaxItems:
			p.evictItems.Add(1)
		}
	}
	return true
}

// watchLoop keeps each projection's health current from its tail's contact
// with Redis.
func (c *Client) watchLoop() {
	defer c.wg.Done()
	every := min(c.cfg.tailBlock/4, 50*time.Millisecond)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-t.C:
			now := time.Now().UnixNano()
			for _, p := range *c.projs.Load() {
				p.health.Store(c.healthOf(p, now))
			}
		}
	}
}

func (c *Client) healthOf(p *projection, now int64) int32 {
	since := time.Duration(now - p.lastContact.Load())
	if loss := p.lossSince.Load(); loss != 0 {
		// Redis lost the data: never fresh, and the bound runs from the loss.
		since = max(since, time.Duration(now-loss))
	} else if p.connected.Load() && !p.resuming.Load() && since <= 2*c.cfg.tailBlock+time.Second {
		return healthFresh
	}
	if since > c.cfg.staleBound {
		return healthExpired
	}
	return healthStale
}

// warmStart preloads the projection from a hot-key list and/or a SCAN of its
// live generation.
func (p *projection) warmStart(ctx context.Context, w WarmStart) error {
	st := p.store.Load()
	if st == nil {
		return nil
	}
	limit := w.Limit
	if limit == 0 && p.limits.MaxItems > 0 {
		limit = int(p.limits.MaxItems)
	}
	keys := append([]string(nil), w.Keys...)
	if w.Scan {
		scanned, err := p.scanKeys(ctx, st.gen, limit)
		if err != nil {
			return err
		}
		keys = append(keys, scanned...)
	}
	if limit > 0 && len(keys) > limit {
		keys = keys[:limit]
	}
	for i := 0; i < len(keys); i += rebuildBatch {
		chunk := keys[i:min(i+rebuildBatch, len(keys))]
		rkeys := make([]string, len(chunk))
		for j, k := range chunk {
			rkeys[j] = ValueKey(p.name, st.gen, k)
		}
		vals, found, err := p.c.reader.fetch(ctx, rkeys)
		if err != nil {
			return fmt.Errorf("warm start %s: %w", p.name, err)
		}
		for j, k := range chunk {
			if validateKey(k) != nil {
				continue
			}
			_, _ = p.fill(st, k, hashKey(k), stringBytes(vals[j]), found[j], nil, false)
		}
	}
	return nil
}

// scanKeys lists up to limit (0: all) user keys of generation gen by SCAN,
// on every master of a cluster.
func (p *projection) scanKeys(ctx context.Context, gen int64, limit int) ([]string, error) {
	pattern := GenerationPattern(p.name, gen)
	prefixLen := len(pattern) - 1
	var keys []string
	scan := func(ctx context.Context, node redis.Cmdable) error {
		var cursor uint64
		for {
			ks, next, err := node.Scan(ctx, cursor, pattern, 1000).Result()
			if err != nil {
				return err
			}
			for _, k := range ks {
				keys = append(keys, k[prefixLen:])
			}
			if cursor = next; cursor == 0 || (limit > 0 && len(keys) >= limit) {
				return nil
			}
		}
	}
	var err error
	if cc, ok := p.c.cfg.primary.(*redis.ClusterClient); ok {
		var masters []*redis.Client
		var mu sync.Mutex // ForEachMaster calls fn concurrently
		err = cc.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error {
			mu.Lock()
			masters = append(masters, m)
			mu.Unlock()
			return nil
		})
		for _, m := range masters {
			if err != nil || (limit > 0 && len(keys) >= limit) {
				break
			}
			err = scan(ctx, m)
		}
	} else {
		err = scan(ctx, p.c.cfg.primary)
	}
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("scan %s: %w", pattern, err)
	}
	return keys, nil
}
