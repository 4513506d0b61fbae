// Command cache-producer keeps projections of compacted Kafka topics in Redis
// generations: it follows the control-plane's registry, runs one consumer per
// topic that feeds every live generation of every projection of that topic
// (through libs/distcache's Publisher), and runs the Backfill and CaughtUp
// Temporal activities that build new generations. See docs/architecture.md
// and the internal packages' documentation; configuration is read from
// PRODUCER_* environment variables (package internal/config).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.temporal.io/sdk/client"
	tlog "go.temporal.io/sdk/log"
	"go.temporal.io/sdk/worker"

	"github.com/distcache/distcache/libs/distcache"
	"github.com/distcache/distcache/libs/events"
	"github.com/distcache/distcache/libs/svcconfig/httpserve"
	"github.com/distcache/distcache/migrations"
	"github.com/distcache/distcache/services/cache-producer/internal/backfill"
	"github.com/distcache/distcache/services/cache-producer/internal/config"
	"github.com/distcache/distcache/services/cache-producer/internal/consumerreport"
	"github.com/distcache/distcache/services/cache-producer/internal/fanout"
	"github.com/distcache/distcache/services/cache-producer/internal/gctune"
	"github.com/distcache/distcache/services/cache-producer/internal/httpapi"
	"github.com/distcache/distcache/services/cache-producer/internal/ledger"
	"github.com/distcache/distcache/services/cache-producer/internal/membership"
	"github.com/distcache/distcache/services/cache-producer/internal/prodmetrics"
	"github.com/distcache/distcache/services/cache-producer/internal/projector"
	"github.com/distcache/distcache/services/cache-producer/internal/rebuildreport"
	"github.com/distcache/distcache/services/cache-producer/internal/registrywatch"
	"github.com/distcache/distcache/workflows"
	"github.com/distcache/distcache/workflows/registry"
	"github.com/distcache/distcache/workflows/temporalconn"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	tunedGC = gctune.Tune() // GOGC and GOMEMLIMIT override
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "cache-producer:", err)
		stop()
		os.Exit(1)
	}
}

// tunedGC is what main set for the garbage collector (logged at start).
var tunedGC gctune.Settings

// Log attribute keys.
const (
	attrErr        = "err"
	attrProjection = "projection"
	attrGeneration = "generation"
)

// run wires the service and blocks until ctx ends, then shuts down: the
// registry watch stops, each consumer writes its batch in flight, the
// activity worker stops, the HTTP server drains.
func run(ctx context.Context, args []string, getenv func(string) string, logOut io.Writer) error {
	fs := flag.NewFlagSet("cache-producer", flag.ContinueOnError)
	fs.SetOutput(logOut)
	checkOnly := fs.Bool("check-config", false, "validate the configuration and exit")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q (configuration is read from PRODUCER_* variables)", fs.Args())
	}
	cfg, err := config.Load(getenv)
	if err != nil {
		return err
	}
	var h slog.Handler
	if cfg.LogFormat == "text" {
		h = slog.NewTextHandler(logOut, &slog.HandlerOptions{Level: cfg.LogLevel})
	} else {
		h = slog.NewJSONHandler(logOut, &slog.HandlerOptions{Level: cfg.LogLevel})
	}
	log := slog.New(h).With("service", "cache-producer")
	log.Info("starting", "config", cfg, "gc_percent", tunedGC.Percent, "memory_limit_bytes", tunedGC.MemoryLimit)
	if *checkOnly {
		return nil
	}
	if cfg.PprofAddr != "" {
		if _, err := httpserve.ServePprof(ctx, cfg.PprofAddr, log); err != nil {
			return fmt.Errorf("%s: %w", config.EnvPprofAddr, err)
		}
	}

	if err := checkRegistrySchema(ctx, cfg, log); err != nil {
		return err
	}
	pool, err := pgxpool.New(ctx, cfg.DatabaseURL)
	if err != nil {
		return fmt.Errorf("registry pool: %w", err)
	}
	defer pool.Close()

	rdb, err := cfg.Redis.NewClient()
	if err != nil {
		return err
	}
	defer rdb.Close()
	if err := cfg.Redis.CheckEvictionPolicy(ctx, rdb, log, time.Second); err != nil {
		return err
	}
	pub, err := distcache.NewPublisher(rdb, distcache.WithStreamMaxLen(cfg.StreamMaxLen), distcache.WithTombstoneTTL(cfg.TombstoneTTL))
	if err != nil {
		return fmt.Errorf("publisher: %w", err)
	}
	kopts, err := cfg.Kafka.Opts()
	if err != nil {
		return err
	}
	admin, err := kgo.NewClient(kopts...)
	if err != nil {
		return fmt.Errorf("kafka client: %w", err)
	}
	defer admin.Close()

	metrics := prodmetrics.New()
	defer metrics.Close()
	led := ledger.New(rdb, cfg.DeadLetterMaxLen)
	layout, err := ledger.ParseFormat(cfg.IndexLayout)
	if err == nil {
		err = led.SetNewFormat(layout)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", config.EnvIndexLayout, err)
	}
	writer := projector.NewWriter(pub, led, projector.WithLogger(log), projector.WithIndexCache(cfg.IndexCacheEntries))
	metrics.WatchConflicts(writer)
	mgr, err := fanout.NewManager(fanout.Config{
		KafkaOpts: kopts, Writer: writer, BatchSize: cfg.BatchSize, Observer: metrics, Logger: log,
		Replica: cfg.ReplicaName, Assigned: true,
	})
	if err != nil {
		return err
	}
	// The replicas share the topics through a consumer group (assignment only): this replica
	// consumes the topics the group assigns it.
	var member *membership.Member
	member, err = membership.New(membership.Config{
		KafkaOpts: kopts, Group: cfg.Group.ID, SessionTimeout: cfg.Group.SessionTimeout,
		HeartbeatInterval: cfg.Group.HeartbeatInterval, RebalanceTimeout: cfg.Group.RebalanceTimeout,
		Assigned: func(topics []string) {
			metrics.Rebalanced("assigned")
			mgr.Assign(topics)
			metrics.TopicsOwned(len(member.Owned()))
		},
		Revoked: func(topics []string, lost bool) {
			metrics.Rebalanced(map[bool]string{false: "revoked", true: "lost"}[lost])
			mgr.Revoke(topics)
			metrics.TopicsOwned(len(member.Owned()))
		},
		Logger: log.With("component", "group"),
	})
	if err != nil {
		mgr.Close()
		return err
	}
	memberCtx, stopMember := context.WithCancel(context.WithoutCancel(ctx))
	memberDone := make(chan struct{})
	go func() {
		defer close(memberDone)
		member.Run(memberCtx)
	}()
	// leave hands this replica's topics to the others: each consumer writes its batch in
	// flight, then the replica leaves the group.
	leave := func() {
		stopMember()
		<-memberDone
		member.Close()
		metrics.TopicsOwned(0)
	}

	var registryErr atomic.Pointer[error]
	noLoadYet := errors.New("registry not loaded yet")
	registryErr.Store(&noLoadYet)
	watcher := &registrywatch.Watcher{
		Pool:     pool,
		Interval: cfg.ReloadInterval,
		Logger:   log,
		Apply: func(ctx context.Context, s registrywatch.Snapshot) {
			applySnapshot(ctx, log, cfg.TopicPrefix, mgr, led, metrics, s)
			member.SetTopics(mgr.Topics())
		},
		OnLoad: func(err error) {
			if err != nil {
				registryErr.Store(&err)
				metrics.RegistryUp(false)
				return
			}
			registryErr.Store(nil)
			metrics.RegistryUp(true)
		},
	}

	var wg sync.WaitGroup
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	wg.Add(2)
	go func() {
		defer wg.Done()
		_ = watcher.Run(watchCtx)
	}()
	// GetStatus reads the registry: the rebuilds in place go there too.
	go func() {
		defer wg.Done()
		(&rebuildreport.Reporter{Source: mgr, Sink: registry.New(pool), Logger: log}).Run(watchCtx)
	}()
	// And each consumed generation's owner, position and freshness (GetStatus's consumer).
	wg.Add(1)
	go func() {
		defer wg.Done()
		(&consumerreport.Reporter{Source: mgr, Sink: registry.New(pool), Interval: cfg.StatusReport, Logger: log}).Run(watchCtx)
	}()

	// Temporal activity worker: attached in the background whenever Temporal answers, so the
	// data path (registry watch, consumers) never waits for the control path.
	var temporal *temporalconn.Monitor
	monCtx, stopMon := context.WithCancel(context.WithoutCancel(ctx))
	defer stopMon()
	monDone := make(chan struct{})
	if cfg.Temporal.HostPort != "" {
		topts, err := cfg.Temporal.ClientOptions(tlog.NewStructuredLogger(log.With("component", "temporal")))
		var tc client.Client
		if err == nil {
			tc, err = client.NewLazyClient(topts)
		}
		if err != nil {
			stopWatch()
			wg.Wait()
			leave()
			mgr.Close()
			return fmt.Errorf("temporal %s: %w", cfg.Temporal.HostPort, err)
		}
		defer tc.Close()
		temporal, err = temporalconn.New(temporalconn.Config{
			Client: tc,
			NewWorker: func() worker.Worker {
				w := worker.New(tc, workflows.CacheProducerTaskQueue, worker.Options{MaxHeartbeatThrottleInterval: workflows.BackfillHeartbeatThrottle})
				backfill.Register(w, &backfill.Activities{
					KafkaOpts: kopts, Writer: writer, BatchSize: cfg.BackfillBatchSize, Observer: metrics, Logger: log,
					Registry: registry.New(pool), TopicPrefix: cfg.TopicPrefix,
				})
				return w
			},
			Logger: log.With("component", "temporal"),
		})
		if err != nil {
			stopWatch()
			wg.Wait()
			leave()
			mgr.Close()
			return err
		}
		go func() {
			defer close(monDone)
			temporal.Run(monCtx)
		}()
	} else {
		close(monDone)
		log.Warn("PRODUCER_TEMPORAL_HOSTPORT is empty: the Backfill and CaughtUp activities are not served")
	}
	stopWorker := func() {
		stopMon()
		<-monDone
	}

	checks := map[string]httpapi.Check{
		"registry": func(context.Context) error {
			if p := registryErr.Load(); p != nil {
				return *p
			}
			return nil
		},
		"redis": func(ctx context.Context) error { return rdb.Ping(ctx).Err() },
		"kafka": func(ctx context.Context) error { return admin.Ping(ctx) },
		"consumers": func(context.Context) error {
			if !mgr.Healthy() {
				return errors.New("a consumer is retrying a failed write")
			}
			return nil
		},
	}
	// Temporal only serves backfills: while it is down the producer is ready but degraded; so
	// while a generation is rebuilt in place (package rebuild), and while one is rebuilt because
	// Redis lost its data (its keys are missing until then).
	optional := map[string]httpapi.Check{
		"rebuilds":  func(context.Context) error { return mgr.CheckRebuilds() },
		"data_loss": func(context.Context) error { return mgr.CheckDataLoss() },
	}
	if temporal != nil {
		optional["temporal"] = func(context.Context) error { return temporal.Err() }
	}
	srv := httpserve.New(httpapi.Handler(httpapi.Config{
		Registry: metrics.Registry, Checks: checks, Optional: optional,
		Status: func() any { return mgr.Statuses() }, Log: log,
	}), httpserve.WithLogger(log))
	ln, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		stopWatch()
		wg.Wait()
		leave()
		mgr.Close()
		stopWorker()
		return fmt.Errorf("listen on PRODUCER_HTTP_ADDR %s: %w", cfg.HTTPAddr, err)
	}
	httpErr := make(chan error, 1)
	go func() { httpErr <- srv.Serve(ln) }()
	log.Info("serving", "http_addr", ln.Addr().String())

	select {
	case <-ctx.Done():
	case err = <-httpErr:
		err = fmt.Errorf("http server: %w", err)
	}
	log.Info("shutting down")
	stopWatch()
	wg.Wait()
	leave()     // the topics go to the other replicas once their consumers wrote their batch in flight
	mgr.Close() // (nothing left to stop, unless the group never assigned)
	stopWorker()
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	if serr := srv.Shutdown(sctx); serr != nil && err == nil {
		err = fmt.Errorf("http shutdown: %w", serr)
	}
	log.Info("stopped")
	return err
}

// schemaCheckTimeout bounds the registry schema check at start (not PRODUCER_MIGRATE's Up, which
// may wait for another migration's lock).
const schemaCheckTimeout = 10 * time.Second

// checkRegistrySchema: the registry's schema is the control-plane's (the control set, applied by
// `make migrate` or the chart's migration Job); the producer checks it, or applies it with
// PRODUCER_MIGRATE=true. A registry that lacks a migration stops the start. One that cannot be
// reached does not: as before the check existed, the producer starts, the registry watch retries
// and /readyz says "not ready: registry" until it answers.
func checkRegistrySchema(ctx context.Context, cfg config.Config, log *slog.Logger) error {
	cctx, cancel := context.WithCancel(ctx)
	if !cfg.Migrate {
		cctx, cancel = context.WithTimeout(ctx, schemaCheckTimeout)
	}
	defer cancel()
	err := migrations.Ensure(cctx, cfg.DatabaseURL, migrations.Control, cfg.Migrate)
	switch {
	case err == nil:
		return nil
	case cfg.Migrate || errors.Is(err, migrations.ErrSchemaNotReady):
		return fmt.Errorf("registry schema (%s): %w (or set %s=true to apply it at start)", config.EnvDatabaseURL, err, config.EnvMigrate)
	}
	log.Warn("registry schema not checked: the registry does not answer; the registry watch retries", attrErr, err)
	return nil
}

// cleanupBudget bounds applySnapshot's removal of ended generations' bookkeeping.
const cleanupBudget = 10 * time.Second

// applySnapshot makes the consumers follow the registry, then removes the
// bookkeeping of generations that ended.
func applySnapshot(ctx context.Context, log *slog.Logger, prefix string, mgr *fanout.Manager, led *ledger.Ledger,
	metrics *prodmetrics.Metrics, s registrywatch.Snapshot) {
	gens := make([]fanout.Generation, 0, len(s.Active))
	for _, g := range s.Active {
		t, err := fanout.CompileTarget(g.Projection, g.Generation, g.Definition)
		if err != nil {
			log.Error("skipping generation with an invalid definition", attrProjection, g.Projection, attrGeneration, g.Generation, attrErr, err)
			continue
		}
		gens = append(gens, fanout.Generation{
			Target: t, Topic: events.Topic(prefix, g.Definition.Model), State: g.State, StartOffset: g.Offset,
		})
	}
	mgr.Update(ctx, gens)
	metrics.Generations(len(gens))
	// A Redis that hangs holds each call for its read timeout: bound the whole cleanup, so the
	// registry watch (new generations) waits for it at most cleanupBudget; what is left is
	// removed after a later load.
	ctx, cancel := context.WithTimeout(ctx, cleanupBudget)
	defer cancel()
	for _, g := range s.Ended {
		if ctx.Err() != nil {
			log.Warn("bookkeeping cleanup postponed to the next registry load", attrErr, ctx.Err())
			break
		}
		has, err := led.HasBookkeeping(ctx, g.Projection, g.Generation)
		if err != nil {
			log.Warn("check bookkeeping", attrProjection, g.Projection, attrGeneration, g.Generation, attrErr, err)
			continue
		}
		if !has {
			continue
		}
		n, err := led.Forget(ctx, g.Projection, g.Generation)
		if err != nil {
			log.Warn("remove bookkeeping", attrProjection, g.Projection, attrGeneration, g.Generation, attrErr, err)
			continue
		}
		log.Info("bookkeeping removed", attrProjection, g.Projection, attrGeneration, g.Generation, "state", g.State, "keys", n)
	}
}
