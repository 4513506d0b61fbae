package bench_test

import (
	"context"
	"sync"
	"testing"

	"github.com/redis/rueidis"

	"github.com/distcache/distcache/libs/distcache"
	"github.com/distcache/distcache/libs/distcache/bench/internal/benchkit"
	"github.com/distcache/distcache/tools/devstacktest"
)

// Benchmarks of issue 3's table, each next to its peer on the same 100,000
// keys with 200-byte values. `go run ./cmd/distcache-bench` prints the same
// figures as a table with ratios and propagation percentiles.

var (
	benchOnce sync.Once
	benchEnv  *benchkit.Env
	benchDC   *distcache.Client
	benchRC   rueidis.Client
	benchErr  error
)

func env(b *testing.B) *benchkit.Env {
	b.Helper()
	benchOnce.Do(func() {
		ctx := context.Background()
		if benchEnv, benchErr = benchkit.Start(ctx, 100_000, 200); benchErr != nil {
			return
		}
		devstacktest.AtExit(func() error { benchEnv.Close(); return nil })
		if benchDC, benchErr = benchEnv.Client(ctx); benchErr != nil {
			return
		}
		benchRC, benchErr = benchEnv.Rueidis(ctx, nil)
	})
	if benchErr != nil {
		b.Fatal(benchErr)
	}
	return benchEnv
}

func BenchmarkHit(b *testing.B) {
	e := env(b)
	bc, err := e.Bigcache(e.Keys)
	if err != nil {
		b.Fatal(err)
	}
	defer bc.Close()
	for _, par := range []bool{false, true} {
		name := "serial"
		if par {
			name = "parallel"
		}
		b.Run(name+"/distcache", benchkit.HitDistcache(benchDC, e.Keys, par))
		b.Run(name+"/rueidis-DoCache", benchkit.HitRueidis(benchRC, e.Keys, par))
		b.Run(name+"/bigcache", benchkit.HitBigcache(bc, e.Keys, par))
	}
	b.Run("serial/distcache-GetAppend", benchkit.HitDistcacheAppend(benchDC, e.Keys))
}

func BenchmarkMiss(b *testing.B) {
	e := env(b)
	ctx := context.Background()
	for _, par := range []bool{false, true} {
		name := "serial"
		if par {
			name = "parallel"
		}
		b.Run(name+"/distcache", e.MissDistcache(ctx, par))
		b.Run(name+"/go-redis-GET", e.MissGoRedis(ctx, par))
	}
	// Both sides in the same goroutines, op by op (MissInterleavedParallel):
	// metrics distcache-ns/miss, go-redis-ns/get and their ratio.
	b.Run("parallel-interleaved", func(b *testing.B) {
		d, g, err := e.MissInterleavedParallel(ctx, max(b.N, 20_000))
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(d.Nanoseconds()), "distcache-ns/miss")
		b.ReportMetric(float64(g.Nanoseconds()), "go-redis-ns/get")
		b.ReportMetric(float64(d)/float64(g), "ratio")
		b.ReportMetric(0, "ns/op")
	})
}

func BenchmarkPublish(b *testing.B) {
	e := env(b)
	ctx := context.Background()
	b.Run("distcache-Apply-100", e.PublishApply(ctx, 100))
	b.Run("go-redis-pipelined-SET-100", e.RawPipelinedSet(ctx, 100))
}

func BenchmarkPropagation(b *testing.B) {
	e := env(b)
	ctx := context.Background()
	for _, via := range []struct {
		name    string
		replica bool
	}{{"distcache-tail-primary", false}, {"distcache-tail-replica", true}} {
		b.Run(via.name, func(b *testing.B) {
			p, err := e.Propagation(ctx, max(b.N, 200), via.replica)
			if err != nil {
				b.Fatal(err)
			}
			report(b, p)
		})
	}
	for _, floor := range []struct {
		name   string
		setGen bool
	}{{"SetGen-bare-XREAD", true}, {"XADD-bare-XREAD", false}} {
		// The stream path without distcache's tail (see StreamFloor).
		b.Run(floor.name, func(b *testing.B) {
			p, err := e.StreamFloor(ctx, max(b.N, 200), floor.setGen)
			if err != nil {
				b.Fatal(err)
			}
			report(b, p)
		})
	}
	b.Run("rueidis-invalidation", func(b *testing.B) {
		p, err := e.RueidisInvalidation(ctx, max(b.N, 200))
		if err != nil {
			b.Fatal(err)
		}
		report(b, p)
	})
}

func report(b *testing.B, d benchkit.Delays) {
	b.ReportMetric(float64(d.FromReturn.P50.Nanoseconds()), "p50-ns")
	b.ReportMetric(float64(d.FromReturn.P99.Nanoseconds()), "p99-ns")
	b.ReportMetric(float64(d.FromStart.P50.Nanoseconds()), "p50-from-start-ns")
	b.ReportMetric(float64(d.FromStart.P99.Nanoseconds()), "p99-from-start-ns")
	b.ReportMetric(0, "ns/op")
}
