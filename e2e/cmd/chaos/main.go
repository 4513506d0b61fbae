// Command chaos runs distcache's fault-injection scenario (package chaos) on a stack of its own:
// under a steady write load it kills with SIGKILL and restarts the core-publisher, the
// cache-producer, the Redis primary, the broker and PostgreSQL in turn, cuts an edge's connection
// to Redis, then checks that every committed change reached Redis and every edge, that no edge's
// value ever went backwards, and that cached keys were served with zero errors throughout. It
// prints what it did and what it verified, as counts, and exits non-zero on any loss.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/distcache/distcache/e2e/chaos"
	"github.com/distcache/distcache/e2e/pipeline"
)

func main() {
	pipeline.QuietRedisLog()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "chaos:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("chaos", flag.ContinueOnError)
	short := fs.Bool("short", false, "the short run of `make test` (2,000 items, 200 updates/s, 3 s outages)")
	items := fs.Int("items", 20_000, "rows in the sample table (every edge holds all of them)")
	rate := fs.Int("rate", 500, "updates committed per second")
	down := fs.Duration("down", 5*time.Second, "how long each component stays dead")
	settle := fs.Duration("settle", 10*time.Second, "load after each restart before the next fault")
	converge := fs.Duration("converge", 3*time.Minute, "deadline for the final state to agree everywhere")
	runDir := fs.String("run-dir", "", "where the stack, binaries and logs go (default: a new temporary directory, removed on success)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	repo, err := repoRoot()
	if err != nil {
		return err
	}
	dir := *runDir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "distcache-chaos-"); err != nil {
			return err
		}
	}
	cfg := chaos.Config{RepoDir: repo, RunDir: dir, Items: *items, Rate: *rate, Down: *down, Settle: *settle, Converge: *converge, Out: out}
	if *short {
		cfg = chaos.Short(repo, dir)
		cfg.Out = out
	}
	if cfg.Items < 2 || cfg.Rate < 1 || cfg.Down <= 0 || cfg.Settle <= 0 {
		return errors.New("-items must be at least 2, -rate, -down and -settle positive")
	}
	rep, err := chaos.Run(ctx, cfg)
	if len(rep.Faults) > 0 || rep.Checked > 0 {
		rep.Print(out)
	}
	if err != nil {
		return fmt.Errorf("%w (run directory kept: %s)", err, dir)
	}
	if *runDir == "" {
		_ = os.RemoveAll(dir)
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
			return "", errors.New("run chaos inside the repository (no go.work above the working directory)")
		}
		d = parent
	}
}
