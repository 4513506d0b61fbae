// Package fanout runs one topic reader (feed.Reader) per topic and feeds
// each batch to every generation that is kept up to date from that topic
// (states tailing, live and retiring), through a projector.Writer. Each generation keeps its
// own offset in Redis; a topic's consumer starts at the smallest of them and
// a generation skips the records below its own offset, so generations that
// joined at different points (a fresh backfill, an old live one) share one
// consumer without losing or repeating work.
//
// The set of generations comes from the registry (package registrywatch)
// through Manager.Update; a topic whose set changed has its consumer
// restarted, after the batch in flight is written.
//
// Before it reads, a consumer checks each generation's position against the
// topic's bounds (feed.ReadBounds), and it checks again whenever its reader
// loses the position (feed.ErrPositionLost: the topic was deleted, re-created
// or truncated under it) or a write finds the offset moved back
// (projector.ErrPositionMoved). A topic that does not exist is waited for. A
// stored offset past the topic's end, or counted in an earlier incarnation of
// the topic (a different topic ID), means the topic was re-created: the
// generation is rebuilt in place from the topic's start (package rebuild),
// and Status reports it until the rebuild is swept. A stored offset below the
// log start means records were deleted before they were read: the consumer
// logs and counts the offsets skipped (Observer.Skipped) and goes on from
// the log start. Manager.Rebuild asks for a rebuild for another cause.
//
// Redis losing a generation's data (a restart without persistence, a
// FLUSHALL) is noticed by the next batch, which finds the generation's
// offset or epoch not what it committed (projector.ErrBookkeepingLost), by
// a check of every generation's offset and epoch each LossCheckInterval
// while no record arrives, and, for a producer that starts with no memory of
// the generation, by the registry's record of its backfill; the consumer
// then rebuilds the generation in place from the topic's start (reason
// rebuild.ReasonDataLoss) instead of starting over from where the registry
// says its backfill ended. CheckDataLoss reports those rebuilds for
// readiness.
package fanout

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/distcache/distcache/libs/projection"
	"github.com/distcache/distcache/services/cache-producer/internal/projector"
	"github.com/distcache/distcache/services/cache-producer/internal/rebuild"
)

// Generation is one generation to keep up to date.
type Generation struct {
	Target projector.Target
	Topic  string
	State  string
	// StartOffset is where to start when Redis holds no offset for the
	// generation yet (the registry's record of where its backfill ended).
	StartOffset int64
}

func (g Generation) id() string { return g.Target.String() }

// Observer receives what the consumers do (metrics). Implementations must be
// safe for concurrent use.
type Observer interface {
	// Batch is called after a batch of a generation is written.
	Batch(t projector.Target, st projector.Stats, took time.Duration)
	// Position reports a generation's next offset and the topic's high
	// watermark as last seen.
	Position(t projector.Target, next, highWatermark int64)
	// Forget is called when a generation is no longer consumed here.
	Forget(t projector.Target)
	// Consumed counts records read from a topic.
	Consumed(topic string, n int)
	// Failure counts an error of a stage ("fetch", "write", "offset",
	// "rebuild").
	Failure(stage string)
	// Rebuilding reports that generation t is being rebuilt in place for
	// reason (rebuild.Reason*): begun now, or found in progress at start.
	Rebuilding(t projector.Target, reason string, begun bool)
	// Rebuilt reports that t's rebuild was swept, removing removed source
	// keys the re-created topic no longer has.
	Rebuilt(t projector.Target, removed int)
	// Skipped counts offsets of t's topic that were deleted before t read
	// them (the log start passed its offset).
	Skipped(t projector.Target, offsets int64)
	// Fenced counts a consumer stopped because another replica claimed
	// its generation t.
	Fenced(t projector.Target)
}

// NopObserver observes nothing.
type NopObserver struct{}

func (NopObserver) Batch(projector.Target, projector.Stats, time.Duration) {}
func (NopObserver) Position(projector.Target, int64, int64)                {}
func (NopObserver) Forget(projector.Target)                                {}
func (NopObserver) Consumed(string, int)                                   {}
func (NopObserver) Failure(string)                                         {}
func (NopObserver) Rebuilding(projector.Target, string, bool)              {}
func (NopObserver) Rebuilt(projector.Target, int)                          {}
func (NopObserver) Skipped(projector.Target, int64)                        {}
func (NopObserver) Fenced(projector.Target)                                {}

// Config configures a Manager.
type Config struct {
	// KafkaOpts are the base client options (seed brokers, TLS, SASL).
	KafkaOpts []kgo.Opt
	Writer    *projector.Writer
	// BatchSize is the most records written per batch (default 5000).
	BatchSize int
	// DrainTimeout bounds how long a stopping consumer may take to finish
	// its batch in flight (default 10 s).
	DrainTimeout time.Duration
	// LossCheckInterval is how often a consumer compares its generations'
	// offset and epoch in Redis with what it committed, besides every
	// batch, so that Redis losing data is noticed while no record arrives
	// (default 500 ms: an MGET of two keys per generation).
	LossCheckInterval time.Duration
	// Replica names this producer replica (config PRODUCER_REPLICA_NAME):
	// Status.Owner, and the writer claim it stores per generation.
	Replica string
	// Assigned consumes only the topics assigned to this replica (Assign,
	// Revoke: a Kafka consumer group shares the topics among the
	// replicas); without it every topic the registry lists is consumed.
	Assigned bool
	// Unclaimed consumers take no writer claim, so two Managers of one generation race on
	// the offset instead of fencing each other: the transaction's guard on the offset keeps
	// them correct on a single Redis node (what TestTwoWritersOneGeneration exercises, and
	// what a producer from before claims does beside one with them).
	Unclaimed bool
	Observer  Observer
	Logger    *slog.Logger
}

// Manager owns the topic consumers.
type Manager struct {
	cfg    Config
	mu     sync.Mutex
	topics map[string]*runner
	closed bool
	// wanted is every topic's generations as the registry last listed them
	// (Update); owned, with Config.Assigned, the topics the consumer group
	// assigned to this replica (Assign, Revoke). A topic is consumed when
	// it is wanted and (without Config.Assigned, always) owned.
	wanted map[string][]Generation
	owned  map[string]bool
	// view is the runners as Statuses sees them, published under mu, so
	// that a status read never waits for an Update stopping a consumer (a
	// consumer's writes may wait for a Redis that does not answer).
	view atomic.Pointer[[]*runner]

	failing atomic.Int32 // consumers currently retrying a failed write
}

// NewManager returns a Manager with no consumers.
func NewManager(cfg Config) (*Manager, error) {
	if cfg.Writer == nil {
		return nil, errors.New("fanout: Config.Writer is nil")
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = 5000
	}
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = 10 * time.Second
	}
	if cfg.LossCheckInterval <= 0 {
		cfg.LossCheckInterval = 500 * time.Millisecond
	}
	if cfg.Observer == nil {
		cfg.Observer = NopObserver{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Replica == "" {
		cfg.Replica = "cache-producer"
	}
	m := &Manager{cfg: cfg, topics: map[string]*runner{}, wanted: map[string][]Generation{}, owned: map[string]bool{}}
	m.publish()
	return m, nil
}

// publish makes the current runners what Statuses reads; m.mu is held.
func (m *Manager) publish() {
	rs := make([]*runner, 0, len(m.topics))
	for _, r := range m.topics {
		rs = append(rs, r)
	}
	m.view.Store(&rs)
}

// Update makes the consumers match gens: topics whose generations changed
// are restarted (their batch in flight written first), topics no longer
// listed are stopped. It returns once every stopped consumer has stopped, so
// a caller may then remove the bookkeeping of the generations dropped.
// With Config.Assigned only the topics assigned to this replica are
// consumed.
func (m *Manager) Update(ctx context.Context, gens []Generation) {
	byTopic := map[string][]Generation{}
	for _, g := range gens {
		byTopic[g.Topic] = append(byTopic[g.Topic], g)
	}
	for _, gs := range byTopic {
		sort.Slice(gs, func(i, j int) bool { return gs[i].id() < gs[j].id() })
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return
	}
	m.wanted = byTopic
	m.reconcile()
}

// Topics lists the topics the registry wants consumed (Update), sorted: the
// topics the replicas' consumer group shares.
func (m *Manager) Topics() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]string, 0, len(m.wanted))
	for t := range m.wanted {
		out = append(out, t)
	}
	sort.Strings(out)
	return out
}

// Assign hands topics to this replica (the consumer group assigned them):
// each is consumed once the registry wants it, under a new writer claim
// that takes its generations over from whichever replica wrote them. A
// consumer of one of them that was fenced is replaced.
func (m *Manager) Assign(topics []string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return
	}
	var fenced []*runner
	for _, t := range topics {
		m.owned[t] = true
		if r, ok := m.topics[t]; ok && r.fenced.Load() {
			fenced = append(fenced, r)
			delete(m.topics, t)
		}
	}
	m.stopAll(fenced)
	m.reconcile()
}

// Revoke takes topics from this replica (the consumer group revoked them,
// or the replica lost its membership): their consumers write their batch in
// flight and stop, and what the Writer cached of their generations is
// dropped (another replica writes them next). It returns once they have
// stopped.
func (m *Manager) Revoke(topics []string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, t := range topics {
		delete(m.owned, t)
	}
	if m.closed {
		return
	}
	m.reconcile()
}

// Owned lists the topics assigned to this replica (with Config.Assigned;
// otherwise every wanted topic), sorted.
func (m *Manager) Owned() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for t := range m.wanted {
		if m.owns(t) {
			out = append(out, t)
		}
	}
	sort.Strings(out)
	return out
}

// owns reports whether topic is this replica's; m.mu is held.
func (m *Manager) owns(topic string) bool { return !m.cfg.Assigned || m.owned[topic] }

// reconcile stops the consumers of topics that are not wanted and owned any
// more, or whose generations changed, and starts the missing ones; m.mu is
// held. A consumer restarted because its generations changed keeps its
// writer claim.
func (m *Manager) reconcile() {
	var stopping []*runner
	inherit := map[string]string{} // topic → claim to continue
	for topic, r := range m.topics {
		gs, ok := m.wanted[topic]
		if ok && m.owns(topic) && !r.fenced.Load() && sameGenerations(r.gens, gs) {
			r.setStates(gs)
			continue
		}
		if ok && m.owns(topic) && !r.fenced.Load() {
			inherit[topic] = r.claim
		}
		stopping = append(stopping, r)
		delete(m.topics, topic)
	}
	m.publish()
	m.stopAll(stopping)
	for topic, gs := range m.wanted {
		if _, ok := m.topics[topic]; ok || !m.owns(topic) {
			continue
		}
		r := newRunner(m, topic, gs, inherit[topic])
		m.topics[topic] = r
		go r.run()
		m.cfg.Logger.Info("consumer started", "topic", topic, "generations", genNames(gs))
	}
	m.publish()
}

// stopAll stops rs and waits for them; the generations none of the
// consumers left keeps are forgotten (metrics, the Writer's cache, mark and
// claim). m.mu is held.
func (m *Manager) stopAll(rs []*runner) {
	for _, r := range rs {
		r.stop()
	}
	for _, r := range rs {
		<-r.done
		keep := m.wanted[r.topic]
		if !m.owns(r.topic) {
			keep = nil
		}
		for _, g := range r.gens {
			if !containsGen(keep, g) {
				m.cfg.Observer.Forget(g.Target)
				m.cfg.Writer.Forget(g.Target)
			}
		}
	}
}

// Close stops every consumer, letting each finish its batch in flight.
func (m *Manager) Close() {
	m.mu.Lock()
	m.closed = true
	rs := make([]*runner, 0, len(m.topics))
	for _, r := range m.topics {
		rs = append(rs, r)
	}
	m.topics = map[string]*runner{}
	m.publish()
	m.mu.Unlock()
	for _, r := range rs {
		r.stop()
	}
	for _, r := range rs {
		<-r.done
	}
}

// Healthy reports whether no consumer is stuck retrying a failed write.
func (m *Manager) Healthy() bool { return m.failing.Load() == 0 }

// Status is one generation's consumer position.
type Status struct {
	Projection    string `json:"projection"`
	Generation    int64  `json:"generation"`
	Topic         string `json:"topic"`
	State         string `json:"state"`
	Next          int64  `json:"next_offset"`
	HighWatermark int64  `json:"high_watermark"`
	Lag           int64  `json:"lag"`
	// Owner is the replica that writes the generation (Config.Replica).
	Owner string `json:"owner"`
	// NewestSourceTime is the source time (the envelope's dc-source-ts) of
	// the newest record the generation applied since this replica took it;
	// zero when none yet.
	NewestSourceTime time.Time `json:"newest_source_time,omitzero"`
	// DeadLettersLastHour counts the records this replica dead-lettered for
	// the generation in the last hour.
	DeadLettersLastHour int `json:"dead_letters_last_hour"`
	// Rebuild is set while the generation is rebuilt in place.
	Rebuild *RebuildStatus `json:"rebuild,omitempty"`
}

// RebuildStatus describes a generation's rebuild in progress (package
// rebuild).
type RebuildStatus struct {
	Reason string    `json:"reason"` // rebuild.Reason*
	Detail string    `json:"detail"` // "topic reset: stored offset 1234 > end 56"
	Since  time.Time `json:"since"`
	// ReplacedOffset is the stored offset the rebuild replaced; the
	// rebuild is swept once the generation's offset reaches EndOffset.
	ReplacedOffset int64 `json:"replaced_offset"`
	EndOffset      int64 `json:"end_offset"`
}

// Statuses lists every consumed generation's position. It never waits for
// a consumer.
func (m *Manager) Statuses() []Status {
	var out []Status
	for _, r := range *m.view.Load() {
		if r.fenced.Load() {
			continue // another replica writes the topic now
		}
		out = append(out, r.statuses()...)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Projection != out[j].Projection {
			return out[i].Projection < out[j].Projection
		}
		return out[i].Generation < out[j].Generation
	})
	return out
}

// Rebuilding lists the generations being rebuilt in place.
func (m *Manager) Rebuilding() []Status {
	var out []Status
	for _, s := range m.Statuses() {
		if s.Rebuild != nil {
			out = append(out, s)
		}
	}
	return out
}

// ErrRebuilding is wrapped by CheckRebuilds' error.
var ErrRebuilding = errors.New("rebuilding in place")

// CheckRebuilds returns an error naming every generation being rebuilt in
// place and why (nil when none is), for a readiness check: the data path
// works, but those generations serve a mix of old and new content until
// their rebuild is swept.
func (m *Manager) CheckRebuilds() error {
	rs := m.Rebuilding()
	if len(rs) == 0 {
		return nil
	}
	parts := make([]string, len(rs))
	for i, s := range rs {
		parts[i] = fmt.Sprintf("%s/g%d (%s, offset %d of %d)", s.Projection, s.Generation, s.Rebuild.Detail, s.Next, s.Rebuild.EndOffset)
	}
	return fmt.Errorf("%w: %s", ErrRebuilding, strings.Join(parts, "; "))
}

// ErrDataLoss is wrapped by CheckDataLoss's error.
var ErrDataLoss = errors.New("data lost from Redis, rebuilding")

// CheckDataLoss returns an error naming every generation being rebuilt
// because Redis lost its data (reason rebuild.ReasonDataLoss), nil when none
// is, for a readiness check: until the rebuild reaches the topic's end as of
// its start, keys of those generations are missing from Redis.
func (m *Manager) CheckDataLoss() error {
	var parts []string
	for _, s := range m.Rebuilding() {
		if s.Rebuild.Reason == rebuild.ReasonDataLoss {
			parts = append(parts, fmt.Sprintf("%s/g%d (offset %d of %d)", s.Projection, s.Generation, s.Next, s.Rebuild.EndOffset))
		}
	}
	if len(parts) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %s", ErrDataLoss, strings.Join(parts, "; "))
}

// ErrNotConsumed is returned by Rebuild for a generation no consumer of
// this Manager keeps up to date.
var ErrNotConsumed = errors.New("fanout: generation not consumed here")

// Rebuild asks the consumer of generation gen of proj to rebuild it in
// place from the start of its topic, for cause (package rebuild): the
// consumer stops reading after the batch in flight, begins the rebuild and
// reads the topic again. It returns once the request is handed over.
func (m *Manager) Rebuild(proj string, gen int64, cause rebuild.Cause) error {
	for _, r := range *m.view.Load() {
		for i, g := range r.gens {
			if g.Target.Projection == proj && g.Target.Generation == gen {
				r.requestRebuild(i, cause)
				return nil
			}
		}
	}
	return fmt.Errorf("rebuild %s/g%d: %w", proj, gen, ErrNotConsumed)
}

func sameGenerations(a, b []Generation) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].id() != b[i].id() || !a[i].Target.Compiled.Definition().Equal(b[i].Target.Compiled.Definition()) {
			return false
		}
	}
	return true
}

func containsGen(gs []Generation, g Generation) bool {
	return slices.ContainsFunc(gs, func(x Generation) bool { return x.id() == g.id() })
}

func genNames(gs []Generation) string {
	s := make([]string, len(gs))
	for i, g := range gs {
		s[i] = g.id()
	}
	return strings.Join(s, ",")
}

// CompileTarget compiles a definition into a target.
func CompileTarget(proj string, gen int64, def projection.Definition) (projector.Target, error) {
	c, err := projection.Compile(def)
	if err != nil {
		return projector.Target{}, fmt.Errorf("compile %s/g%d: %w", proj, gen, err)
	}
	return projector.Target{Projection: proj, Generation: gen, Compiled: c}, nil
}
