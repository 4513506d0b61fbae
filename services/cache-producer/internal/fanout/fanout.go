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
	"github.com/distcache/distcache/services/cache-producer/internal/feed"
	"github.com/distcache/distcache/services/cache-producer/internal/projector"
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
	// Failure counts an error of a stage ("fetch", "write", "offset").
	Failure(stage string)
}

// NopObserver observes nothing.
type NopObserver struct{}

func (NopObserver) Batch(projector.Target, projector.Stats, time.Duration) {}
func (NopObserver) Position(projector.Target, int64, int64)                {}
func (NopObserver) Forget(projector.Target)                                {}
func (NopObserver) Consumed(string, int)                                   {}
func (NopObserver) Failure(string)                                         {}

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
	Observer     Observer
	Logger       *slog.Logger
}

// Manager owns the topic consumers.
type Manager struct {
	cfg    Config
	mu     sync.Mutex
	topics map[string]*runner
	closed bool

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
	if cfg.Observer == nil {
		cfg.Observer = NopObserver{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Manager{cfg: cfg, topics: map[string]*runner{}}, nil
}

// Update makes the consumers match gens: topics whose generations changed
// are restarted (their batch in flight written first), topics no longer
// listed are stopped. It returns once every stopped consumer has stopped, so
// a caller may then remove the bookkeeping of the generations dropped.
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
	var stopping []*runner
	for topic, r := range m.topics {
		if gs, ok := byTopic[topic]; ok && sameGenerations(r.gens, gs) {
			r.setStates(gs)
			continue
		}
		stopping = append(stopping, r)
		delete(m.topics, topic)
	}
	for _, r := range stopping {
		r.stop()
	}
	for _, r := range stopping {
		<-r.done
		for _, g := range r.gens {
			if !containsGen(byTopic[r.topic], g) {
				m.cfg.Observer.Forget(g.Target)
				m.cfg.Writer.Forget(g.Target)
			}
		}
	}
	for topic, gs := range byTopic {
		if _, ok := m.topics[topic]; ok {
			continue
		}
		r := newRunner(m, topic, gs)
		m.topics[topic] = r
		go r.run()
		m.cfg.Logger.Info("consumer started", "topic", topic, "generations", genNames(gs))
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
}

// Statuses lists every consumed generation's position.
func (m *Manager) Statuses() []Status {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []Status
	for _, r := range m.topics {
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

// runner is one topic's consumer.
type runner struct {
	m     *Manager
	topic string
	gens  []Generation
	log   *slog.Logger

	stopOnce sync.Once
	stopc    chan struct{}
	done     chan struct{}

	mu     sync.Mutex
	states map[string]string
	next   []int64 // per gen, guarded by mu
	hwm    atomic.Int64
}

func newRunner(m *Manager, topic string, gens []Generation) *runner {
	r := &runner{m: m, topic: topic, gens: gens, log: m.cfg.Logger.With("topic", topic),
		stopc: make(chan struct{}), done: make(chan struct{}), states: map[string]string{}}
	r.next = make([]int64, len(gens))
	for i := range r.next {
		r.next[i] = -1
	}
	r.hwm.Store(-1)
	r.setStates(gens)
	return r
}

func (r *runner) setStates(gs []Generation) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, g := range gs {
		r.states[g.id()] = g.State
	}
}

func (r *runner) stop() { r.stopOnce.Do(func() { close(r.stopc) }) }

func (r *runner) statuses() []Status {
	r.mu.Lock()
	defer r.mu.Unlock()
	hwm := r.hwm.Load()
	out := make([]Status, len(r.gens))
	for i, g := range r.gens {
		s := Status{Projection: g.Target.Projection, Generation: g.Target.Generation, Topic: r.topic,
			State: r.states[g.id()], Next: r.next[i], HighWatermark: hwm}
		if hwm >= 0 && r.next[i] >= 0 {
			s.Lag = max(hwm-r.next[i], 0)
		}
		out[i] = s
	}
	return out
}

func (r *runner) run() {
	defer close(r.done)
	// Polling ends at stop; writes get DrainTimeout more to finish what was
	// read.
	pollCtx, cancelPoll := context.WithCancel(context.Background())
	writeCtx, cancelWrite := context.WithCancel(context.Background())
	defer cancelPoll()
	defer cancelWrite()
	go func() {
		select {
		case <-r.stopc:
		case <-r.done:
			return
		}
		cancelPoll()
		t := time.NewTimer(r.m.cfg.DrainTimeout)
		defer t.Stop()
		select {
		case <-t.C:
			cancelWrite()
		case <-r.done:
		}
	}()

	// Each generation's start: its stored offset, or the registry's.
	start := int64(-1)
	for i, g := range r.gens {
		var off int64
		err := projector.Retry(pollCtx, func() error {
			var err error
			off, err = r.m.cfg.Writer.Ledger().InitOffset(pollCtx, g.Target.Projection, g.Target.Generation, g.StartOffset)
			return err
		}, func(err error) {
			r.m.cfg.Observer.Failure("offset")
			r.log.Warn("read generation offset", "generation", g.id(), "err", err)
		})
		if err != nil {
			return
		}
		r.mu.Lock()
		r.next[i] = off
		r.mu.Unlock()
		if start < 0 || off < start {
			start = off
		}
		r.m.cfg.Observer.Position(g.Target, off, r.hwm.Load())
	}

	targets := make([]*projection.Projection, len(r.gens))
	for i, g := range r.gens {
		targets[i] = g.Target.Compiled
	}
	rd, err := feed.NewReader(feed.Config{
		KafkaOpts: r.m.cfg.KafkaOpts, Topic: r.topic, From: start, MaxRecords: r.m.cfg.BatchSize,
		Fields: feed.FieldsOf(targets...), // a changed definition makes a new runner
		OnFetchError: func(err error) {
			r.m.cfg.Observer.Failure("fetch")
			r.log.Debug("fetch", "err", err)
		},
	})
	if err != nil {
		r.log.Error("create topic reader", "err", err)
		r.m.cfg.Observer.Failure("fetch")
		return
	}
	defer rd.Close()

	// One writer pipeline per generation.
	ins := make([]chan feed.Batch, len(r.gens))
	var wg sync.WaitGroup
	for i := range r.gens {
		ins[i] = make(chan feed.Batch, 1)
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			r.writeGeneration(writeCtx, i, ins[i])
		}(i)
	}
	_ = rd.Run(pollCtx, r.dispatcher(pollCtx, ins)) // ends with pollCtx
	for _, in := range ins {
		close(in)
	}
	wg.Wait()
}

// writeGeneration runs generation i's writer over the batches of in.
func (r *runner) writeGeneration(ctx context.Context, i int, in chan feed.Batch) {
	g := r.gens[i]
	failing := false
	onErr := func(err error) {
		if !failing {
			failing = true
			r.m.failing.Add(1)
		}
		r.m.cfg.Observer.Failure("write")
		r.log.Warn("write batch, retrying", "generation", g.id(), "err", err)
	}
	err := r.m.cfg.Writer.Run(ctx, g.Target, in, onErr, func(next int64, st projector.Stats, took time.Duration) {
		if failing {
			failing = false
			r.m.failing.Add(-1)
		}
		r.mu.Lock()
		r.next[i] = next
		r.mu.Unlock()
		r.m.cfg.Observer.Batch(g.Target, st, took)
		r.m.cfg.Observer.Position(g.Target, next, r.hwm.Load())
	})
	if failing {
		r.m.failing.Add(-1)
	}
	if err != nil && ctx.Err() == nil {
		r.log.Error("generation writer stopped", "generation", g.id(), "err", err)
	}
	for range in { // let the poller finish
	}
}

// dispatcher returns the function that hands each batch the topic's reader
// emits to every generation, from the generation's own offset on: a
// generation past the batch skips it, one in its middle gets the records
// at or past its offset.
func (r *runner) dispatcher(ctx context.Context, ins []chan feed.Batch) func(feed.Batch) error {
	dispatched := make([]int64, len(r.gens))
	r.mu.Lock()
	copy(dispatched, r.next)
	r.mu.Unlock()
	return func(b feed.Batch) error {
		if b.End >= 0 {
			r.hwm.Store(b.End)
		}
		r.m.cfg.Observer.Consumed(r.topic, len(b.Records))
		for i := range r.gens {
			if b.Next <= dispatched[i] {
				continue // this generation is past the batch
			}
			sub := b
			if len(sub.Records) > 0 && sub.Records[0].Offset < dispatched[i] {
				j := sort.Search(len(sub.Records), func(j int) bool { return sub.Records[j].Offset >= dispatched[i] })
				sub.Records = sub.Records[j:]
			}
			select {
			case ins[i] <- sub:
				dispatched[i] = b.Next
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return nil
	}
}

// CompileTarget compiles a definition into a target.
func CompileTarget(proj string, gen int64, def projection.Definition) (projector.Target, error) {
	c, err := projection.Compile(def)
	if err != nil {
		return projector.Target{}, fmt.Errorf("compile %s/g%d: %w", proj, gen, err)
	}
	return projector.Target{Projection: proj, Generation: gen, Compiled: c}, nil
}
