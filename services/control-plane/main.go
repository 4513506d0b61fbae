// Command control-plane serves distcache's projection API (gRPC on CONTROLPLANE_GRPC_ADDR, REST
// through grpc-gateway on CONTROLPLANE_HTTP_ADDR, with /healthz, /readyz, /metrics and
// /openapi.json), keeps the projection registry in PostgreSQL (migrated at start) and runs the
// Temporal worker of the control-plane task queue: the projection workflows and their registry,
// pointer and retirement activities. Temporal may be down: the service starts anyway, answers
// Get, List and Status, refuses the calls that start a workflow with UNAVAILABLE (HTTP 503), and
// attaches its worker when Temporal answers.
//
// Configuration is read from the environment; see internal/config for every variable.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"go.temporal.io/sdk/client"
	tlog "go.temporal.io/sdk/log"
	"go.temporal.io/sdk/worker"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"

	"github.com/distcache/distcache/libs/distcache"
	"github.com/distcache/distcache/libs/svcconfig/httpserve"
	"github.com/distcache/distcache/migrations"
	pb "github.com/distcache/distcache/services/control-plane/gen/distcache/v1"
	"github.com/distcache/distcache/services/control-plane/internal/api"
	"github.com/distcache/distcache/services/control-plane/internal/auth"
	"github.com/distcache/distcache/services/control-plane/internal/config"
	"github.com/distcache/distcache/services/control-plane/internal/cpmetrics"
	"github.com/distcache/distcache/services/control-plane/internal/modelcatalog"
	"github.com/distcache/distcache/services/control-plane/internal/reconcile"
	"github.com/distcache/distcache/services/control-plane/internal/server"
	"github.com/distcache/distcache/workflows"
	"github.com/distcache/distcache/workflows/registry"
	"github.com/distcache/distcache/workflows/temporalconn"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args, os.Getenv, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "control-plane:", err)
		os.Exit(1)
	}
}

// listeners lets tests learn the addresses actually bound (for ":0" ports).
type listeners struct {
	grpc, http net.Listener
}

// onListen, when set (tests), is called once both listeners are bound.
var onListen func(listeners)

// run starts the service and blocks until ctx ends (SIGINT/SIGTERM), then drains: the HTTP and
// gRPC servers stop accepting and finish in-flight calls, the Temporal worker finishes its
// running activities, within CONTROLPLANE_SHUTDOWN_TIMEOUT.
func run(ctx context.Context, _ []string, getenv func(string) string, stderr io.Writer) error {
	cfg, err := config.FromEnv(getenv, os.ReadFile)
	if err != nil {
		return fmt.Errorf("configuration: %w", err)
	}
	var h slog.Handler = slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: cfg.LogLevel})
	if !cfg.LogJSON {
		h = slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: cfg.LogLevel})
	}
	log := slog.New(h)
	log.Info("starting", "config", cfg)
	if cfg.PprofAddr != "" {
		if _, err := httpserve.ServePprof(ctx, cfg.PprofAddr, log); err != nil {
			return fmt.Errorf("%s: %w", config.EnvPprofAddr, err)
		}
	}

	// The registry's schema is applied by `make migrate` or the chart's migration Job, with
	// credentials of its own; the service only checks it (CONTROLPLANE_MIGRATE=true applies it).
	if err := migrations.Ensure(ctx, cfg.DatabaseURL, migrations.Control, cfg.Migrate); err != nil {
		return fmt.Errorf("registry schema (%s): %w (or set %s=true to apply it at start)", config.EnvDatabaseURL, err, config.EnvMigrate)
	}
	pool, err := pgxpool.New(ctx, cfg.DatabaseURL)
	if err != nil {
		return fmt.Errorf("registry database: %w", err)
	}
	defer pool.Close()
	store := registry.New(pool)

	catalog := modelcatalog.Chain{}
	if len(cfg.Models) > 0 {
		catalog = append(catalog, cfg.Models)
	}
	if cfg.CoreDatabaseURL != "" {
		core, err := pgxpool.New(ctx, cfg.CoreDatabaseURL)
		if err != nil {
			return fmt.Errorf("core database: %w", err)
		}
		defer core.Close()
		catalog = append(catalog, modelcatalog.Columns{Pool: core})
	}

	rdb, err := cfg.Redis.NewClient()
	if err != nil {
		return fmt.Errorf("redis: %w", err)
	}
	defer rdb.Close()
	if err := cfg.Redis.CheckEvictionPolicy(ctx, rdb, log, time.Second); err != nil {
		return err
	}
	pub, err := distcache.NewPublisher(rdb)
	if err != nil {
		return fmt.Errorf("redis publisher: %w", err)
	}

	// Lazy: the service starts, and serves reads, while Temporal is down; the monitor attaches
	// the worker when Temporal answers.
	topts, err := cfg.Temporal.ClientOptions(tlog.NewStructuredLogger(log.With("component", "temporal")))
	if err != nil {
		return err
	}
	tc, err := client.NewLazyClient(topts)
	if err != nil {
		return fmt.Errorf("temporal client: %w", err)
	}
	defer tc.Close()
	metrics := cpmetrics.New()
	temporal, err := temporalconn.New(temporalconn.Config{
		Client: tc,
		NewWorker: func() worker.Worker {
			w := worker.New(tc, workflows.ControlPlaneTaskQueue, worker.Options{WorkerStopTimeout: cfg.ShutdownTimeout})
			workflows.Register(w)
			workflows.RegisterActivities(w, &workflows.Activities{
				Registry:    store,
				Pointer:     pub,
				Temporal:    tc,
				RetireDrain: cfg.RetireDrain,
				BuildEnded: func(projection, outcome string) {
					metrics.BuildOutcomes.WithLabelValues(projection, outcome).Inc()
				},
				Logger: log.With("component", "activities"),
			})
			return w
		},
		Logger: log.With("component", "temporal"),
	})
	if err != nil {
		return err
	}
	temporalDown := func() error {
		if temporal.Available() {
			return nil
		}
		return temporal.Err()
	}

	svc := api.New(store, tc, catalog, api.Settings{
		Namespace:      cfg.Temporal.Namespace,
		UIURL:          cfg.TemporalUIURL,
		TopicPrefix:    cfg.TopicPrefix,
		RetireGrace:    cfg.RetireGrace,
		RetireDrain:    cfg.RetireDrain,
		MaxLag:         cfg.MaxLag,
		CatchUpTimeout: cfg.CatchUpTimeout,
		ConsumerStale:  cfg.ConsumerStale,
		TemporalErr:    temporalDown,
	}, log.With("component", "api"))
	opts := server.Options{
		Service:  svc,
		Tokens:   auth.NewTokens(cfg.Tokens),
		Logger:   log,
		Metrics:  metrics,
		Gatherer: metrics.Registry,
		OpenAPI:  pb.OpenAPI,
		Ready: map[string]func(context.Context) error{
			"registry": pool.Ping,
			"redis":    func(ctx context.Context) error { return rdb.Ping(ctx).Err() },
		},
		// Temporal down: reads still answer, so the service stays ready, "degraded".
		Degraded: map[string]func(context.Context) error{"temporal": func(context.Context) error { return temporal.Err() }},
	}

	var lc net.ListenConfig
	gl, err := lc.Listen(ctx, "tcp", cfg.GRPCAddr)
	if err != nil {
		return fmt.Errorf("listen %s (%s): %w", cfg.GRPCAddr, config.EnvGRPCAddr, err)
	}
	hl, err := lc.Listen(ctx, "tcp", cfg.HTTPAddr)
	if err != nil {
		gl.Close()
		return fmt.Errorf("listen %s (%s): %w", cfg.HTTPAddr, config.EnvHTTPAddr, err)
	}
	tlsCfg, err := cfg.TLS.Build()
	if err != nil {
		gl.Close()
		hl.Close()
		return err
	}
	opts.TLS = tlsCfg
	gs := server.NewGRPC(opts)
	gwCtx, gwCancel := context.WithCancel(context.WithoutCancel(ctx))
	defer gwCancel()
	var handler http.Handler
	// With TLS the gateway reaches the service in process (the public gRPC listener wants TLS,
	// and with a client CA a client certificate): a second gRPC server, the same interceptors.
	var internal *grpc.Server
	var internalL *server.MemListener
	if tlsCfg != nil {
		internal, internalL = server.NewInternalGRPC(opts), server.NewMemListener()
		handler, err = server.NewHTTPInProcess(gwCtx, opts, internalL)
		if tlsCfg.ClientCAs != nil {
			handler = server.RequireClientCert(handler)
		}
		hl = tls.NewListener(hl, server.HTTPTLS(tlsCfg))
	} else {
		handler, err = server.NewHTTP(gwCtx, opts, gl.Addr().String())
	}
	if err != nil {
		gl.Close()
		hl.Close()
		return err
	}
	// WriteTimeout leaves room for Cutover and Rollback, which wait up to 30 s for their workflow.
	hs := httpserve.New(handler, httpserve.WithWriteTimeout(2*time.Minute), httpserve.WithLogger(log))

	// One probe before serving: with Temporal up, the worker runs and writes are accepted from
	// the first call, as when the client was dialled eagerly; with it down, start at once.
	temporal.Probe(ctx)
	monCtx, stopMon := context.WithCancel(context.WithoutCancel(ctx))
	monDone := make(chan struct{})
	go func() {
		defer close(monDone)
		temporal.Run(monCtx)
	}()
	// After the servers drained: the worker finishes its running activities.
	defer func() {
		stopMon()
		<-monDone
	}()
	if cfg.PointerReconcile > 0 {
		rec := &reconcile.Reconciler{
			Registry: store, Pointer: pub, Interval: cfg.PointerReconcile,
			Restores: metrics.PointerRestores, Failures: metrics.PointerReconcileFailures,
			Logger: log.With("component", "reconcile"),
		}
		recCtx, stopRec := context.WithCancel(context.WithoutCancel(ctx))
		recDone := make(chan struct{})
		go func() {
			defer close(recDone)
			rec.Run(recCtx)
		}()
		defer func() {
			stopRec()
			<-recDone
		}()
	}

	log.Info("serving", "grpc", gl.Addr().String(), "http", hl.Addr().String(), "tls", tlsCfg != nil,
		"mtls", tlsCfg != nil && tlsCfg.ClientCAs != nil, "task_queue", workflows.ControlPlaneTaskQueue)
	if onListen != nil {
		onListen(listeners{grpc: gl, http: hl})
	}

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		if err := gs.Serve(gl); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			return fmt.Errorf("grpc server: %w", err)
		}
		return nil
	})
	if internal != nil {
		g.Go(func() error {
			if err := internal.Serve(internalL); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
				return fmt.Errorf("in-process grpc server: %w", err)
			}
			return nil
		})
	}
	g.Go(func() error {
		if err := hs.Serve(hl); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("http server: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		log.Info("shutting down")
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.ShutdownTimeout)
		defer cancel()
		herr := hs.Shutdown(sctx)
		done := make(chan struct{})
		go func() { gs.GracefulStop(); close(done) }()
		select {
		case <-done:
		case <-sctx.Done():
			gs.Stop()
		}
		gwCancel()
		if internal != nil {
			internal.Stop() // after the HTTP server drained: nothing calls it any more
		}
		return herr
	})
	err = g.Wait()
	log.Info("stopped", "err", err)
	return err
}
