// Package prodmetrics declares the cache-producer's Prometheus metrics (all
// named distcache_producer_*) on a registry of its own, and implements the
// observer interfaces of packages fanout and backfill.
package prodmetrics

import (
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/distcache/distcache/services/cache-producer/internal/backfill"
	"github.com/distcache/distcache/services/cache-producer/internal/fanout"
	"github.com/distcache/distcache/services/cache-producer/internal/projector"
)

const ns = "distcache_producer_"

// Metrics holds every metric of the service.
type Metrics struct {
	Registry *prometheus.Registry

	consumed    *prometheus.CounterVec
	events      *prometheus.CounterVec
	writes      *prometheus.CounterVec
	applied     *prometheus.CounterVec
	filtered    *prometheus.CounterVec
	deadLetters *prometheus.CounterVec
	failures    *prometheus.CounterVec
	batchTime   *prometheus.HistogramVec
	freshness   *prometheus.HistogramVec
	lag         *prometheus.GaugeVec
	position    *prometheus.GaugeVec
	rate        *prometheus.GaugeVec
	backfilled  *prometheus.CounterVec
	skipped     *prometheus.CounterVec
	generations prometheus.Gauge
	registryOK  prometheus.Gauge
	rebuilds    *prometheus.CounterVec
	rebuilding  *prometheus.GaugeVec
	swept       *prometheus.CounterVec
	unread      *prometheus.CounterVec
	owned       prometheus.Gauge
	rebalances  *prometheus.CounterVec
	fenced      *prometheus.CounterVec

	mu    sync.Mutex
	rates map[string]*ewma // topic → events/s
	stop  chan struct{}
	once  sync.Once
}

var _ fanout.Observer = (*Metrics)(nil)
var _ backfill.Observer = (*Metrics)(nil)

// New creates the metrics on a fresh registry (with the Go and process
// collectors).
func New() *Metrics {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	gl := []string{"projection", "generation"}
	m := &Metrics{
		Registry: reg,
		consumed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: ns + "records_consumed_total",
			Help: "Records read from each topic by the live consumers."}, []string{"topic"}),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{Name: ns + "events_total",
			Help: "Records processed per generation (live consumers)."}, gl),
		writes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: ns + "writes_total",
			Help: "Writes sent to Redis per generation, by op (set, delete)."}, []string{"projection", "generation", "op"}),
		applied: prometheus.NewCounterVec(prometheus.CounterOpts{Name: ns + "writes_applied_total",
			Help: "Writes that changed Redis (not replays) per generation."}, gl),
		filtered: prometheus.NewCounterVec(prometheus.CounterOpts{Name: ns + "filtered_total",
			Help: "Records the projection's filter rejected (their key is deleted)."}, gl),
		deadLetters: prometheus.NewCounterVec(prometheus.CounterOpts{Name: ns + "dead_letters_total",
			Help: "Records sent to a generation's dead-letter stream, by reason."}, []string{"projection", "generation", "reason"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{Name: ns + "failures_total",
			Help: "Errors by stage (fetch, write, offset, rebuild, registry); writes are retried."}, []string{"stage"}),
		batchTime: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: ns + "batch_seconds",
			Help: "Time to write one batch into one generation.", Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14)}, []string{"kind"}),
		freshness: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: ns + "commit_to_redis_seconds",
			Help:    "Per live batch that changed Redis: from the core's commit of its oldest record (dc-source-ts) to the batch's commit in Redis.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 17)}, []string{"projection"}),
		lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: ns + "lag_records",
			Help: "High watermark of the topic minus the generation's next offset."}, gl),
		position: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: ns + "next_offset",
			Help: "The generation's next offset (everything before it is written)."}, gl),
		rate: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: ns + "events_per_second",
			Help: "Records consumed per second per topic, smoothed over about 10 s."}, []string{"topic"}),
		skipped: prometheus.NewCounterVec(prometheus.CounterOpts{Name: ns + "records_skipped_total",
			Help: "Records a batch found written already (a replay after a restart, or another writer of the generation)."}, gl),
		backfilled: prometheus.NewCounterVec(prometheus.CounterOpts{Name: ns + "backfill_records_total",
			Help: "Records written by backfills per generation."}, gl),
		generations: prometheus.NewGauge(prometheus.GaugeOpts{Name: ns + "generations",
			Help: "Generations kept up to date by this producer."}),
		registryOK: prometheus.NewGauge(prometheus.GaugeOpts{Name: ns + "registry_up",
			Help: "1 when the last registry load succeeded."}),
		rebuilds: prometheus.NewCounterVec(prometheus.CounterOpts{Name: ns + "generation_rebuilds_total",
			Help: "In-place rebuilds of a generation from its topic's start begun, by reason (topic_reset: the topic was re-created; data_loss)."},
			[]string{"projection", "generation", "reason"}),
		rebuilding: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: ns + "generation_rebuilding",
			Help: "1 while the generation is rebuilt in place (until its re-read reaches the topic's end as of the rebuild's start and is swept)."}, gl),
		swept: prometheus.NewCounterVec(prometheus.CounterOpts{Name: ns + "rebuild_removed_source_keys_total",
			Help: "Source keys a rebuild's sweep removed (absent from the re-created topic); their projected keys are deleted."}, gl),
		unread: prometheus.NewCounterVec(prometheus.CounterOpts{Name: ns + "unread_offsets_skipped_total",
			Help: "Offsets the topic's log start passed before the generation read them (records deleted unread); consumption went on from the log start."}, gl),
		owned: prometheus.NewGauge(prometheus.GaugeOpts{Name: ns + "topics_owned",
			Help: "Topics this replica is assigned by the consumer group (it writes their generations)."}),
		rebalances: prometheus.NewCounterVec(prometheus.CounterOpts{Name: ns + "rebalances_total",
			Help: "Consumer group assignment changes seen by this replica, by kind (assigned, revoked, lost)."}, []string{"kind"}),
		fenced: prometheus.NewCounterVec(prometheus.CounterOpts{Name: ns + "fenced_writes_total",
			Help: "Batches refused because another replica had claimed the generation (this replica's writes were fenced)."}, gl),
		rates: map[string]*ewma{},
		stop:  make(chan struct{}),
	}
	reg.MustRegister(m.consumed, m.events, m.writes, m.applied, m.filtered, m.deadLetters, m.failures,
		m.batchTime, m.freshness, m.lag, m.position, m.rate, m.backfilled, m.generations, m.registryOK, m.skipped,
		m.rebuilds, m.rebuilding, m.swept, m.unread, m.owned, m.rebalances, m.fenced)
	for _, kind := range []string{"assigned", "revoked", "lost"} {
		m.rebalances.WithLabelValues(kind) // every kind exported from the start, at 0
	}
	go m.tick()
	return m
}

func genLabels(t projector.Target) []string {
	return []string{t.Projection, strconv.FormatInt(t.Generation, 10)}
}

func (m *Metrics) record(t projector.Target, st projector.Stats) {
	p, g := t.Projection, strconv.FormatInt(t.Generation, 10)
	if st.Sets > 0 {
		m.writes.WithLabelValues(p, g, "set").Add(float64(st.Sets))
	}
	if st.Deletes > 0 {
		m.writes.WithLabelValues(p, g, "delete").Add(float64(st.Deletes))
	}
	if st.Applied > 0 {
		m.applied.WithLabelValues(p, g).Add(float64(st.Applied))
	}
	if st.Filtered > 0 {
		m.filtered.WithLabelValues(p, g).Add(float64(st.Filtered))
	}
	if st.Skipped > 0 {
		m.skipped.WithLabelValues(p, g).Add(float64(st.Skipped))
	}
	for reason, n := range st.DeadReasons {
		m.deadLetters.WithLabelValues(p, g, reason).Add(float64(n))
	}
}

// WatchConflicts exports w's count of transactions lost to another writer
// and the size of its index cache.
func (m *Metrics) WatchConflicts(w *projector.Writer) {
	m.Registry.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Name: ns + "tx_conflicts_total",
		Help: "Write transactions that lost to another writer of the same generation and were planned again."},
		func() float64 { return float64(w.Conflicts()) }))
	m.Registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: ns + "index_cache_entries",
		Help: "Source-key index entries held in memory, over every generation (about 100 bytes each)."},
		func() float64 { return float64(w.IndexCacheEntries()) }))
}

// Batch implements fanout.Observer.
func (m *Metrics) Batch(t projector.Target, st projector.Stats, took time.Duration) {
	m.events.WithLabelValues(genLabels(t)...).Add(float64(st.Records))
	m.record(t, st)
	m.batchTime.WithLabelValues("live").Observe(took.Seconds())
	if st.Applied > 0 && !st.OldestSourceTime.IsZero() {
		// A batch of replays only (nothing applied) says nothing about freshness.
		m.freshness.WithLabelValues(t.Projection).Observe(max(time.Since(st.OldestSourceTime).Seconds(), 0))
	}
}

// BackfillBatch implements backfill.Observer.
func (m *Metrics) BackfillBatch(t projector.Target, st projector.Stats, took time.Duration) {
	m.backfilled.WithLabelValues(genLabels(t)...).Add(float64(st.Records))
	m.record(t, st)
	m.batchTime.WithLabelValues("backfill").Observe(took.Seconds())
}

// Position implements fanout.Observer.
func (m *Metrics) Position(t projector.Target, next, hwm int64) {
	m.position.WithLabelValues(genLabels(t)...).Set(float64(next))
	if hwm >= 0 && next >= 0 {
		m.lag.WithLabelValues(genLabels(t)...).Set(float64(max(hwm-next, 0)))
	}
}

// Forget implements fanout.Observer.
func (m *Metrics) Forget(t projector.Target) {
	l := genLabels(t)
	m.position.DeleteLabelValues(l...)
	m.lag.DeleteLabelValues(l...)
	m.rebuilding.DeleteLabelValues(l...)
}

// TopicsOwned sets the number of topics assigned to this replica.
func (m *Metrics) TopicsOwned(n int) { m.owned.Set(float64(n)) }

// Rebalanced counts an assignment change of kind "assigned", "revoked" or
// "lost" (a lost assignment: the session expired before a revoke).
func (m *Metrics) Rebalanced(kind string) { m.rebalances.WithLabelValues(kind).Inc() }

// Fenced counts a batch of t refused because another replica claimed t.
func (m *Metrics) Fenced(t projector.Target) { m.fenced.WithLabelValues(genLabels(t)...).Inc() }

// Rebuilding implements fanout.Observer.
func (m *Metrics) Rebuilding(t projector.Target, reason string, begun bool) {
	l := genLabels(t)
	if begun {
		m.rebuilds.WithLabelValues(append(l, reason)...).Inc()
	}
	m.rebuilding.WithLabelValues(l...).Set(1)
}

// Rebuilt implements fanout.Observer.
func (m *Metrics) Rebuilt(t projector.Target, removed int) {
	l := genLabels(t)
	m.rebuilding.WithLabelValues(l...).Set(0)
	m.swept.WithLabelValues(l...).Add(float64(removed))
}

// Skipped implements fanout.Observer.
func (m *Metrics) Skipped(t projector.Target, offsets int64) {
	m.unread.WithLabelValues(genLabels(t)...).Add(float64(offsets))
}

// Consumed implements fanout.Observer.
func (m *Metrics) Consumed(topic string, n int) {
	m.consumed.WithLabelValues(topic).Add(float64(n))
	m.mu.Lock()
	e, ok := m.rates[topic]
	if !ok {
		e = &ewma{}
		m.rates[topic] = e
	}
	e.pending += float64(n)
	m.mu.Unlock()
}

// Failure implements fanout.Observer.
func (m *Metrics) Failure(stage string) { m.failures.WithLabelValues(stage).Inc() }

// Generations sets the number of generations consumed.
func (m *Metrics) Generations(n int) { m.generations.Set(float64(n)) }

// RegistryUp records the outcome of a registry load.
func (m *Metrics) RegistryUp(ok bool) {
	if ok {
		m.registryOK.Set(1)
	} else {
		m.registryOK.Set(0)
		m.failures.WithLabelValues("registry").Inc()
	}
}

// ewma is an events/s rate smoothed over about 10 s (1 s ticks).
type ewma struct {
	pending float64
	rate    float64
}

func (m *Metrics) tick() {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-m.stop:
			return
		case <-t.C:
		}
		m.mu.Lock()
		for topic, e := range m.rates {
			e.rate += 0.1 * (e.pending - e.rate)
			e.pending = 0
			m.rate.WithLabelValues(topic).Set(e.rate)
		}
		m.mu.Unlock()
	}
}

// Close stops the rate ticker.
func (m *Metrics) Close() { m.once.Do(func() { close(m.stop) }) }
