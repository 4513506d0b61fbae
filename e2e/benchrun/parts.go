package benchrun

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// goBench runs `go test -run ^$ -bench pattern -json` in dir and returns every run's metrics per
// benchmark name (the -N GOMAXPROCS suffix removed) and unit ("ns/op", "allocs/op", "p99-ns").
func goBench(ctx context.Context, dir, pattern, benchtime string, count int) (benchRuns, error) {
	cmd := exec.CommandContext(ctx, "go", "test", "-run", "^$", "-bench", pattern, "-benchtime", benchtime,
		"-count", strconv.Itoa(count), "-benchmem", "-json", ".")
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	text := joinTestOutput(out)
	if err != nil {
		return nil, fmt.Errorf("go test -bench in %s: %w\n%s%s", dir, err, stderr.String(), tail(text, 2000))
	}
	return parseBenchMetrics(text), nil
}

// benchRuns are go test -bench results: name → unit → the value of each run.
type benchRuns map[string]map[string][]float64

// median of a benchmark's metric over its runs (0 when absent).
func (b benchRuns) median(name, unit string) float64 { return median(b[name][unit]) }

// runs of a benchmark's metric.
func (b benchRuns) runs(name, unit string) []float64 { return b[name][unit] }

var benchName = regexp.MustCompile(`^(Benchmark\S+?)(?:-\d+)?\s+\d+\s+(.*)$`)

// parseBenchMetrics reads every "value unit" pair of each benchmark line.
func parseBenchMetrics(text string) benchRuns {
	res := benchRuns{}
	for _, line := range strings.Split(text, "\n") {
		m := benchName.FindStringSubmatch(strings.TrimSpace(line))
		if m == nil {
			continue
		}
		f := strings.Fields(m[2])
		for i := 0; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				break
			}
			if res[m[1]] == nil {
				res[m[1]] = map[string][]float64{}
			}
			res[m[1]][f[i+1]] = append(res[m[1]][f[i+1]], v)
		}
	}
	return res
}

// joinTestOutput concatenates the Output fields of `go test -json` events.
func joinTestOutput(b []byte) string {
	var sb strings.Builder
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	for sc.Scan() {
		var ev struct{ Action, Output string }
		if json.Unmarshal(sc.Bytes(), &ev) == nil && ev.Action == "output" {
			sb.WriteString(ev.Output)
		}
	}
	return sb.String()
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// runProgram runs `go run ./pkg args...` in dir and returns its standard output.
func runProgram(ctx context.Context, dir, pkg string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "go", append([]string{"run", pkg}, args...)...)
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("go run %s in %s: %w\n%s", pkg, filepath.Base(dir), err, tail(stderr.String(), 2000))
	}
	return string(out), nil
}

var publisherMedian = regexp.MustCompile(`MEDIAN throughput\s+(\S+)\s+([0-9.]+) ev/s`)

// parsePublisher returns publisher-bench's median throughput per producer mode.
func parsePublisher(out string) map[string]float64 {
	res := map[string]float64{}
	for _, m := range publisherMedian.FindAllStringSubmatch(out, -1) {
		if v, err := strconv.ParseFloat(m[2], 64); err == nil {
			res[m[1]] = v
		}
	}
	return res
}

var publisherRun = regexp.MustCompile(`(?m)^[ \t]*throughput \([^)]*\)\s+(\S+)\s+\d+\s+([0-9.]+) ev/s`)

// parsePublisherRuns returns publisher-bench's throughput of each run per producer mode.
func parsePublisherRuns(out string) map[string][]float64 {
	res := map[string][]float64{}
	for _, m := range publisherRun.FindAllStringSubmatch(out, -1) {
		if v, err := strconv.ParseFloat(m[2], 64); err == nil {
			res[m[1]] = append(res[m[1]], v)
		}
	}
	return res
}

// parseProducer returns producer-bench's median rate (/s) per measurement name.
func parseProducer(out string, names ...string) map[string]float64 {
	res := map[string]float64{}
	for _, line := range strings.Split(out, "\n") {
		for _, n := range names {
			i := strings.Index(line, n)
			if i < 0 {
				continue
			}
			f := strings.Fields(line[i+len(n):]) // records, runs, median time, median rate, ratio, note
			if len(f) >= 4 {
				if v, err := strconv.ParseFloat(f[3], 64); err == nil {
					res[n] = v
				}
			}
		}
	}
	return res
}

// pairedRatioLine starts producer-bench's line with the median of the
// ratios of fan-out runs to the raw SET runs paired with them.
const pairedRatioLine = "fan-out paired with a raw SET run just before each: median ratio "

// parsePairedRatio returns that median ratio, or 0 when the line is absent.
func parsePairedRatio(out string) float64 {
	for _, line := range strings.Split(out, "\n") {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), pairedRatioLine); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				if v, err := strconv.ParseFloat(strings.TrimSuffix(f[0], "×"), 64); err == nil {
					return v
				}
			}
		}
	}
	return 0
}
