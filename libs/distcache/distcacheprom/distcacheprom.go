// Package distcacheprom exports a distcache Client's counters to Prometheus.
//
//	reg.MustRegister(distcacheprom.NewCollector(client))
//
// The collector reads Client.Stats at scrape time, so the hot read path pays
// nothing for Prometheus.
package distcacheprom

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/distcache/distcache/libs/distcache"
)

// Source is what the collector reads; *distcache.Client implements it.
type Source interface {
	Stats() distcache.Stats
}

var _ Source = (*distcache.Client)(nil)

// Collector is a prometheus.Collector over a Source.
type Collector struct {
	src Source
}

var _ prometheus.Collector = (*Collector)(nil)

// NewCollector returns a collector of src's counters. Register it once per
// Client.
func NewCollector(src Source) *Collector { return &Collector{src: src} }

var (
	labels = []string{"projection"}

	descHits         = prometheus.NewDesc("distcache_client_hits_total", "Reads served from local memory (including stale serves).", labels, nil)
	descMisses       = prometheus.NewDesc("distcache_client_misses_total", "Reads that went to Redis.", labels, nil)
	descNegativeHits = prometheus.NewDesc("distcache_client_negative_hits_total", "Reads answered from a remembered absence.", labels, nil)
	descStaleServes  = prometheus.NewDesc("distcache_client_stale_serves_total", "Reads served from memory while out of contact with Redis.", labels, nil)
	descFetchErrors  = prometheus.NewDesc("distcache_client_fetch_errors_total", "Misses Redis could not answer.", labels, nil)
	descEvictions    = prometheus.NewDesc("distcache_client_evictions_total", "Local entries evicted, by reason.", []string{"projection", "reason"}, nil)
	descBytes        = prometheus.NewDesc("distcache_client_bytes", "Local bytes held (keys, values, headers).", labels, nil)
	descCapacity     = prometheus.NewDesc("distcache_client_capacity_bytes", "Bytes the local store has allocated: held, reserved up front (WithLocalPresize) or dead awaiting a compaction.", labels, nil)
	descItems        = prometheus.NewDesc("distcache_client_items", "Local entries held.", labels, nil)
	descUpdates      = prometheus.NewDesc("distcache_client_updates_total", "Changes applied in place from the change stream.", labels, nil)
	descChanges      = prometheus.NewDesc("distcache_client_changes_seen_total", "Change-stream entries read.", labels, nil)
	descFills        = prometheus.NewDesc("distcache_client_fills_total", "Entries stored after a miss or a warm start.", labels, nil)
	descLag          = prometheus.NewDesc("distcache_client_stream_lag_seconds", "Age of the last change applied, when applied.", labels, nil)
	descGaps         = prometheus.NewDesc("distcache_client_stream_gaps_total", "Times the stream position was trimmed away (each costs a revalidation).", labels, nil)
	descReplays      = prometheus.NewDesc("distcache_client_stream_replays_total", "Changes replayed after a lost connection.", labels, nil)
	descCutovers     = prometheus.NewDesc("distcache_client_cutovers_total", "Generation switches followed.", labels, nil)
	descDeletes      = prometheus.NewDesc("distcache_client_projection_deletes_total", "Projection deletes followed (local entries dropped).", labels, nil)
	descUnknown      = prometheus.NewDesc("distcache_client_unknown_stream_entries_total", "Change-stream entries of an unknown form (each revalidated the projection).", labels, nil)
	descGeneration   = prometheus.NewDesc("distcache_client_generation", "Generation read locally.", labels, nil)
	descConnected    = prometheus.NewDesc("distcache_client_connected", "1 when the change-stream tail is in contact with Redis.", labels, nil)
	descStale        = prometheus.NewDesc("distcache_client_stale", "1 when local reads are stale (contact lost, or catching up after a start from a snapshot).", labels, nil)

	descSnapWrites      = prometheus.NewDesc("distcache_client_snapshot_writes_total", "Local snapshot files written.", labels, nil)
	descSnapWriteErrors = prometheus.NewDesc("distcache_client_snapshot_write_errors_total", "Local snapshot writes that failed.", labels, nil)
	descSnapBytes       = prometheus.NewDesc("distcache_client_snapshot_bytes", "Size of the last local snapshot file written.", labels, nil)
	descSnapLoaded      = prometheus.NewDesc("distcache_client_snapshot_entries_loaded_total", "Entries loaded from the local snapshot at start.", labels, nil)
	descSnapRejections  = prometheus.NewDesc("distcache_client_snapshot_load_rejections_total", "Local snapshot files found at start but not loaded, by reason.", []string{"projection", "reason"}, nil)

	descLosses        = prometheus.NewDesc("distcache_client_redis_losses_total", "Losses of Redis's data found (restart, stream or pointer vanished, stream rewound), by how they were found.", []string{"projection", "reason"}, nil)
	descInLoss        = prometheus.NewDesc("distcache_client_redis_loss", "1 while recovering from a loss of Redis's data (held entries served stale).", labels, nil)
	descLossPending   = prometheus.NewDesc("distcache_client_redis_loss_pending_keys", "Held keys Redis has not given back yet since the pointer came back.", labels, nil)
	descTailReplica   = prometheus.NewDesc("distcache_client_tail_from_replica", "1 when the change-stream tail reads from a replica.", labels, nil)
	descTailFallbacks = prometheus.NewDesc("distcache_client_tail_replica_fallbacks_total", "Moves of the change-stream tail to the primary because its replica failed or hung.", labels, nil)
	descReconnects    = prometheus.NewDesc("distcache_client_tail_reconnects_total", "Times the change-stream tail got back in contact with Redis after losing it.", labels, nil)
	descFetchLatency  = prometheus.NewDesc("distcache_client_fetch_duration_seconds", "Latency of the Redis fetches of misses (failed ones included).", labels, nil)

	allDescs = []*prometheus.Desc{descHits, descMisses, descNegativeHits, descStaleServes, descFetchErrors,
		descEvictions, descBytes, descCapacity, descItems, descUpdates, descChanges, descFills, descLag, descGaps, descReplays,
		descCutovers, descDeletes, descUnknown, descGeneration, descConnected, descStale,
		descSnapWrites, descSnapWriteErrors, descSnapBytes, descSnapLoaded, descSnapRejections,
		descLosses, descInLoss, descLossPending, descTailReplica, descTailFallbacks, descReconnects, descFetchLatency}
)

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range allDescs {
		ch <- d
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	for _, p := range c.src.Stats().Projections {
		counter := func(d *prometheus.Desc, v uint64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), p.Name)
		}
		gauge := func(d *prometheus.Desc, v float64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, p.Name)
		}
		counter(descHits, p.Hits)
		counter(descMisses, p.Misses)
		counter(descNegativeHits, p.NegativeHits)
		counter(descStaleServes, p.StaleServes)
		counter(descFetchErrors, p.FetchErrors)
		for _, r := range distcache.EvictReasons {
			ch <- prometheus.MustNewConstMetric(descEvictions, prometheus.CounterValue, float64(p.Evictions(r)), p.Name, r.String())
		}
		gauge(descBytes, float64(p.Bytes))
		gauge(descCapacity, float64(p.Capacity))
		gauge(descItems, float64(p.Items))
		counter(descUpdates, p.Updates)
		counter(descChanges, p.ChangesSeen)
		counter(descFills, p.Fills)
		gauge(descLag, p.StreamLag.Seconds())
		counter(descGaps, p.Gaps)
		counter(descReplays, p.Replays)
		counter(descCutovers, p.Cutovers)
		counter(descDeletes, p.Deletes)
		counter(descUnknown, p.UnknownEntries)
		gauge(descGeneration, float64(p.Generation))
		gauge(descConnected, b2f(p.Connected))
		gauge(descStale, b2f(p.Stale))
		counter(descSnapWrites, p.SnapshotWrites)
		counter(descSnapWriteErrors, p.SnapshotWriteErrors)
		gauge(descSnapBytes, float64(p.SnapshotBytes))
		counter(descSnapLoaded, p.SnapshotEntriesLoaded)
		for _, r := range distcache.SnapshotRejectReasons {
			ch <- prometheus.MustNewConstMetric(descSnapRejections, prometheus.CounterValue, float64(p.SnapshotRejections[r]), p.Name, r.String())
		}
		for _, r := range distcache.LossReasons {
			ch <- prometheus.MustNewConstMetric(descLosses, prometheus.CounterValue, float64(p.Losses[r]), p.Name, r.String())
		}
		gauge(descInLoss, b2f(p.InLoss))
		gauge(descLossPending, float64(p.LossPendingKeys))
		gauge(descTailReplica, b2f(p.TailFromReplica))
		counter(descTailFallbacks, p.TailReplicaFallbacks)
		counter(descReconnects, p.Reconnects)
		if h := p.FetchLatency; len(h.Bounds) == len(h.Counts) {
			buckets := make(map[float64]uint64, len(h.Bounds))
			for i, b := range h.Bounds {
				buckets[b] = h.Counts[i]
			}
			ch <- prometheus.MustNewConstHistogram(descFetchLatency, h.Count, h.Sum.Seconds(), buckets, p.Name)
		}
	}
}
