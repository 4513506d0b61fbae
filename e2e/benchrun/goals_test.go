package benchrun

import (
	"bytes"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/distcache/distcache/e2e/pipeline"
)

// fakeRun is a latency run at rate whose p99 grows with the rate: 4 ms per 1,000 events/s.
func fakeRun(rate int) LatencyRun {
	p99 := time.Duration(rate) * 4 * time.Microsecond
	return LatencyRun{Target: rate, Achieved: float64(rate), Edge: Dist{P99: p99, P999: 2 * p99}}
}

func TestMaxRateSearch(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		known     []int
		wantTried []int
		wantValue float64
	}{
		// 10k passes (40 ms): doubles to 20k (80 ms, pass), 40k fails, bisects 30k (fail), 25k (100 ms: fail).
		{"up from the configured rates", []int{1000, 10000}, []int{20000, 40000, 30000, 25000}, 20000},
		// Only 40k configured, failing: halves to 20k (pass), bisects 30k, 25k.
		{"down when the configured rate fails", []int{40000}, []int{20000, 30000, 25000}, 20000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			known := map[int][]LatencyRun{}
			for _, r := range tt.known {
				known[r] = []LatencyRun{fakeRun(r), fakeRun(r), fakeRun(r)}
			}
			var tried []int
			res := &Result{}
			err := maxRateSearch(Config{Rates: tt.known}, res, func(string, ...any) {}, known, func(rate int) (LatencyRun, error) {
				tried = append(tried, rate)
				return fakeRun(rate), nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(tried, tt.wantTried) {
				t.Errorf("rates tried = %v, want %v", tried, tt.wantTried)
			}
			if len(res.Rows) != 1 || res.Rows[0].Key != "max_rate_p99_100ms" || res.Rows[0].Value != tt.wantValue {
				t.Fatalf("rows = %+v, want one max_rate_p99_100ms of %v", res.Rows, tt.wantValue)
			}
			if !strings.Contains(res.Rows[0].Ratio, "target 25000/s") {
				t.Errorf("ratio %q does not name the lowest failing rate 25000/s", res.Rows[0].Ratio)
			}
		})
	}
}

func TestMaxRateSearchShortfall(t *testing.T) {
	t.Parallel()
	// A rate whose achieved rate falls short of 95% of its target fails whatever its p99.
	known := map[int][]LatencyRun{10000: {fakeRun(10000)}}
	res := &Result{}
	err := maxRateSearch(Config{Rates: []int{10000}}, res, func(string, ...any) {}, known, func(rate int) (LatencyRun, error) {
		r := fakeRun(1000)
		r.Target, r.Achieved = rate, float64(min(rate, 11000)) // the writers top out at 11,000/s
		return r, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := res.Rows[0].Value; got != 10000 {
		t.Errorf("max rate = %v, want 10000 (20000, 15000 and 12500/s achieved only 11000/s)", got)
	}
}

func TestProcStatAndTree(t *testing.T) {
	t.Parallel()
	// Field 2 may hold spaces and parentheses; utime 14, stime 15, cutime 16, cstime 17.
	s, err := parseProcStat("42 (postgres: a (b) c) S 7 42 42 0 -1 4194560 100 0 0 0 150 50 30 20 20 0 1 0 100 1000 10")
	if err != nil {
		t.Fatal(err)
	}
	if s.ppid != 7 || s.cpu != 200*clockTick || s.kids != 50*clockTick {
		t.Errorf("parsed %+v, want ppid 7, cpu 2s, kids 0.5s", s)
	}
	if _, err := parseProcStat("42 (x) S 1 2"); err == nil {
		t.Error("a short stat line: got no error")
	}
	all := map[int]procStat{
		10: {ppid: 1, cpu: time.Second, kids: time.Second}, // postmaster, with reaped backends
		11: {ppid: 10, cpu: 2 * time.Second},               // a backend
		12: {ppid: 11, cpu: 3 * time.Second},               // its child
		20: {ppid: 99, cpu: 5 * time.Second, kids: time.Hour},
		99: {ppid: 1, cpu: 7 * time.Second, kids: time.Hour}, // the bench: its children are the others
	}
	got := treeCPU(all, []pipeline.Proc{{Name: "postgresql", PID: 10}, {Name: "redis", PID: 20}, {Name: "gone", PID: 30}}, 99)
	want := map[string]time.Duration{"postgresql": 7 * time.Second, "redis": 5*time.Second + time.Hour, "gone": 0, selfProc: 7 * time.Second}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: got %v, want %v", k, got[k], v)
		}
	}
}

func TestCPURows(t *testing.T) {
	t.Parallel()
	r := LatencyRun{Events: 1000, CPU: map[string]time.Duration{"postgresql": 100 * time.Millisecond, "redis primary": 20 * time.Millisecond}}
	res := &Result{}
	addCPURows(res, 10000, []LatencyRun{r})
	if len(res.Rows) != 3 {
		t.Fatalf("rows = %+v, want postgresql, redis primary, total", res.Rows)
	}
	if res.Rows[0].Key != "cpu_us_per_event_postgresql_10000" || res.Rows[0].Value != 100 {
		t.Errorf("first row %+v, want postgresql at 100 µs/event (the biggest first)", res.Rows[0])
	}
	if res.Rows[1].Key != "cpu_us_per_event_redis_primary_10000" || res.Rows[1].Value != 20 {
		t.Errorf("second row %+v, want redis primary at 20 µs/event", res.Rows[1])
	}
	if res.Rows[2].Key != "cpu_us_per_event_total_10000" || res.Rows[2].Value != 120 {
		t.Errorf("total row %+v, want 120 µs/event", res.Rows[2])
	}
}

func TestParseCompressions(t *testing.T) {
	t.Parallel()
	got, err := ParseCompressions("none, LZ4,zstd")
	if err != nil || !slices.Equal(got, []string{"none", "lz4", "zstd"}) {
		t.Errorf("got %v, %v; want [none lz4 zstd]", got, err)
	}
	for _, bad := range []string{"none", "none,brotli", "lz4,lz4", ""} {
		if _, err := ParseCompressions(bad); err == nil {
			t.Errorf("ParseCompressions(%q): got no error", bad)
		}
	}
}

func TestLatencyGoals(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		rate int
		q    string
		want string
	}{{1000, "p99", "p99 ≤ 10 ms"}, {10000, "p99", "p99 ≤ 50 ms"}, {10000, "p99.9", "p99.9 ≤ 100 ms"}, {1000, "p50", ""}} {
		if got := latencyGoal(tt.rate, tt.q); got != tt.want {
			t.Errorf("latencyGoal(%d, %s) = %q, want %q", tt.rate, tt.q, got, tt.want)
		}
	}
}

func TestBaselineColumn(t *testing.T) {
	t.Parallel()
	rows := []Row{
		{Key: "lat", Value: 13, Unit: "ms"},
		{Key: "thr", Value: 95, Unit: "events/s", Higher: true},
		{Key: "new", Value: 5, Unit: "ms"},
	}
	MarkBaseline(rows, Baseline{Rows: map[string]float64{"lat": 10, "thr": 100}})
	for i, want := range []string{"**10.00 (+30%) worse**", "100 (-5%)", "new"} {
		if got := baselineCell(rows[i], 0.2); got != want {
			t.Errorf("%s: baseline cell %q, want %q", rows[i].Key, got, want)
		}
	}
	var md bytes.Buffer
	if err := WriteMarkdown(&md, Config{Runs: 3}, &Result{Rows: []Row{{Key: "lat", Measure: "m", Value: 13, Unit: "ms", Runs: []float64{12, 13, 14}, Baseline: 10}}}, nil, "baseline.json"); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(md.String(), "| m | 13.00 ms | 12.00 / 13.00 / 14.00 |") || !strings.Contains(md.String(), "**10.00 (+30%) worse** |") {
		t.Errorf("table row missing its runs or baseline flag:\n%s", md.String())
	}
}
