// Package reconcile keeps every projection's Redis pointer (dc:<projection>:current) in agreement
// with the registry, which is the record of which generation is live. A Redis that lost its data
// (a restart without persistence, a failover to a replica that was behind, a FLUSHALL) loses the
// pointers with it, and edges then answer "no live generation" although the registry says live;
// a pointer written by hand may name the wrong generation. Every Interval the Reconciler reads
// each projection's pointer under the registry's row lock and restores a missing or wrong one
// through distcache.Publisher.Cutover, whose control event also tells the edges.
package reconcile

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/distcache/distcache/workflows/registry"
)

// DefaultInterval is the time between two passes.
const DefaultInterval = 10 * time.Second

// Registry is what the Reconciler needs of the registry; *registry.Store implements it.
type Registry interface {
	ListProjections(ctx context.Context, after string, limit int) ([]registry.Projection, error)
	ReconcilePointer(ctx context.Context, name string, read registry.ReadFunc, swap registry.SwapFunc) (int64, bool, error)
}

var _ Registry = (*registry.Store)(nil)

// Pointer reads and moves the Redis pointers; *distcache.Publisher implements it.
type Pointer interface {
	CurrentGeneration(ctx context.Context, projection string) (int64, error)
	Cutover(ctx context.Context, projection string, generation int64) error
}

// Reconciler restores pointers. Create it with its fields set and call Run.
type Reconciler struct {
	Registry Registry
	Pointer  Pointer
	// Interval between passes (DefaultInterval when 0).
	Interval time.Duration
	// Restores counts restored pointers by projection (optional).
	Restores *prometheus.CounterVec
	// Failures counts passes over a projection that failed (optional).
	Failures prometheus.Counter
	Logger   *slog.Logger
}

// Run reconciles every Interval until ctx ends.
func (r *Reconciler) Run(ctx context.Context) {
	every := r.Interval
	if every <= 0 {
		every = DefaultInterval
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		r.Pass(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Pass reconciles every projection once and returns how many pointers it restored.
func (r *Reconciler) Pass(ctx context.Context) int {
	log := r.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	restored := 0
	after := ""
	for {
		ps, err := r.Registry.ListProjections(ctx, after, 200)
		if err != nil {
			if ctx.Err() == nil {
				r.fail()
				log.Warn("pointer reconcile: list projections", "err", err)
			}
			return restored
		}
		for _, p := range ps {
			after = p.Name
			if p.Current == 0 {
				continue
			}
			pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			found, ok, err := r.Registry.ReconcilePointer(pctx, p.Name, r.Pointer.CurrentGeneration, r.Pointer.Cutover)
			cancel()
			switch {
			case errors.Is(err, registry.ErrNotFound):
				// deleted meanwhile
			case err != nil:
				if ctx.Err() != nil {
					return restored
				}
				r.fail()
				log.Warn("pointer reconcile", "projection", p.Name, "err", err)
			case ok:
				restored++
				if r.Restores != nil {
					r.Restores.WithLabelValues(p.Name).Inc()
				}
				log.Warn("pointer restored from the registry (Redis had lost it or held another generation)",
					"projection", p.Name, "found", found, "restored_to", p.Current)
			}
		}
		if len(ps) < 200 {
			return restored
		}
	}
}

func (r *Reconciler) fail() {
	if r.Failures != nil {
		r.Failures.Inc()
	}
}
