// Command kafkad runs franz-go's kfake as a standalone Kafka-protocol broker for the local stack:
// one broker on a fixed loopback address, with its state persisted in a data directory and
// compaction applied to topics created with cleanup.policy=compact.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(ctx, os.Args[1:], log); err != nil {
		log.Error("kafkad failed", "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, log *slog.Logger) error {
	fs := flag.NewFlagSet("kafkad", flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:59092", "listen address (host:port)")
	dataDir := fs.String("data-dir", "", "directory for persisted state; empty keeps everything in memory")
	syncWrites := fs.Bool("sync-writes", false, "fsync every produced batch")
	logLevel := fs.String("log-level", "warn", "the broker's own log: none, error, warn, info or debug")
	if err := fs.Parse(args); err != nil {
		return err
	}
	host, portStr, err := net.SplitHostPort(*addr)
	if err != nil {
		return fmt.Errorf("-addr %q: %w", *addr, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return fmt.Errorf("-addr %q: port: %w", *addr, err)
	}
	level, ok := map[string]kfake.LogLevel{
		"none": kfake.LogLevelNone, "error": kfake.LogLevelError, "warn": kfake.LogLevelWarn,
		"info": kfake.LogLevelInfo, "debug": kfake.LogLevelDebug,
	}[*logLevel]
	if !ok {
		return fmt.Errorf("-log-level %q: want none, error, warn, info or debug", *logLevel)
	}
	opts := []kfake.Opt{
		kfake.WithLogger(kfake.BasicLogger(os.Stderr, level)),
		kfake.NumBrokers(1),
		kfake.DefaultNumPartitions(1),
		kfake.ClusterID("distcache-local"),
	}
	if *dataDir != "" {
		opts = append(opts, kfake.DataDir(*dataDir))
	}
	if *syncWrites {
		opts = append(opts, kfake.SyncWrites())
	}
	if *dataDir != "" {
		if err := recoverDataDir(ctx, *dataDir, opts, log); err != nil {
			return err
		}
	}
	c, err := kfake.NewCluster(append(opts,
		kfake.Ports(port),
		kfake.ListenFn(func(network, _ string) (net.Listener, error) {
			return net.Listen(network, net.JoinHostPort(host, strconv.Itoa(port)))
		}))...)
	if err != nil {
		return fmt.Errorf("start broker: %w", err)
	}
	log.Info("kafkad listening", "addrs", c.ListenAddrs(), "data_dir", *dataDir)
	<-ctx.Done()
	c.Close() // persists state to the data directory
	if *dataDir != "" {
		if err := markClean(*dataDir); err != nil {
			return err
		}
	}
	log.Info("kafkad stopped")
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// cleanFile, in the data directory, says the broker last stopped cleanly (kfake wrote its
// snapshots). kafkad removes it while it runs; missing at start, it means a crash.
const cleanFile = "kafkad.clean"

func markClean(dir string) error {
	if err := os.WriteFile(filepath.Join(dir, cleanFile), nil, 0o644); err != nil {
		return fmt.Errorf("mark clean shutdown: %w", err)
	}
	return nil
}

// recoverDataDir checks how the broker last stopped. After a crash it loads the data directory on
// a private port first, writes the abort markers of the transactions the crash left open (see
// repairOpenTransactions), and shuts that broker down cleanly, so that clients only ever see the
// repaired log.
func recoverDataDir(ctx context.Context, dir string, opts []kfake.Opt, log *slog.Logger) error {
	err := os.Remove(filepath.Join(dir, cleanFile))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("data dir: %w", err)
	}
	wasClean := err == nil
	if _, err := os.Stat(filepath.Join(dir, "meta.json")); errors.Is(err, fs.ErrNotExist) || wasClean {
		return nil // a new data directory, or a clean shutdown
	}
	start := time.Now()
	c, err := kfake.NewCluster(opts...) // a random loopback port nobody else knows
	if err != nil {
		return fmt.Errorf("crash recovery: load data dir: %w", err)
	}
	rctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	fixed, err := repairOpenTransactions(rctx, c.ListenAddrs()[0], log)
	c.Close()
	if err != nil {
		return fmt.Errorf("crash recovery: %w", err)
	}
	log.Info("kafkad: recovered from an unclean shutdown", "abort_markers_written", len(fixed), "took", time.Since(start).Round(time.Millisecond))
	return nil
}
