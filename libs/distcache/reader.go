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

// fetchOne reads the value key prefix+key, as fetch, with one GET to one
// node (unless that node fails). The value is the caller's (go-redis's
// reply, handed over as bytes).
func (r *reader) fetchOne(ctx context.Context, prefix, key string) ([]byte, bool, error) {
	g := newGetCmd(ctx, prefix, key)
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
		b, found, err := g.do(ctx, r.readers[j])
		if err == nil {
			return b, found, nil
		}
		if ctx.Err() != nil {
			return nil, false, err
		}
		r.downUntil[j].Store(time.Now().Add(readerCooldown).UnixNano())
		g = newGetCmd(ctx, prefix, key) // a command is sent once
	}
	return g.do(ctx, r.primary)
}

// getKeyInline is the longest value key a getCmd holds inline.
const getKeyInline = 96

// getCmd is one miss's GET: the go-redis command, its argument array and
// the value key's bytes in one allocation, where go-redis's Get makes three
// (the command, the argument slice, the boxed key) after the key's own
// concatenation. A getCmd is never reused: whatever keeps the command (a
// hook) keeps its key valid.
type getCmd struct {
	cmd  redis.StringCmd
	args [2]any
	key  string // views buf when it fits
	buf  [getKeyInline]byte
}

func newGetCmd(ctx context.Context, prefix, key string) *getCmd {
	g := new(getCmd)
	if n := len(prefix) + len(key); n <= len(g.buf) {
		copy(g.buf[copy(g.buf[:], prefix):], key)
		g.key = unsafe.String(&g.buf[0], n)
	} else {
		g.key = prefix + key
	}
	// The key goes in as a string (one small allocation, its boxed header),
	// as go-redis's Get passes it: hooks that read cmd.Args() (tracing,
	// logging, tests) see what they would see from Get.
	g.args = [2]any{"get", g.key}
	g.cmd = *redis.NewStringCmd(ctx, g.args[:]...)
	return g
}

// do sends the GET to rdb. The value is the reply's own bytes (no copy).
func (g *getCmd) do(ctx context.Context, rdb redis.UniversalClient) ([]byte, bool, error) {
	_ = rdb.Process(ctx, &g.cmd)
	b, err := g.cmd.Bytes()
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
