// Package httpapi serves the cache-producer's operational endpoints:
// /healthz (the process runs), /readyz (every dependency answers and the
// consumers are not stuck; a JSON body lists each check) and /metrics
// (Prometheus), plus /status (each generation's position and lag, JSON).
package httpapi

import (
	"context"
	"encoding/json"
	"net/http"
	"sort"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Check is one readiness check; nil means ready.
type Check func(ctx context.Context) error

// Config configures the handler.
type Config struct {
	Registry *prometheus.Registry
	// Checks are run by /readyz, by name.
	Checks map[string]Check
	// Status, when set, is served as JSON at /status.
	Status func() any
	// CheckTimeout bounds each check (default 2 s).
	CheckTimeout time.Duration
}

// Handler returns the HTTP handler.
func Handler(cfg Config) http.Handler {
	if cfg.CheckTimeout <= 0 {
		cfg.CheckTimeout = 2 * time.Second
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		names := make([]string, 0, len(cfg.Checks))
		for n := range cfg.Checks {
			names = append(names, n)
		}
		sort.Strings(names)
		type result struct {
			Name  string `json:"name"`
			OK    bool   `json:"ok"`
			Error string `json:"error,omitempty"`
		}
		out := struct {
			Ready  bool     `json:"ready"`
			Checks []result `json:"checks"`
		}{Ready: true}
		for _, n := range names {
			ctx, cancel := context.WithTimeout(r.Context(), cfg.CheckTimeout)
			err := cfg.Checks[n](ctx)
			cancel()
			res := result{Name: n, OK: err == nil}
			if err != nil {
				res.Error = err.Error()
				out.Ready = false
			}
			out.Checks = append(out.Checks, res)
		}
		w.Header().Set("Content-Type", "application/json")
		if !out.Ready {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		_ = json.NewEncoder(w).Encode(out)
	})
	if cfg.Registry != nil {
		mux.Handle("GET /metrics", promhttp.HandlerFor(cfg.Registry, promhttp.HandlerOpts{Registry: cfg.Registry}))
	}
	if cfg.Status != nil {
		mux.HandleFunc("GET /status", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(cfg.Status())
		})
	}
	return mux
}
