// Package cpmetrics declares the control-plane's Prometheus metrics (all named
// distcache_controlplane_*), once, on a registry of their own; package server
// records them. The other services have theirs in pubmetrics (core-publisher)
// and prodmetrics (cache-producer).
package cpmetrics

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metrics holds every metric of the service.
type Metrics struct {
	Registry *prometheus.Registry

	// Requests counts API calls (gRPC and, through the gateway, REST) by
	// method and gRPC code.
	Requests *prometheus.CounterVec
	// Duration observes API call latency by method.
	Duration *prometheus.HistogramVec
	// Panics counts API handlers that panicked (answered INTERNAL; the process lives on).
	Panics *prometheus.CounterVec
	// PointerRestores counts Redis pointers restored from the registry, by projection.
	PointerRestores *prometheus.CounterVec
	// PointerReconcileFailures counts reconcile steps that failed (Redis or the registry down).
	PointerReconcileFailures prometheus.Counter
	// BuildOutcomes counts generations that ended a build, by projection and outcome
	// (workflows.BuildLive: cut over to; workflows.BuildFailed: marked failed).
	BuildOutcomes *prometheus.CounterVec
}

// New creates the metrics on a fresh registry, with the Go and process
// collectors.
func New() *Metrics {
	r := prometheus.NewRegistry()
	m := &Metrics{
		Registry: r,
		Requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "distcache_controlplane_requests_total",
			Help: "API calls (gRPC and, through the gateway, REST) by method and gRPC code.",
		}, []string{"method", "code"}),
		Duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "distcache_controlplane_request_duration_seconds",
			Help:    "API call latency by method.",
			Buckets: prometheus.DefBuckets,
		}, []string{"method"}),
		Panics: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "distcache_controlplane_panics_total",
			Help: "API handlers that panicked, by method: answered INTERNAL, logged with the stack; the process lives on.",
		}, []string{"method"}),
		PointerRestores: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "distcache_controlplane_pointer_restores_total",
			Help: "Redis generation pointers found missing or wrong and restored from the registry, by projection.",
		}, []string{"projection"}),
		PointerReconcileFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "distcache_controlplane_pointer_reconcile_failures_total",
			Help: "Pointer reconcile steps that failed (Redis or the registry unreachable).",
		}),
		BuildOutcomes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "distcache_controlplane_build_outcomes_total",
			Help: "Generations that ended a build, by projection and outcome: live (a cutover made it current), failed (marked failed; its keys are unlinked).",
		}, []string{"projection", "outcome"}),
	}
	r.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.Requests, m.Duration, m.Panics, m.PointerRestores, m.PointerReconcileFailures, m.BuildOutcomes,
	)
	return m
}
