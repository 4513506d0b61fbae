package distcache

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Option configures a Client (see New).
type Option func(*config)

// Limits bound the local memory of a projection, or of the whole Client.
// Zero fields are unlimited. They are enforced by a periodic scan (see
// WithEvictionInterval) that evicts the oldest entries first; the age of an
// entry is the time since it was filled into the local cache (an update in
// place keeps its age).
type Limits struct {
	MaxTTL   time.Duration // evict entries older than this
	MaxBytes int64         // keep the local bytes (keys, values, headers) at or under this
	MaxItems int64         // keep at most this many entries
}

// WarmStart preloads a projection's local cache.
type WarmStart struct {
	// Keys are fetched (pipelined) into the local cache.
	Keys []string
	// Scan, if set, SCANs the live generation and loads every key it finds,
	// up to Limit keys (0: up to the projection's MaxItems, else all).
	Scan  bool
	Limit int
	// Background runs the preload after New returns instead of before.
	Background bool
}

// Defaults of the Client's options.
const (
	DefaultNegativeTTL      = 5 * time.Second
	DefaultStalenessBound   = 5 * time.Minute
	DefaultEvictionInterval = time.Second
	DefaultFetchTimeout     = 0
	DefaultTailBlock        = time.Second
	DefaultTailBatch        = 1000
	// DefaultSnapshotInterval is how often WithSnapshot writes its files.
	DefaultSnapshotInterval = time.Minute
)

type projectionConfig struct {
	limits    Limits
	hasLimits bool
	warm      *WarmStart
}

type config struct {
	primary      redis.UniversalClient
	replicas     []redis.UniversalClient
	ownClients   []redis.UniversalClient
	redisCfg     RedisConfig // the clients New builds (WithAddrs and friends)
	redisSources []string    // the options that set redisCfg's addresses
	projections  map[string]*projectionConfig
	order        []string // projection names in the order given
	global       Limits
	evictEvery   time.Duration
	negativeTTL  time.Duration
	staleBound   time.Duration
	maxValue     int
	fetchTimeout time.Duration
	tailBlock    time.Duration
	tailBatch    int64
	logger       *slog.Logger
	shards       int
	presize      int64 // WithLocalPresize
	// Snapshots (WithSnapshot): snapshotDir is "" when off.
	snapshotDir   string
	snapshotSet   bool
	snapshotEvery time.Duration
	replicaTail   bool // tail change streams from replicas (WithReplicaTail)
	onChange      func(AppliedChange)
	errs          []error
}

func (c *config) projection(name string) *projectionConfig {
	if c.projections == nil {
		c.projections = map[string]*projectionConfig{}
	}
	p, ok := c.projections[name]
	if !ok {
		p = &projectionConfig{}
		c.projections[name] = p
		c.order = append(c.order, name)
	}
	return p
}

// WithRedis reads through rdb: a *redis.Client (standalone, or the primary of
// a replicated setup), a failover client, or a *redis.ClusterClient. Misses
// that the replicas (WithReplicas) cannot answer go to it, and the change
// streams are tailed through it (or through a replica, see WithReplicaTail). The caller keeps ownership: Close does not
// close it. Build it with ContextTimeoutEnabled: true (see HonoursDeadlines),
// or a hung Redis holds a miss for the client's ReadTimeout whatever the
// caller's deadline; New logs a warning when it is not.
func WithRedis(rdb redis.UniversalClient) Option {
	return func(c *config) { c.primary = rdb }
}

// WithReplicas adds read replicas: misses are read from them first, in
// rotation, and from the primary when they fail. Single-node clients
// (*redis.Client) also carry the change-stream tails (WithReplicaTail). The
// caller keeps ownership.
func WithReplicas(rdbs ...redis.UniversalClient) Option {
	return func(c *config) { c.replicas = append(c.replicas, rdbs...) }
}

// WithAddrs makes the Client build its own clients: a primary at primary and
// replicas at replicaAddrs; misses read the replicas first, in rotation, and
// the primary when they fail, and the change-stream tails read the replicas
// too (WithReplicaTail). WithAuth and WithTLS apply to them. Close closes
// them.
func WithAddrs(primary string, replicaAddrs ...string) Option {
	return func(c *config) {
		c.redisSource("WithAddrs")
		c.redisCfg.Addrs = []string{primary}
		c.redisCfg.Replicas = append(c.redisCfg.Replicas, replicaAddrs...)
	}
}

// WithClusterAddrs makes the Client build its own Redis Cluster clients from
// seed addresses: one for the primaries and one with ReadOnly and
// RouteRandomly for replica reads. WithAuth and WithTLS apply. Close closes
// them.
func WithClusterAddrs(addrs ...string) Option {
	return func(c *config) {
		c.redisSource("WithClusterAddrs")
		c.redisCfg.Addrs = append(c.redisCfg.Addrs, addrs...)
		c.redisCfg.Cluster = true
	}
}

// WithSentinel makes the Client build its own clients through Redis
// Sentinel: master is the name of the master set the sentinels (host:port
// each, at least one) monitor. The Client follows failovers: one client
// always talks to the current primary (the change-stream tails, reads that
// must not lag), and misses read a replica the sentinels list, chosen at
// random (the primary when there is none), then the primary when that fails.
// WithAuth and WithTLS apply to the data nodes, WithSentinelAuth to the
// sentinels; WithTLS applies to the sentinels too. Close closes them.
// Default: not used (one of WithRedis, WithAddrs, WithClusterAddrs,
// WithSentinel or WithRedisConfig is required).
func WithSentinel(master string, sentinels ...string) Option {
	return func(c *config) {
		c.redisSource("WithSentinel")
		c.redisCfg.SentinelMaster = master
		c.redisCfg.SentinelAddrs = append(c.redisCfg.SentinelAddrs, sentinels...)
	}
}

// WithSentinelAuth sets the ACL user (empty for the default user) and
// password the clients built by WithSentinel use with the sentinels.
// Default: none.
func WithSentinelAuth(username, password string) Option {
	return func(c *config) { c.redisCfg.SentinelUsername, c.redisCfg.SentinelPassword = username, password }
}

// WithRedisConfig makes the Client build its own clients from rc (standalone
// with replicas, Cluster or Sentinel, see RedisConfig.NewClients): what the
// services read from their environment with libs/svcconfig/redisconf. It
// replaces what WithAddrs, WithClusterAddrs, WithSentinel, WithAuth,
// WithSentinelAuth and WithTLS set before it; those given after it change
// it. A zero rc.DialerRetries becomes 1 (fail fast: the tails retry on their
// own). Close closes the clients.
func WithRedisConfig(rc RedisConfig) Option {
	return func(c *config) {
		c.redisSource("WithRedisConfig")
		c.redisCfg = rc
	}
}

// WithAuth sets the ACL user (empty for the default user) and password of the
// clients built by WithAddrs, WithClusterAddrs or WithSentinel. Default:
// none.
func WithAuth(username, password string) Option {
	return func(c *config) { c.redisCfg.Username, c.redisCfg.Password = username, password }
}

// WithTLS enables TLS, with cfg, on the clients built by WithAddrs,
// WithClusterAddrs or WithSentinel. Default: plaintext.
func WithTLS(cfg *tls.Config) Option {
	return func(c *config) { c.redisCfg.TLS = cfg }
}

func (c *config) redisSource(option string) {
	if !slices.Contains(c.redisSources, option) {
		c.redisSources = append(c.redisSources, option)
	}
}

// WithProjections follows these projections from New on: their pointers are
// resolved and their change streams tailed before New returns. A Get on a
// projection not named here starts following it on first use.
func WithProjections(names ...string) Option {
	return func(c *config) {
		for _, n := range names {
			c.projection(n)
		}
	}
}

// WithProjectionLimits follows proj (as WithProjections) with limits of its
// own. Its MaxTTL replaces the global MaxTTL (zero: the global one applies);
// its MaxBytes and MaxItems bound this projection alone (zero: unbounded),
// while the global ones still bound the total of all projections.
func WithProjectionLimits(proj string, l Limits) Option {
	return func(c *config) {
		p := c.projection(proj)
		p.limits, p.hasLimits = l, true
	}
}

// WithMaxTTL evicts local entries older than d, in every projection without
// a MaxTTL of its own. Default 0: no age limit. At most 24 days.
func WithMaxTTL(d time.Duration) Option { return func(c *config) { c.global.MaxTTL = d } }

// WithMaxBytes bounds the local bytes of all projections together; the
// oldest entries across projections go first. Default 0: unbounded.
func WithMaxBytes(n int64) Option { return func(c *config) { c.global.MaxBytes = n } }

// WithMaxItems bounds the local entries of all projections together; the
// oldest entries across projections go first. Default 0: unbounded.
func WithMaxItems(n int64) Option { return func(c *config) { c.global.MaxItems = n } }

// WithEvictionInterval sets how often the eviction scan runs. Default
// DefaultEvictionInterval.
func WithEvictionInterval(d time.Duration) Option { return func(c *config) { c.evictEvery = d } }

// WithNegativeTTL sets how long a key found absent is remembered as absent.
// Default DefaultNegativeTTL. A pushed Set of the key replaces the absent
// entry at once. 0 disables negative caching.
func WithNegativeTTL(d time.Duration) Option { return func(c *config) { c.negativeTTL = d } }

// WithStalenessBound sets how long, after the Client lost contact with Redis,
// it keeps answering from memory (marking those reads Stale). Past it, local
// entries of that projection are not served and reads go to Redis (and fail
// if it is still down). It is also the loss grace: after Redis lost a
// projection's data (a restart without persistence, a FLUSHALL), held
// entries are served Stale from the last contact before the loss until Redis
// has given each of them back, for at most this long; then the ones it never
// gave back are dropped. Default DefaultStalenessBound.
func WithStalenessBound(d time.Duration) Option { return func(c *config) { c.staleBound = d } }

// WithMaxValueBytes refuses values larger than n bytes (ErrValueTooLarge)
// instead of caching them. Default DefaultMaxValueBytes.
func WithMaxValueBytes(n int) Option { return func(c *config) { c.maxValue = n } }

// WithFetchTimeout bounds a miss's Redis round trips when the caller's
// context has no earlier deadline. Default 0: only the caller's deadline and
// the Redis clients' own dial/read timeouts apply (a context timer per miss
// costs about a microsecond).
func WithFetchTimeout(d time.Duration) Option { return func(c *config) { c.fetchTimeout = d } }

// WithTailBlock sets how long one blocking XREAD of the change-stream tail
// waits. It also bounds how long a silent loss of contact with Redis goes
// unnoticed. Default DefaultTailBlock.
func WithTailBlock(d time.Duration) Option { return func(c *config) { c.tailBlock = d } }

// WithTailBatch sets how many stream entries the tail reads per call.
// Default DefaultTailBatch.
func WithTailBatch(n int) Option { return func(c *config) { c.tailBatch = int64(n) } }

// WithLogger sets the logger. Default: discard.
func WithLogger(l *slog.Logger) Option { return func(c *config) { c.logger = l } }

// WithWarmStart preloads proj (which it also follows) by hot keys or SCAN,
// before New returns or in the background.
func WithWarmStart(proj string, w WarmStart) Option {
	return func(c *config) {
		c.projection(proj).warm = &w
	}
}

// WithSnapshot makes the Client keep a local snapshot of what it holds in
// dir (created, mode 0700, if missing): one file per projection,
// <dir>/<projection>.snapshot (mode 0600), holding its keys, values,
// versions, generation and change-stream position, written every
// WithSnapshotInterval and on Close, atomically (a temporary file, fsync,
// rename, fsync of dir) and with a checksum. New loads the snapshot of each
// projection it starts instead of asking Redis: its entries are served at
// once, marked Stale until the change-stream tail has caught up, and the tail
// resumes from the saved position (a trimmed position or a changed
// generation costs a revalidation, as on a reconnect). So New succeeds while
// Redis is down when every projection of WithProjections has a snapshot, and
// the staleness bound (WithStalenessBound) runs from the last contact with
// Redis recorded in the file. A projection loaded from a snapshot skips its
// WithWarmStart. A file that does not verify is ignored (logged with its
// reason, counted in ProjectionStats.SnapshotRejections) and the projection
// starts from Redis. A directory belongs to one Client at a time. Default:
// off.
func WithSnapshot(dir string) Option {
	return func(c *config) { c.snapshotDir, c.snapshotSet = dir, true }
}

// WithSnapshotInterval sets how often WithSnapshot's files are written (each
// write copies every held entry to disk, so an interval of seconds only
// suits small caches). Default DefaultSnapshotInterval.
func WithSnapshotInterval(d time.Duration) Option { return func(c *config) { c.snapshotEvery = d } }

// WithReplicaTail sets whether the change-stream tails read from read
// replicas. When on and the Client has replicas of a standalone primary
// (WithAddrs(primary, replica...), a RedisConfig with Replicas, or
// WithReplicas given single-node *redis.Client values), each projection tails
// from one replica (chosen by a hash of its name and a number drawn per
// Client, so edges spread over the replicas), as long as its replication
// link is up; when the replica fails or hangs, the tail falls back to the
// primary at once and tries the replica again every five tail blocks (at
// least a second). Replication lag only delays updates: nothing is skipped.
// Sentinel and Cluster replicas are never tailed. Default: on.
func WithReplicaTail(on bool) Option { return func(c *config) { c.replicaTail = on } }

// AppliedChange is one change of a projection's change stream, as a Client
// applied it to its local cache: what WithOnChange's function receives.
type AppliedChange struct {
	Projection string
	Generation int64
	Key        string
	Version    int64
	Op         Op // OpSet or OpDelete
	// Updated reports that the Client held the key at an older version and
	// now holds this change, in place: a Get of the key that starts after
	// the call returns it from memory (or a newer one). False: the key was
	// not held (nothing was stored; a Get reads Redis, which has it), or was
	// held at this version or a newer one.
	Updated bool
	// Replayed reports a change applied while catching up (after a lost
	// connection, or a start from a snapshot) rather than as it arrived.
	Replayed bool
}

// WithOnChange calls fn for every change the Client reads from a change
// stream, after applying it to the local cache: for tests and users that
// wait for a write to reach this edge (propagation, read-your-writes across
// services), or that keep something derived from the values.
//
// The contract:
//   - fn runs on the projection's tail goroutine, once per change, in stream
//     order, after the change is applied (the key's lock released): when
//     Updated, a Get that starts after fn was called returns this version or
//     a newer one. Projections tail on goroutines of their own, so calls for
//     different projections may run concurrently.
//   - fn must not block: that projection's tail reads nothing further until
//     it returns (updates and cutover events wait, and so does the
//     staleness clock). Hand the change to a buffered channel with a
//     non-blocking send, or record it and return. fn must not call Close.
//   - Changes are reported once each as the tail applies them, including
//     replays after a reconnect (Replayed). The refetch of every held key that
//     a cutover or a gap's revalidation does is not a change of the stream and
//     is not reported.
//
// Default: none.
func WithOnChange(fn func(AppliedChange)) Option { return func(c *config) { c.onChange = fn } }

// WithLocalShards sets the number of bigcache shards of each projection's
// local store (a power of two). Default 256.
func WithLocalShards(n int) Option { return func(c *config) { c.shards = n } }

// WithLocalPresize bounds the bytes a projection's new local store reserves
// up front for what it is expected to hold, so that filling it does not
// copy its bigcache queues as they double: what the store it replaces held
// (a cutover, a revalidation, a compaction), or on a start what a sample
// of the Redis keys says the generation holds (DBSIZE and 512 RANDOMKEYs, in
// the start's first round trip, then one STRLEN per sampled key of the
// generation). The reservation counts in the Go heap whether or not the
// edge reads that much, so an edge that reads a small part of a large
// projection may lower it; the projection's and the global MaxBytes bound
// it too. 0 turns sizing off (stores start at about 1 MiB and grow). Not on
// Redis Cluster. Default DefaultLocalPresize (64 MiB).
func WithLocalPresize(maxBytes int64) Option { return func(c *config) { c.presize = maxBytes } }

func (c *config) validate() error {
	check := func(ok bool, format string, args ...any) {
		if !ok {
			c.errs = append(c.errs, fmt.Errorf("%w: "+format, append([]any{ErrInvalidOption}, args...)...))
		}
	}
	sources := c.redisSources
	if c.primary != nil {
		sources = append([]string{"WithRedis"}, sources...)
	}
	check(len(sources) == 1, "exactly one of WithRedis, WithAddrs, WithClusterAddrs, WithSentinel, WithRedisConfig is required (got %d: %s)",
		len(sources), strings.Join(sources, ", "))
	if len(c.redisSources) == 1 {
		if err := c.redisCfg.Validate(); err != nil {
			c.errs = append(c.errs, fmt.Errorf("%s: %w", c.redisSources[0], err))
		}
	}
	check(c.evictEvery > 0, "WithEvictionInterval(%v) must be > 0", c.evictEvery)
	check(c.negativeTTL >= 0, "WithNegativeTTL(%v) is negative", c.negativeTTL)
	check(c.staleBound >= 0, "WithStalenessBound(%v) is negative", c.staleBound)
	check(c.maxValue > 0, "WithMaxValueBytes(%d) must be > 0", c.maxValue)
	check(c.fetchTimeout >= 0, "WithFetchTimeout(%v) is negative", c.fetchTimeout)
	check(c.tailBlock >= 10*time.Millisecond, "WithTailBlock(%v) must be >= 10ms", c.tailBlock)
	check(c.tailBatch > 0, "WithTailBatch(%d) must be > 0", c.tailBatch)
	check(c.shards > 0 && c.shards&(c.shards-1) == 0, "WithLocalShards(%d) must be a power of two", c.shards)
	check(c.presize >= 0, "WithLocalPresize(%d) is negative", c.presize)
	check(!c.snapshotSet || c.snapshotDir != "", "WithSnapshot(%q) needs a directory", c.snapshotDir)
	check(c.snapshotEvery > 0, "WithSnapshotInterval(%v) must be > 0", c.snapshotEvery)
	checkLimits := func(what string, l Limits) {
		check(l.MaxTTL >= 0 && l.MaxTTL <= maxTTLLimit, "%s MaxTTL %v must be within 0..%v", what, l.MaxTTL, maxTTLLimit)
		check(l.MaxBytes >= 0, "%s MaxBytes %d is negative", what, l.MaxBytes)
		check(l.MaxItems >= 0, "%s MaxItems %d is negative", what, l.MaxItems)
	}
	checkLimits("global", c.global)
	for _, name := range c.order {
		if err := ValidateProjection(name); err != nil {
			c.errs = append(c.errs, err)
			continue
		}
		p := c.projections[name]
		if p.hasLimits {
			checkLimits("projection "+name, p.limits)
		}
	}
	if len(c.errs) > 0 {
		return joinErrs(c.errs)
	}
	return nil
}

// maxTTLLimit: entry ages are kept as 32-bit milliseconds.
const maxTTLLimit = 24 * 24 * time.Hour
