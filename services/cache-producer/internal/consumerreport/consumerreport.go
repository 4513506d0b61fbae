// Package consumerreport writes what this cache-producer replica knows of each generation it keeps
// up to date into the projection registry (workflows/registry.ReportConsumers: table
// distcache_generation_consumers, one row per generation), so that the control-plane's GetStatus,
// which reads only the registry and Temporal, can answer "is it fresh?": which replica owns the
// generation, its position and the topic's end as that replica saw them (the lag), the source time
// of the newest change it applied, its dead letters in the last hour, and when it said so.
//
// Unlike rebuildreport, every report is sent at every tick even when nothing changed: reported_at
// moving is the report's point, since a report that stops moving says that no replica consumes the
// generation. With a consumer group a replica reports only the topics it owns; a topic that moves
// to another replica gets that replica's rows. The registry being down only delays the report.
package consumerreport

import (
	"context"
	"log/slog"
	"time"

	"github.com/distcache/distcache/services/cache-producer/internal/fanout"
	"github.com/distcache/distcache/workflows/registry"
)

// Source lists the consumed generations with their position and freshness (fanout.Manager).
type Source interface {
	Statuses() []fanout.Status
}

// Sink records reports (registry.Store).
type Sink interface {
	ReportConsumers(ctx context.Context, reports []registry.ConsumerReport) (int64, error)
}

var (
	_ Source = (*fanout.Manager)(nil)
	_ Sink   = (*registry.Store)(nil)
)

// DefaultInterval is how often a Reporter reports unless Interval says otherwise.
const DefaultInterval = 2 * time.Second

// Reporter reports the consumers of Source to Sink every Interval.
type Reporter struct {
	Source Source
	Sink   Sink
	// Interval between reports (default DefaultInterval).
	Interval time.Duration
	Logger   *slog.Logger
}

// Run reports until ctx ends.
func (r *Reporter) Run(ctx context.Context) {
	interval := r.Interval
	if interval <= 0 {
		interval = DefaultInterval
	}
	log := r.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	failing := false
	for {
		if reports := Reports(r.Source.Statuses()); len(reports) > 0 {
			// One interval at most: a registry that hangs delays the report to the next tick.
			sctx, cancel := context.WithTimeout(ctx, interval)
			_, err := r.Sink.ReportConsumers(sctx, reports)
			cancel()
			switch {
			case err != nil && ctx.Err() == nil:
				if !failing {
					log.Warn("reporting the consumers' status to the registry failed; retrying", "err", err)
				}
				failing = true
			case err == nil && failing:
				log.Info("the consumers' status is reported to the registry again", "generations", len(reports))
				failing = false
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// Reports turns consumer statuses into registry reports, one per generation.
func Reports(sts []fanout.Status) []registry.ConsumerReport {
	out := make([]registry.ConsumerReport, 0, len(sts))
	for _, s := range sts {
		out = append(out, registry.ConsumerReport{
			Projection: s.Projection, Generation: s.Generation, Owner: s.Owner,
			NextOffset: s.Next, HighWatermark: s.HighWatermark,
			NewestSourceTime: s.NewestSourceTime, DeadLettersLastHour: s.DeadLettersLastHour,
		})
	}
	return out
}
