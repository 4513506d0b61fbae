package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/distcache/distcache/e2e/benchrun"
)

// scaleOpts are the flags of the -scale mode (make bench-scale).
type scaleOpts struct {
	on       *bool
	keys     *string
	edges    *string
	rate     *int
	dur      *time.Duration
	producer *bool
}

func scaleFlags(fs *flag.FlagSet) scaleOpts {
	return scaleOpts{
		on:       fs.Bool("scale", false, "the figures at scale instead (issue #19 §4): edge memory, warm start, producer fan-out and backfill, Redis memory at -scale-keys keys, and edges per Redis node; writes bench/results/scale.md, compared with e2e/baseline-scale.json"),
		keys:     fs.String("scale-keys", "", "with -scale: key counts, comma-separated (default 1000000,10000000; 100000 with -quick)"),
		edges:    fs.String("scale-edges", "", "with -scale: edge counts of the fan-out runs, comma-separated (default 10,100,1000; 10,100 with -quick; 0 for none)"),
		rate:     fs.Int("scale-rate", 0, "with -scale: changes/s written while the edges follow (default 200)"),
		dur:      fs.Duration("scale-duration", 0, "with -scale: length of one edges run (default 10s; 3s with -quick)"),
		producer: fs.Bool("scale-producer", true, "with -scale: run producer-bench's fan-out and backfill at each size"),
	}
}

func parseCounts(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" || f == "0" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n < 0 {
			return nil, fmt.Errorf("-scale-edges: %q is not a count of edges", f)
		}
		out = append(out, n)
	}
	return out, nil
}

func runScale(ctx context.Context, repo string, o scaleOpts, quick, strict, update bool, results, baseline string, out io.Writer) error {
	if results == "" {
		results = filepath.Join(repo, "bench", "results")
	}
	if baseline == "" {
		baseline = filepath.Join(repo, "e2e", "baseline-scale.json")
	}
	runDir, err := os.MkdirTemp("", "distcache-bench-scale-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(runDir)
	cfg := benchrun.DefaultScale(repo, runDir)
	if quick {
		cfg.Sizes, cfg.Edges, cfg.EdgeDuration = []int{100_000}, []int{10, 100}, 3*time.Second
	}
	if *o.keys != "" {
		if cfg.Sizes, err = benchrun.ParseSizes(*o.keys); err != nil {
			return fmt.Errorf("-scale-keys: %w", err)
		}
	}
	if *o.edges != "" {
		if cfg.Edges, err = parseCounts(*o.edges); err != nil {
			return err
		}
	}
	if *o.rate > 0 {
		cfg.EdgeRate = *o.rate
	}
	if *o.dur > 0 {
		cfg.EdgeDuration = *o.dur
	}
	cfg.Producer = *o.producer
	cfg.Out = out
	res, err := benchrun.RunScale(ctx, cfg)
	if err != nil {
		return err
	}
	base, berr := benchrun.ReadBaseline(baseline)
	var regs []benchrun.Regression
	if berr == nil {
		regs = benchrun.Compare(res.Rows, base, 0.2)
	} else if !errors.Is(berr, os.ErrNotExist) {
		return berr
	}
	var md bytes.Buffer
	if err := benchrun.WriteScaleMarkdown(&md, cfg, res, regs, filepath.Base(baseline)); err != nil {
		return err
	}
	fmt.Fprintf(out, "\n%s", md.String())
	if err := os.MkdirAll(results, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(results, "scale.md"), md.Bytes(), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(out, "\nwrote %s\n", filepath.Join(results, "scale.md"))
	if update {
		note := fmt.Sprintf("figures of `make bench-scale` on %s (GOMAXPROCS 2, shared machine); regenerate with make bench-scale BENCH_FLAGS=-update-baseline", time.Now().UTC().Format("2006-01-02"))
		if err := benchrun.WriteBaseline(baseline, note, res.Rows); err != nil {
			return err
		}
		fmt.Fprintf(out, "baseline updated: %s\n", baseline)
	} else if berr != nil {
		fmt.Fprintf(out, "no baseline at %s (write one with -update-baseline)\n", baseline)
	}
	if len(regs) > 0 && strict {
		return fmt.Errorf("%w: %d figure(s)", benchrun.ErrRegression, len(regs))
	}
	return nil
}
