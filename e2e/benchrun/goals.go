package benchrun

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"
)

// latencyGoal is issue #19's goal for a latency row, "" when it sets none.
func latencyGoal(rate int, quantile string) string {
	switch {
	case rate == 1000 && quantile == "p99":
		return "p99 ≤ 10 ms"
	case rate == 10000 && quantile == "p99":
		return "p99 ≤ 50 ms"
	case rate == 10000 && quantile == "p99.9":
		return "p99.9 ≤ 100 ms"
	}
	return ""
}

// cpuKey is the baseline key of a process's CPU per event at a rate: the name's letters and
// digits, lower case, joined by '_'.
func cpuKey(name string, rate int) string {
	f := strings.FieldsFunc(strings.ToLower(name), func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9')
	})
	return "cpu_us_per_event_" + strings.Join(f, "_") + "_" + strconv.Itoa(rate)
}

// addCPURows adds, for each process, its CPU µs per committed event at rate (median of the
// runs), next to the whole pipeline's.
func addCPURows(res *Result, rate int, rs []LatencyRun) {
	var names []string
	for _, r := range rs {
		for n := range r.CPU {
			if !slices.Contains(names, n) {
				names = append(names, n)
			}
		}
	}
	if len(names) == 0 {
		return
	}
	per := func(r LatencyRun, n string) float64 {
		if r.Events == 0 {
			return 0
		}
		return float64(r.CPU[n].Microseconds()) / float64(r.Events)
	}
	totals := make([]float64, len(rs))
	for i, r := range rs {
		for _, n := range names {
			totals[i] += per(r, n)
		}
	}
	total := median(totals)
	type proc struct {
		name string
		v    float64
		runs []float64
	}
	var ps []proc
	for _, n := range names {
		v := make([]float64, len(rs))
		for i, r := range rs {
			v[i] = per(r, n)
		}
		ps = append(ps, proc{n, median(v), v})
	}
	slices.SortStableFunc(ps, func(a, b proc) int { // the biggest first
		switch {
		case a.v > b.v:
			return -1
		case a.v < b.v:
			return 1
		}
		return 0
	})
	for _, p := range ps {
		share := ""
		if total > 0 {
			share = fmt.Sprintf("%.0f%% of the pipeline", 100*p.v/total)
		}
		res.add(Row{Key: cpuKey(p.name, rate), Measure: fmt.Sprintf("CPU per event at %d events/s: %s", rate, p.name), Value: p.v, Unit: "µs/event",
			Peer: fmt.Sprintf("whole pipeline %.1f µs/event", total), Ratio: share, Runs: p.runs})
	}
	res.add(Row{Key: cpuKey("total", rate), Measure: fmt.Sprintf("CPU per event at %d events/s: whole pipeline (every process above)", rate), Value: total, Unit: "µs/event",
		Peer: fmt.Sprintf("%.0f%% of 2 cores at the target rate", 100*total*float64(rate)/2e6), Runs: totals})
}

// maxRateP99 is the p99 the highest-rate search keeps under.
const maxRateP99 = 100 * time.Millisecond

// maxRateSearch finds the highest rate at which commit → edge p99 stays under 100 ms, starting
// from the regular runs (their medians): when the highest configured rate passes it doubles the
// target until a run fails (p99 ≥ 100 ms, or less than 95% of the target achieved), at most 4
// times; when none passes it halves the lowest failing one until a run passes (down to 250/s);
// then it bisects twice between the last rate that passed and the first that failed. One run
// per new rate, each as long as the latency runs: at most 6 more runs.
func maxRateSearch(cfg Config, res *Result, say func(string, ...any), known map[int][]LatencyRun, measure func(rate int) (LatencyRun, error)) error {
	type outcome struct {
		target        int
		achieved, p99 float64 // events/s, ms
		p999          float64
		runs          int
	}
	passes := func(o outcome) bool { return o.p99 < ms(maxRateP99) && o.achieved >= 0.95*float64(o.target) }
	var best, failed *outcome
	note := func(o outcome) bool {
		ok := passes(o)
		if ok && (best == nil || o.achieved > best.achieved) {
			best = &o
		}
		if !ok && (failed == nil || o.target < failed.target) {
			failed = &o
		}
		return ok
	}
	lo, hi := 0, 0
	for _, rate := range slices.Sorted(maps.Keys(known)) {
		rs := known[rate]
		col := func(f func(LatencyRun) float64) float64 {
			v := make([]float64, len(rs))
			for i, r := range rs {
				v[i] = f(r)
			}
			return median(v)
		}
		o := outcome{target: rate, runs: len(rs),
			achieved: col(func(r LatencyRun) float64 { return r.Achieved }),
			p99:      col(func(r LatencyRun) float64 { return ms(r.Edge.P99) }),
			p999:     col(func(r LatencyRun) float64 { return ms(r.Edge.P999) })}
		if note(o) {
			lo = rate
		} else if hi == 0 || rate < hi {
			hi = rate
		}
	}
	if hi != 0 && hi < lo { // a lower rate failed while a higher one passed: search above the higher
		hi = 0
	}
	try := func(rate int) (bool, error) {
		r, err := measure(rate)
		if err != nil {
			return false, err
		}
		ok := note(outcome{target: rate, runs: 1, achieved: r.Achieved, p99: ms(r.Edge.P99), p999: ms(r.Edge.P999)})
		say("bench: max-rate search: target %d/s achieved %.0f/s, p99 %.2f ms, p99.9 %.2f ms: %s",
			rate, r.Achieved, ms(r.Edge.P99), ms(r.Edge.P999), map[bool]string{true: "pass", false: "fail"}[ok])
		return ok, nil
	}
	switch {
	case lo > 0 && hi == 0:
		for rate, steps := 2*lo, 0; steps < 4; rate, steps = rate*2, steps+1 {
			ok, err := try(rate)
			if err != nil {
				return err
			}
			if !ok {
				hi = rate
				break
			}
			lo = rate
		}
	case lo == 0 && hi > 0:
		for rate, steps := hi/2, 0; steps < 4 && rate >= 250; rate, steps = rate/2, steps+1 {
			ok, err := try(rate)
			if err != nil {
				return err
			}
			if ok {
				lo = rate
				break
			}
			hi = rate
		}
	}
	for range 2 {
		if lo == 0 || hi == 0 || hi-lo < lo/10 {
			break
		}
		mid := (lo + hi) / 2
		ok, err := try(mid)
		if err != nil {
			return err
		}
		if ok {
			lo = mid
		} else {
			hi = mid
		}
	}
	row := Row{Key: "max_rate_p99_100ms", Measure: "highest write rate with commit → edge p99 < 100 ms (search: one run per new rate)", Unit: "events/s", Higher: true,
		Goal: "report it"}
	if best != nil {
		row.Value = best.achieved
		row.Peer = fmt.Sprintf("at target %d/s: p99 %.2f ms, p99.9 %.2f ms (%d run(s))", best.target, best.p99, best.p999, best.runs)
	} else {
		row.Peer = "no rate tried passed"
	}
	if failed != nil {
		row.Ratio = fmt.Sprintf("lowest failing: target %d/s, achieved %.0f/s, p99 %.2f ms", failed.target, failed.achieved, failed.p99)
	} else {
		row.Ratio = fmt.Sprintf("no failure up to %d/s", lo)
	}
	res.add(row)
	return nil
}

// shorten cuts s to n runes with an ellipsis.
func shorten(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n]) + "…"
}
