package pipeline

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/distcache/distcache/libs/distcache"
)

// Seq returns the "seq" field of a projected item value.
func Seq(v []byte) (int64, bool) {
	i := bytes.Index(v, []byte(`"seq"`))
	if i < 0 {
		return 0, false
	}
	rest := bytes.TrimLeft(v[i+5:], " \t:")
	rest = bytes.TrimLeft(rest, `"`)
	n := 0
	for n < len(rest) && rest[n] >= '0' && rest[n] <= '9' {
		n++
	}
	s, err := strconv.ParseInt(string(rest[:n]), 10, 64)
	return s, err == nil && n > 0
}

// NewEdge starts an in-process edge: a distcache.Client on the sample projection through addr,
// with keys preloaded into its local cache.
func NewEdge(ctx context.Context, addr string, keys []string, opts ...distcache.Option) (*distcache.Client, error) {
	return NewEdgeOn(ctx, distcache.WithAddrs(addr), keys, opts...)
}

// NewEdgeOn is NewEdge with the connection option conn (WithAddrs, WithSentinel, ...).
func NewEdgeOn(ctx context.Context, conn distcache.Option, keys []string, opts ...distcache.Option) (*distcache.Client, error) {
	o := append([]distcache.Option{
		conn,
		distcache.WithProjections(Projection.Name),
		distcache.WithWarmStart(Projection.Name, distcache.WarmStart{Keys: keys}),
	}, opts...)
	return distcache.New(ctx, o...)
}

// Watcher reads keys from an edge continuously and records what it saw: reads, errors (with the
// phase they happened in), stale serves, and every time a key's version went backwards.
type Watcher struct {
	name string
	dc   *distcache.Client
	keys []string

	reads, errs, stale, regressions atomic.Int64
	phase                           atomic.Pointer[string]
	mu                              sync.Mutex
	errByPhase                      map[string]int64
	firstErr, firstRegression       string
	maxVersion                      []int64 // per key index; written by one reader goroutine each
	stop                            chan struct{}
	wg                              sync.WaitGroup
}

// NewWatcher starts readers goroutines over keys (each reader reads its own share).
func NewWatcher(name string, dc *distcache.Client, keys []string, readers int) *Watcher {
	w := &Watcher{name: name, dc: dc, keys: keys, errByPhase: map[string]int64{}, maxVersion: make([]int64, len(keys)), stop: make(chan struct{})}
	idle := "steady"
	w.phase.Store(&idle)
	for r := range readers {
		w.wg.Add(1)
		go w.read(r, readers)
	}
	return w
}

// SetPhase names what is happening now, for attributing errors.
func (w *Watcher) SetPhase(p string) { w.phase.Store(&p) }

func (w *Watcher) read(r, n int) {
	defer w.wg.Done()
	for i := r; ; i += n {
		if i >= len(w.keys) {
			i = r
		}
		if i%16 == r%16 {
			select { // paced: leave the two cores to the pipeline under test
			case <-w.stop:
				return
			case <-time.After(time.Millisecond):
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		e, err := w.dc.GetEntry(ctx, Projection.Name, w.keys[i])
		cancel()
		w.reads.Add(1)
		if err != nil {
			w.errs.Add(1)
			w.mu.Lock()
			w.errByPhase[*w.phase.Load()]++
			if w.firstErr == "" {
				w.firstErr = fmt.Sprintf("%s during %s: %v", w.keys[i], *w.phase.Load(), err)
			}
			w.mu.Unlock()
			continue
		}
		if e.Stale {
			w.stale.Add(1)
		}
		if e.Version < w.maxVersion[i] {
			w.regressions.Add(1)
			w.mu.Lock()
			if w.firstRegression == "" {
				w.firstRegression = fmt.Sprintf("%s: version %d after %d", w.keys[i], e.Version, w.maxVersion[i])
			}
			w.mu.Unlock()
		}
		w.maxVersion[i] = max(w.maxVersion[i], e.Version)
	}
}

// WatchStats are a Watcher's counts.
type WatchStats struct {
	Name                              string
	Reads, Errors, Stale, Regressions int64
	ErrorsByPhase                     map[string]int64
	FirstError, FirstRegression       string
}

// Stop stops the readers and returns the counts.
func (w *Watcher) Stop() WatchStats {
	close(w.stop)
	w.wg.Wait()
	w.mu.Lock()
	defer w.mu.Unlock()
	byPhase := map[string]int64{}
	for k, v := range w.errByPhase {
		byPhase[k] = v
	}
	return WatchStats{Name: w.name, Reads: w.reads.Load(), Errors: w.errs.Load(), Stale: w.stale.Load(),
		Regressions: w.regressions.Load(), ErrorsByPhase: byPhase, FirstError: w.firstErr, FirstRegression: w.firstRegression}
}

// RedisItem is an item's value as Redis holds it in the live generation.
type RedisItem struct {
	Found   bool
	Version int64
	Seq     int64
}

// ReadRedis reads the given items from the projection's live generation, pipelined.
func ReadRedis(ctx context.Context, rdb *redis.Client, ids []int) (map[int]RedisItem, error) {
	g, err := rdb.Get(ctx, distcache.PointerKey(Projection.Name)).Int64()
	if err != nil {
		return nil, fmt.Errorf("read pointer: %w", err)
	}
	out := make(map[int]RedisItem, len(ids))
	for start := 0; start < len(ids); start += 1000 {
		chunk := ids[start:min(start+1000, len(ids))]
		pipe := rdb.Pipeline()
		cmds := make([]*redis.StringCmd, len(chunk))
		for i, id := range chunk {
			cmds[i] = pipe.Get(ctx, distcache.ValueKey(Projection.Name, g, Key(id)))
		}
		if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
			return nil, err
		}
		for i, id := range chunk {
			s, err := cmds[i].Result()
			if errors.Is(err, redis.Nil) {
				out[id] = RedisItem{}
				continue
			}
			if err != nil {
				return nil, err
			}
			out[id] = decodeRedisValue(s)
		}
	}
	return out, nil
}

// decodeRedisValue reads the contract's value encoding: 16 hex digits of version, an op byte,
// the payload (see libs/distcache/keys.go).
func decodeRedisValue(s string) RedisItem {
	if len(s) < 17 {
		return RedisItem{}
	}
	v, err := strconv.ParseInt(s[:16], 16, 64)
	if err != nil || s[16] != 's' {
		return RedisItem{}
	}
	seq, ok := Seq([]byte(strings.Clone(s[17:])))
	return RedisItem{Found: ok, Version: v, Seq: seq}
}
