// Command bench is `make bench`: it measures distcache's whole pipeline and its parts (package
// benchrun), prints one table, writes it as Markdown to bench/results/latest.md with a PNG of the
// latency distribution (bench/results/latency.png), and compares it with e2e/baseline.json,
// flagging every figure more than 20% worse. It exits non-zero on a regression only with -strict
// (the machine may be noisy).
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	"github.com/distcache/distcache/e2e/benchrun"
	"github.com/distcache/distcache/e2e/pipeline"
)

func main() {
	pipeline.QuietRedisLog()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	quick := fs.Bool("quick", false, "one short run of everything, for trying it")
	strict := fs.Bool("strict", false, "exit non-zero when a figure is more than 20% worse than the baseline")
	update := fs.Bool("update-baseline", false, "write this run's figures to the baseline file")
	runs := fs.Int("runs", 0, "runs of each measure (default 3; 1 with -quick)")
	dur := fs.Duration("duration", 0, "length of one latency run (default 10s; 4s with -quick)")
	items := fs.Int("items", 0, "rows in the sample table (default 20000; 5000 with -quick)")
	noParts := fs.Bool("no-parts", false, "skip the parts' own benchmarks (pipeline latency and memory only)")
	results := fs.String("results", "", "results directory (default <repo>/bench/results)")
	baseline := fs.String("baseline", "", "baseline file (default <repo>/e2e/baseline.json)")
	profile := fs.String("profile", "", "write CPU profiles of every service and the bench, taken during the first run at the highest rate (or -profile-rate), to this directory")
	profileRate := fs.Int("profile-rate", 0, "with -profile: profile the first run at this rate (one of the latency runs' rates, 1000 or 10000) instead of the highest")
	appendFsync := fs.String("redis-appendfsync", "everysec", "the pipeline's Redis nodes' appendfsync: everysec (Redis's default with appendonly, and deploy/compose's) or always (nothing acknowledged is lost when a node is killed, as the chaos run needs; each write waits for an fsync, and the primary stalls while it rewrites its AOF)")
	compression := fs.String("compression", "", "compare the publisher's compression codecs at the highest rate, e.g. none,lz4,zstd (the first is the reference)")
	sf := scaleFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	repo, err := repoRoot()
	if err != nil {
		return err
	}
	if *sf.on {
		return runScale(ctx, repo, sf, *quick, *strict, *update, *results, *baseline, out)
	}
	if *results == "" {
		*results = filepath.Join(repo, "bench", "results")
	}
	if *baseline == "" {
		*baseline = filepath.Join(repo, "e2e", "baseline.json")
	}
	runDir, err := os.MkdirTemp("", "distcache-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(runDir)
	cfg := benchrun.Full(repo, runDir)
	if *quick {
		cfg = benchrun.Quick(repo, runDir)
	}
	if *runs > 0 {
		cfg.Runs = *runs
	}
	if *dur > 0 {
		cfg.Duration = *dur
	}
	if *items > 0 {
		cfg.Items = *items
	}
	cfg.Parts = !*noParts
	cfg.ProfileDir = *profile
	if *profileRate != 0 && !slices.Contains(cfg.Rates, *profileRate) {
		return fmt.Errorf("-profile-rate %d: not one of the latency runs' rates %v", *profileRate, cfg.Rates)
	}
	cfg.ProfileRate = *profileRate
	cfg.RedisAppendFsync = *appendFsync
	if *compression != "" {
		if cfg.Compressions, err = benchrun.ParseCompressions(*compression); err != nil {
			return err
		}
	}
	cfg.Out = out
	res, err := benchrun.Run(ctx, cfg)
	if err != nil {
		return err
	}
	base, berr := benchrun.ReadBaseline(*baseline)
	var regs []benchrun.Regression
	if berr == nil {
		regs = benchrun.Compare(res.Rows, base, 0.2)
		benchrun.MarkBaseline(res.Rows, base)
	} else if !errors.Is(berr, os.ErrNotExist) {
		return berr
	}
	var md bytes.Buffer
	if err := benchrun.WriteMarkdown(&md, cfg, res, regs, filepath.Base(*baseline)); err != nil {
		return err
	}
	fmt.Fprintf(out, "\n%s", md.String())
	if err := os.MkdirAll(*results, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(*results, "latest.md"), md.Bytes(), 0o644); err != nil {
		return err
	}
	var png bytes.Buffer
	if err := benchrun.WriteChart(&png, "distcache: commit -> edge-visible latency (CDF, up to the largest p99.9)", res.Series); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(*results, "latency.png"), png.Bytes(), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(out, "\nwrote %s and %s\n", filepath.Join(*results, "latest.md"), filepath.Join(*results, "latency.png"))
	if *update {
		note := fmt.Sprintf("figures of `make bench` on %s (GOMAXPROCS 2, shared machine); regenerate with go run ./e2e/cmd/bench -update-baseline", time.Now().UTC().Format("2006-01-02"))
		if err := benchrun.WriteBaseline(*baseline, note, res.Rows); err != nil {
			return err
		}
		fmt.Fprintf(out, "baseline updated: %s\n", *baseline)
	} else if berr != nil {
		fmt.Fprintf(out, "no baseline at %s (write one with -update-baseline)\n", *baseline)
	}
	if len(regs) > 0 && *strict {
		return fmt.Errorf("%w: %d figure(s)", benchrun.ErrRegression, len(regs))
	}
	return nil
}

func repoRoot() (string, error) {
	d, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(d, "go.work")); err == nil {
			return d, nil
		}
		parent := filepath.Dir(d)
		if parent == d {
			return "", errors.New("run bench inside the repository (no go.work above the working directory)")
		}
		d = parent
	}
}
