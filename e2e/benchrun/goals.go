package benchrun

import (
	"fmt"
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

// maxRateSearch finds the highest rate at which commit → edge p99 stays under 100 ms: it doubles
// the target from twice the highest of cfg.Rates until a run fails (p99 ≥ 100 ms, or less than
// 95% of the target achieved), then bisects twice between the last rate that passed and the
// first that failed. One run per rate, each as long as the latency runs: at most 8 runs.
func maxRateSearch(cfg Config, res *Result, say func(string, ...any), measure func(rate int) (LatencyRun, error)) error {
	pass := func(r LatencyRun) bool { return r.Edge.P99 < maxRateP99 && r.Achieved >= 0.95*float64(r.Target) }
	var best, failed *LatencyRun
	try := func(rate int) (bool, error) {
		r, err := measure(rate)
		if err != nil {
			return false, err
		}
		ok := pass(r)
		say("bench: max-rate search: target %d/s achieved %.0f/s, p99 %.2f ms, p99.9 %.2f ms: %s",
			rate, r.Achieved, ms(r.Edge.P99), ms(r.Edge.P999), map[bool]string{true: "pass", false: "fail"}[ok])
		if ok {
			if best == nil || r.Achieved > best.Achieved {
				best = &r
			}
		} else if failed == nil || r.Target < failed.Target {
			failed = &r
		}
		return ok, nil
	}
	lo := slices.Max(cfg.Rates)
	hi := 0
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
	for range 2 {
		if hi == 0 || hi-lo < lo/10 {
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
	row := Row{Key: "max_rate_p99_100ms", Measure: "highest write rate with commit → edge p99 < 100 ms (one run per rate)", Unit: "events/s", Higher: true,
		Goal: "report it"}
	if best != nil {
		row.Value = best.Achieved
		row.Peer = fmt.Sprintf("p99 %.2f ms, p99.9 %.2f ms at it", ms(best.Edge.P99), ms(best.Edge.P999))
	} else {
		row.Peer = fmt.Sprintf("no rate above %d/s passed", slices.Max(cfg.Rates))
	}
	if failed != nil {
		row.Ratio = fmt.Sprintf("first failing: target %d/s, achieved %.0f/s, p99 %.2f ms", failed.Target, failed.Achieved, ms(failed.Edge.P99))
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
