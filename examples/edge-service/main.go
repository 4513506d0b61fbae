// Command edge-service is a small example edge service: an HTTP API that answers lookups from a
// distcache.Client, the way a real edge service links the library. It serves
//
//	GET /v1/{projection}/{key}   the projected record (JSON), from local memory when cached
//	GET /stats                   the client's counters per projection (JSON)
//	GET /metrics                 the same counters for Prometheus (distcache_client_*, package distcacheprom)
//	GET /healthz                 liveness
//
// Configuration comes from the environment: EDGE_REDIS_ADDR (primary), EDGE_REDIS_REPLICAS
// (comma-separated), EDGE_REDIS_USERNAME, EDGE_REDIS_PASSWORD, EDGE_PROJECTIONS (comma-separated),
// EDGE_HTTP_ADDR (default 127.0.0.1:58095), EDGE_MAX_ITEMS, EDGE_MAX_TTL.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/distcache/distcache/libs/distcache"
	"github.com/distcache/distcache/libs/distcache/distcacheprom"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	if err := run(ctx, log, os.Getenv); err != nil {
		log.Error("edge-service failed", "err", err)
		os.Exit(1)
	}
}

type config struct {
	redisAddr   string
	replicas    []string
	username    string
	password    string
	projections []string
	httpAddr    string
	maxItems    int64
	maxTTL      time.Duration
}

func loadConfig(getenv func(string) string) (config, error) {
	c := config{
		redisAddr: getenv("EDGE_REDIS_ADDR"),
		username:  getenv("EDGE_REDIS_USERNAME"),
		password:  getenv("EDGE_REDIS_PASSWORD"),
		httpAddr:  getenv("EDGE_HTTP_ADDR"),
		maxItems:  1_000_000,
		maxTTL:    time.Hour,
	}
	if c.redisAddr == "" {
		return c, errors.New("EDGE_REDIS_ADDR is required (the Redis primary, host:port)")
	}
	if c.httpAddr == "" {
		c.httpAddr = "127.0.0.1:58095"
	}
	c.replicas = splitList(getenv("EDGE_REDIS_REPLICAS"))
	c.projections = splitList(getenv("EDGE_PROJECTIONS"))
	if len(c.projections) == 0 {
		return c, errors.New("EDGE_PROJECTIONS is required (comma-separated projection names)")
	}
	if v := getenv("EDGE_MAX_ITEMS"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n <= 0 {
			return c, fmt.Errorf("EDGE_MAX_ITEMS=%q: want a positive integer", v)
		}
		c.maxItems = n
	}
	if v := getenv("EDGE_MAX_TTL"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return c, fmt.Errorf("EDGE_MAX_TTL=%q: want a positive duration", v)
		}
		c.maxTTL = d
	}
	return c, nil
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func run(ctx context.Context, log *slog.Logger, getenv func(string) string) error {
	cfg, err := loadConfig(getenv)
	if err != nil {
		return err
	}
	log.Info("starting", "redis", cfg.redisAddr, "replicas", cfg.replicas, "projections", cfg.projections,
		"http", cfg.httpAddr, "redis_password_set", cfg.password != "")
	startCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	opts := []distcache.Option{
		distcache.WithAddrs(cfg.redisAddr, cfg.replicas...),
		distcache.WithProjections(cfg.projections...),
		distcache.WithMaxItems(cfg.maxItems),
		distcache.WithMaxTTL(cfg.maxTTL),
		distcache.WithLogger(log),
	}
	if cfg.username != "" || cfg.password != "" {
		opts = append(opts, distcache.WithAuth(cfg.username, cfg.password))
	}
	dc, err := distcache.New(startCtx, opts...)
	if err != nil {
		return fmt.Errorf("distcache client: %w", err)
	}
	defer func() {
		cctx, ccancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer ccancel()
		_ = dc.Close(cctx)
	}()

	srv := &http.Server{Addr: cfg.httpAddr, Handler: newHandler(dc), ReadHeaderTimeout: 5 * time.Second}
	ln, err := net.Listen("tcp", cfg.httpAddr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", cfg.httpAddr, err)
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	log.Info("serving", "addr", ln.Addr().String())
	select {
	case <-ctx.Done():
	case err := <-errc:
		return err
	}
	sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer scancel()
	return srv.Shutdown(sctx)
}

// lookup is what the handler needs of a distcache.Client.
type lookup interface {
	GetEntry(ctx context.Context, proj, key string) (distcache.Entry, error)
	Stats() distcache.Stats
	Generation(proj string) int64
}

var _ lookup = (*distcache.Client)(nil)

func newHandler(dc lookup) http.Handler {
	mux := http.NewServeMux()
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		distcacheprom.NewCollector(dc))
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /stats", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(dc.Stats())
	})
	mux.HandleFunc("GET /v1/{projection}/{key}", func(w http.ResponseWriter, r *http.Request) {
		proj, key := r.PathValue("projection"), r.PathValue("key")
		ctx, cancel := context.WithTimeout(r.Context(), 500*time.Millisecond)
		defer cancel()
		e, err := dc.GetEntry(ctx, proj, key)
		switch {
		case errors.Is(err, distcache.ErrNotFound):
			http.Error(w, fmt.Sprintf("%s/%s: not found", proj, key), http.StatusNotFound)
			return
		case err != nil:
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Distcache-Version", strconv.FormatInt(e.Version, 10))
		w.Header().Set("X-Distcache-Generation", strconv.FormatInt(dc.Generation(proj), 10))
		w.Header().Set("X-Distcache-Stale", strconv.FormatBool(e.Stale))
		_, _ = w.Write(e.Value)
	})
	return mux
}
