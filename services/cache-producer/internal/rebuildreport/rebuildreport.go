// Package rebuildreport writes what the cache-producer's consumers know of in-place rebuilds
// (package rebuild) into the projection registry (workflows/registry.ReportRebuilds: the
// rebuild_reason, rebuild_detail and rebuild_since columns of distcache_generations), so that the
// control-plane's GetStatus, which reads only the registry and Temporal, shows a generation that
// is being rebuilt, and why: its topic was re-created, or Redis lost its data and its keys are
// missing until the rebuild is done.
//
// A Reporter looks at the consumers every Interval and sends the registry what changed, and
// everything again every Refresh (a row another producer wrote differently, during a rollout,
// is put right). The registry being down only delays the report: it is sent again at the next
// tick.
package rebuildreport

import (
	"context"
	"log/slog"
	"maps"
	"time"

	"github.com/distcache/distcache/services/cache-producer/internal/fanout"
	"github.com/distcache/distcache/workflows/registry"
)

// Source lists the consumed generations with their rebuild in progress (fanout.Manager).
type Source interface {
	Statuses() []fanout.Status
}

// Sink records reports (registry.Store).
type Sink interface {
	ReportRebuilds(ctx context.Context, reports []registry.RebuildReport) (int64, error)
}

var (
	_ Source = (*fanout.Manager)(nil)
	_ Sink   = (*registry.Store)(nil)
)

// Defaults of a Reporter.
const (
	DefaultInterval = time.Second
	DefaultRefresh  = 30 * time.Second
	// sendTimeout bounds one report: a registry that hangs delays it to the next tick.
	sendTimeout = 5 * time.Second
)

// Reporter reports the rebuilds of Source to Sink.
type Reporter struct {
	Source Source
	Sink   Sink
	// Interval between looks at the consumers (default DefaultInterval).
	Interval time.Duration
	// Refresh is how often every report is sent even if nothing changed (default
	// DefaultRefresh).
	Refresh time.Duration
	Logger  *slog.Logger
}

type key struct {
	proj string
	gen  int64
}

// Run reports until ctx ends.
func (r *Reporter) Run(ctx context.Context) {
	interval, refresh := r.Interval, r.Refresh
	if interval <= 0 {
		interval = DefaultInterval
	}
	if refresh <= 0 {
		refresh = DefaultRefresh
	}
	log := r.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var (
		sent    map[key]registry.Rebuild // what the registry was last told (nil: nothing yet)
		sentAt  time.Time
		failing bool
		tick    = time.NewTicker(interval)
	)
	defer tick.Stop()
	for {
		now := Reports(r.Source.Statuses())
		cur := map[key]registry.Rebuild{}
		for _, rep := range now {
			if rep.Rebuild != nil {
				cur[key{rep.Projection, rep.Generation}] = *rep.Rebuild
			}
		}
		if sent == nil || !maps.Equal(cur, sent) || time.Since(sentAt) >= refresh {
			sctx, cancel := context.WithTimeout(ctx, sendTimeout)
			n, err := r.Sink.ReportRebuilds(sctx, now)
			cancel()
			switch {
			case err != nil && ctx.Err() == nil:
				if !failing {
					log.Warn("reporting rebuilds to the registry failed; retrying", "err", err)
				}
				failing = true
			case err == nil:
				if failing || n > 0 {
					log.Info("rebuilds reported to the registry", "rows_changed", n, "rebuilding", len(cur))
				}
				failing, sent, sentAt = false, cur, time.Now()
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// Reports turns consumer statuses into registry reports: one per generation, with its rebuild
// or none.
func Reports(sts []fanout.Status) []registry.RebuildReport {
	out := make([]registry.RebuildReport, 0, len(sts))
	for _, s := range sts {
		rep := registry.RebuildReport{Projection: s.Projection, Generation: s.Generation}
		if s.Rebuild != nil {
			rep.Rebuild = &registry.Rebuild{Reason: s.Rebuild.Reason, Detail: s.Rebuild.Detail,
				Since: s.Rebuild.Since.UTC().Truncate(time.Microsecond)}
		}
		out = append(out, rep)
	}
	return out
}
