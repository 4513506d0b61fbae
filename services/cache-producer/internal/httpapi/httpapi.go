// Package httpapi serves the cache-producer's operational endpoints:
// /healthz (the process runs), /readyz (every dependency answers and the
// consumers are not stuck; a JSON body lists each check by name and says
// "status": "ok", "degraded: <check>" — an optional check fails, such as
// Temporal, which only the control path needs — or "not ready: <check>"; a
// check's error goes to the log, never into the answer) and /metrics
// (Prometheus), plus /status (each generation's position and lag, JSON).
package httpapi

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Values of /readyz's "status": StatusReady, or one of the others followed by ": " and the
// names of the failing checks.
const (
	StatusReady       = "ok"
	StatusDegraded    = "degraded"
	StatusUnavailable = "not ready"
)

// Check is one readiness check; nil means ready.
type Check func(ctx context.Context) error

// Config configures the handler.
type Config struct {
	Registry *prometheus.Registry
	// Checks are run by /readyz, by name; one failing makes the service not ready (503).
	Checks map[string]Check
	// Optional checks are run by /readyz too, but one failing only makes the service
	// "degraded": still ready (200), since the data path does not need it.
	Optional map[string]Check
	// Status, when set, is served as JSON at /status.
	Status func() any
	// CheckTimeout bounds each check (default 2 s).
	CheckTimeout time.Duration
	// Log receives the errors of failing checks (default: discard).
	Log *slog.Logger
}

// Handler returns the HTTP handler.
func Handler(cfg Config) http.Handler {
	if cfg.CheckTimeout <= 0 {
		cfg.CheckTimeout = 2 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		type result struct {
			Name     string `json:"name"`
			OK       bool   `json:"ok"`
			Optional bool   `json:"optional,omitempty"`
		}
		out := struct {
			Ready  bool     `json:"ready"`
			Status string   `json:"status"`
			Checks []result `json:"checks"`
		}{Ready: true, Status: StatusReady}
		var down, degraded []string
		run := func(checks map[string]Check, optional bool) {
			names := make([]string, 0, len(checks))
			for n := range checks {
				names = append(names, n)
			}
			sort.Strings(names)
			for _, n := range names {
				ctx, cancel := context.WithTimeout(r.Context(), cfg.CheckTimeout)
				err := checks[n](ctx)
				cancel()
				res := result{Name: n, OK: err == nil, Optional: optional}
				if err != nil {
					cfg.Log.Warn("readiness check failed", "check", n, "optional", optional, "err", err)
					if optional {
						degraded = append(degraded, n)
					} else {
						out.Ready = false
						down = append(down, n)
					}
				}
				out.Checks = append(out.Checks, res)
			}
		}
		run(cfg.Checks, false)
		run(cfg.Optional, true)
		switch {
		case !out.Ready:
			out.Status = StatusUnavailable + ": " + strings.Join(down, ", ")
		case len(degraded) > 0:
			out.Status = StatusDegraded + ": " + strings.Join(degraded, ", ")
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
