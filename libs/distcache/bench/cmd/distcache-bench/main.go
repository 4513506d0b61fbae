// Command distcache-bench measures the figures of issue 3's benchmark table
// and prints them as a Markdown table: distcache next to each peer (rueidis
// client-side caching, raw bigcache, bare go-redis), on the same keys, in the
// same run, each measured -count times (interleaved with its peer) and
// reported as the median.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/distcache/distcache/libs/distcache/bench/internal/benchkit"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "distcache-bench:", err)
		os.Exit(1)
	}
}

type result struct {
	ns     float64
	allocs int64
}

func run(ctx context.Context, args []string, out io.Writer) error {
	testing.Init()
	fs := flag.NewFlagSet("distcache-bench", flag.ContinueOnError)
	keys := fs.Int("keys", 100_000, "keys loaded")
	size := fs.Int("value", 200, "value size in bytes")
	count := fs.Int("count", 5, "runs of each measure (median reported)")
	benchtime := fs.Duration("benchtime", time.Second, "time per benchmark run")
	samples := fs.Int("samples", 2000, "propagation samples per run")
	memN := fs.Int("mem", 1_000_000, "entries for the memory measure (0: skip)")
	missN := fs.Int("miss-interleaved", 20_000, "misses of each side per interleaved miss run")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if err := flag.Set("test.benchtime", benchtime.String()); err != nil {
		return err
	}
	fmt.Fprintf(out, "loading %d keys of %d bytes...\n", *keys, *size)
	e, err := benchkit.Start(ctx, *keys, *size)
	if err != nil {
		return err
	}
	defer e.Close()
	dc, err := e.Client(ctx)
	if err != nil {
		return err
	}
	defer dc.Close(ctx)
	rc, err := e.Rueidis(ctx, nil)
	if err != nil {
		return err
	}
	defer rc.Close()
	bc, err := e.Bigcache(e.Keys)
	if err != nil {
		return err
	}
	defer bc.Close()

	benches := []struct {
		name string
		fn   func(*testing.B)
	}{
		{"hit serial: distcache Get", benchkit.HitDistcache(dc, e.Keys, false)},
		{"hit serial: distcache GetAppend", benchkit.HitDistcacheAppend(dc, e.Keys)},
		{"hit serial: rueidis DoCache", benchkit.HitRueidis(rc, e.Keys, false)},
		{"hit serial: bigcache Get", benchkit.HitBigcache(bc, e.Keys, false)},
		{"hit parallel: distcache Get", benchkit.HitDistcache(dc, e.Keys, true)},
		{"hit parallel: rueidis DoCache", benchkit.HitRueidis(rc, e.Keys, true)},
		{"hit parallel: bigcache Get", benchkit.HitBigcache(bc, e.Keys, true)},
		{"miss serial: distcache Get", e.MissDistcache(ctx, false)},
		{"miss serial: go-redis GET", e.MissGoRedis(ctx, false)},
		{"miss parallel: distcache Get", e.MissDistcache(ctx, true)},
		{"miss parallel: go-redis GET", e.MissGoRedis(ctx, true)},
		{"publish: distcache Apply (100/batch)", e.PublishApply(ctx, 100)},
		{"publish: go-redis pipelined SET (100/batch)", e.RawPipelinedSet(ctx, 100)},
	}
	res := map[string][]result{}
	for round := range *count {
		fmt.Fprintf(out, "round %d/%d\n", round+1, *count)
		// Rotate the order every round so that no measure always runs right
		// after the same neighbour (GC debt, cache state), and start each
		// from a collected heap.
		for j := range benches {
			bm := benches[(j+round)%len(benches)]
			if ctx.Err() != nil {
				return ctx.Err()
			}
			runtime.GC()
			r := testing.Benchmark(bm.fn)
			res[bm.name] = append(res[bm.name], result{float64(r.T.Nanoseconds()) / float64(r.N), r.AllocsPerOp()})
		}
	}
	fmt.Fprintln(out, "interleaved serial hits...")
	inter, err := benchkit.Interleaved(300, 5000, benchkit.HitOps(dc, rc, bc, e.Keys)...)
	if err != nil {
		return err
	}
	fmt.Fprintln(out, "interleaved serial misses...")
	var interMiss [][2]time.Duration
	for range *count {
		d, g, err := e.MissInterleaved(ctx, *missN)
		if err != nil {
			return err
		}
		interMiss = append(interMiss, [2]time.Duration{d, g})
	}
	fmt.Fprintln(out, "interleaved parallel misses...")
	var interMissPar [][2]time.Duration
	for range *count {
		d, g, err := e.MissInterleavedParallel(ctx, *missN)
		if err != nil {
			return err
		}
		interMissPar = append(interMissPar, [2]time.Duration{d, g})
	}
	var prop, propR, inval, propS, propRS, invalS, floorS, floorX [][2]time.Duration
	for round := range *count {
		fmt.Fprintf(out, "propagation round %d/%d\n", round+1, *count)
		p, err := e.Propagation(ctx, *samples, false)
		if err != nil {
			return err
		}
		q, err := e.RueidisInvalidation(ctx, *samples)
		if err != nil {
			return err
		}
		r, err := e.Propagation(ctx, *samples, true)
		if err != nil {
			return err
		}
		fs, err := e.StreamFloor(ctx, *samples, true)
		if err != nil {
			return err
		}
		fx, err := e.StreamFloor(ctx, *samples, false)
		if err != nil {
			return err
		}
		floorS = append(floorS, [2]time.Duration{fs.FromStart.P50, fs.FromStart.P99})
		floorX = append(floorX, [2]time.Duration{fx.FromStart.P50, fx.FromStart.P99})
		prop = append(prop, [2]time.Duration{p.FromReturn.P50, p.FromReturn.P99})
		propR = append(propR, [2]time.Duration{r.FromReturn.P50, r.FromReturn.P99})
		inval = append(inval, [2]time.Duration{q.FromReturn.P50, q.FromReturn.P99})
		propS = append(propS, [2]time.Duration{p.FromStart.P50, p.FromStart.P99})
		propRS = append(propRS, [2]time.Duration{r.FromStart.P50, r.FromStart.P99})
		invalS = append(invalS, [2]time.Duration{q.FromStart.P50, q.FromStart.P99})
	}
	var memDC, memBC float64
	if *memN > 0 {
		fmt.Fprintf(out, "memory: loading %d entries...\n", *memN)
		if memDC, memBC, err = e.MemoryPerEntry(ctx, *memN); err != nil {
			return err
		}
	}

	med := func(name string) result {
		rs := slices.Clone(res[name])
		slices.SortFunc(rs, func(a, b result) int {
			switch {
			case a.ns < b.ns:
				return -1
			case a.ns > b.ns:
				return 1
			}
			return 0
		})
		return rs[len(rs)/2]
	}
	medDur := func(v [][2]time.Duration, i int) time.Duration {
		d := make([]time.Duration, len(v))
		for j := range v {
			d[j] = v[j][i]
		}
		slices.Sort(d)
		return d[len(d)/2]
	}
	// pairRatio is the median over rounds of ours/peer measured in the same
	// round (adjacent in time), which resists the load drifting between
	// rounds on a shared machine better than a ratio of medians.
	pairRatio := func(ours, peer string, invert bool) float64 {
		var rs []float64
		for i := range res[ours] {
			r := res[ours][i].ns / res[peer][i].ns
			if invert {
				r = 1 / r
			}
			rs = append(rs, r)
		}
		slices.Sort(rs)
		return rs[len(rs)/2]
	}
	row := func(measure, ours, peer, ratio, goal string) {
		fmt.Fprintf(out, "| %s | %s | %s | %s | %s |\n", measure, ours, peer, ratio, goal)
	}
	ns := func(r result) string { return fmt.Sprintf("%.0f ns (%d allocs)", r.ns, r.allocs) }
	fmt.Fprintf(out, "\n%d keys, %d-byte values, median of %d runs, GOMAXPROCS=%d; ratios are medians of per-round ratios\n\n", *keys, *size, *count, runtime.GOMAXPROCS(0))
	fmt.Fprintln(out, "| measure | distcache | peer | ratio | goal |")
	fmt.Fprintln(out, "|---|---|---|---|---|")
	for _, mode := range []string{"serial", "parallel"} {
		d, r, b := med("hit "+mode+": distcache Get"), med("hit "+mode+": rueidis DoCache"), med("hit "+mode+": bigcache Get")
		row("local hit "+mode+" vs rueidis DoCache", ns(d), ns(r),
			fmt.Sprintf("%.2f×", pairRatio("hit "+mode+": distcache Get", "hit "+mode+": rueidis DoCache", false)), "≤ 0.8×")
		row("local hit "+mode+" vs raw bigcache Get", ns(d), ns(b),
			fmt.Sprintf("%.2f×", pairRatio("hit "+mode+": distcache Get", "hit "+mode+": bigcache Get", false)), "≤ 1.25×")
	}
	row("local hit serial, interleaved blocks, vs rueidis DoCache", fmt.Sprintf("%.0f ns", inter[0]), fmt.Sprintf("%.0f ns", inter[1]),
		fmt.Sprintf("%.2f×", inter[0]/inter[1]), "≤ 0.8×")
	row("local hit serial, interleaved blocks, vs raw bigcache Get", fmt.Sprintf("%.0f ns", inter[0]), fmt.Sprintf("%.0f ns", inter[2]),
		fmt.Sprintf("%.2f×", inter[0]/inter[2]), "≤ 1.25×")
	a := med("hit serial: distcache GetAppend")
	row("allocs per hit (Get / GetAppend)", fmt.Sprintf("%d / %d", med("hit serial: distcache Get").allocs, a.allocs),
		fmt.Sprintf("bigcache Get: %d", med("hit serial: bigcache Get").allocs), "", "≤ 1 / 0")
	for _, mode := range []string{"serial", "parallel"} {
		ours, peer := "miss "+mode+": distcache Get", "miss "+mode+": go-redis GET"
		what := "miss " + mode + " (one goroutine), from the replica, vs go-redis GET of the same key on it"
		if mode == "parallel" {
			what = fmt.Sprintf("miss parallel (%d goroutines), from the replica, vs go-redis GET of the same key on it",
				benchkit.MissParallelism*runtime.GOMAXPROCS(0))
		}
		row(what, ns(med(ours)), ns(med(peer)), fmt.Sprintf("%.2f×", pairRatio(ours, peer, false)), "≤ 1.1×")
	}
	{
		var rs []float64
		for _, m := range interMiss {
			rs = append(rs, float64(m[0])/float64(m[1]))
		}
		slices.Sort(rs)
		row("miss serial, interleaved op by op (same CPU placement), vs go-redis GET on the replica (p50 per read)",
			medDur(interMiss, 0).String(), medDur(interMiss, 1).String(), fmt.Sprintf("%.2f×", rs[len(rs)/2]), "≤ 1.1×")
	}
	{
		var rs []float64
		for _, m := range interMissPar {
			rs = append(rs, float64(m[0])/float64(m[1]))
		}
		slices.Sort(rs)
		row(fmt.Sprintf("miss parallel, interleaved op by op in %d goroutines, vs go-redis GET on the replica (mean latency per read)",
			benchkit.MissParallelism*runtime.GOMAXPROCS(0)),
			medDur(interMissPar, 0).String(), medDur(interMissPar, 1).String(), fmt.Sprintf("%.2f×", rs[len(rs)/2]), "≤ 1.1×")
	}
	for _, v := range []struct {
		what        string
		ours, peers [][2]time.Duration
	}{
		{"from Set returning, tail on the primary", prop, inval},
		{"from Set starting, tail on the primary", propS, invalS},
		{"from Set returning, tail on the replica", propR, inval},
		{"from Set starting, tail on the replica", propRS, invalS},
	} {
		p50, p99 := medDur(v.ours, 0), medDur(v.ours, 1)
		i50, i99 := medDur(v.peers, 0), medDur(v.peers, 1)
		ratio := "n/a (peer p50 is 0)"
		if i50 > 0 {
			ratio = fmt.Sprintf("%.2f× (p50)", float64(p50)/float64(i50))
		}
		row("propagation "+v.what+", to another client's local value (WithOnChange) (p50 / p99)", fmt.Sprintf("%v / %v", p50, p99),
			fmt.Sprintf("rueidis invalidation arriving %v / %v", i50, i99), ratio, "p50 ≤ 1.5×, p99 ≤ 1ms")
	}
	for _, v := range []struct {
		what string
		d    [][2]time.Duration
	}{
		{"Publisher.SetGen to a bare go-redis XREAD of the stream (no distcache tail)", floorS},
		{"plain XADD to a bare go-redis XREAD of the stream (no script, no tail)", floorX},
	} {
		row("propagation floor, from the write starting: "+v.what+" (p50 / p99)",
			fmt.Sprintf("%v / %v", medDur(v.d, 0), medDur(v.d, 1)),
			fmt.Sprintf("rueidis invalidation arriving %v / %v", medDur(invalS, 0), medDur(invalS, 1)),
			fmt.Sprintf("%.2f× (p50)", float64(medDur(v.d, 0))/float64(medDur(invalS, 0))), "(a floor, no goal)")
	}
	if *memN > 0 {
		row(fmt.Sprintf("heap per entry at %d entries", *memN), fmt.Sprintf("%.0f B", memDC), fmt.Sprintf("bigcache %.0f B", memBC),
			fmt.Sprintf("%.2f×", memDC/memBC), "≤ 1.15×")
	}
	pa, ps := med("publish: distcache Apply (100/batch)"), med("publish: go-redis pipelined SET (100/batch)")
	row("publisher throughput (pipelined)", fmt.Sprintf("%.0f/s", 1e9/pa.ns), fmt.Sprintf("go-redis SET %.0f/s", 1e9/ps.ns),
		fmt.Sprintf("%.2f×", pairRatio("publish: distcache Apply (100/batch)", "publish: go-redis pipelined SET (100/batch)", true)), "≥ 0.4×")
	return nil
}
