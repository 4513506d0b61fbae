// Command core-publisher relays a core service's outbox
// (distcache_outbox) to compacted, single-partition Kafka topics, one per
// model, in commit order per key, and backloads models' tables.
//
// Usage:
//
//	core-publisher                  run the relay and the HTTP endpoints (config from PUBLISHER_* env)
//	core-publisher backload MODEL   backload one model now (fresh run) and exit; the relay publishes it
//	core-publisher models           list the backloadable models and exit
//
// See internal/config for the environment variables.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"syscall"
	"time"

	"github.com/distcache/distcache/libs/svcconfig/apitoken"
	"github.com/distcache/distcache/libs/svcconfig/httpserve"
	"github.com/distcache/distcache/migrations"
	"github.com/distcache/distcache/services/core-publisher/internal/backload"
	"github.com/distcache/distcache/services/core-publisher/internal/config"
	"github.com/distcache/distcache/services/core-publisher/internal/httpapi"
	"github.com/distcache/distcache/services/core-publisher/internal/producer"
	"github.com/distcache/distcache/services/core-publisher/internal/pubmetrics"
	"github.com/distcache/distcache/services/core-publisher/internal/relay"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "core-publisher:", err)
		os.Exit(1)
	}
}

const usage = `usage:
  core-publisher                  run the relay and the HTTP endpoints
  core-publisher backload MODEL   backload one model now and exit
  core-publisher models           list the backloadable models and exit
configuration: PUBLISHER_* environment variables (see internal/config)`

// run is the whole program; main only translates its error into an exit code.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cmd := ""
	if len(args) > 0 {
		cmd = args[0]
	}
	switch cmd {
	case "", "serve":
	case "backload":
		if len(args) != 2 {
			return fmt.Errorf("backload: want exactly one model\n%s", usage)
		}
	case "models":
	case "help", "-h", "--help":
		fmt.Fprintln(stdout, usage)
		return nil
	default:
		return fmt.Errorf("unknown command %q\n%s", cmd, usage)
	}

	cfg, err := config.FromEnv(getenv)
	if err != nil {
		return fmt.Errorf("configuration: %w", err)
	}
	var h slog.Handler = slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: cfg.LogLevel})
	if !cfg.LogJSON {
		h = slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: cfg.LogLevel})
	}
	log := slog.New(h).With("service", "core-publisher")

	// The outbox's schema is applied by `make migrate` or the chart's migration Job, with
	// credentials of its own; the service only checks it (PUBLISHER_MIGRATE=true applies it).
	if err := migrations.Ensure(ctx, cfg.DatabaseURL, migrations.Core, cfg.Migrate); err != nil {
		return fmt.Errorf("outbox schema (%s): %w (or set %s=true to apply it at start)", config.EnvDatabaseURL, err, config.EnvMigrate)
	}
	pool, err := pgxpool.New(ctx, cfg.DatabaseURL)
	if err != nil {
		return fmt.Errorf("database pool: %w", err)
	}
	defer pool.Close()
	metrics := pubmetrics.New()
	models := make([]backload.Model, len(cfg.Models))
	for i, m := range cfg.Models {
		models[i] = backload.Model{Aggregate: m.Aggregate, Table: m.Table, KeyColumn: m.KeyColumn, Columns: m.Columns}
	}
	bl, err := backload.New(pool, backload.WithModels(models...), backload.WithChunkSize(cfg.BackloadChunkSize),
		backload.WithLogger(log), backload.WithMetrics(metrics))
	if err != nil {
		return err
	}

	switch cmd {
	case "backload":
		st, err := bl.Run(ctx, args[1], backload.Fresh)
		if err != nil {
			return err
		}
		return json.NewEncoder(stdout).Encode(st)
	case "models":
		ms, err := bl.Models(ctx)
		if err != nil {
			return err
		}
		for _, m := range ms {
			line := m.Aggregate + "\t" + m.Table + "\t" + m.KeyColumn
			if m.Columns != "" {
				line += "\t" + m.Columns
			}
			fmt.Fprintln(stdout, line)
		}
		return nil
	}
	return serve(ctx, cfg, log, pool, bl, metrics)
}

func serve(ctx context.Context, cfg config.Config, log *slog.Logger, pool *pgxpool.Pool, bl *backload.Backloader, metrics *pubmetrics.Metrics) error {
	log.Info("starting", "config", cfg)
	if cfg.PprofAddr != "" {
		if _, err := httpserve.ServePprof(ctx, cfg.PprofAddr, log); err != nil {
			return fmt.Errorf("%s: %w", config.EnvPprofAddr, err)
		}
	}
	conn, err := cfg.Kafka.Opts()
	if err != nil {
		return fmt.Errorf("kafka: %w", err)
	}
	popts := []producer.Option{
		producer.WithReplicationFactor(cfg.ReplicationFactor),
		producer.WithLinger(cfg.Linger),
		producer.WithLogger(log),
		producer.WithMaxEventSize(cfg.MaxEventBytes),
		producer.WithCompression(cfg.Compression),
	}
	// prod answers readiness pings; each lease term produces with its own
	// (transactional) producer from newProducer.
	prod, err := producer.New(conn, popts...)
	if err != nil {
		return err
	}
	defer prod.Close()
	newProducer := func(txnID string) (relay.Producer, error) {
		opts := popts
		if cfg.KafkaTransactions {
			if cfg.KafkaTransactionalID != "" {
				txnID = cfg.KafkaTransactionalID
			}
			opts = append(slices.Clip(popts), producer.WithTransactionalID(txnID))
		}
		return producer.New(conn, opts...)
	}

	connCfg, err := pgx.ParseConfig(cfg.DatabaseURL)
	if err != nil {
		return fmt.Errorf("%s: %w", config.EnvDatabaseURL, err)
	}
	ropts := []relay.Option{
		relay.WithBatchSize(cfg.BatchSize),
		relay.WithPollInterval(cfg.PollInterval),
		relay.WithLeaseRetryInterval(cfg.LeaseRetryInterval),
		relay.WithShutdownTimeout(cfg.ShutdownTimeout),
		relay.WithTopicPrefix(cfg.TopicPrefix),
		relay.WithLogger(log),
		relay.WithMetrics(metrics),
		relay.WithCommitFence(cfg.CommitFence),
		relay.WithMaxEventSize(cfg.MaxEventBytes),
		relay.WithVersionCheck(cfg.VersionCheck),
		relay.WithDeadLetterRetention(cfg.DeadLetterRetention),
		relay.WithCatalog(func(ctx context.Context) ([]string, error) {
			// Only models get topics: tables with the capture trigger, the
			// configured ones, and the outbox-only ones.
			ms, err := bl.Models(ctx)
			if err != nil {
				return nil, err
			}
			names := slices.Clone(cfg.OutboxModels)
			for _, m := range ms {
				names = append(names, m.Aggregate)
			}
			return names, nil
		}),
	}
	if cfg.AutoBackload {
		ropts = append(ropts, relay.WithOnActive(bl.RunPendingLoop))
	}
	rl, err := relay.New(connCfg, newProducer, ropts...)
	if err != nil {
		return err
	}

	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("%s: listen: %w", config.EnvHTTPAddr, err)
	}
	if cfg.API.Insecure {
		log.Warn("the backload API accepts requests without a token (" + config.EnvInsecureNoAuth + "=true)")
	}
	srv := httpserve.New(httpapi.Handler(httpapi.Deps{
		Tokens: apitoken.New(cfg.API.Tokens),
		Relay:  rl, Backloads: bl, DB: pool, Broker: prod, Gatherer: metrics.Registry,
		Log: log, Background: ctx,
	}), httpserve.WithLogger(log))
	httpDone := make(chan error, 1)
	go func() { httpDone <- srv.Serve(ln) }()
	log.Info("http listening", "addr", ln.Addr().String())

	relayErr := rl.Run(ctx) // returns after ctx ends and the batch in flight is flushed
	log.Info("shutting down")
	bl.Wait()
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx)
	if err := <-httpDone; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("http: %w", err)
	}
	log.Info("stopped")
	return relayErr
}
