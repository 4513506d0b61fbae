// Command distcache-snapshot-bench measures the local snapshot (WithSnapshot)
// of an edge holding many entries: the file's size, the time Close takes to
// write it, and the restart (New loading it until the first Get is served)
// next to the restart it replaces, a warm start that refetches the same keys
// from Redis. It prints a Markdown table.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"time"

	"github.com/distcache/distcache/libs/distcache/bench/internal/benchkit"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "distcache-snapshot-bench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("distcache-snapshot-bench", flag.ContinueOnError)
	entries := fs.Int("entries", 1_000_000, "entries the edge holds")
	size := fs.Int("value", 200, "value size in bytes")
	count := fs.Int("count", 3, "restarts of each kind (median reported)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	fmt.Fprintf(out, "loading %d entries of %d bytes into Redis and into an edge...\n", *entries, *size)
	f, err := benchkit.SnapshotRestart(ctx, *entries, *size, *count)
	if err != nil {
		return err
	}
	ms := func(d time.Duration) string { return fmt.Sprintf("%.0f ms", float64(d.Microseconds())/1000) }
	fmt.Fprintf(out, "\n%d entries, %d-byte values, median of %d restarts each, GOMAXPROCS=%d\n\n",
		f.Entries, *size, *count, runtime.GOMAXPROCS(0))
	fmt.Fprintln(out, "| measure | snapshot | peer |")
	fmt.Fprintln(out, "|---|---|---|")
	fmt.Fprintf(out, "| snapshot file size | %d bytes (%.1f MiB, %.0f B/entry) | |\n",
		f.FileBytes, float64(f.FileBytes)/(1<<20), float64(f.FileBytes)/float64(f.Entries))
	fmt.Fprintf(out, "| snapshot write (Close) | %s (CPU %s) | |\n", ms(f.Write), ms(f.WriteCPU))
	fmt.Fprintf(out, "| restart: New until the first Get served | %s (New alone %s; CPU %s) | warm start refetching the keys from Redis: %s (CPU %s) |\n",
		ms(f.Restart), ms(f.RestartNew), ms(f.RestartCPU), ms(f.WarmStart), ms(f.WarmStartCPU))
	fmt.Fprintf(out, "| restart with Redis down | %s | warm start: fails |\n", ms(f.RestartRedisDown))
	fmt.Fprintln(out, "\nwall times on a shared machine vary with its load; CPU is the process's user+system time (all threads) meanwhile")
	return nil
}
