package benchrun

// The -scale mode of make bench (issue #19 §4): figures at 1,000,000 and 10,000,000 keys of 200
// bytes, each next to its peer measured in the same run, and the fan-out of the change stream to
// 10, 100 and 1,000 edges per Redis node. See docs/capacity.md for what the figures mean.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/allegro/bigcache/v3"
	"github.com/redis/go-redis/v9"

	"github.com/distcache/distcache/libs/distcache"
	"github.com/distcache/distcache/tools/devstack"
)

// ScaleConfig is one run of the -scale mode.
type ScaleConfig struct {
	RepoDir, RunDir string
	Sizes           []int         // key counts (200-byte values)
	Edges           []int         // edge clients following one projection
	EdgeRate        int           // changes/s written while the edges follow
	EdgeDuration    time.Duration // length of one edges run
	Replicas        int           // replicas of the edges runs' primary (tails spread over them)
	Producer        bool          // run producer-bench (fan-out and backfill) at each size
	// MemBudget is the bytes a size may need (estimated by scaleNeed); a size that does not fit
	// is measured at the largest that fits and extrapolated. 0: 80% of MemAvailable at the start.
	MemBudget uint64
	Out       io.Writer
}

// DefaultScale is `make bench-scale`'s configuration.
func DefaultScale(repo, run string) ScaleConfig {
	return ScaleConfig{RepoDir: repo, RunDir: run, Sizes: []int{1_000_000, 10_000_000}, Edges: []int{10, 100, 1000},
		EdgeRate: 200, EdgeDuration: 10 * time.Second, Replicas: 2, Producer: true}
}

// scaleValue is the 200-byte value of every key of the -scale mode.
var scaleValue = []byte(`{"pad":"` + strings.Repeat("v", 190) + `"}`)

func scaleKey(i int) string { return "user" + strconv.Itoa(10_000_000+i) + "@example.com" }

// ParseSizes reads a comma-separated list of positive key counts ("1000000,10000000"; "1M,10M"
// and "500k" are accepted too).
func ParseSizes(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		mul := 1
		switch {
		case strings.HasSuffix(f, "M"), strings.HasSuffix(f, "m"):
			mul, f = 1_000_000, f[:len(f)-1]
		case strings.HasSuffix(f, "k"), strings.HasSuffix(f, "K"):
			mul, f = 1_000, f[:len(f)-1]
		}
		n, err := strconv.Atoi(strings.ReplaceAll(f, "_", ""))
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("size %q: want a positive number of keys (e.g. 1000000 or 1M)", f)
		}
		out = append(out, n*mul)
	}
	if len(out) == 0 {
		return nil, errors.New("no sizes: want e.g. 1000000,10000000")
	}
	return out, nil
}

// scaleNeed is a generous estimate of the memory one size needs at its peak: Redis holding the
// projection with its change stream (~650 B a key) while this process holds the key list and one
// local copy being measured (~900 B a key, with the GC's headroom).
func scaleNeed(n int) uint64 { return uint64(n) * 1550 }

// producerNeed is the same for producer-bench at n records: the broker holding the topic, Redis
// two projections and producer-bench its values and buffers (measured at 1M: 3.2 GB in all), and
// the producers' in-memory index (about 100 B a source key, 2 projections).
func producerNeed(n int) uint64 { return uint64(n) * 3800 }

// planSize returns the size to measure for want within budget, given the bytes a size needs:
// want itself, or the largest multiple of 100,000 that fits.
func planSize(want int, budget uint64, need func(int) uint64) int {
	if budget == 0 || need(want) <= budget {
		return want
	}
	n := int(budget/need(1)) / 100_000 * 100_000
	return max(100_000, min(n, want))
}

// extrapolate returns the total at x on the line through (x1, y1) and (x2, y2); with x1 == x2
// (one measurement), on the line through the origin.
func extrapolate(x1, y1, x2, y2, x float64) float64 {
	if x1 == x2 {
		if x1 == 0 {
			return 0
		}
		return y1 / x1 * x
	}
	return y1 + (y2-y1)/(x2-x1)*(x-x1)
}

// memAvailable reads MemAvailable from /proc/meminfo, in bytes (0 when unknown).
func memAvailable() uint64 {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "MemAvailable:"); ok {
			fs := strings.Fields(rest)
			if len(fs) > 0 {
				v, _ := strconv.ParseUint(fs[0], 10, 64)
				return v * 1024
			}
		}
	}
	return 0
}

// sizeFigures are the totals measured at one size (bytes, seconds, records/s).
type sizeFigures struct {
	N                                  int
	EdgeHeap, BigcacheHeap, MapHeap    float64 // bytes for N entries
	Warm, WarmPeer                     float64 // seconds to load N entries by SCAN
	RedisKeys, RedisStream, RedisPlain float64 // Redis used_memory for N keys
	Fanout, FanoutRaw, FanoutPaired    float64 // records/s (producer-bench)
	Backfill, BackfillRaw              float64 // seconds for N records, and raw pipelined SET's seconds
}

// RunScale runs the -scale mode.
func RunScale(ctx context.Context, cfg ScaleConfig) (*Result, error) {
	out := cfg.Out
	if out == nil {
		out = io.Discard
	}
	say := func(f string, a ...any) { fmt.Fprintf(out, f+"\n", a...) }
	res := &Result{Started: time.Now()}
	budget := cfg.MemBudget
	if budget == 0 {
		budget = memAvailable() / 10 * 8
	}
	// The lowest MemAvailable seen, sampled every 200 ms: the run's peak memory.
	startAvail := memAvailable()
	var lowest atomic.Uint64
	lowest.Store(startAvail)
	sampleCtx, stopSampling := context.WithCancel(ctx)
	defer stopSampling()
	go func() {
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-sampleCtx.Done():
				return
			case <-t.C:
				if a := memAvailable(); a > 0 && a < lowest.Load() {
					lowest.Store(a)
				}
			}
		}
	}()

	// Each size is measured in two stages (the edge and Redis; then producer-bench), each at the
	// size asked or, when it does not fit in memory, at the largest that does, extrapolated.
	type stage struct {
		name     string
		need     func(int) uint64
		measured map[int]sizeFigures
		run      func(int) (sizeFigures, error)
	}
	stages := []*stage{{name: "edge and Redis", need: scaleNeed, measured: map[int]sizeFigures{},
		run: func(n int) (sizeFigures, error) { return scaleEdgeRedis(ctx, cfg, n, say) }}}
	if cfg.Producer {
		stages = append(stages, &stage{name: "producer", need: producerNeed, measured: map[int]sizeFigures{},
			run: func(n int) (sizeFigures, error) { return scaleProducer(ctx, cfg, n, say) }})
	}
	for _, want := range cfg.Sizes {
		for _, st := range stages {
			n := planSize(want, budget, st.need)
			if _, done := st.measured[n]; done {
				continue
			}
			if n != want {
				say("bench-scale: %s stage at %d keys needs about %.1f GiB, over the budget of %.1f GiB: measuring %d and extrapolating", st.name, want, gib(st.need(want)), gib(budget), n)
			}
			t0 := time.Now()
			f, err := st.run(n)
			if err != nil {
				// A size that fails (a timeout, memory) does not lose the others: it is
				// extrapolated from them, and the note says why.
				say("bench-scale: %s stage, %d keys, failed after %v: %v", st.name, n, time.Since(t0).Round(time.Second), err)
				res.Notes = append(res.Notes, fmt.Sprintf("the %s stage at %d keys failed after %v (%v): its rows are extrapolated from the sizes measured", st.name, n, time.Since(t0).Round(time.Second), firstLine(err.Error())))
				continue
			}
			st.measured[n] = f
			say("bench-scale: %s stage, %d keys, done in %v (load %s)", st.name, n, time.Since(t0).Round(time.Second), loadAvg())
		}
	}
	for _, want := range cfg.Sizes {
		var figs [2]sizeFigures
		var notes [2]string
		for i, st := range stages {
			sizes := slices.Sorted(maps.Keys(st.measured))
			if len(sizes) == 0 {
				return res, fmt.Errorf("the %s stage measured no size (see the notes above)", st.name)
			}
			f, exact := st.measured[want]
			if !exact {
				f = extrapolateFigures(st.measured, sizes, want)
				notes[i] = fmt.Sprintf(" (extrapolated from %s)", joinSizes(sizes))
			}
			figs[i] = f
		}
		f := figs[0]
		f.Fanout, f.FanoutRaw, f.FanoutPaired, f.Backfill, f.BackfillRaw = figs[1].Fanout, figs[1].FanoutRaw, figs[1].FanoutPaired, figs[1].Backfill, figs[1].BackfillRaw
		res.Rows = append(res.Rows, sizeRows(f, notes[0], notes[1], cfg.Producer)...)
	}
	if len(cfg.Edges) > 0 {
		if err := edgesBench(ctx, cfg, res, say); err != nil {
			return res, err
		}
	}
	res.Notes = append(res.Notes, fmt.Sprintf("the run took %v; peak memory in use on the machine %.1f GiB above its start (MemAvailable %.1f → lowest %.1f GiB)",
		time.Since(res.Started).Round(time.Second), gib(startAvail-lowest.Load()), gib(startAvail), gib(lowest.Load())))
	return res, nil
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

func gib(b uint64) float64 { return float64(b) / (1 << 30) }

func loadAvg() string {
	la, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(la))
	return strings.Join(f[:min(3, len(f))], " ")
}

func joinSizes(ns []int) string {
	s := make([]string, len(ns))
	for i, n := range ns {
		s[i] = humanKeys(n)
	}
	return strings.Join(s, " and ")
}

// humanKeys writes 1000000 as "1M", 2500000 as "2.5M", 100000 as "100k".
func humanKeys(n int) string {
	switch {
	case n >= 1_000_000 && n%100_000 == 0:
		return strconv.FormatFloat(float64(n)/1e6, 'f', -1, 64) + "M"
	case n >= 1000 && n%1000 == 0:
		return strconv.Itoa(n/1000) + "k"
	}
	return strconv.Itoa(n)
}

// extrapolateFigures extrapolates every total to want along the line through the two largest
// measured sizes (through the origin with one). Rates are extrapolated as times.
func extrapolateFigures(m map[int]sizeFigures, sizes []int, want int) sizeFigures {
	a, b := m[sizes[0]], m[sizes[len(sizes)-1]]
	if len(sizes) >= 2 {
		a = m[sizes[len(sizes)-2]]
	}
	x1, x2, x := float64(a.N), float64(b.N), float64(want)
	ex := func(y1, y2 float64) float64 { return extrapolate(x1, y1, x2, y2, x) }
	rate := func(r1, r2 float64) float64 { // records/s → seconds → back
		if r1 == 0 || r2 == 0 {
			return 0
		}
		t := ex(x1/r1, x2/r2)
		if t <= 0 {
			return 0
		}
		return x / t
	}
	return sizeFigures{N: want,
		EdgeHeap: ex(a.EdgeHeap, b.EdgeHeap), BigcacheHeap: ex(a.BigcacheHeap, b.BigcacheHeap), MapHeap: ex(a.MapHeap, b.MapHeap),
		Warm: ex(a.Warm, b.Warm), WarmPeer: ex(a.WarmPeer, b.WarmPeer),
		RedisKeys: ex(a.RedisKeys, b.RedisKeys), RedisStream: ex(a.RedisStream, b.RedisStream), RedisPlain: ex(a.RedisPlain, b.RedisPlain),
		Fanout: rate(a.Fanout, b.Fanout), FanoutRaw: rate(a.FanoutRaw, b.FanoutRaw), FanoutPaired: b.FanoutPaired,
		Backfill: ex(a.Backfill, b.Backfill), BackfillRaw: ex(a.BackfillRaw, b.BackfillRaw),
	}
}

// sizeRows turns one size's figures into table rows.
func sizeRows(f sizeFigures, note, producerNote string, producer bool) []Row {
	n := float64(f.N)
	k := strconv.Itoa(f.N)
	at := humanKeys(f.N) + " keys" + note
	atP := humanKeys(f.N) + " keys" + producerNote
	var rows []Row
	memGoal := ""
	if f.N >= 10_000_000 {
		memGoal = "≤ 1.15× bigcache at 10M"
	}
	rows = append(rows, Row{Key: "scale_edge_heap_" + k, Measure: "edge heap per entry, " + at, Value: f.EdgeHeap / n, Unit: "B",
		Peer: fmt.Sprintf("bigcache %.0f B; map[string][]byte %.0f B", f.BigcacheHeap/n, f.MapHeap/n), Ratio: ratio(f.EdgeHeap, f.BigcacheHeap) + " bigcache", Goal: memGoal})
	rows = append(rows, Row{Key: "scale_warm_" + k, Measure: "edge warm start from SCAN, " + at, Value: f.Warm, Unit: "s",
		Peer: fmt.Sprintf("go-redis SCAN+MGET into a map %.1f s", f.WarmPeer), Ratio: ratio(f.Warm, f.WarmPeer)})
	if producer {
		g := ""
		switch {
		case f.N >= 10_000_000:
			g = "≥ 0.25× raw SET at 10M"
		case f.N >= 1_000_000:
			g = "≥ 0.3× raw SET at 1M"
		}
		r := ratio(f.Fanout, f.FanoutRaw)
		if f.FanoutPaired > 0 {
			r += fmt.Sprintf("; paired %.2f×", f.FanoutPaired)
		}
		rows = append(rows, Row{Key: "scale_fanout_" + k, Measure: "producer fan-out (broker → Redis, 2 projections; index budget 2.2× the keys), records/s, " + atP, Value: f.Fanout, Unit: "records/s", Higher: true,
			Peer: fmt.Sprintf("raw pipelined SET %.0f/s", f.FanoutRaw), Ratio: r, Goal: g})
		g = ""
		if f.N >= 10_000_000 {
			g = "10M records ≤ 60 s"
		}
		rows = append(rows, Row{Key: "scale_backfill_" + k, Measure: "backfill: topic replayed into a new generation (index budget 1.1× the keys), " + atP, Value: f.Backfill, Unit: "s",
			Peer: fmt.Sprintf("raw pipelined SET %.1f s (%.0f records/s vs %.0f/s)", f.BackfillRaw, n/f.BackfillRaw, n/f.Backfill), Ratio: ratio(f.Backfill, f.BackfillRaw), Goal: g})
	}
	rows = append(rows, Row{Key: "scale_redis_mem_" + k, Measure: "Redis memory per projected key (value keys; the change stream apart), " + at, Value: f.RedisKeys / n, Unit: "B",
		Peer: fmt.Sprintf("plain SET %.0f B; change stream +%.0f B a key until trimmed", f.RedisPlain/n, f.RedisStream/n), Ratio: ratio(f.RedisKeys, f.RedisPlain)})
	return rows
}

// scaleEdgeRedis measures one size: Redis memory (projection and plain SETs), the edge's heap and
// warm start (with bigcache, map and SCAN+MGET peers).
func scaleEdgeRedis(ctx context.Context, cfg ScaleConfig, n int, say func(string, ...any)) (sizeFigures, error) {
	f := sizeFigures{N: n}
	dir := filepath.Join(cfg.RunDir, "scale-"+strconv.Itoa(n))
	r, err := devstack.StartRedis(ctx, devstack.RedisConfig{Dir: dir, Mode: devstack.Attached})
	if err != nil {
		return f, fmt.Errorf("start redis: %w", err)
	}
	defer func() { _ = r.Stop(); _ = os.RemoveAll(dir) }()
	// Long timeouts: pipelines of 10,000 writes into a Redis of millions of keys (rehashing its
	// dictionary, growing its memory) on a loaded machine take seconds.
	rdb := redis.NewClient(&redis.Options{Addr: r.Addr, PoolSize: 8, ReadTimeout: time.Minute, WriteTimeout: time.Minute})
	defer rdb.Close()

	// Redis: n plain SETs, then (after FLUSHALL) the same keys as a projection.
	say("bench-scale: %s keys: plain SETs into Redis", humanKeys(n))
	m0, err := usedMemory(ctx, rdb)
	if err != nil {
		return f, err
	}
	if err := parallelRange(ctx, n, 10_000, 4, func(lo, hi int) error {
		pipe := rdb.Pipeline()
		for i := lo; i < hi; i++ {
			pipe.Set(ctx, scaleKey(i), scaleValue, 0)
		}
		_, err := pipe.Exec(ctx)
		return err
	}); err != nil {
		return f, err
	}
	m1, err := usedMemory(ctx, rdb)
	if err != nil {
		return f, err
	}
	f.RedisPlain = m1 - m0
	if err := rdb.FlushAll(ctx).Err(); err != nil {
		return f, err
	}
	say("bench-scale: %s keys: Publisher.Apply into a projection", humanKeys(n))
	const proj = "scale"
	const gen = 1
	pub, err := distcache.NewPublisher(rdb)
	if err != nil {
		return f, err
	}
	m0, err = usedMemory(ctx, rdb)
	if err != nil {
		return f, err
	}
	if err := parallelRange(ctx, n, 1000, 4, func(lo, hi int) error {
		ch := make([]distcache.Change, 0, hi-lo)
		for i := lo; i < hi; i++ {
			ch = append(ch, distcache.Change{Key: scaleKey(i), Value: scaleValue, Version: 1, Op: distcache.OpSet})
		}
		_, err := pub.Apply(ctx, proj, gen, ch)
		return err
	}); err != nil {
		return f, err
	}
	if err := pub.Cutover(ctx, proj, gen); err != nil {
		return f, err
	}
	m1, err = usedMemory(ctx, rdb)
	if err != nil {
		return f, err
	}
	if err := rdb.XTrimMaxLen(ctx, distcache.StreamKey(proj, gen), 0).Err(); err != nil {
		return f, err
	}
	m2, err := usedMemory(ctx, rdb)
	if err != nil {
		return f, err
	}
	f.RedisKeys, f.RedisStream = m2-m0, m1-m2

	// The edge: bigcache, map, then a distcache Client warmed from SCAN; the SCAN+MGET peer.
	say("bench-scale: %s keys: edge heap (bigcache, map, distcache) and warm start", humanKeys(n))
	h0 := heapInUse()
	bc, err := bigcache.New(ctx, bigcache.Config{Shards: 256, LifeWindow: 100 * 365 * 24 * time.Hour,
		MaxEntriesInWindow: 256 * 16, MaxEntrySize: 256}) // as distcache's local store (store.go)
	if err != nil {
		return f, err
	}
	for i := range n {
		if err := bc.Set(scaleKey(i), scaleValue); err != nil {
			return f, err
		}
	}
	f.BigcacheHeap = float64(heapInUse() - h0)
	if bc.Len() != n {
		return f, fmt.Errorf("bigcache holds %d entries, want %d", bc.Len(), n)
	}
	_ = bc.Close()
	bc = nil
	freeHeap()

	h0 = heapInUse()
	m := make(map[string][]byte, n)
	for i := range n {
		m[scaleKey(i)] = slices.Clone(scaleValue)
	}
	f.MapHeap = float64(heapInUse() - h0)
	runtime.KeepAlive(m)
	m = nil
	freeHeap()

	h0 = heapInUse()
	t0 := time.Now()
	c, err := distcache.New(ctx, distcache.WithAddrs(r.Addr), distcache.WithWarmStart(proj, distcache.WarmStart{Scan: true}))
	if err != nil {
		return f, err
	}
	f.Warm = time.Since(t0).Seconds()
	f.EdgeHeap = float64(heapInUse() - h0)
	for _, ps := range c.Stats().Projections {
		if ps.Name == proj && ps.Items != int64(n) {
			_ = c.Close(ctx)
			return f, fmt.Errorf("the edge holds %d entries after its warm start, want %d", ps.Items, n)
		}
	}
	_ = c.Close(ctx)
	c = nil
	freeHeap()

	t0 = time.Now()
	got, err := scanMGet(ctx, rdb, distcache.GenerationPattern(proj, gen))
	if err != nil {
		return f, err
	}
	f.WarmPeer = time.Since(t0).Seconds()
	if len(got) != n {
		return f, fmt.Errorf("SCAN+MGET peer read %d keys, want %d", len(got), n)
	}
	got = nil
	freeHeap()
	say("bench-scale: %s keys: edge %.0f B/entry (bigcache %.0f, map %.0f), warm %.1fs (peer %.1fs); Redis %.0f B/key (plain %.0f, stream %.0f); load %s",
		humanKeys(n), f.EdgeHeap/float64(n), f.BigcacheHeap/float64(n), f.MapHeap/float64(n), f.Warm, f.WarmPeer,
		f.RedisKeys/float64(n), f.RedisPlain/float64(n), f.RedisStream/float64(n), loadAvg())
	return f, nil
}

// scaleProducer runs producer-bench at n records: the fan-out and the backfill, each with its own
// raw pipelined SET peer.
func scaleProducer(ctx context.Context, cfg ScaleConfig, n int, say func(string, ...any)) (sizeFigures, error) {
	f := sizeFigures{N: n}
	pdir := filepath.Join(cfg.RepoDir, "services", "cache-producer")
	ns := strconv.Itoa(n)
	say("bench-scale: %s keys: producer-bench -only fanout", humanKeys(n))
	// The producers' index budget is sized to the keys they write, as docs/capacity.md tells a
	// deployment to (PRODUCER_INDEX_CACHE_ENTRIES ≥ the source keys of its generations): with the
	// default 1,000,000 entries, 1M keys in two projections outgrow it, the generations fall back
	// to the bucketed index layout, and the fan-out measures an undersized producer (0.21× at 1M).
	pout, err := runProgram(ctx, pdir, "./cmd/producer-bench", "-runs", "1", "-n", ns, "-replay-n", "1", "-only", "fanout",
		"-index-cache", strconv.Itoa(indexBudget(2*n)))
	if err != nil {
		return f, err
	}
	const (
		raw    = "raw pipelined SET (go-redis, GOGC=100)"
		fan    = "broker → Redis fan-out, 2 projections"
		replay = "replay into a new generation (backfill)"
	)
	pr := parseProducer(pout, raw, fan)
	if pr[raw] == 0 || pr[fan] == 0 {
		return f, fmt.Errorf("producer-bench -only fanout: could not read its table:\n%s", pout)
	}
	f.Fanout, f.FanoutRaw, f.FanoutPaired = pr[fan], pr[raw], parsePairedRatio(pout)
	say("bench-scale: %s keys: producer-bench -only replay", humanKeys(n))
	pout, err = runProgram(ctx, pdir, "./cmd/producer-bench", "-runs", "1", "-n", ns, "-replay-n", ns, "-only", "replay",
		"-index-cache", strconv.Itoa(indexBudget(n)))
	if err != nil {
		return f, err
	}
	pr = parseProducer(pout, raw, replay)
	if pr[raw] == 0 || pr[replay] == 0 {
		return f, fmt.Errorf("producer-bench -only replay: could not read its table:\n%s", pout)
	}
	f.Backfill, f.BackfillRaw = float64(n)/pr[replay], float64(n)/pr[raw]
	say("bench-scale: %s keys: fan-out %.0f records/s (raw SET %.0f/s), backfill %.1fs (raw SET %.1fs); load %s",
		humanKeys(n), f.Fanout, f.FanoutRaw, f.Backfill, f.BackfillRaw, loadAvg())
	return f, nil
}

// indexBudget is the producers' index budget for keys source keys: the keys and a tenth more.
func indexBudget(keys int) int { return keys + keys/10 }

func freeHeap() { runtime.GC(); debug.FreeOSMemory() }

// parallelRange calls fn over [0, n) in chunks of size, on workers goroutines.
func parallelRange(ctx context.Context, n, size, workers int, fn func(lo, hi int) error) error {
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make([]error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				lo := int(next.Add(int64(size))) - size
				if lo >= n {
					return
				}
				if err := fn(lo, min(lo+size, n)); err != nil {
					errs[w] = err
					return
				}
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return ctx.Err()
}

// usedMemory is Redis's used_memory (INFO memory), in bytes.
func usedMemory(ctx context.Context, rdb *redis.Client) (float64, error) {
	info, err := rdb.Info(ctx, "memory").Result()
	if err != nil {
		return 0, err
	}
	v, ok := infoField(info, "used_memory")
	if !ok {
		return 0, errors.New("INFO memory: no used_memory")
	}
	return v, nil
}

// redisCPU is Redis's CPU time so far (INFO cpu: used_cpu_user + used_cpu_sys), in seconds.
func redisCPU(ctx context.Context, rdb *redis.Client) (float64, error) {
	info, err := rdb.Info(ctx, "cpu").Result()
	if err != nil {
		return 0, err
	}
	u, ok1 := infoField(info, "used_cpu_user")
	s, ok2 := infoField(info, "used_cpu_sys")
	if !ok1 || !ok2 {
		return 0, errors.New("INFO cpu: no used_cpu_user/used_cpu_sys")
	}
	return u + s, nil
}

// infoField reads one numeric field of an INFO reply.
func infoField(info, name string) (float64, bool) {
	for _, l := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), name+":"); ok {
			x, err := strconv.ParseFloat(v, 64)
			return x, err == nil
		}
	}
	return 0, false
}

// scanMGet is the warm-start peer: SCAN (COUNT 1000) and MGET of each page into a map.
func scanMGet(ctx context.Context, rdb *redis.Client, pattern string) (map[string][]byte, error) {
	out := map[string][]byte{}
	var cursor uint64
	for {
		ks, next, err := rdb.Scan(ctx, cursor, pattern, 1000).Result()
		if err != nil {
			return nil, err
		}
		if len(ks) > 0 {
			vs, err := rdb.MGet(ctx, ks...).Result()
			if err != nil {
				return nil, err
			}
			for i, v := range vs {
				if s, ok := v.(string); ok {
					out[ks[i]] = []byte(s)
				}
			}
		}
		if cursor = next; cursor == 0 {
			return out, nil
		}
	}
}

// WriteScaleMarkdown writes the -scale table (bench/results/scale.md), its regressions against the
// baseline and its notes.
func WriteScaleMarkdown(w io.Writer, cfg ScaleConfig, res *Result, regs []Regression, baseline string) error {
	fmt.Fprintf(w, "# distcache at scale (make bench-scale)\n\n")
	fmt.Fprintf(w, "%s, GOMAXPROCS=%d, load average at the end %s. One run of each figure at each size (%s keys of 200 bytes); each peer was measured in the same run, just before or after. Edges: %d changes/s for %v per run, tails spread over %d replicas in the peer runs.\n\n",
		res.Started.UTC().Format(time.RFC3339), runtime.GOMAXPROCS(0), loadAvg(), joinSizes(cfg.Sizes), cfg.EdgeRate, cfg.EdgeDuration, cfg.Replicas)
	fmt.Fprintln(w, "| measure | value | peer (same run) | ratio | goal |")
	fmt.Fprintln(w, "|---|---|---|---|---|")
	for _, r := range res.Rows {
		fmt.Fprintf(w, "| %s | %s %s | %s | %s | %s |\n", r.Measure, formatScaleValue(r.Value, r.Unit), r.Unit, r.Peer, r.Ratio, r.Goal)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Edge heap: live heap (after two GCs) of a distcache Client warmed by SCAN of the projection, of a bigcache configured as distcache's local store and of a map[string][]byte, each holding the same keys and values. "+
		"Warm start: distcache.New with WithWarmStart(Scan) until it returns, next to go-redis SCAN (COUNT 1000) + MGET of each page into a map. "+
		"Fan-out and backfill: services/cache-producer's producer-bench (-only fanout, -only replay) at this size, each with its own raw pipelined SET peer. "+
		"Redis memory: used_memory before and after loading the projection through Publisher.Apply, with the change stream then trimmed (its share given apart), next to plain SETs of the same keys and values into the same, emptied, Redis. "+
		"Edges: N distcache Clients in this one process follow one projection of 1,000 keys (holding none); a writer applies one change at a time at the fixed rate; Redis CPU is INFO cpu (user + sys) of every node over the run, per change delivered to an edge (changes × edges); propagation is from the write to each edge's WithOnChange call. "+
		"With many edges in one process on a small machine the edges' own CPU is part of the propagation delay.")
	fmt.Fprintln(w)
	writeComparison(w, baseline, regs, res.Notes)
	return nil
}

func formatScaleValue(v float64, unit string) string {
	switch unit {
	case "ms", "µs", "µs/s":
		return strconv.FormatFloat(v, 'f', 2, 64)
	case "s":
		return strconv.FormatFloat(v, 'f', 1, 64)
	}
	return strconv.FormatFloat(v, 'f', 0, 64)
}
