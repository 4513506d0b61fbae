// Command producer-bench measures the cache-producer's write path on real
// components and prints a table of medians:
//
//   - raw SET: pipelined go-redis SET of the same projected values (the peer);
//   - Publisher.Apply: the same writes through distcache.Publisher alone
//     (version guard + change stream, no Kafka, no bookkeeping);
//   - fan-out: events/s from the broker into Redis for one topic feeding two
//     projections (fanout.Manager, new generations each run);
//   - replay: a topic replayed into a new generation (backfill.Replay), the
//     Backfill activity's path;
//   - rebuild: a generation built by a replay and kept by a live consumer
//     (fanout.Manager), then Redis emptied (FLUSHALL): the time from the
//     FLUSHALL until the consumer has noticed the loss and rebuilt the
//     generation in place (issue #15), with the replay of the same records
//     in the same run as its peer.
//
// It starts its own redis-server and kafkad (tools/devstack) unless -redis
// and -kafka name running ones. -n sets the topic size of the fan-out runs;
// -replay-n the size of the replay topic (use -replay-n 1000000 for the 1M
// goal).
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/distcache/distcache/libs/distcache"
	"github.com/distcache/distcache/libs/events"
	"github.com/distcache/distcache/libs/projection"
	"github.com/distcache/distcache/services/cache-producer/internal/backfill"
	"github.com/distcache/distcache/services/cache-producer/internal/fanout"
	"github.com/distcache/distcache/services/cache-producer/internal/feed"
	"github.com/distcache/distcache/services/cache-producer/internal/gctune"
	"github.com/distcache/distcache/services/cache-producer/internal/ledger"
	"github.com/distcache/distcache/services/cache-producer/internal/projector"
	"github.com/distcache/distcache/tools/devstack"
	"github.com/distcache/distcache/workflows"
)

// gcPercent is the GC setting of the producer's measurements.
var gcPercent = gctune.GCPercent

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if gctune.Tune().Percent == "" { // as the cache-producer runs (GOGC overrides)
		gcPercent = debug.SetGCPercent(-1)
		debug.SetGCPercent(gcPercent)
	}
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "producer-bench:", err)
		stop()
		os.Exit(1)
	}
}

var (
	byEmail = projection.Definition{
		Name: "bench_by_email", Model: "bench_users", KeyTemplate: "{email}", LowercaseKey: true,
		Fields: []string{"id", "name", "email"},
		Filter: &projection.Filter{Field: "status", Op: projection.OpIn, Values: []string{"active", "trial"}},
	}
	byID = projection.Definition{
		Name: "bench_by_id", Model: "bench_users", KeyTemplate: "user:{id}", Fields: []string{"id", "status", "org"},
	}
)

type result struct {
	name  string
	n     int
	times []time.Duration
	cpu   []float64 // Redis CPU seconds per run
	note  string
}

// cpuPerRecord is the median Redis CPU per record, in µs.
func (r result) cpuPerRecord() string {
	if len(r.cpu) == 0 {
		return "-"
	}
	s := slices.Clone(r.cpu)
	slices.Sort(s)
	return fmt.Sprintf("%.2f", s[len(s)/2]*1e6/float64(r.n))
}

// redisCPU is Redis's CPU time so far (INFO cpu: user + system), in seconds.
func redisCPU(ctx context.Context, rdb *redis.Client) float64 {
	info, err := rdb.Info(ctx, "cpu").Result()
	if err != nil {
		return 0
	}
	var t float64
	for _, l := range strings.Split(info, "\r\n") {
		for _, f := range []string{"used_cpu_user:", "used_cpu_sys:"} {
			if v, ok := strings.CutPrefix(l, f); ok {
				x, _ := strconv.ParseFloat(v, 64)
				t += x
			}
		}
	}
	return t
}

func (r result) median() time.Duration {
	s := slices.Clone(r.times)
	slices.Sort(s)
	return s[len(s)/2]
}

func (r result) rate() float64 { return float64(r.n) / r.median().Seconds() }

func run(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("producer-bench", flag.ContinueOnError)
	n := fs.Int("n", 200_000, "records in the fan-out topic")
	replayN := fs.Int("replay-n", 200_000, "records in the replay topic (1000000 for the 1M goal)")
	runs := fs.Int("runs", 3, "runs per measurement (the median is reported)")
	batch := fs.Int("batch", 5000, "live consumer batch size (the cache-producer's default), also the raw peer's pipeline size")
	replayBatch := fs.Int("replay-batch", 5000, "replay batch size")
	redisAddr := fs.String("redis", "", "use this Redis instead of starting one")
	kafkaAddr := fs.String("kafka", "", "use this broker instead of starting one")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the measurements to this file")
	layout := fs.String("index-layout", "log1", "index layout of the generations the measurements create: log1 (the producer's default) or hash16 (the layout before it)")
	indexCache := fs.Int("index-cache", projector.DefaultIndexCacheEntries, "the producers' in-memory index budget (PRODUCER_INDEX_CACHE_ENTRIES)")
	only := fs.String("only", "", "run only this measurement: raw, apply, multi, fanout, read, replay, rebuild (with replay, its peer)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *runs < 1 || *n < 1 || *replayN < 1 {
		return fmt.Errorf("-runs, -n and -replay-n must be positive")
	}
	dir, err := os.MkdirTemp("", "producer-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	if *redisAddr == "" {
		r, err := devstack.StartRedis(ctx, devstack.RedisConfig{Dir: filepath.Join(dir, "redis"), Mode: devstack.Attached})
		if err != nil {
			return fmt.Errorf("start redis: %w", err)
		}
		defer r.Stop()
		*redisAddr = r.Addr
	}
	if *kafkaAddr == "" {
		bin, err := kafkadBin()
		if err != nil {
			return err
		}
		k, err := devstack.StartKafka(ctx, devstack.KafkaConfig{Bin: bin, Dir: filepath.Join(dir, "kafka"), Mode: devstack.Attached})
		if err != nil {
			return fmt.Errorf("start kafka: %w", err)
		}
		defer k.Stop()
		*kafkaAddr = k.Addr
	}
	// Minute-long timeouts: a FLUSHALL of millions of keys, or a pipeline into a Redis growing
	// its dictionary, takes seconds (make bench-scale runs this at millions of records).
	rdb := redis.NewClient(&redis.Options{Addr: *redisAddr, PoolSize: 16, ReadTimeout: time.Minute, WriteTimeout: time.Minute})
	defer rdb.Close()
	pub, err := distcache.NewPublisher(rdb)
	if err != nil {
		return err
	}
	led := ledger.New(rdb, 0)
	format, err := ledger.ParseFormat(*layout)
	if err != nil {
		return fmt.Errorf("-index-layout: %w", err)
	}
	if err := led.SetNewFormat(format); err != nil {
		return err
	}
	if *indexCache < 0 {
		return fmt.Errorf("-index-cache must not be negative")
	}
	newWriter := func() *projector.Writer { return projector.NewWriter(pub, led, projector.WithIndexCache(*indexCache)) }
	kopts := []kgo.Opt{kgo.SeedBrokers(*kafkaAddr)}

	fmt.Fprintf(out, "producing %d records (fan-out topic) and %d (replay topic)...\n", *n, *replayN)
	topic, err := produce(ctx, *kafkaAddr, "bench", "bench_users", *n)
	if err != nil {
		return err
	}
	replayTopic := topic
	if *replayN != *n {
		if replayTopic, err = produce(ctx, *kafkaAddr, "benchreplay", "bench_users", *replayN); err != nil {
			return err
		}
	}
	values := projectedValues(*n)
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	want := func(name string) bool {
		return *only == "" || *only == name || name == "raw" || *only == "rebuild" && name == "replay"
	}

	var results []result
	// The peer runs as a plain go-redis program would, with Go's default
	// GOGC; the producer's measurements run with its own setting
	// (gctune.GCPercent, what the cache-producer binary uses). The peer
	// is also measured at that setting, for the record.
	raw := result{name: "raw pipelined SET (go-redis, GOGC=100)", n: *n}
	rawTuned := result{name: "raw pipelined SET (go-redis, GOGC=" + strconv.Itoa(gcPercent) + ")", n: *n, note: "for the record; ratios use the row above"}
	// rawRun writes the n values with pipelined SETs, batch by batch.
	rawRun := func() (time.Duration, float64, error) {
		runtime.GC()
		if err := rdb.FlushAll(ctx).Err(); err != nil {
			return 0, 0, err
		}
		t0, c0 := time.Now(), redisCPU(ctx, rdb)
		for i := 0; i < *n; i += *batch {
			pipe := rdb.Pipeline()
			for j := i; j < min(i+*batch, *n); j++ {
				pipe.Set(ctx, "raw:user:"+strconv.Itoa(j), values[j], 0)
			}
			if _, err := pipe.Exec(ctx); err != nil {
				return 0, 0, err
			}
		}
		return time.Since(t0), redisCPU(ctx, rdb) - c0, nil
	}
	for run := range 2 * *runs {
		cur := &raw
		if run%2 == 1 {
			cur = &rawTuned
			debug.SetGCPercent(gcPercent)
		} else {
			debug.SetGCPercent(100)
		}
		took, cpu, err := rawRun()
		if err != nil {
			return err
		}
		cur.times = append(cur.times, took)
		cur.cpu = append(cur.cpu, cpu)
	}
	debug.SetGCPercent(gcPercent)
	results = append(results, raw, rawTuned)

	apply := result{name: "Publisher.Apply alone (1 projection)", n: *n}
	for run := range *runs {
		if !want("apply") {
			break
		}
		if err := rdb.FlushAll(ctx).Err(); err != nil {
			return err
		}
		t0, c0 := time.Now(), redisCPU(ctx, rdb)
		changes := make([]distcache.Change, 0, *batch)
		for i := 0; i < *n; i += *batch {
			changes = changes[:0]
			for j := i; j < min(i+*batch, *n); j++ {
				changes = append(changes, distcache.Change{Key: "user:" + strconv.Itoa(j), Value: values[j], Version: int64(j + 1), Op: distcache.OpSet})
			}
			if _, err := pub.Apply(ctx, "bench_apply", int64(run+1), changes); err != nil {
				return err
			}
		}
		apply.times = append(apply.times, time.Since(t0))
		apply.cpu = append(apply.cpu, redisCPU(ctx, rdb)-c0)
	}
	if len(apply.times) > 0 {
		results = append(results, apply)
	}

	multi := result{name: "peer: one Lua call per 100 writes", n: *n, note: "what a batched Publisher script could reach"}
	for run := range *runs {
		if !want("multi") {
			break
		}
		if err := rdb.FlushAll(ctx).Err(); err != nil {
			return err
		}
		stream := distcache.StreamKey("bench_multi", int64(run+1))
		t0, c0 := time.Now(), redisCPU(ctx, rdb)
		for i := 0; i < *n; i += *batch {
			pipe := rdb.Pipeline()
			for lo := i; lo < min(i+*batch, *n); lo += 100 {
				hi := min(lo+100, *n, i+*batch)
				keys := make([]string, 0, hi-lo+1)
				argv := make([]any, 0, 2+3*(hi-lo))
				argv = append(argv, "100000")
				for j := lo; j < hi; j++ {
					keys = append(keys, distcache.ValueKey("bench_multi", int64(run+1), "user:"+strconv.Itoa(j)))
					argv = append(argv, fmt.Sprintf("%016x", j+1), values[j], "user:"+strconv.Itoa(j))
				}
				keys = append(keys, stream)
				multiScript.EvalSha(ctx, pipe, keys, argv...)
			}
			if _, err := pipe.Exec(ctx); err != nil {
				if err := multiScript.Load(ctx, rdb).Err(); err != nil {
					return err
				}
				i -= *batch // retry after loading the script
				continue
			}
		}
		multi.times = append(multi.times, time.Since(t0))
		multi.cpu = append(multi.cpu, redisCPU(ctx, rdb)-c0)
	}
	if len(multi.times) > 0 {
		results = append(results, multi)
	}

	fan := result{name: "broker → Redis fan-out, 2 projections", n: *n, note: "records/s (each record: 2 generations)"}
	// On a noisy machine the speed of both drifts over tens of seconds:
	// each fan-out run is also paired with a raw SET run (Go's default GOGC)
	// just before it, and the median of the pairs' ratios is reported too.
	var paired []float64
	fanLayouts := ""
	for run := range *runs {
		if !want("fanout") {
			break
		}
		debug.SetGCPercent(100)
		rawTook, _, err := rawRun()
		debug.SetGCPercent(gcPercent)
		if err != nil {
			return err
		}
		runtime.GC()
		if err := rdb.FlushAll(ctx).Err(); err != nil {
			return err
		}
		gen := int64(run + 1)
		var gens []fanout.Generation
		for _, d := range []projection.Definition{byEmail, byID} {
			t, err := fanout.CompileTarget(d.Name, gen, d)
			if err != nil {
				return err
			}
			gens = append(gens, fanout.Generation{Target: t, Topic: topic, State: workflows.StateLive})
		}
		m, err := fanout.NewManager(fanout.Config{KafkaOpts: kopts, Writer: newWriter(), BatchSize: *batch})
		if err != nil {
			return err
		}
		t0, c0 := time.Now(), redisCPU(ctx, rdb)
		m.Update(ctx, gens)
		for {
			done := true
			for _, g := range gens {
				off, ok, err := led.Offset(ctx, g.Target.Projection, gen)
				if err != nil {
					m.Close()
					return err
				}
				if !ok || off < int64(*n) {
					done = false
				}
			}
			if done {
				break
			}
			if ctx.Err() != nil {
				m.Close()
				return ctx.Err()
			}
			time.Sleep(2 * time.Millisecond) // polling a benchmark's end, not a test
		}
		fan.times = append(fan.times, time.Since(t0))
		paired = append(paired, rawTook.Seconds()/fan.times[len(fan.times)-1].Seconds())
		fan.cpu = append(fan.cpu, redisCPU(ctx, rdb)-c0)
		m.Close()
		var ended []string
		for _, g := range gens {
			f, err := led.IndexFormat(ctx, g.Target.Projection, gen)
			if err != nil {
				return err
			}
			ended = append(ended, g.Target.Projection+" "+f.String())
		}
		fanLayouts = strings.Join(ended, ", ")
	}
	if len(fan.times) > 0 {
		results = append(results, fan)
	}

	read := result{name: "broker read + decode only (no Redis)", n: *replayN}
	for range *runs {
		if !want("read") {
			break
		}
		t0, c0 := time.Now(), redisCPU(ctx, rdb)
		if err := readAll(ctx, kopts, replayTopic, *replayN, benchFields()); err != nil {
			return err
		}
		read.times = append(read.times, time.Since(t0))
		read.cpu = append(read.cpu, redisCPU(ctx, rdb)-c0)
	}
	if len(read.times) > 0 {
		results = append(results, read)
	}

	rep := result{name: "replay into a new generation (backfill)", n: *replayN, note: "1 projection (by_email)"}
	for run := range *runs {
		if !want("replay") {
			break
		}
		if err := rdb.FlushAll(ctx).Err(); err != nil {
			return err
		}
		t, err := fanout.CompileTarget(byEmail.Name, int64(100+run), byEmail)
		if err != nil {
			return err
		}
		t0, c0 := time.Now(), redisCPU(ctx, rdb)
		_, err = backfill.Replay(ctx, backfill.ReplayConfig{KafkaOpts: kopts, Writer: newWriter(), BatchSize: *replayBatch},
			t, replayTopic, workflows.BackfillProgress{EndOffset: int64(*replayN)}, nil)
		if err != nil {
			return err
		}
		rep.times = append(rep.times, time.Since(t0))
		rep.cpu = append(rep.cpu, redisCPU(ctx, rdb)-c0)
	}
	if len(rep.times) > 0 {
		results = append(results, rep)
	}

	// Each rebuild run first builds its generation with a replay of the same records, timed: the
	// peer measured next to it, so a machine whose speed drifts affects both alike.
	pairedReplay := result{name: "replay into a new generation (paired)", n: *replayN, note: "the replay each rebuild run starts from"}
	reb := result{name: "rebuild after FLUSHALL (data loss)", n: *replayN, note: "FLUSHALL → rebuilt, noticing included"}
	var detects, rebuildOnly []time.Duration
	var rebuildPaired, rebuildSelfPaired []float64
	for run := range *runs {
		if !want("rebuild") {
			break
		}
		replayed, took, detect, err := rebuildRun(ctx, rdb, newWriter, kopts, replayTopic, *replayN, *replayBatch, *batch, int64(200+run), out)
		if err != nil {
			return err
		}
		pairedReplay.times = append(pairedReplay.times, replayed)
		reb.times = append(reb.times, took)
		detects = append(detects, detect)
		rebuildOnly = append(rebuildOnly, took-detect)
		rebuildPaired = append(rebuildPaired, replayed.Seconds()/took.Seconds())
		rebuildSelfPaired = append(rebuildSelfPaired, replayed.Seconds()/(took-detect).Seconds())
	}
	if len(reb.times) > 0 {
		results = append(results, pairedReplay, reb)
	}

	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "measurement\trecords\truns\tmedian time\tmedian rate (/s)\tratio to raw SET\tRedis CPU µs/record\tnote\t")
	for _, r := range results {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%v\t%.0f\t%.3f×\t%s\t%s\t\n", r.name, r.n, len(r.times), r.median().Round(time.Millisecond), r.rate(), r.rate()/raw.rate(), r.cpuPerRecord(), r.note)
	}
	tw.Flush()
	if len(fan.times) > 0 {
		fmt.Fprintf(out, "fan-out: %.0f records/s = %.3f× raw SET (goal >= 0.3×); %.3f× the raw SET at GOGC=%d; writes/s (2 per record) %.0f = %.3f× raw SET\n",
			fan.rate(), fan.rate()/raw.rate(), fan.rate()/rawTuned.rate(), gcPercent, 2*fan.rate(), 2*fan.rate()/raw.rate())
		sorted := slices.Clone(paired)
		slices.Sort(sorted)
		parts := make([]string, len(paired))
		for i, r := range paired {
			parts[i] = fmt.Sprintf("%.3f", r)
		}
		fmt.Fprintf(out, "fan-out paired with a raw SET run just before each: median ratio %.3f× (goal >= 0.3×; runs: %s)\n",
			sorted[len(sorted)/2], strings.Join(parts, " "))
		fmt.Fprintf(out, "fan-out index layout: new generations %s, index budget %d entries; the last run's generations ended as: %s\n",
			*layout, *indexCache, fanLayouts)
	}
	if len(rep.times) > 0 {
		fmt.Fprintf(out, "replay of %d records: median %v (goal for 1,000,000: <= 10s)\n", *replayN, rep.median().Round(time.Millisecond))
	}
	if len(reb.times) > 0 {
		d, r := result{times: detects}, result{n: *replayN, times: rebuildOnly}
		fmt.Fprintf(out, "rebuild of %d records after FLUSHALL: median %v = %.0f records/s (goal for 1,000,000: <= 20s); loss noticed after %v (median), rebuild itself %v = %.0f records/s",
			*replayN, reb.median().Round(time.Millisecond), reb.rate(), d.median().Round(time.Millisecond), r.median().Round(time.Millisecond), r.rate())
		ratios := func(rs []float64) (float64, string) {
			sorted := slices.Clone(rs)
			slices.Sort(sorted)
			parts := make([]string, len(rs))
			for i, r := range rs {
				parts[i] = fmt.Sprintf("%.2f", r)
			}
			return sorted[len(sorted)/2], strings.Join(parts, " ")
		}
		all, allRuns := ratios(rebuildPaired)
		self, selfRuns := ratios(rebuildSelfPaired)
		fmt.Fprintf(out, "; against the paired replay (median ratio of rates): %.2f× with the noticing (runs %s), %.2f× the rebuild itself (runs %s)\n",
			all, allRuns, self, selfRuns)
	}
	return nil
}

// rebuildRun builds generation gen of byEmail from topic (n records) with a replay, lets a live
// consumer take it over, empties Redis (FLUSHALL) and returns the time until the consumer has
// rebuilt the generation (its rebuild swept, its offset back at n), and the part of it before the
// consumer noticed the loss. The generation's index count before and after must agree.
func rebuildRun(ctx context.Context, rdb *redis.Client, newWriter func() *projector.Writer, kopts []kgo.Opt,
	topic string, n, replayBatch, batch int, gen int64, out io.Writer) (replayed, took, detect time.Duration, err error) {
	took, detect, err = func() (time.Duration, time.Duration, error) {
		if err := rdb.FlushAll(ctx).Err(); err != nil {
			return 0, 0, err
		}
		runtime.GC()
		t0 := time.Now()
		t, err := fanout.CompileTarget(byEmail.Name, gen, byEmail)
		if err != nil {
			return 0, 0, err
		}
		w := newWriter()
		if _, err := backfill.Replay(ctx, backfill.ReplayConfig{KafkaOpts: kopts, Writer: w, BatchSize: replayBatch},
			t, topic, workflows.BackfillProgress{EndOffset: int64(n)}, nil); err != nil {
			return 0, 0, err
		}
		replayed = time.Since(t0)
		return rebuildAfterLoss(ctx, rdb, w, t, kopts, topic, n, batch, gen, out)
	}()
	return replayed, took, detect, err
}

// rebuildAfterLoss is the rest of rebuildRun, once generation t is replayed through w.
func rebuildAfterLoss(ctx context.Context, rdb *redis.Client, w *projector.Writer, t projector.Target, kopts []kgo.Opt,
	topic string, n, batch int, gen int64, out io.Writer) (took, detect time.Duration, err error) {
	countKey := ledger.IndexCountKey(byEmail.Name, gen)
	before, err := rdb.Get(ctx, countKey).Result()
	if err != nil {
		return 0, 0, fmt.Errorf("index count after the replay: %w", err)
	}
	// The consumer's own account of the rebuild (noticed, the superseded records read, finished).
	log := slog.New(slog.NewTextHandler(out, &slog.HandlerOptions{Level: slog.LevelInfo}))
	m, err := fanout.NewManager(fanout.Config{KafkaOpts: kopts, Writer: w, BatchSize: batch, Logger: log})
	if err != nil {
		return 0, 0, err
	}
	defer m.Close()
	m.Update(ctx, []fanout.Generation{{Target: t, Topic: topic, State: workflows.StateLive, StartOffset: int64(n)}})
	status := func() fanout.Status {
		for _, s := range m.Statuses() {
			if s.Generation == gen {
				return s
			}
		}
		return fanout.Status{}
	}
	poll := func(what string, limit time.Duration, cond func(fanout.Status) bool) error {
		deadline := time.Now().Add(limit)
		for !cond(status()) {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s: not within %v (status %+v)", what, limit, status())
			}
			time.Sleep(2 * time.Millisecond) // polling a benchmark's end, not a test
		}
		return nil
	}
	if err := poll("the live consumer takes the generation", time.Minute, func(s fanout.Status) bool { return s.Next == int64(n) }); err != nil {
		return 0, 0, err
	}
	t0 := time.Now()
	if err := rdb.FlushAll(ctx).Err(); err != nil {
		return 0, 0, err
	}
	if err := poll("the loss noticed", time.Minute, func(s fanout.Status) bool { return s.Rebuild != nil }); err != nil {
		return 0, 0, err
	}
	detect = time.Since(t0)
	if err := poll("the generation rebuilt", 10*time.Minute, func(s fanout.Status) bool { return s.Rebuild == nil && s.Next == int64(n) }); err != nil {
		return 0, 0, err
	}
	took = time.Since(t0)
	after, err := rdb.Get(ctx, countKey).Result()
	if err != nil {
		return 0, 0, fmt.Errorf("index count after the rebuild: %w", err)
	}
	if after != before {
		return 0, 0, fmt.Errorf("the rebuilt generation has %s index entries, the replayed one had %s", after, before)
	}
	fmt.Fprintf(out, "rebuild run g%d: %d index entries before and after; FLUSHALL noticed after %v, rebuilt after %v\n",
		gen, mustAtoi(after), detect.Round(time.Millisecond), took.Round(time.Millisecond))
	return took, detect, nil
}

func mustAtoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}

// benchFields is what the fan-out decodes of each payload: the fields the
// two projections read.
func benchFields() feed.Fields {
	var ps []*projection.Projection
	for _, d := range []projection.Definition{byEmail, byID} {
		p, err := projection.Compile(d)
		if err != nil {
			panic(err) // the definitions above are valid
		}
		ps = append(ps, p)
	}
	return feed.FieldsOf(ps...)
}

// readAll reads topic from the start until n records are read, through the
// producer's reader (decoding them as the producer does, keeping the fields
// in keep).
func readAll(ctx context.Context, kopts []kgo.Opt, topic string, n int, keep feed.Fields) error {
	rd, err := feed.NewReader(feed.Config{KafkaOpts: kopts, Topic: topic, Until: int64(n), Fields: keep})
	if err != nil {
		return err
	}
	defer rd.Close()
	return rd.Run(ctx, func(feed.Batch) error { return nil })
}

// multiScript is the Publisher's version-guarded set + stream append, looped
// over many keys in one call (standalone Redis only): the peer that shows how
// much of Publisher.Apply's cost is per-call overhead.
var multiScript = redis.NewScript(`
local n = #KEYS - 1
local stream = KEYS[#KEYS]
for i = 1, n do
  local v, payload, ukey = ARGV[3*i-1], ARGV[3*i], ARGV[3*i+1]
  local cur = redis.call('GET', KEYS[i])
  local ok = true
  if cur and string.len(cur) >= 16 then
    local ch, cl = tonumber(string.sub(cur, 1, 8), 16), tonumber(string.sub(cur, 9, 16), 16)
    local nh, nl = tonumber(string.sub(v, 1, 8), 16), tonumber(string.sub(v, 9, 16), 16)
    if ch > nh or (ch == nh and cl >= nl) then ok = false end
  end
  if ok then
    redis.call('SET', KEYS[i], v .. 's' .. payload)
    redis.call('XADD', stream, 'MAXLEN', '~', ARGV[1], '*', 'k', ukey, 'v', v, 'o', 's', 'd', payload)
  end
end
return n
`)

func kafkadBin() (string, error) {
	d, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(d, "go.work")); err == nil {
			p := filepath.Join(d, ".run", "bin", "kafkad")
			if _, err := os.Stat(p); err != nil {
				return "", fmt.Errorf("kafkad not built at %s (make tools, or pass -kafka)", p)
			}
			return p, nil
		}
		parent := filepath.Dir(d)
		if parent == d {
			return "", fmt.Errorf("no go.work above the working directory (pass -kafka)")
		}
		d = parent
	}
}

func payload(i int) map[string]any {
	return map[string]any{
		"id": strconv.Itoa(i), "email": "User" + strconv.Itoa(i) + "@Example.com", "name": "User Number " + strconv.Itoa(i),
		"status": []string{"active", "trial", "active", "gone"}[i%4], "org": "org-" + strconv.Itoa(i%97),
		"created_at": "2026-01-02T03:04:05Z", "bio": "a short biography that the projections do not keep",
	}
}

func projectedValues(n int) [][]byte {
	out := make([][]byte, n)
	for i := range out {
		b, _ := json.Marshal(map[string]any{"id": strconv.Itoa(i), "name": "User Number " + strconv.Itoa(i), "email": "user" + strconv.Itoa(i) + "@example.com"})
		out[i] = b
	}
	return out
}

// produce writes n upserts (distinct keys) to <prefix>.<aggregate> and
// returns the topic.
func produce(ctx context.Context, addr, prefix, aggregate string, n int) (string, error) {
	topic := events.Topic(prefix, aggregate)
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.ProducerLinger(5*time.Millisecond),
		kgo.ProducerBatchCompression(kgo.Lz4Compression()), // as core-publisher writes by default (PUBLISHER_COMPRESSION=lz4)
		kgo.ProducerBatchMaxBytes(1<<20), kgo.MaxBufferedRecords(100_000), kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		return "", err
	}
	defer cl.Close()
	compact := "compact"
	res, err := kadm.NewClient(cl).CreateTopics(ctx, 1, 1, map[string]*string{"cleanup.policy": &compact}, topic)
	if err == nil {
		err = res.Error()
	}
	if err != nil {
		return "", fmt.Errorf("create topic %s: %w", topic, err)
	}
	errc := make(chan error, 1)
	for i := range n {
		b, _ := json.Marshal(payload(i))
		r, err := events.ToRecord(events.Envelope{Aggregate: aggregate, Key: strconv.Itoa(i), Version: 1, Op: events.OpUpsert,
			Payload: b, EventID: events.NewEventID(), SourceTime: time.Now()}, prefix)
		if err != nil {
			return "", err
		}
		cl.Produce(ctx, r, func(_ *kgo.Record, err error) {
			if err != nil {
				select {
				case errc <- err:
				default:
				}
			}
		})
	}
	if err := cl.Flush(ctx); err != nil {
		return "", err
	}
	select {
	case err := <-errc:
		return "", fmt.Errorf("produce: %w", err)
	default:
	}
	return topic, nil
}
