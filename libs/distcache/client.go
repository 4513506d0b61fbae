package distcache

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Entry is a value read from a Client.
type Entry struct {
	// Value is the value; the caller owns it.
	Value []byte
	// Version is the version of the change that wrote it.
	Version int64
	// Found is false when the key is absent (GetMany only; the single-key
	// reads return ErrNotFound instead).
	Found bool
	// Stale reports that the entry was served from memory while the Client
	// had lost contact with Redis (within the staleness bound), or after a
	// start from a snapshot (WithSnapshot) before the change-stream tail had
	// caught up.
	Stale bool
}

// Client is the edge side of distcache: a local in-memory copy (bigcache) of
// the keys an edge service reads, filled from Redis on a miss and kept
// current by tailing each projection's change stream. It is safe for
// concurrent use.
type Client struct {
	cfg    config
	log    *slog.Logger
	base   time.Time
	reader *reader
	// tailReplicas are the replicas the change-stream tails may read from
	// (tailnode.go); seed spreads projections, and Clients, over them.
	tailReplicas []redis.UniversalClient
	seed         uint64

	mu    sync.Mutex                             // serialises projection starts
	projs atomic.Pointer[map[string]*projection] // copy on write

	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup
	closed atomic.Bool
	// snapshotting: New completed with WithSnapshot, so Close writes a
	// final snapshot.
	snapshotting bool
}

// New starts a Client: it connects, resolves the live generation of each
// projection named by WithProjections (and friends), starts tailing their
// change streams, runs the warm starts that are not in the background, and
// starts the eviction scan. With WithSnapshot, a projection that has a
// snapshot is loaded from it instead, without a call to Redis (see
// WithSnapshot). ctx bounds only this start.
func New(ctx context.Context, opts ...Option) (*Client, error) {
	cfg := config{
		evictEvery:   DefaultEvictionInterval,
		negativeTTL:  DefaultNegativeTTL,
		staleBound:   DefaultStalenessBound,
		maxValue:     DefaultMaxValueBytes,
		fetchTimeout: DefaultFetchTimeout,
		tailBlock:    DefaultTailBlock,
		tailBatch:    DefaultTailBatch,
		shards:       256,
		presize:      DefaultLocalPresize,

		snapshotEvery: DefaultSnapshotInterval,
		replicaTail:   true,
	}
	for _, o := range opts {
		o(&cfg)
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	log := cfg.logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &Client{cfg: cfg, log: log, base: time.Now()}
	if cfg.snapshotDir != "" {
		if err := os.MkdirAll(cfg.snapshotDir, 0o700); err != nil {
			return nil, fmt.Errorf("snapshot directory: %w", err)
		}
	}
	if err := c.buildClients(); err != nil {
		return nil, err
	}
	for _, rdb := range append([]redis.UniversalClient{c.cfg.primary}, c.cfg.replicas...) {
		if !HonoursDeadlines(rdb) {
			log.Warn("distcache: a Redis client passed in does not honour context deadlines (build it with " +
				"ContextTimeoutEnabled: true, or use WithAddrs / WithRedisConfig): a hung Redis will hold misses " +
				"for its ReadTimeout whatever the caller's deadline")
			break
		}
	}
	c.reader = newReader(&c.cfg)
	c.tailReplicas, c.seed = tailReplicas(&c.cfg), rand.Uint64()
	empty := map[string]*projection{}
	c.projs.Store(&empty)
	c.ctx, c.cancel = context.WithCancel(context.Background())

	for _, name := range cfg.order {
		if _, err := c.startProjection(ctx, name); err != nil {
			_ = c.Close(context.Background())
			return nil, err
		}
	}
	for _, name := range cfg.order {
		pc := cfg.projections[name]
		if pc.warm == nil {
			continue
		}
		p := (*c.projs.Load())[name]
		if p.fromSnapshot {
			c.log.Debug("distcache: warm start skipped: the projection was loaded from its snapshot",
				slog.String(logKeyProjection, name))
			continue
		}
		if pc.warm.Background {
			c.wg.Add(1)
			go func() {
				defer c.wg.Done()
				if err := p.warmStart(c.ctx, *pc.warm); err != nil {
					c.log.Warn("distcache: warm start", slog.String(logKeyProjection, name), slog.Any(logKeyError, err))
				}
			}()
			continue
		}
		if err := p.warmStart(ctx, *pc.warm); err != nil {
			_ = c.Close(context.Background())
			return nil, fmt.Errorf("warm start %s: %w", name, err)
		}
	}
	c.wg.Add(2)
	go c.evictLoop()
	go c.watchLoop()
	if cfg.snapshotDir != "" {
		c.snapshotting = true
		c.wg.Add(1)
		go c.snapshotLoop()
	}
	return c, nil
}

// Log attribute keys.
const (
	logKeyProjection = "projection"
	logKeyGeneration = "generation"
	logKeyError      = "err"
)

// buildClients builds the Redis clients of WithAddrs, WithClusterAddrs,
// WithSentinel or WithRedisConfig (none for WithRedis): their read clients go
// before any given by WithReplicas.
func (c *Client) buildClients() error {
	cfg := &c.cfg
	if len(cfg.redisSources) == 0 {
		return nil
	}
	rc := cfg.redisCfg
	if rc.DialerRetries == 0 {
		rc.DialerRetries = 1 // fail fast: the tail retries on its own
	}
	built, err := rc.NewClients()
	if err != nil {
		return err
	}
	cfg.primary = built.Primary
	cfg.replicas = append(slices.Clip(built.Replicas), cfg.replicas...)
	cfg.ownClients = append(cfg.ownClients, built.Primary)
	cfg.ownClients = append(cfg.ownClients, built.Replicas...)
	return nil
}

// HonoursDeadlines reports whether rdb gives up a call when its context's
// deadline passes, even while the socket read or write is blocked: a
// *redis.Client, *redis.ClusterClient or *redis.Ring built with
// ContextTimeoutEnabled. Clients built by this package (RedisConfig, WithAddrs,
// WithClusterAddrs, WithSentinel) always do. Other implementations are
// reported as not honouring deadlines.
func HonoursDeadlines(rdb redis.UniversalClient) bool {
	switch c := rdb.(type) {
	case *redis.Client:
		return c.Options().ContextTimeoutEnabled
	case *redis.ClusterClient:
		return c.Options().ContextTimeoutEnabled
	case *redis.Ring:
		return c.Options().ContextTimeoutEnabled
	}
	return false
}

// Close stops the change-stream tails and background work, waits for them
// (or for ctx), writes the final snapshots (WithSnapshot; within ctx), and
// closes the Redis clients the Client built itself.
func (c *Client) Close(ctx context.Context) error {
	if !c.closed.CompareAndSwap(false, true) {
		return nil
	}
	c.cancel()
	done := make(chan struct{})
	go func() { c.wg.Wait(); close(done) }()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = fmt.Errorf("close: %w", ctx.Err())
	}
	if c.snapshotting && ctx.Err() == nil {
		if serr := c.saveSnapshots(ctx); serr != nil {
			err = errors.Join(err, fmt.Errorf("close: final snapshot: %w", serr))
		}
	}
	for _, p := range *c.projs.Load() {
		if st := p.store.Load(); st != nil {
			st.close()
		}
	}
	for _, rc := range c.cfg.ownClients {
		_ = rc.Close()
	}
	return err
}

func (c *Client) projection(ctx context.Context, name string) (*projection, error) {
	if p, ok := (*c.projs.Load())[name]; ok {
		return p, nil
	}
	if c.closed.Load() {
		return nil, ErrClosed
	}
	return c.startProjection(ctx, name)
}

func (c *Client) startProjection(ctx context.Context, name string) (*projection, error) {
	if err := ValidateProjection(name); err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if p, ok := (*c.projs.Load())[name]; ok {
		return p, nil
	}
	p := newProjection(c, name)
	if c.cfg.snapshotDir == "" || !p.loadSnapshot() {
		if err := p.start(ctx); err != nil {
			return nil, fmt.Errorf("follow projection %s: %w", name, err)
		}
	}
	p.publishSnap()
	old := *c.projs.Load()
	next := make(map[string]*projection, len(old)+1)
	for k, v := range old {
		next[k] = v
	}
	next[name] = p
	c.projs.Store(&next)
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		p.tail(c.ctx)
	}()
	return p, nil
}

// Get returns key's value in projection proj: from memory when held, else
// from Redis (replicas first), filling the local cache. Concurrent misses of
// one key make one Redis call. It returns an error wrapping ErrNotFound when
// the key is absent, ErrUnavailable when Redis could not answer a miss in
// time, ErrNoGeneration when the projection has no live generation. The
// returned slice is the caller's. A local hit costs bigcache's Get (which
// makes two allocations: the copied entry and the copied key) plus a few
// nanoseconds.
func (c *Client) Get(ctx context.Context, proj, key string) ([]byte, error) {
	p, err := c.projection(ctx, proj)
	if err != nil {
		return nil, err
	}
	if st := p.store.Load(); st != nil {
		if raw, ok := st.get(key); ok {
			if v, found, hit := p.localHit(raw); hit {
				if !found {
					return nil, notFound(proj, key)
				}
				return v, nil
			}
		}
	}
	e, err := p.miss(ctx, key)
	return e.Value, err
}

// GetAppend is Get that appends the value to dst and returns the extended
// slice, for callers that reuse a buffer. Note: bigcache v3 copies the entry
// (and the stored key) on every read, so a local hit still makes bigcache's
// two allocations; GetAppend saves none today and exists so callers can
// adopt it before the store can honour it.
func (c *Client) GetAppend(ctx context.Context, proj, key string, dst []byte) ([]byte, error) {
	p, err := c.projection(ctx, proj)
	if err != nil {
		return dst, err
	}
	if st := p.store.Load(); st != nil {
		if raw, ok := st.get(key); ok {
			if v, found, hit := p.localHit(raw); hit {
				if !found {
					return dst, notFound(proj, key)
				}
				return append(dst, v...), nil
			}
		}
	}
	e, err := p.miss(ctx, key)
	if err != nil {
		return dst, err
	}
	return append(dst, e.Value...), nil
}

// GetEntry is Get returning the value with its version and Stale flag.
func (c *Client) GetEntry(ctx context.Context, proj, key string) (Entry, error) {
	p, err := c.projection(ctx, proj)
	if err != nil {
		return Entry{}, err
	}
	if st := p.store.Load(); st != nil {
		if raw, ok := st.get(key); ok {
			if v, found, hit := p.localHit(raw); hit {
				if !found {
					return Entry{}, notFound(proj, key)
				}
				return Entry{Value: v, Version: entryVersion(raw), Found: true, Stale: p.health.Load() != healthFresh}, nil
			}
		}
	}
	return p.miss(ctx, key)
}

func notFound(proj, key string) error {
	return fmt.Errorf("get %s/%s: %w", proj, key, ErrNotFound)
}

// GetMany reads keys of projection proj. The result is aligned with keys;
// absent keys have Found false. Misses are fetched together, in one MGET
// (one pipeline per node on Redis Cluster). The error is for a failure to
// reach Redis for the misses; then hits are still filled in.
func (c *Client) GetMany(ctx context.Context, proj string, keys []string) ([]Entry, error) {
	p, err := c.projection(ctx, proj)
	if err != nil {
		return nil, err
	}
	out := make([]Entry, len(keys))
	var missIdx []int
	st := p.store.Load()
	for i, k := range keys {
		if st != nil {
			if raw, ok := st.get(k); ok {
				if v, found, hit := p.localHit(raw); hit {
					if found {
						out[i] = Entry{Value: v, Version: entryVersion(raw), Found: true, Stale: p.health.Load() != healthFresh}
					}
					continue
				}
			}
		}
		missIdx = append(missIdx, i)
	}
	if len(missIdx) == 0 {
		return out, nil
	}
	if err := p.missMany(ctx, keys, missIdx, out); err != nil {
		return out, err
	}
	return out, nil
}

// Generation returns the generation the Client reads for proj (0: none, or
// not followed).
func (c *Client) Generation(proj string) int64 {
	if p, ok := (*c.projs.Load())[proj]; ok {
		if st := p.store.Load(); st != nil {
			return st.gen
		}
	}
	return 0
}
