package distcache

import (
	"context"
	"errors"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/redis/go-redis/v9"
)

// reader reads values for misses: from the replicas first (in rotation), then
// from the primary. On Redis Cluster it reads through the replica-routing
// client first, then the primary one.
type reader struct {
	primary redis.UniversalClient
	readers []redis.UniversalClient // tried in order (rotated), then primary
	// downUntil[i] (unix nanos): readers[i] failed recently and is skipped
	// until then, so that a dead replica costs one failed call per
	// readerCooldown rather than one per miss.
	downUntil []atomic.Int64
	cluster   bool
	next      atomic.Uint32
}

// readerCooldown is how long a replica that failed is skipped.
const readerCooldown = time.Second

func newReader(cfg *config) *reader {
	r := &reader{primary: cfg.primary}
	_, r.cluster = cfg.primary.(*redis.ClusterClient)
	r.readers = append(r.readers, cfg.replicas...)
	r.downUntil = make([]atomic.Int64, len(r.readers))
	return r
}

// fetch reads full Redis keys. vals[i] is only meaningful when found[i].
// It returns the last error when no node could answer.
func (r *reader) fetch(ctx context.Context, keys []string) (vals []string, found []bool, err error) {
	n := len(r.readers)
	start := 0
	if n > 1 {
		start = int(r.next.Add(1)) % n
	}
	now := time.Now().UnixNano()
	for i := 0; i < n; i++ {
		j := (start + i) % n
		if r.downUntil[j].Load() > now {
			continue
		}
		vals, found, err = fetchFrom(ctx, r.readers[j], keys, r.cluster)
		if err == nil {
			return vals, found, nil
		}
		if ctx.Err() != nil {
			return nil, nil, err
		}
		r.downUntil[j].Store(time.Now().Add(readerCooldown).UnixNano())
	}
	return fetchFrom(ctx, r.primary, keys, r.cluster)
}

// fetchOne reads one key, as fetch, with one GET to one node (unless that
// node fails). The value is the caller's (go-redis's reply, handed over as
// bytes).
func (r *reader) fetchOne(ctx context.Context, key string) ([]byte, bool, error) {
	n := len(r.readers)
	start := 0
	if n > 1 {
		start = int(r.next.Add(1)) % n
	}
	now := time.Now().UnixNano()
	for i := 0; i < n; i++ {
		j := (start + i) % n
		if r.downUntil[j].Load() > now {
			continue
		}
		b, found, err := getOne(ctx, r.readers[j], key)
		if err == nil {
			return b, found, nil
		}
		if ctx.Err() != nil {
			return nil, false, err
		}
		r.downUntil[j].Store(time.Now().Add(readerCooldown).UnixNano())
	}
	return getOne(ctx, r.primary, key)
}

func getOne(ctx context.Context, rdb redis.UniversalClient, key string) ([]byte, bool, error) {
	b, err := rdb.Get(ctx, key).Bytes() // the reply's own bytes: no copy
	if errors.Is(err, redis.Nil) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	return b, true, nil
}

// stringBytes views s as bytes, for reading only (never written, never
// handed out).
func stringBytes(s string) []byte { return unsafe.Slice(unsafe.StringData(s), len(s)) }

func fetchFrom(ctx context.Context, rdb redis.UniversalClient, keys []string, cluster bool) ([]string, []bool, error) {
	vals := make([]string, len(keys))
	found := make([]bool, len(keys))
	switch {
	case len(keys) == 1:
		s, err := rdb.Get(ctx, keys[0]).Result()
		if errors.Is(err, redis.Nil) {
			return vals, found, nil
		}
		if err != nil {
			return nil, nil, err
		}
		vals[0], found[0] = s, true
	case !cluster:
		res, err := rdb.MGet(ctx, keys...).Result()
		if err != nil {
			return nil, nil, err
		}
		for i, v := range res {
			if s, ok := v.(string); ok {
				vals[i], found[i] = s, true
			}
		}
	default: // one pipeline, which go-redis splits per node
		pipe := rdb.Pipeline()
		cmds := make([]*redis.StringCmd, len(keys))
		for i, k := range keys {
			cmds[i] = pipe.Get(ctx, k)
		}
		if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
			return nil, nil, err
		}
		for i, c := range cmds {
			s, err := c.Result()
			if errors.Is(err, redis.Nil) {
				continue
			}
			if err != nil {
				return nil, nil, err
			}
			vals[i], found[i] = s, true
		}
	}
	return vals, found, nil
}
