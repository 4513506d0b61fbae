// Package benchrun is distcache's pipeline benchmark (make bench): commit → edge-visible latency
// through the whole running pipeline at two write rates, measured in process at an edge, next to
// commit → Redis (the change stream) in the same runs; memory per cached entry next to a plain Go
// map; and the parts' own benchmarks (libs/distcache's hit, miss and publish benchmarks against
// rueidis and go-redis, core-publisher's and cache-producer's bench programs), run as they are and
// parsed. Every figure is the median of several runs. The table is written as Markdown with a PNG
// of the latency distribution, and compared with a baseline kept in the repository.
package benchrun

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"

	"github.com/distcache/distcache/e2e/pipeline"
	"github.com/distcache/distcache/libs/distcache"
)

// Config is one benchmark run.
type Config struct {
	RepoDir, RunDir  string
	Runs             int           // runs of each measure; the median is reported
	Duration         time.Duration // length of one latency run
	Rates            []int         // write rates (events/s) of the latency runs
	Items            int           // rows in the sample table
	MemEntries       int           // entries of the memory measure
	Parts            bool          // run the parts' own benchmarks too
	MaxRate          bool          // search the highest rate with p99 < 100 ms (a few more latency runs)
	BenchTime        string        // -benchtime of the parts' go test benchmarks
	PublisherEnv     []string      // extra KEY=VALUE settings of the core-publisher (PUBLISHER_COMPRESSION=…)
	RedisAppendFsync string        // the Redis nodes' appendfsync (pipeline.Config.RedisAppendFsync; "" is always)
	// ProfileDir, when set, receives CPU profiles of every service and of the bench, taken during
	// the first run at ProfileRate (0: the highest rate), and their top functions (top.txt).
	ProfileDir  string
	ProfileRate int
	// Compressions, when set (two codecs or more), adds runs at the highest rate with the
	// publisher's PUBLISHER_COMPRESSION set to each, interleaved (compressionBench).
	Compressions []string
	Out          io.Writer
}

// Full is `make bench`'s configuration; Quick a short one for trying it.
func Full(repo, run string) Config {
	return Config{RepoDir: repo, RunDir: run, Runs: 3, Duration: 10 * time.Second, Rates: []int{1000, 10000},
		Items: 20000, MemEntries: 100_000, Parts: true, BenchTime: "1s", MaxRate: true}
}

// Quick is a short configuration for trying the benchmark (single runs, short durations).
func Quick(repo, run string) Config {
	return Config{RepoDir: repo, RunDir: run, Runs: 1, Duration: 4 * time.Second, Rates: []int{1000, 10000},
		Items: 5000, MemEntries: 20_000, Parts: true, BenchTime: "200ms", MaxRate: true}
}

// Row is one line of the table.
type Row struct {
	Key     string  `json:"key"`     // stable identifier, used by the baseline
	Measure string  `json:"measure"` // what is measured
	Value   float64 `json:"value"`   // the figure, in Unit
	Unit    string  `json:"unit"`
	Higher  bool    `json:"higher"` // true when a higher value is better
	Peer    string  `json:"peer"`   // the peer measured in the same run
	Ratio   string  `json:"ratio"`
	Goal    string  `json:"goal"`
	// Runs are the figures of the individual runs the value is the median of.
	Runs []float64 `json:"runs,omitempty"`
	// Baseline is the baseline's figure for Key (0: none), set by MarkBaseline.
	Baseline float64 `json:"-"`
}

// Result is the whole table plus the latency samples for the chart.
type Result struct {
	Rows    []Row
	Series  []Series
	Notes   []string
	Started time.Time
}

func (r *Result) add(row Row) { r.Rows = append(r.Rows, row) }

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// Run runs the benchmark.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	out := cfg.Out
	if out == nil {
		out = io.Discard
	}
	say := func(f string, a ...any) { fmt.Fprintf(out, f+"\n", a...) }
	res := &Result{Started: time.Now()}
	if err := pipelineBench(ctx, cfg, res, say); err != nil {
		return res, err
	}
	if cfg.Parts {
		if err := partsBench(ctx, cfg, res, say); err != nil {
			return res, err
		}
	}
	return res, nil
}

func pipelineBench(ctx context.Context, cfg Config, res *Result, say func(string, ...any)) error {
	say("bench: starting the pipeline (%d items) under %s", cfg.Items, cfg.RunDir)
	pcfg := pipeline.Config{RepoDir: cfg.RepoDir, RunDir: cfg.RunDir, Items: cfg.Items, Out: cfg.Out,
		StatStatements: "top", PublisherEnv: cfg.PublisherEnv, RedisAppendFsync: cfg.RedisAppendFsync}
	var pprofAddrs map[string]string
	if cfg.ProfileDir != "" {
		pcfg.StatStatements = "all" // the capture trigger's statements too, at a small cost to each
		pub, prod, ctl, addrs, err := pprofEnv()
		if err != nil {
			return err
		}
		pcfg.PublisherEnv, pcfg.ProducerEnv, pcfg.ControlEnv, pprofAddrs = append(slices.Clip(pcfg.PublisherEnv), pub...), prod, ctl, addrs
	}
	p, err := pipeline.Start(ctx, pcfg)
	if err != nil {
		return err
	}
	defer p.Stop()
	keys := make([]string, cfg.Items)
	for i := range keys {
		keys[i] = pipeline.Key(i + 1)
	}
	var onChange atomic.Pointer[func(distcache.AppliedChange)] // the run's handler, see measureLatency
	edge, err := pipeline.NewEdge(ctx, p.RedisAddr, keys, distcache.WithOnChange(func(c distcache.AppliedChange) {
		if f := onChange.Load(); f != nil {
			(*f)(c)
		}
	}))
	if err != nil {
		return fmt.Errorf("edge: %w", err)
	}
	defer edge.Close(context.Background())
	pool, err := pgxpool.New(ctx, p.CoreURL)
	if err != nil {
		return err
	}
	defer pool.Close()
	rdb := redis.NewClient(&redis.Options{Addr: p.RedisAddr, PoolSize: 16})
	defer rdb.Close()

	runs := map[int][]LatencyRun{}
	stalls := map[int][]string{} // per rate, per run: Redis's latency events (redisStalls)
	// Redis records any event of its own (fork, AOF write or fsync, expiry cycle, a slow command)
	// that took 5 ms or more: a stall of the primary shows in the notes, per run.
	if err := rdb.ConfigSet(ctx, "latency-monitor-threshold", "5").Err(); err != nil {
		return fmt.Errorf("redis latency monitor: %w", err)
	}
	for i := range cfg.Runs {
		for _, rate := range cfg.Rates { // rates interleaved, so a change in the machine's load hits both
			// Each run updates items and fills the outbox with tens of thousands of rows
			// (deleted once published): vacuum between runs, so that autovacuum of one
			// run's dead rows does not take a core in the middle of the next run; and
			// rewrite Redis's AOF, which a 10,000/s run grows past its rewrite threshold.
			if _, err := pool.Exec(ctx, "VACUUM"); err != nil {
				return fmt.Errorf("vacuum between runs: %w", err)
			}
			if err := rewriteAOF(ctx, rdb); err != nil {
				return err
			}
			profiled := make(chan error, 1)
			if cfg.ProfileDir != "" && i == 0 && rate == cmp.Or(cfg.ProfileRate, slices.Max(cfg.Rates)) {
				go func() { profiled <- profileRun(ctx, cfg.ProfileDir, pprofAddrs, cfg.Duration, say) }()
			} else {
				profiled <- nil
			}
			before, err := redisStallsReset(ctx, rdb)
			if err != nil {
				return err
			}
			r, err := measureLatency(ctx, pool, rdb, edge, &onChange, p.Kafka.Addr, p.Procs(), cfg.Items, rate, cfg.Duration, cfg.ProfileDir != "")
			if err != nil {
				return fmt.Errorf("latency at %d/s: %w\n%s", rate, err, p.LogTails())
			}
			st, err := redisStalls(ctx, rdb, before)
			if err != nil {
				return err
			}
			stalls[rate] = append(stalls[rate], fmt.Sprintf("run %d: %s", i+1, st))
			if err := <-profiled; err != nil {
				return fmt.Errorf("profiles: %w", err)
			}
			say("bench: run %d/%d at %d events/s: achieved %.0f/s; commit→edge p50 %.2fms p99 %.2fms p99.9 %.2fms (%d samples, %d unseen); commit→Redis p50 %.2fms p99 %.2fms p99.9 %.2fms; commit→broker p50 %.2fms p99 %.2fms p99.9 %.2fms max %.2fms (%d seen before their writer recorded them)",
				i+1, cfg.Runs, rate, r.Achieved, ms(r.Edge.P50), ms(r.Edge.P99), ms(r.Edge.P999), r.Edge.N, r.Edge.Unseen, ms(r.Redis.P50), ms(r.Redis.P99), ms(r.Redis.P999),
				ms(r.Broker.P50), ms(r.Broker.P99), ms(r.Broker.P999), ms(r.Broker.Max), r.Broker.Early)
			runs[rate] = append(runs[rate], r)
		}
	}
	for _, rate := range cfg.Rates {
		rs := runs[rate]
		pick := func(f func(LatencyRun) float64) (float64, []float64) {
			v := make([]float64, len(rs))
			for i, r := range rs {
				v[i] = f(r)
			}
			return median(v), v
		}
		ach, achRuns := pick(func(r LatencyRun) float64 { return r.Achieved })
		unseen, _ := pick(func(r LatencyRun) float64 { return float64(r.Edge.Unseen) })
		k := strconv.Itoa(rate)
		res.add(Row{Key: "achieved_rate_" + k, Measure: fmt.Sprintf("write rate achieved (target %d events/s)", rate), Value: ach, Unit: "events/s", Higher: true,
			Ratio: fmt.Sprintf("%.2f× target", ach/float64(rate)), Runs: achRuns})
		for _, q := range []struct {
			name string
			at   func(Dist) time.Duration
		}{
			{"p50", func(d Dist) time.Duration { return d.P50 }},
			{"p99", func(d Dist) time.Duration { return d.P99 }},
			{"p99.9", func(d Dist) time.Duration { return d.P999 }},
		} {
			e, eRuns := pick(func(r LatencyRun) float64 { return ms(q.at(r.Edge)) })
			rd, _ := pick(func(r LatencyRun) float64 { return ms(q.at(r.Redis)) })
			bk, _ := pick(func(r LatencyRun) float64 { return ms(q.at(r.Broker)) })
			ratioNote := ""
			if q.name == "p50" { // percentiles of different distributions do not subtract beyond the median
				ratioNote = fmt.Sprintf("edge tail adds %.2f ms", e-rd)
			}
			res.add(Row{Key: "latency_" + q.name + "_" + k, Measure: fmt.Sprintf("commit → edge-visible %s at %d events/s", q.name, rate), Value: e, Unit: "ms",
				Peer: fmt.Sprintf("stages: commit → broker %.2f ms, → Redis change stream %.2f ms", bk, rd), Ratio: ratioNote, Goal: latencyGoal(rate, q.name), Runs: eRuns})
		}
		if unseen > 0 {
			res.Notes = append(res.Notes, fmt.Sprintf("at %d events/s a median of %.0f commits per run were not seen at the edge within 10 s of the run's end", rate, unseen))
		}
		early, _ := pick(func(r LatencyRun) float64 { return float64(r.Broker.Early) })
		if early > 0 {
			res.Notes = append(res.Notes, fmt.Sprintf("at %d events/s the broker watcher received a median of %.0f commits per run before their writer had recorded them (COMMIT returned, goroutine not yet run): counted as 0 ms", rate, early))
		}
		res.Notes = append(res.Notes, fmt.Sprintf("Redis primary's own stalls at %d events/s (LATENCY LATEST, events of 5 ms or more, and AOF rewrites / RDB saves begun): %s", rate, strings.Join(stalls[rate], "; ")))
		addCPURows(res, rate, rs)
		if st := rs[len(rs)-1].Statements; len(st) > 0 {
			ev := float64(rs[len(rs)-1].Events)
			var parts []string
			for _, x := range st {
				parts = append(parts, fmt.Sprintf("%.1f µs/event, %d calls: `%s`", float64(x.Time.Microseconds())/ev, x.Calls, shorten(x.Query, 90)))
			}
			res.Notes = append(res.Notes, fmt.Sprintf("PostgreSQL's top statements at %d events/s (pg_stat_statements, execution time per event, last run; a trigger's statements are in their caller's time too): %s", rate, strings.Join(parts, "; ")))
		}
		if w := rs[0].Waits; len(w) > 0 {
			total := 0
			for _, x := range w {
				total += x.Samples
			}
			var parts []string
			for _, x := range w[:min(len(w), 6)] {
				parts = append(parts, fmt.Sprintf("%s %.0f%%", x.State, 100*float64(x.Samples)/float64(total)))
			}
			res.Notes = append(res.Notes, fmt.Sprintf("PostgreSQL's active sessions at %d events/s (pg_stat_activity every %v, first run): %s", rate, waitSampleEvery, strings.Join(parts, ", ")))
		}
		var all []time.Duration
		for _, r := range rs {
			all = append(all, r.Samples...)
		}
		res.Series = append(res.Series, Series{Label: fmt.Sprintf("%d events/s target (%.0f achieved)", rate, ach), Samples: all})
	}
	measure := func(rate int) (LatencyRun, error) {
		if _, err := pool.Exec(ctx, "VACUUM"); err != nil {
			return LatencyRun{}, fmt.Errorf("vacuum between runs: %w", err)
		}
		if err := rewriteAOF(ctx, rdb); err != nil {
			return LatencyRun{}, err
		}
		r, err := measureLatency(ctx, pool, rdb, edge, &onChange, p.Kafka.Addr, p.Procs(), cfg.Items, rate, cfg.Duration, cfg.ProfileDir != "")
		if err != nil {
			return r, fmt.Errorf("latency at %d/s: %w\n%s", rate, err, p.LogTails())
		}
		return r, nil
	}
	if cfg.MaxRate {
		if err := maxRateSearch(cfg, res, say, runs, measure); err != nil {
			return err
		}
	}
	if len(cfg.Compressions) > 1 {
		if err := compressionBench(ctx, cfg, res, say, p, measure); err != nil {
			return err
		}
	}

	// Memory per cached entry: a distcache Client holding MemEntries keys, next to a plain map.
	if cfg.MemEntries > 0 {
		var dcB, mapB []float64
		for range cfg.Runs {
			d, m, err := memoryPerEntry(ctx, rdb, p.RedisAddr, cfg.MemEntries)
			if err != nil {
				return fmt.Errorf("memory: %w", err)
			}
			dcB, mapB = append(dcB, d), append(mapB, m)
		}
		d, m := median(dcB), median(mapB)
		res.add(Row{Key: "memory_per_entry", Measure: fmt.Sprintf("edge heap per cached entry (%d entries, 200-byte values)", cfg.MemEntries), Value: d, Unit: "B",
			Peer: fmt.Sprintf("map[string][]byte %.0f B", m), Ratio: fmt.Sprintf("%.2f×", d/m), Runs: dcB})
	}
	return nil
}

func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// memoryPerEntry loads n keys with 200-byte values into a projection of its own, then measures
// the live heap of a Client that holds them all and of a map holding the same keys and values.
func memoryPerEntry(ctx context.Context, rdb *redis.Client, addr string, n int) (dcBytes, mapBytes float64, err error) {
	const proj = "mem_probe"
	pub, err := distcache.NewPublisher(rdb)
	if err != nil {
		return 0, 0, err
	}
	gen := time.Now().UnixNano() % 1_000_000_000
	value := []byte(`{"pad":"` + strings.Repeat("v", 190) + `"}`)
	keys := make([]string, n)
	changes := make([]distcache.Change, 0, 1000)
	for i := range keys {
		keys[i] = "user" + strconv.Itoa(10_000_000+i) + "@example.com"
		changes = append(changes, distcache.Change{Key: keys[i], Value: value, Version: 1, Op: distcache.OpSet})
		if len(changes) == cap(changes) || i == n-1 {
			if _, err := pub.Apply(ctx, proj, gen, changes); err != nil {
				return 0, 0, err
			}
			changes = changes[:0]
		}
	}
	if err := pub.Cutover(ctx, proj, gen); err != nil {
		return 0, 0, err
	}
	defer func() {
		_, _ = pub.RetireGeneration(context.WithoutCancel(ctx), proj, gen, 1000)
	}()

	h0 := heapInUse()
	m := make(map[string][]byte, n)
	for _, k := range keys {
		m[strings.Clone(k)] = append([]byte(nil), value...)
	}
	h1 := heapInUse()
	mapBytes = float64(h1-h0) / float64(n)
	runtime.KeepAlive(m)
	m = nil

	h0 = heapInUse()
	c, err := distcache.New(ctx, distcache.WithAddrs(addr), distcache.WithWarmStart(proj, distcache.WarmStart{Keys: keys}))
	if err != nil {
		return 0, 0, err
	}
	h1 = heapInUse()
	defer c.Close(ctx)
	for _, ps := range c.Stats().Projections {
		if ps.Name == proj && ps.Items != int64(n) {
			return 0, 0, fmt.Errorf("the client holds %d entries, want %d", ps.Items, n)
		}
	}
	return float64(int64(h1)-int64(h0)) / float64(n), mapBytes, nil
}

func partsBench(ctx context.Context, cfg Config, res *Result, say func(string, ...any)) error {
	lib := filepath.Join(cfg.RepoDir, "libs", "distcache", "bench")
	say("bench: libs/distcache/bench go test -bench (Hit, Miss, Publish; -count %d -benchtime %s)", cfg.Runs, cfg.BenchTime)
	b, err := goBench(ctx, lib, "^(BenchmarkHit|BenchmarkMiss|BenchmarkPublish)$", cfg.BenchTime, cfg.Runs)
	if err != nil {
		return err
	}
	get := func(name string) float64 { return b.median("Benchmark"+name, "ns/op") }
	runsOf := func(name, unit string) []float64 { return b.runs("Benchmark"+name, unit) }
	for _, mode := range []string{"serial", "parallel"} {
		d, r := get("Hit/"+mode+"/distcache"), get("Hit/"+mode+"/rueidis-DoCache")
		peer := fmt.Sprintf("rueidis DoCache %.0f ns/op", r)
		if bc := get("Hit/" + mode + "/bigcache"); bc > 0 {
			// The store's own Get, which every local hit makes: the floor.
			peer += fmt.Sprintf("; bigcache Get %.0f ns/op (distcache %s)", bc, ratio(d, bc))
		}
		res.add(Row{Key: "hit_" + mode, Measure: "edge local hit, " + mode, Value: d, Unit: "ns/op",
			Peer: peer, Ratio: ratio(d, r), Goal: "≤ 0.8× rueidis", Runs: runsOf("Hit/"+mode+"/distcache", "ns/op")})
	}
	for _, mode := range []struct{ name, key, measure string }{
		{"serial", "miss", "edge miss served from Redis, serial"},
		{"parallel", "miss_parallel", fmt.Sprintf("edge miss served from Redis, %d goroutines", missParallelism*runtime.GOMAXPROCS(0))},
	} {
		d, g := get("Miss/"+mode.name+"/distcache"), get("Miss/"+mode.name+"/go-redis-GET")
		if d == 0 || g == 0 {
			return fmt.Errorf("libs/distcache/bench: no BenchmarkMiss/%s figures (distcache %v, go-redis %v)", mode.name, d, g)
		}
		peer := fmt.Sprintf("go-redis GET %.0f ns/op", g)
		if mode.name == "parallel" {
			// The two sides above run one after the other, so a drift of the machine's speed
			// between them shows in their ratio; the interleaved run alternates them op by op in
			// the same goroutines, which also spreads each side's garbage collection over both
			// (distcache's fill of its local store allocates more than a GET): it understates
			// distcache's own cost, so the goal is judged on the ratio above.
			if r := b.median("BenchmarkMiss/parallel-interleaved", "ratio"); r > 0 {
				peer += fmt.Sprintf("; interleaved op by op in the same goroutines (GC shared): %.2f×", r)
			}
		}
		res.add(Row{Key: mode.key, Measure: mode.measure, Value: d, Unit: "ns/op",
			Peer: peer, Ratio: ratio(d, g), Goal: "≤ 1.1× go-redis", Runs: runsOf("Miss/"+mode.name+"/distcache", "ns/op")})
	}
	da, ga := b.median("BenchmarkMiss/serial/distcache", "allocs/op"), b.median("BenchmarkMiss/serial/go-redis-GET", "allocs/op")
	res.add(Row{Key: "miss_allocs", Measure: "allocations per edge miss (serial)", Value: da, Unit: "allocs/op",
		Peer: fmt.Sprintf("go-redis GET %.0f allocs/op", ga), Ratio: ratio(da, ga), Runs: runsOf("Miss/serial/distcache", "allocs/op")})
	pa, ps := get("Publish/distcache-Apply-100"), get("Publish/go-redis-pipelined-SET-100")
	if pa > 0 && ps > 0 {
		var rates []float64
		for _, ns := range runsOf("Publish/distcache-Apply-100", "ns/op") {
			rates = append(rates, 1e9/ns)
		}
		res.add(Row{Key: "publish_apply", Measure: "distcache.Publisher.Apply (batches of 100)", Value: 1e9 / pa, Unit: "writes/s", Higher: true,
			Peer: fmt.Sprintf("go-redis pipelined SET %.0f/s", 1e9/ps), Ratio: ratio(ps, pa), Runs: rates})
	}

	// Propagation: a write's delay until an edge applies it, next to rueidis's invalidation.
	// Each run takes a fixed number of samples (1 ms apart), not a -benchtime.
	say("bench: libs/distcache/bench go test -bench Propagation (-count %d, 500 samples a run)", cfg.Runs)
	pb, err := goBench(ctx, lib, "^BenchmarkPropagation$", "500x", cfg.Runs)
	if err != nil {
		return err
	}
	for _, q := range []string{"p50", "p99"} {
		us := func(name, unit string) []float64 {
			var v []float64
			for _, x := range pb.runs("BenchmarkPropagation/"+name, unit) {
				v = append(v, x/1e3)
			}
			return v
		}
		v, rue := us("distcache-tail-primary", q+"-from-start-ns"), us("rueidis-invalidation", q+"-from-start-ns")
		if len(v) == 0 || len(rue) == 0 {
			return fmt.Errorf("libs/distcache/bench: no BenchmarkPropagation %s figures", q)
		}
		peer := fmt.Sprintf("rueidis invalidation %.0f µs", median(rue))
		if floor := us("SetGen-bare-XREAD", q+"-from-start-ns"); len(floor) > 0 {
			// The same write's stream path with no edge: the Publisher's
			// script and a bare blocking XREAD (StreamFloor).
			peer += fmt.Sprintf("; the stream alone (the write's script, a bare XREAD) %.0f µs", median(floor))
		}
		res.add(Row{Key: "propagation_" + q, Measure: "propagation " + q + ": a write's start → an edge applied it (distcache tailing the primary)", Value: median(v), Unit: "µs",
			Peer: peer, Ratio: ratio(median(v), median(rue)), Runs: v})
		res.Notes = append(res.Notes, fmt.Sprintf("propagation %s after the write returned: distcache %.0f µs (tailing the replica %.0f µs), rueidis invalidation %.0f µs",
			q, median(us("distcache-tail-primary", q+"-ns")), median(us("distcache-tail-replica", q+"-ns")), median(us("rueidis-invalidation", q+"-ns"))))
	}

	say("bench: services/cache-producer producer-bench")
	n := "200000"
	if cfg.Runs == 1 {
		n = "30000"
	}
	pout, err := runProgram(ctx, filepath.Join(cfg.RepoDir, "services", "cache-producer"), "./cmd/producer-bench",
		"-runs", strconv.Itoa(cfg.Runs), "-n", n, "-replay-n", n)
	if err != nil {
		return err
	}
	const (
		raw    = "raw pipelined SET (go-redis, GOGC=100)"
		fan    = "broker → Redis fan-out, 2 projections"
		replay = "replay into a new generation (backfill)"
	)
	pr := parseProducer(pout, raw, fan, replay)
	if pr[raw] == 0 || pr[fan] == 0 || pr[replay] == 0 {
		return fmt.Errorf("producer-bench: could not read its table:\n%s", pout)
	}
	fanRatio := fmt.Sprintf("%.2f× (writes: %.2f×)", pr[fan]/pr[raw], 2*pr[fan]/pr[raw])
	if paired := parsePairedRatio(pout); paired > 0 {
		fanRatio += fmt.Sprintf("; paired runs: %.2f×", paired)
	}
	res.add(Row{Key: "producer_fanout", Measure: "cache-producer: broker → Redis, records/s (each record written to 2 projections)", Value: pr[fan], Unit: "records/s", Higher: true,
		Peer: fmt.Sprintf("raw pipelined SET %.0f/s", pr[raw]), Ratio: fanRatio, Goal: "≥ 0.4× raw SET (paired runs, median)"})
	res.add(Row{Key: "backfill", Measure: "backfill: topic replayed into a new generation, records/s", Value: pr[replay], Unit: "records/s", Higher: true,
		Peer: fmt.Sprintf("raw pipelined SET %.0f/s", pr[raw]), Ratio: ratio(pr[replay], pr[raw]), Goal: "1,000,000 records ≤ 10 s"})

	say("bench: services/core-publisher publisher-bench")
	backlog := "100000"
	if cfg.Runs == 1 {
		backlog = "20000"
	}
	qout, err := runProgram(ctx, filepath.Join(cfg.RepoDir, "services", "core-publisher"), "./cmd/publisher-bench",
		"-runs", strconv.Itoa(cfg.Runs), "-backlog", backlog, "-latency-duration", "2s")
	if err != nil {
		return err
	}
	pm := parsePublisher(qout)
	if pm["txn"] == 0 {
		return fmt.Errorf("publisher-bench: could not read its table:\n%s", qout)
	}
	peer := "published, not measured: Debezium ~6,000 ev/s"
	if pm["idempotent"] > 0 {
		peer = fmt.Sprintf("idempotent producer (no Kafka transactions) %.0f ev/s", pm["idempotent"])
	}
	res.add(Row{Key: "publisher", Measure: fmt.Sprintf("core-publisher: outbox backlog (%s rows, 1 KB) → broker, transactional", backlog), Value: pm["txn"], Unit: "events/s", Higher: true,
		Peer: peer, Ratio: ratio(pm["txn"], pm["idempotent"]), Goal: "≥ 30,000 ev/s", Runs: parsePublisherRuns(qout)["txn"]})
	return nil
}

func ratio(a, b float64) string {
	if a == 0 || b == 0 {
		return ""
	}
	return fmt.Sprintf("%.2f×", a/b)
}

// missParallelism is libs/distcache/bench's goroutines per GOMAXPROCS in BenchmarkMiss/parallel
// (benchkit.MissParallelism, internal to that module).
const missParallelism = 16

// formatValue prints a figure with the decimals its unit deserves.
func formatValue(v float64, unit string) string {
	switch unit {
	case "ms":
		return strconv.FormatFloat(v, 'f', 2, 64)
	case "µs/event", "allocs/op":
		return strconv.FormatFloat(v, 'f', 1, 64)
	}
	return strconv.FormatFloat(v, 'f', 0, 64)
}

// Baseline is the figures a run is compared against (e2e/baseline.json).
type Baseline struct {
	Note string             `json:"note"`
	Rows map[string]float64 `json:"rows"`
}

// Regression is a figure worse than its baseline by more than the threshold.
type Regression struct {
	Key             string
	Baseline, Value float64
	Change          float64 // relative, positive = worse
}

// Compare flags rows worse than the baseline by more than threshold (0.2 = 20%).
func Compare(rows []Row, base Baseline, threshold float64) []Regression {
	var out []Regression
	for _, r := range rows {
		b, ok := base.Rows[r.Key]
		if !ok || b == 0 || r.Value == 0 {
			continue
		}
		worse := (r.Value - b) / b
		if r.Higher {
			worse = (b - r.Value) / b
		}
		if worse > threshold {
			out = append(out, Regression{Key: r.Key, Baseline: b, Value: r.Value, Change: worse})
		}
	}
	return out
}

// MarkBaseline sets each row's Baseline from base, for the table's baseline column.
func MarkBaseline(rows []Row, base Baseline) {
	for i := range rows {
		rows[i].Baseline = base.Rows[rows[i].Key]
	}
}

// baselineCell is a row's baseline column: the baseline figure and the change, flagged when it
// is worse by more than threshold.
func baselineCell(r Row, threshold float64) string {
	if r.Baseline == 0 || r.Value == 0 {
		return "new"
	}
	worse := (r.Value - r.Baseline) / r.Baseline
	if r.Higher {
		worse = (r.Baseline - r.Value) / r.Baseline
	}
	cell := fmt.Sprintf("%s (%+.0f%%)", formatValue(r.Baseline, r.Unit), 100*(r.Value-r.Baseline)/r.Baseline)
	if worse > threshold {
		return "**" + cell + " worse**"
	}
	return cell
}

// ReadBaseline reads a baseline file.
func ReadBaseline(path string) (Baseline, error) {
	var b Baseline
	data, err := os.ReadFile(path)
	if err != nil {
		return b, err
	}
	if err := json.Unmarshal(data, &b); err != nil {
		return b, fmt.Errorf("baseline %s: %w", path, err)
	}
	return b, nil
}

// WriteBaseline writes the rows as a baseline file.
func WriteBaseline(path, note string, rows []Row) error {
	b := Baseline{Note: note, Rows: map[string]float64{}}
	for _, r := range rows {
		b.Rows[r.Key] = math.Round(r.Value*100) / 100
	}
	data, err := json.MarshalIndent(b, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(data, '\n'), 0o644)
}

// WriteMarkdown writes the table, the regressions and the notes.
func WriteMarkdown(w io.Writer, cfg Config, res *Result, regs []Regression, baseline string) error {
	fmt.Fprintf(w, "# distcache pipeline benchmark\n\n")
	la, _ := os.ReadFile("/proc/loadavg")
	load := strings.Join(strings.Fields(string(la))[:min(3, len(strings.Fields(string(la))))], " ")
	fsync := cfg.RedisAppendFsync
	if fsync == "" {
		fsync = "always"
	}
	fmt.Fprintf(w, "%s, GOMAXPROCS=%d, load average at the end %s, the pipeline's Redis with appendfsync %s. Each figure is the median of %d runs; its peer was measured in the same runs.\n\n",
		res.Started.UTC().Format(time.RFC3339), runtime.GOMAXPROCS(0), load, fsync, cfg.Runs)
	fmt.Fprintln(w, "| measure | value | runs | peer (same run) | ratio | goal | baseline |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|---|")
	for _, r := range res.Rows {
		runs := make([]string, len(r.Runs))
		for i, x := range r.Runs {
			runs[i] = formatValue(x, r.Unit)
		}
		fmt.Fprintf(w, "| %s | %s %s | %s | %s | %s | %s | %s |\n", r.Measure, formatValue(r.Value, r.Unit), r.Unit, strings.Join(runs, " / "), r.Peer, r.Ratio, r.Goal, baselineCell(r, 0.2))
	}
	fmt.Fprintf(w, "\nLatency is measured in process at an edge (a distcache.Client holding every item): each writer commits a batch "+
		"of updates and records the time COMMIT returned; the edge reports each change it applied (WithOnChange) and the item's value is read from its memory then "+
		"(a sweep of the items in flight every 100 ms catches values that arrive without a change of the stream); a commit a stage shows before its writer recorded it counts as 0 ms; "+
		"two more watchers time the stages in the same runs: a read-committed Kafka consumer of the topic (commit → broker) and an XREAD "+
		"tail of the generation's change stream (commit → Redis). Each watcher is a client of its own, so its own delivery delays show in "+
		"its tail (a stage's p99.9 can exceed the edge's). Before each run PostgreSQL is vacuumed and the Redis primary's append-only file rewritten (BGREWRITEAOF, "+
		"waited for), so that neither the autovacuum nor the AOF rewrite a run's writes call for lands in the middle of the next; a rewrite or save that still begins during "+
		"a run shows in the stalls notes below.\n\n![latency distribution](latency.png)\n\n")
	writeComparison(w, baseline, regs, res.Notes)
	return nil
}

// ErrRegression is returned (with -strict) when a figure regressed.
var ErrRegression = errors.New("bench: regression over 20% against the baseline")

// writeComparison writes the regressions against the baseline file and the notes, after a table.
func writeComparison(w io.Writer, baseline string, regs []Regression, notes []string) {
	if len(regs) == 0 {
		fmt.Fprintf(w, "Compared with %s: no figure worse by more than 20%%.\n", baseline)
	} else {
		fmt.Fprintf(w, "Compared with %s: **%d figure(s) worse by more than 20%%**\n\n", baseline, len(regs))
		for _, g := range regs {
			fmt.Fprintf(w, "- %s: %.2f, baseline %.2f (%.0f%% worse)\n", g.Key, g.Value, g.Baseline, 100*g.Change)
		}
	}
	for _, n := range notes {
		fmt.Fprintf(w, "\n- %s\n", n)
	}
}
