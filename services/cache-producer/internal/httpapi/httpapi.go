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
	"errors"
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
	// CheckTimeout bounds each check (default 2 s). The checks run
	// concurrently, so /readyz answers within about CheckTimeout even when
	// several dependencies hang, and a check still running then (one that
	// ignores its context) counts as failed.
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
		for _, res := range runChecks(r.Context(), cfg) {
			if res.err != nil {
				cfg.Log.Warn("readiness check failed", "check", res.name, "optional", res.optional, "err", res.err)
				if res.optional {
					degraded = append(degraded, res.name)
				} else {
					out.Ready = false
					down = append(down, res.name)
				}
			}
			out.Checks = append(out.Checks, result{Name: res.name, OK: res.err == nil, Optional: res.optional})
		}
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

// checkResult is one check's outcome.
type checkResult struct {
	name     string
	optional bool
	err      error
}

// errNoAnswer is the outcome of a check still running at its deadline.
var errNoAnswer = errors.New("no answer within the check timeout")

// runChecks runs every check of cfg at once, each under CheckTimeout, and
// returns their outcomes, required checks first, each group by name. It
// returns within CheckTimeout and a little more even if a check ignores its
// context: that check is reported as failed and left to finish on its own.
func runChecks(ctx context.Context, cfg Config) []checkResult {
	var out []checkResult
	for _, group := range []struct {
		checks   map[string]Check
		optional bool
	}{{cfg.Checks, false}, {cfg.Optional, true}} {
		names := make([]string, 0, len(group.checks))
		for n := range group.checks {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			out = append(out, checkResult{name: n, optional: group.optional, err: errNoAnswer})
		}
	}
	checks := func(r checkResult) Check {
		if r.optional {
			return cfg.Optional[r.name]
		}
		return cfg.Checks[r.name]
	}
	type done struct {
		i   int
		err error
	}
	results := make(chan done, len(out)) // buffered: a late check never blocks
	for i, r := range out {
		go func() {
			cctx, cancel := context.WithTimeout(ctx, cfg.CheckTimeout)
			defer cancel()
			results <- done{i, checks(r)(cctx)}
		}()
	}
	grace := time.NewTimer(cfg.CheckTimeout + 100*time.Millisecond)
	defer grace.Stop()
	for range out {
		select {
		case d := <-results:
			out[d.i].err = d.err
		case <-grace.C:
			return out
		}
	}
	return out
}
