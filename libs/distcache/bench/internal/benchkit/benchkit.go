// Package benchkit holds the benchmarks of issue 3's table, shared by the
// bench module's Go benchmarks and the distcache-bench program: distcache next to
// its peers (rueidis client-side caching, raw bigcache, bare go-redis), on the
// same keys, in the same run.
package benchkit

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/allegro/bigcache/v3"
	"github.com/redis/go-redis/v9"
	"github.com/redis/rueidis"

	"github.com/distcache/distcache/libs/distcache"
	"github.com/distcache/distcache/tools/devstack"
)

// Proj is the projection the benchmarks use.
const Proj = "bench"

// Env is a Redis primary with one replica, loaded with N keys, as a
// distcache projection (generation 1) and as plain keys "raw:<key>" for the
// peers.
type Env struct {
	Addr  string // the primary
	RDB   *redis.Client
	Pub   *distcache.Publisher
	Keys  []string
	Value []byte
	// ReplicaAddr is a replica of Addr, for the miss measures (an edge
	// reads its misses from a replica).
	ReplicaAddr string

	redis, replica *devstack.Redis
	dir            string
}

// Start starts a redis-server of its own and a replica of it, loads n keys
// of valueSize bytes and waits until the replica has them.
func Start(ctx context.Context, n, valueSize int) (_ *Env, err error) {
	dir, err := os.MkdirTemp("", "distcache-bench-")
	if err != nil {
		return nil, err
	}
	r, err := devstack.StartRedis(ctx, devstack.RedisConfig{Dir: dir, Mode: devstack.Attached})
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("start redis: %w", err)
	}
	e := &Env{Addr: r.Addr, redis: r, dir: dir}
	defer func() {
		if err != nil {
			e.Close()
		}
	}()
	if e.replica, err = devstack.StartRedis(ctx, devstack.RedisConfig{Dir: dir, Mode: devstack.Attached, ReplicaOf: r.Addr}); err != nil {
		return nil, fmt.Errorf("start redis replica: %w", err)
	}
	e.ReplicaAddr = e.replica.Addr
	e.RDB = redis.NewClient(&redis.Options{Addr: r.Addr})
	if e.Pub, err = distcache.NewPublisher(e.RDB); err != nil {
		return nil, err
	}
	e.Value = make([]byte, valueSize)
	for i := range e.Value {
		e.Value[i] = byte('a' + i%26)
	}
	e.Keys = make([]string, n)
	for i := range e.Keys {
		e.Keys[i] = "user:" + strconv.Itoa(1_000_000+i) + "@example.com"
	}
	if err := e.Load(ctx, Proj, 1, e.Keys); err != nil {
		return nil, err
	}
	if err := e.Pub.Cutover(ctx, Proj, 1); err != nil {
		return nil, err
	}
	for i := 0; i < n; i += 1000 {
		pipe := e.RDB.Pipeline()
		for _, k := range e.Keys[i:min(i+1000, n)] {
			pipe.Set(ctx, "raw:"+k, e.Value, 0)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return nil, err
		}
	}
	// Every write acknowledged by the replica before any miss is measured.
	if acked, err := e.RDB.Wait(ctx, 1, time.Minute).Result(); err != nil || acked < 1 {
		return nil, fmt.Errorf("replica did not acknowledge the load (acked %d): %v", acked, err)
	}
	return e, nil
}

// Load writes keys into generation gen of proj, 1000 per batch.
func (e *Env) Load(ctx context.Context, proj string, gen int64, keys []string) error {
	changes := make([]distcache.Change, 0, 1000)
	for i := 0; i < len(keys); i += 1000 {
		changes = changes[:0]
		for _, k := range keys[i:min(i+1000, len(keys))] {
			changes = append(changes, distcache.Change{Key: k, Value: e.Value, Version: 1})
		}
		if _, err := e.Pub.Apply(ctx, proj, gen, changes); err != nil {
			return err
		}
	}
	return nil
}

// Close stops the Redis servers.
func (e *Env) Close() {
	if e.RDB != nil {
		_ = e.RDB.Close()
	}
	if e.replica != nil {
		_ = e.replica.Stop()
	}
	_ = e.redis.Stop()
	_ = os.RemoveAll(e.dir)
}

// Client returns a distcache Client with every key held locally.
func (e *Env) Client(ctx context.Context, opts ...distcache.Option) (*distcache.Client, error) {
	return distcache.New(ctx, append([]distcache.Option{
		distcache.WithAddrs(e.Addr),
		distcache.WithWarmStart(Proj, distcache.WarmStart{Keys: e.Keys}),
	}, opts...)...)
}

// Rueidis returns a rueidis client with client-side caching, every raw key
// cached.
func (e *Env) Rueidis(ctx context.Context, onInvalidate func([]rueidis.RedisMessage)) (rueidis.Client, error) {
	rc, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{e.Addr}, OnInvalidations: onInvalidate})
	if err != nil {
		return nil, err
	}
	for i := 0; i < len(e.Keys); i += 1000 {
		cmds := make([]rueidis.CacheableTTL, 0, 1000)
		for _, k := range e.Keys[i:min(i+1000, len(e.Keys))] {
			cmds = append(cmds, rueidis.CT(rc.B().Get().Key("raw:"+k).Cache(), time.Hour))
		}
		for _, r := range rc.DoMultiCache(ctx, cmds...) {
			if err := r.Error(); err != nil {
				rc.Close()
				return nil, err
			}
		}
	}
	return rc, nil
}

// Bigcache returns a bigcache configured like distcache's local store, with
// every key set to the raw value.
func (e *Env) Bigcache(keys []string) (*bigcache.BigCache, error) {
	bc, err := bigcache.New(context.Background(), BigcacheConfig())
	if err != nil {
		return nil, err
	}
	for _, k := range keys {
		if err := bc.Set(k, e.Value); err != nil {
			return nil, err
		}
	}
	return bc, nil
}

// BigcacheConfig mirrors distcache's local store configuration.
func BigcacheConfig() bigcache.Config {
	return bigcache.Config{
		Shards:             256,
		LifeWindow:         100 * 365 * 24 * time.Hour,
		MaxEntriesInWindow: 256 * 16,
		MaxEntrySize:       256,
	}
}

// Hit benchmarks.

// HitDistcache reads held keys with Client.Get.
func HitDistcache(c *distcache.Client, keys []string, parallel bool) func(*testing.B) {
	ctx := context.Background()
	return func(b *testing.B) {
		b.ReportAllocs()
		if !parallel {
			for i := 0; b.Loop(); i++ {
				if _, err := c.Get(ctx, Proj, keys[i%len(keys)]); err != nil {
					b.Fatal(err)
				}
			}
			return
		}
		var seed atomic.Int64
		b.RunParallel(func(pb *testing.PB) {
			i := int(seed.Add(7919))
			for pb.Next() {
				if _, err := c.Get(ctx, Proj, keys[i%len(keys)]); err != nil {
					b.Error(err)
					return
				}
				i++
			}
		})
	}
}

// HitDistcacheAppend reads held keys with Client.GetAppend into a reused
// buffer.
func HitDistcacheAppend(c *distcache.Client, keys []string) func(*testing.B) {
	ctx := context.Background()
	return func(b *testing.B) {
		b.ReportAllocs()
		buf := make([]byte, 0, 512)
		var err error
		for i := 0; b.Loop(); i++ {
			if buf, err = c.GetAppend(ctx, Proj, keys[i%len(keys)], buf[:0]); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// HitRueidis reads cached keys with rueidis DoCache.
func HitRueidis(rc rueidis.Client, keys []string, parallel bool) func(*testing.B) {
	ctx := context.Background()
	cmds := make([]rueidis.Cacheable, len(keys))
	for i, k := range keys {
		cmds[i] = rc.B().Get().Key("raw:" + k).Cache().Pin()
	}
	get := func(i int) error {
		_, err := rc.DoCache(ctx, cmds[i%len(cmds)], time.Hour).ToString()
		return err
	}
	return func(b *testing.B) {
		b.ReportAllocs()
		if !parallel {
			for i := 0; b.Loop(); i++ {
				if err := get(i); err != nil {
					b.Fatal(err)
				}
			}
			return
		}
		var seed atomic.Int64
		b.RunParallel(func(pb *testing.PB) {
			i := int(seed.Add(7919))
			for pb.Next() {
				if err := get(i); err != nil {
					b.Error(err)
					return
				}
				i++
			}
		})
	}
}

// HitBigcache reads keys from a raw bigcache.
func HitBigcache(bc *bigcache.BigCache, keys []string, parallel bool) func(*testing.B) {
	return func(b *testing.B) {
		b.ReportAllocs()
		if !parallel {
			for i := 0; b.Loop(); i++ {
				if _, err := bc.Get(keys[i%len(keys)]); err != nil {
					b.Fatal(err)
				}
			}
			return
		}
		var seed atomic.Int64
		b.RunParallel(func(pb *testing.PB) {
			i := int(seed.Add(7919))
			for pb.Next() {
				if _, err := bc.Get(keys[i%len(keys)]); err != nil {
					b.Error(err)
					return
				}
				i++
			}
		})
	}
}

// Miss benchmarks. Both sides read the replica: the edge built with
// WithAddrs(primary, replica), which sends its misses to the replica, and
// the peer a bare go-redis client of the replica reading the same Redis keys
// (the same values, byte for byte). Parallel runs 16 goroutines per
// GOMAXPROCS (32 on 2 cores) on each side, with go-redis's default pool.

// MissParallelism is the goroutines per GOMAXPROCS of the parallel miss
// measures.
const MissParallelism = 16

// MissDistcache reads keys the client does not hold: every key once per
// client, so the clients a run needs (b.N/len(keys), rounded up) are built
// before the clock starts.
func (e *Env) MissDistcache(ctx context.Context, parallel bool) func(*testing.B) {
	return func(b *testing.B) {
		b.ReportAllocs()
		clients := make([]*distcache.Client, (b.N+len(e.Keys)-1)/len(e.Keys))
		defer func() {
			b.StopTimer() // Close waits for the tail's blocking read: off the clock
			for _, c := range clients {
				if c != nil {
					_ = c.Close(ctx)
				}
			}
		}()
		for i := range clients {
			c, err := distcache.New(ctx, distcache.WithAddrs(e.Addr, e.ReplicaAddr), distcache.WithProjections(Proj))
			if err != nil {
				b.Fatal(err)
			}
			clients[i] = c
		}
		get := func(i int) error {
			_, err := clients[i/len(e.Keys)].Get(ctx, Proj, e.Keys[i%len(e.Keys)])
			return err
		}
		runMiss(b, parallel, get)
	}
}

// MissGoRedis reads the same Redis keys with a bare go-redis GET from the
// replica.
func (e *Env) MissGoRedis(ctx context.Context, parallel bool) func(*testing.B) {
	rkeys := make([]string, len(e.Keys))
	for i, k := range e.Keys {
		rkeys[i] = distcache.ValueKey(Proj, 1, k)
	}
	return func(b *testing.B) {
		b.ReportAllocs()
		rdb := redis.NewClient(&redis.Options{Addr: e.ReplicaAddr})
		defer rdb.Close()
		if err := rdb.Ping(ctx).Err(); err != nil { // a connection, as the edge's start makes
			b.Fatal(err)
		}
		get := func(i int) error {
			_, err := rdb.Get(ctx, rkeys[i%len(rkeys)]).Bytes()
			return err
		}
		runMiss(b, parallel, get)
	}
}

// MissInterleaved reads n keys as misses alternately with distcache and with
// go-redis GET (of another key, so both miss), op by op in one goroutine, and
// returns the median of each side's per-read latency. Side by side at this
// grain both reads see the same CPU placement: on a VM, a client thread
// and the Redis it waits for on different vCPUs make a round trip 2-3× as
// long as on one (an idle vCPU is slow to wake), and the scheduler keeps
// either placement for seconds, so whole benchmark runs come out 2× apart.
func (e *Env) MissInterleaved(ctx context.Context, n int) (distcacheP50, goRedisP50 time.Duration, err error) {
	rdb := redis.NewClient(&redis.Options{Addr: e.ReplicaAddr})
	defer rdb.Close()
	var c *distcache.Client
	defer func() {
		if c != nil {
			_ = c.Close(ctx)
		}
	}()
	half := len(e.Keys) / 2
	dd := make([]time.Duration, 0, n)
	dg := make([]time.Duration, 0, n)
	for i := range n {
		if i%half == 0 { // every key read once per client
			if c != nil {
				_ = c.Close(ctx)
			}
			if c, err = distcache.New(ctx, distcache.WithAddrs(e.Addr, e.ReplicaAddr), distcache.WithProjections(Proj)); err != nil {
				return 0, 0, err
			}
		}
		k := e.Keys[i%half]
		rk := distcache.ValueKey(Proj, 1, e.Keys[half+i%half])
		t0 := time.Now()
		if _, err := c.Get(ctx, Proj, k); err != nil {
			return 0, 0, err
		}
		t1 := time.Now()
		if _, err := rdb.Get(ctx, rk).Bytes(); err != nil {
			return 0, 0, err
		}
		dd = append(dd, t1.Sub(t0))
		dg = append(dg, time.Since(t1))
	}
	slices.Sort(dd)
	slices.Sort(dg)
	return dd[len(dd)/2], dg[len(dg)/2], nil
}

// MissInterleavedParallel is MissInterleaved with MissParallelism
// goroutines per GOMAXPROCS, each alternating a distcache miss and a
// go-redis GET (of another key) op by op, n misses of each side in all. It
// returns each side's mean latency per read: under the same concurrency, on
// the same CPUs at the same moments, their ratio is the ratio of their
// costs, which back-to-back one-second runs on a shared 2-vCPU machine do
// not give (the load and the CPU placement drift between them). Misses
// share one distcache Client per len(Keys)/2 reads, as MissDistcache's.
func (e *Env) MissInterleavedParallel(ctx context.Context, n int) (distcacheMean, goRedisMean time.Duration, err error) {
	half := len(e.Keys) / 2
	clients := make([]*distcache.Client, (n+half-1)/half)
	defer func() {
		for _, c := range clients {
			if c != nil {
				_ = c.Close(ctx)
			}
		}
	}()
	for i := range clients {
		if clients[i], err = distcache.New(ctx, distcache.WithAddrs(e.Addr, e.ReplicaAddr), distcache.WithProjections(Proj)); err != nil {
			return 0, 0, err
		}
	}
	rdb := redis.NewClient(&redis.Options{Addr: e.ReplicaAddr})
	defer rdb.Close()
	if err := rdb.Ping(ctx).Err(); err != nil {
		return 0, 0, err
	}
	rkeys := make([]string, half)
	for i := range rkeys {
		rkeys[i] = distcache.ValueKey(Proj, 1, e.Keys[half+i])
	}
	var next, dSum, gSum atomic.Int64
	workers := MissParallelism * runtime.GOMAXPROCS(0)
	errc := make(chan error, workers)
	for range workers {
		go func() {
			var d, g time.Duration
			defer func() { dSum.Add(int64(d)); gSum.Add(int64(g)) }()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					errc <- nil
					return
				}
				t0 := time.Now()
				if _, err := clients[i/half].Get(ctx, Proj, e.Keys[i%half]); err != nil {
					errc <- err
					return
				}
				t1 := time.Now()
				if _, err := rdb.Get(ctx, rkeys[i%half]).Bytes(); err != nil {
					errc <- err
					return
				}
				d += t1.Sub(t0)
				g += time.Since(t1)
			}
		}()
	}
	for range workers {
		if werr := <-errc; werr != nil && err == nil {
			err = werr
		}
	}
	if err != nil {
		return 0, 0, err
	}
	return time.Duration(dSum.Load() / int64(n)), time.Duration(gSum.Load() / int64(n)), nil
}

func runMiss(b *testing.B, parallel bool, get func(i int) error) {
	b.ResetTimer()
	if !parallel {
		for i := range b.N {
			if err := get(i); err != nil {
				b.Fatal(err)
			}
		}
		return
	}
	var next atomic.Int64
	b.SetParallelism(MissParallelism)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := get(int(next.Add(1) - 1)); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// Publisher throughput.

// PublishApply writes batches of batch changes with Publisher.Apply
// (pipelined, version-guarded, with change-stream entries).
func (e *Env) PublishApply(ctx context.Context, batch int) func(*testing.B) {
	var round atomic.Int64
	return func(b *testing.B) {
		b.ReportAllocs()
		proj := "pubbench" + strconv.FormatInt(round.Add(1), 10)
		changes := make([]distcache.Change, batch)
		version := int64(0)
		for i := 0; b.Loop(); i++ {
			if i%batch == 0 && i > 0 {
				if _, err := e.Pub.Apply(ctx, proj, 1, changes); err != nil {
					b.Fatal(err)
				}
			}
			if i%len(e.Keys) == 0 {
				version++
			}
			changes[i%batch] = distcache.Change{Key: e.Keys[i%len(e.Keys)], Value: e.Value, Version: version}
		}
		b.StopTimer()
		_, _ = e.RDB.Del(ctx, distcache.StreamKey(proj, 1)).Result()
	}
}

// RawPipelinedSet writes batches of batch plain SETs in one pipeline.
func (e *Env) RawPipelinedSet(ctx context.Context, batch int) func(*testing.B) {
	return func(b *testing.B) {
		b.ReportAllocs()
		pipe := e.RDB.Pipeline()
		for i := 0; b.Loop(); i++ {
			pipe.Set(ctx, "rawset:"+e.Keys[i%len(e.Keys)], e.Value, 0)
			if pipe.Len() == batch {
				if _, err := pipe.Exec(ctx); err != nil {
					b.Fatal(err)
				}
			}
		}
		if _, err := pipe.Exec(ctx); err != nil && pipe.Len() > 0 {
			b.Fatal(err)
		}
	}
}

// Propagation.

// Percentiles are the p50 and p99 of a set of samples.
type Percentiles struct{ P50, P99 time.Duration }

// Delays are propagation delays measured two ways: from the write call
// returning (the definition; the peer's invalidation often arrives
// before its SET reply, giving 0) and from the write call starting (which
// includes the write's round trip for both).
type Delays struct{ FromReturn, FromStart Percentiles }

func percentiles(d []time.Duration) Percentiles {
	slices.Sort(d)
	return Percentiles{P50: d[len(d)/2], P99: d[len(d)*99/100]}
}

// PropagationGap is the pause before each propagation sample, on both
// sides: writes spaced as at up to about 1,000/s. Back to back, the next
// write would often land while the edge's tail is still between two XREADs
// (applying the previous change), and then wait for a round trip that an
// edge receiving spaced writes does not pay.
const PropagationGap = time.Millisecond

// Propagation measures, samples times, the delay from Publisher.SetGen to
// another Client's local cache holding the new version, as its WithOnChange
// hook reports it (the arrival is timed in the hook, on the Client's tail
// goroutine). The measuring goroutine waits on a channel: a reader polling
// Get in a loop would take a core from the tail and from Redis on a 2-core
// machine. viaReplica: the Client is built with WithAddrs(primary, replica)
// and tails the replica (the writes reach it by replication); otherwise it
// tails the primary, as the rueidis peer does.
func (e *Env) Propagation(ctx context.Context, samples int, viaReplica bool) (Delays, error) {
	key := e.Keys[0]
	arrived := make(chan int64, 1)
	var want atomic.Int64
	addrs := distcache.WithAddrs(e.Addr)
	if viaReplica {
		addrs = distcache.WithAddrs(e.Addr, e.ReplicaAddr)
	}
	c, err := distcache.New(ctx, addrs, distcache.WithProjections(Proj),
		distcache.WithOnChange(func(ch distcache.AppliedChange) {
			if ch.Updated && ch.Key == key && ch.Version == want.Load() {
				select {
				case arrived <- time.Now().UnixNano():
				default:
				}
			}
		}))
	if err != nil {
		return Delays{}, err
	}
	defer c.Close(ctx)
	for viaReplica && !tailFromReplica(c) {
		if err := sleepCtx(ctx, 10*time.Millisecond); err != nil {
			return Delays{}, err
		}
	}
	base, err := c.GetEntry(ctx, Proj, key) // held from here on
	if err != nil {
		return Delays{}, err
	}
	version := base.Version
	return timeArrivals(samples, arrived, nil,
		func() error { version++; want.Store(version); return nil },
		func() error {
			_, err := e.Pub.SetGen(ctx, Proj, 1, key, e.Value, version)
			return err
		},
		func() error { return fmt.Errorf("version %d never arrived", version) })
}

// timeArrivals takes samples delays: each round runs prepare, waits
// PropagationGap, runs write, and times the arrival write causes on arrived
// (a Unix-nanosecond time) from write's start and from its return (0 when
// the arrival beat the reply). An error on errc (nil: none) or no arrival
// within 5 s (the error missing returns) ends the run.
func timeArrivals(samples int, arrived <-chan int64, errc <-chan error, prepare, write, missing func() error) (Delays, error) {
	timeout := time.NewTimer(time.Hour)
	defer timeout.Stop()
	fromReturn := make([]time.Duration, 0, samples)
	fromStart := make([]time.Duration, 0, samples)
	for range samples {
		if err := prepare(); err != nil {
			return Delays{}, err
		}
		time.Sleep(PropagationGap)
		start := time.Now()
		if err := write(); err != nil {
			return Delays{}, err
		}
		returned := time.Now()
		timeout.Reset(5 * time.Second)
		var at int64
		select {
		case at = <-arrived:
		case err := <-errc:
			return Delays{}, err
		case <-timeout.C:
			return Delays{}, missing()
		}
		fromReturn = append(fromReturn, time.Duration(max(at-returned.UnixNano(), 0)))
		fromStart = append(fromStart, time.Duration(at-start.UnixNano()))
	}
	return Delays{percentiles(fromReturn), percentiles(fromStart)}, nil
}

func tailFromReplica(c *distcache.Client) bool {
	for _, p := range c.Stats().Projections {
		if p.Name == Proj {
			return p.TailFromReplica
		}
	}
	return false
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// RueidisInvalidation measures, samples times, the delay from a go-redis SET
// returning to rueidis receiving the invalidation of the key it caches (timed
// in its OnInvalidations callback; the measuring goroutine waits on a
// channel, as Propagation's).
func (e *Env) RueidisInvalidation(ctx context.Context, samples int) (Delays, error) {
	key := "raw:" + e.Keys[1]
	arrived := make(chan int64, 1)
	rc, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{e.Addr},
		OnInvalidations: func(msgs []rueidis.RedisMessage) {
			for _, m := range msgs {
				if s, _ := m.ToString(); s == key {
					select {
					case arrived <- time.Now().UnixNano():
					default:
					}
				}
			}
		}})
	if err != nil {
		return Delays{}, err
	}
	defer rc.Close()
	return timeArrivals(samples, arrived, nil,
		func() error {
			if err := rc.DoCache(ctx, rc.B().Get().Key(key).Cache(), time.Hour).Error(); err != nil {
				return err
			}
			select { // an invalidation left from the previous sample
			case <-arrived:
			default:
			}
			return nil
		},
		func() error { return e.RDB.Set(ctx, key, e.Value, 0).Err() },
		func() error { return fmt.Errorf("no invalidation") })
}

// Memory.

// HeapInUse returns the live heap after two collections.
func HeapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// MemoryPerEntry loads n keys of e.Value's size into a raw bigcache and
// into a distcache Client (through Redis, projection "mem"), and returns the
// live heap per entry of each.
func (e *Env) MemoryPerEntry(ctx context.Context, n int) (distcacheBytes, bigcacheBytes float64, err error) {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = "user:" + strconv.Itoa(10_000_000+i) + "@example.com"
	}
	if err := e.Load(ctx, "mem", 1, keys); err != nil {
		return 0, 0, err
	}
	if err := e.Pub.Cutover(ctx, "mem", 1); err != nil {
		return 0, 0, err
	}

	h0 := HeapInUse()
	bc, err := e.Bigcache(keys)
	if err != nil {
		return 0, 0, err
	}
	h1 := HeapInUse()
	if bc.Len() != n {
		return 0, 0, fmt.Errorf("bigcache holds %d entries, want %d", bc.Len(), n)
	}
	bigcacheBytes = float64(h1-h0) / float64(n)
	_ = bc.Close()
	bc = nil

	h0 = HeapInUse()
	c, err := distcache.New(ctx, distcache.WithAddrs(e.Addr),
		distcache.WithWarmStart("mem", distcache.WarmStart{Keys: keys}))
	if err != nil {
		return 0, 0, err
	}
	h1 = HeapInUse()
	for _, p := range c.Stats().Projections {
		if p.Name == "mem" && p.Items != int64(n) {
			return 0, 0, fmt.Errorf("distcache holds %d entries, want %d", p.Items, n)
		}
	}
	distcacheBytes = float64(h1-h0) / float64(n)
	_ = c.Close(ctx)
	_, _ = e.RDB.FlushDB(ctx).Result()
	return distcacheBytes, bigcacheBytes, nil
}

// Interleaved measures ops in alternating blocks (per ops of each, blocks
// times) and returns the mean ns per op of each. On a shared machine whose
// load drifts, alternating at this grain gives both sides the same
// conditions.
func Interleaved(blocks, per int, ops ...func(i int) error) ([]float64, error) {
	total := make([]time.Duration, len(ops))
	i := 0
	for range blocks {
		for j, op := range ops {
			start := time.Now()
			for range per {
				if err := op(i); err != nil {
					return nil, err
				}
				i++
			}
			total[j] += time.Since(start)
		}
	}
	ns := make([]float64, len(ops))
	for j := range total {
		ns[j] = float64(total[j].Nanoseconds()) / float64(blocks*per)
	}
	return ns, nil
}

// HitOps returns single-hit operations of distcache Get, rueidis DoCache
// and raw bigcache Get over keys, for Interleaved.
func HitOps(c *distcache.Client, rc rueidis.Client, bc *bigcache.BigCache, keys []string) []func(int) error {
	ctx := context.Background()
	cmds := make([]rueidis.Cacheable, len(keys))
	for i, k := range keys {
		cmds[i] = rc.B().Get().Key("raw:" + k).Cache().Pin()
	}
	return []func(int) error{
		func(i int) error { _, err := c.Get(ctx, Proj, keys[i%len(keys)]); return err },
		func(i int) error { _, err := rc.DoCache(ctx, cmds[i%len(cmds)], time.Hour).ToString(); return err },
		func(i int) error { _, err := bc.Get(keys[i%len(keys)]); return err },
	}
}

// StreamFloor measures, samples times, what the change-stream path costs
// without distcache's tail: a bare go-redis client blocked in XREAD on the
// projection's change stream (on the primary), timing each entry's arrival
// as soon as go-redis has parsed the reply, behind either Publisher.SetGen
// (viaSetGen: the Lua script's SET and XADD, as distcache's Propagation) or a
// plain XADD of the same field and value (the floor of any stream-based
// design). Next to Propagation, it splits the edge's delay into Redis's
// side (script or not) and the tail's own (decode, apply, hook).
func (e *Env) StreamFloor(ctx context.Context, samples int, viaSetGen bool) (Delays, error) {
	key := e.Keys[2]
	stream := distcache.StreamKey(Proj, 1)
	rdb := redis.NewClient(&redis.Options{Addr: e.Addr})
	defer rdb.Close()
	pos, err := lastID(ctx, rdb, stream)
	if err != nil {
		return Delays{}, err
	}
	arrived := make(chan int64, 1)
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errc := make(chan error, 1)
	go func() {
		for rctx.Err() == nil {
			res, err := rdb.XRead(rctx, &redis.XReadArgs{Streams: []string{stream, pos}, Count: 100, Block: time.Second}).Result()
			if errors.Is(err, redis.Nil) {
				continue
			}
			if err != nil {
				if rctx.Err() == nil {
					errc <- err
				}
				return
			}
			at := time.Now().UnixNano()
			for _, s := range res {
				if n := len(s.Messages); n > 0 {
					pos = s.Messages[n-1].ID
					select {
					case arrived <- at:
					default:
					}
				}
			}
		}
	}()
	w := redis.NewClient(&redis.Options{Addr: e.Addr})
	defer w.Close()
	version := time.Now().UnixNano() // above anything Propagation wrote
	stored := distcache.AppendVersionHex(nil, version)
	return timeArrivals(samples, arrived, errc,
		func() error { version++; return nil },
		func() error {
			if viaSetGen {
				_, err := e.Pub.SetGen(ctx, Proj, 1, key, e.Value, version)
				return err
			}
			stored = append(append(distcache.AppendVersionHex(stored[:0], version), 's'), e.Value...)
			return w.XAdd(ctx, &redis.XAddArgs{Stream: stream, Values: []any{key, stored}}).Err()
		},
		func() error { return fmt.Errorf("stream entry %d never arrived", version) })
}

func lastID(ctx context.Context, rdb *redis.Client, stream string) (string, error) {
	msgs, err := rdb.XRevRangeN(ctx, stream, "+", "-", 1).Result()
	if err != nil {
		return "", err
	}
	if len(msgs) == 0 {
		return "0-0", nil
	}
	return msgs[0].ID, nil
}
