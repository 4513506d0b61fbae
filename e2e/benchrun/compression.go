package benchrun

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/distcache/distcache/e2e/pipeline"
)

// compressionBench runs the latency measure at the highest rate once per codec per run, the
// codecs interleaved, restarting the core-publisher with PUBLISHER_COMPRESSION=codec before
// each: the publisher's and the cache-producer's CPU per event, and the bytes per event a
// read-committed consumer fetches (the bench's broker watcher fetches what the producer does).
// The first codec is the reference of the ratios.
func compressionBench(ctx context.Context, cfg Config, res *Result, say func(string, ...any), p *pipeline.Pipeline,
	measure func(rate int) (LatencyRun, error)) error {
	rate := slices.Max(cfg.Rates)
	runs := map[string][]LatencyRun{}
	for i := range cfg.Runs {
		for _, codec := range cfg.Compressions {
			if err := p.Publisher.RestartWith(ctx, "PUBLISHER_COMPRESSION="+codec); err != nil {
				return err
			}
			r, err := measure(rate)
			if err != nil {
				return fmt.Errorf("compression %s: %w", codec, err)
			}
			say("bench: compression %s, run %d/%d at %d/s: achieved %.0f/s, p99 %.2f ms (%d unseen at the edge); CPU µs/event publisher %.1f, producer %.1f; fetched %.0f B/event (%.0f B/event decompressed)",
				codec, i+1, cfg.Runs, rate, r.Achieved, ms(r.Edge.P99), r.Edge.Unseen, perEvent(r, pipeline.NamePublisher), perEvent(r, pipeline.NameProducer),
				fetchPerEvent(r, false), fetchPerEvent(r, true))
			runs[codec] = append(runs[codec], r)
		}
	}
	if err := p.Publisher.RestartWith(ctx, "PUBLISHER_COMPRESSION="+cfg.Compressions[0]); err != nil {
		return err
	}
	med := func(codec string, f func(LatencyRun) float64) (float64, []float64) {
		var v []float64
		for _, r := range runs[codec] {
			v = append(v, f(r))
		}
		return median(v), v
	}
	ref := cfg.Compressions[0]
	for _, codec := range cfg.Compressions {
		for _, m := range []struct {
			key, measure, unit string
			f                  func(LatencyRun) float64
		}{
			{"cpu_publisher", "core-publisher CPU per event", "µs/event", func(r LatencyRun) float64 { return perEvent(r, pipeline.NamePublisher) }},
			{"cpu_producer", "cache-producer CPU per event (fetch, decompression, Redis writes)", "µs/event", func(r LatencyRun) float64 { return perEvent(r, pipeline.NameProducer) }},
			{"cpu_broker", "broker (kafkad) CPU per event", "µs/event", func(r LatencyRun) float64 { return perEvent(r, "broker (kafkad)") }},
			{"cpu_total", "whole pipeline CPU per event", "µs/event", func(r LatencyRun) float64 {
				var t float64
				for n := range r.CPU {
					t += perEvent(r, n)
				}
				return t
			}},
			{"fetch_bytes", "bytes fetched per event by a read-committed consumer", "B/event", func(r LatencyRun) float64 { return fetchPerEvent(r, false) }},
			{"p99", "commit → edge p99", "ms", func(r LatencyRun) float64 { return ms(r.Edge.P99) }},
		} {
			v, vs := med(codec, m.f)
			rv, _ := med(ref, m.f)
			row := Row{Key: "compression_" + codec + "_" + m.key, Measure: fmt.Sprintf("publisher compression %s at %d events/s: %s", codec, rate, m.measure),
				Value: v, Unit: m.unit, Runs: vs}
			if codec != ref {
				row.Peer = fmt.Sprintf("%s %s %s", ref, formatValue(rv, m.unit), m.unit)
				row.Ratio = ratio(v, rv)
			}
			res.add(row)
		}
	}
	return nil
}

func perEvent(r LatencyRun, proc string) float64 {
	if r.Events == 0 {
		return 0
	}
	return float64(r.CPU[proc].Microseconds()) / float64(r.Events)
}

func fetchPerEvent(r LatencyRun, raw bool) float64 {
	if r.Fetched.Records == 0 {
		return 0
	}
	b := r.Fetched.CompressedBytes
	if raw {
		b = r.Fetched.RawBytes
	}
	return float64(b) / float64(r.Fetched.Records)
}

// ParseCompressions reads the -compression flag: codecs separated by commas, each one of the
// publisher's (none, lz4, zstd, snappy, gzip), at least two.
func ParseCompressions(s string) ([]string, error) {
	known := []string{"none", "lz4", "zstd", "snappy", "gzip"}
	var out []string
	for _, c := range strings.Split(s, ",") {
		c = strings.ToLower(strings.TrimSpace(c))
		if !slices.Contains(known, c) {
			return nil, fmt.Errorf("-compression: %q is not one of %v", c, known)
		}
		if slices.Contains(out, c) {
			return nil, fmt.Errorf("-compression: %q twice", c)
		}
		out = append(out, c)
	}
	if len(out) < 2 {
		return nil, fmt.Errorf("-compression: want at least two codecs to compare, got %s", strconv.Quote(s))
	}
	return out, nil
}
