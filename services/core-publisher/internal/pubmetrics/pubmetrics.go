// Package pubmetrics declares the core-publisher's Prometheus metrics, once,
// on a registry of their own.
package pubmetrics

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metrics holds every metric of the service.
type Metrics struct {
	Registry *prometheus.Registry

	// EventsPublished counts records acknowledged by the broker, by aggregate.
	EventsPublished *prometheus.CounterVec
	// DeadLetters counts outbox rows moved to distcache_outbox_dead, by aggregate.
	DeadLetters *prometheus.CounterVec
	// DeadLettersPruned counts dead letters deleted past their retention.
	DeadLettersPruned prometheus.Counter
	// Lag is the age of the oldest unpublished outbox row (0 when empty).
	Lag prometheus.Gauge
	// Active is 1 while this instance holds the relay lease, 0 in standby.
	Active prometheus.Gauge
	// BatchSeconds observes the time of one relay batch (read, produce, delete).
	BatchSeconds prometheus.Histogram
	// CommitToAck observes the time from an outbox row's created_at to its
	// acknowledgement by the broker.
	CommitToAck prometheus.Histogram
	// Errors counts failed relay passes, by stage.
	Errors *prometheus.CounterVec
	// Reads counts the relay's reads of the outbox, by result: "rows" (it
	// found rows to publish) or "empty".
	Reads *prometheus.CounterVec
	// ModelsHeld is 1 while a model's events are held back in the outbox
	// because its topic is refused (unsuitable, or the broker refused to
	// create it), 0 once they flow again. See the status in /readyz.
	ModelsHeld *prometheus.GaugeVec
	// BackloadRows counts rows written by backloads, by model.
	BackloadRows *prometheus.CounterVec
	// BackloadProgress is the fraction (0..1) of a model's running or last
	// backload done.
	BackloadProgress *prometheus.GaugeVec
	// BackloadRunning is 1 while a model's backload runs in this process.
	BackloadRunning *prometheus.GaugeVec
}

// New creates the metrics on a fresh registry, with the Go and process
// collectors.
func New() *Metrics {
	r := prometheus.NewRegistry()
	m := &Metrics{
		Registry: r,
		EventsPublished: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "distcache_publisher_events_total",
			Help: "Outbox events acknowledged by the broker.",
		}, []string{"aggregate"}),
		DeadLetters: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "distcache_publisher_dead_letters_total",
			Help: "Outbox rows moved to distcache_outbox_dead: invalid, oversized, of an unknown model, older than the published version, or refused by the broker.",
		}, []string{"aggregate"}),
		DeadLettersPruned: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "distcache_publisher_dead_letters_pruned_total",
			Help: "Dead letters deleted from distcache_outbox_dead past their retention (PUBLISHER_DEAD_LETTER_RETENTION).",
		}),
		Lag: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "distcache_publisher_lag_seconds",
			Help: "Age of the oldest unpublished outbox row, 0 when the outbox is empty.",
		}),
		Active: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "distcache_publisher_active",
			Help: "1 while this instance holds the relay lease (active), 0 in standby.",
		}),
		BatchSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "distcache_publisher_batch_seconds",
			Help:    "Duration of one relay batch: read, produce and acknowledge, delete.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}),
		CommitToAck: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "distcache_publisher_commit_to_ack_seconds",
			Help:    "Time from an outbox row's created_at to the broker's acknowledgement.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}),
		Errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "distcache_publisher_errors_total",
			Help: "Failed relay passes, by stage (read, produce, commit, lease, topic, catalog, prune).",
		}, []string{"stage"}),
		ModelsHeld: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "distcache_publisher_models_held",
			Help: "1 while the model's events are held back in the outbox because its topic is refused, 0 once they flow.",
		}, []string{"aggregate"}),
		BackloadRows: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "distcache_publisher_backload_rows_total",
			Help: "Rows written to the outbox by backloads.",
		}, []string{"model"}),
		BackloadProgress: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "distcache_publisher_backload_progress_ratio",
			Help: "Fraction of the model's table done by its running or last backload.",
		}, []string{"model"}),
		Reads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "distcache_publisher_outbox_reads_total",
			Help: "Reads of the outbox by the active relay, by result (rows: it found rows to publish; empty).",
		}, []string{"result"}),
		BackloadRunning: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "distcache_publisher_backload_running",
			Help: "1 while a backload of the model runs in this process.",
		}, []string{"model"}),
	}
	r.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.EventsPublished, m.DeadLetters, m.DeadLettersPruned, m.Lag, m.Active, m.BatchSeconds, m.CommitToAck,
		m.Errors, m.Reads, m.ModelsHeld, m.BackloadRows, m.BackloadProgress, m.BackloadRunning,
	)
	for _, result := range []string{"rows", "empty"} {
		m.Reads.WithLabelValues(result) // both exported from the start, at 0
	}
	return m
}
