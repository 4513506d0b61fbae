// Package membership shares the topics among the cache-producer replicas
// through a Kafka consumer group, used for assignment only (issue #15): the
// group's cooperative-sticky balancer decides which replica owns which
// topic (one partition each), and this package hands the decisions to the
// fan-out (fanout.Manager's Assign and Revoke). The group client fetches no
// records (every topic is paused) and commits no offsets: a generation's
// offset stays in Redis with its data, and the replica that takes a topic
// over claims its generations there (ledger.WriterKey), which fences a
// replica that was paused past the session timeout.
//
// A replica that dies loses its topics to the others once the broker misses
// its heartbeats for the session timeout; one that stops cleanly leaves the
// group after its consumers wrote their batch in flight, so the others take
// its topics at once. Cooperative rebalancing moves only the topics that
// change owner: the others are never paused.
package membership

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Config configures a Member.
type Config struct {
	// KafkaOpts are the base client options (seed brokers, TLS, SASL).
	KafkaOpts []kgo.Opt
	// Group is the consumer group's id, the same for every replica.
	Group string
	// SessionTimeout, HeartbeatInterval and RebalanceTimeout are the
	// group's (kgo.SessionTimeout, ...); zero keeps franz-go's default.
	SessionTimeout    time.Duration
	HeartbeatInterval time.Duration
	RebalanceTimeout  time.Duration
	// Assigned is called with topics the group assigned to this replica;
	// Revoked with topics it takes away (lost: the membership expired
	// before they could be handed over). Revoked must return only once the
	// replica stopped writing them. They are called one at a time, from
	// the group's management goroutine.
	Assigned func(topics []string)
	Revoked  func(topics []string, lost bool)
	Logger   *slog.Logger
}

// Member is this replica's membership of the group.
type Member struct {
	cfg Config
	cl  *kgo.Client

	mu     sync.Mutex
	topics []string        // the topics subscribed to, sorted
	owned  map[string]bool // assigned and not revoked
}

// New joins the group (once SetTopics gave it topics to share).
func New(cfg Config) (*Member, error) {
	if cfg.Group == "" {
		return nil, errors.New("membership: empty group id")
	}
	if cfg.Assigned == nil || cfg.Revoked == nil {
		return nil, errors.New("membership: Assigned and Revoked are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	m := &Member{cfg: cfg, owned: map[string]bool{}}
	opts := append(slices.Clone(cfg.KafkaOpts),
		kgo.ConsumerGroup(cfg.Group),
		kgo.Balancers(kgo.CooperativeStickyBalancer()),
		kgo.DisableAutoCommit(),
		kgo.OnPartitionsAssigned(func(_ context.Context, _ *kgo.Client, a map[string][]int32) { m.assigned(a) }),
		kgo.OnPartitionsRevoked(func(_ context.Context, _ *kgo.Client, r map[string][]int32) { m.revoked(r, false) }),
		kgo.OnPartitionsLost(func(_ context.Context, _ *kgo.Client, l map[string][]int32) { m.revoked(l, true) }),
	)
	if cfg.SessionTimeout > 0 {
		opts = append(opts, kgo.SessionTimeout(cfg.SessionTimeout))
	}
	if cfg.HeartbeatInterval > 0 {
		opts = append(opts, kgo.HeartbeatInterval(cfg.HeartbeatInterval))
	}
	if cfg.RebalanceTimeout > 0 {
		opts = append(opts, kgo.RebalanceTimeout(cfg.RebalanceTimeout))
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("membership: kafka client: %w", err)
	}
	m.cl = cl
	return m, nil
}

func names(tp map[string][]int32) []string {
	out := make([]string, 0, len(tp))
	for t := range tp {
		out = append(out, t)
	}
	sort.Strings(out)
	return out
}

func (m *Member) assigned(a map[string][]int32) {
	ts := names(a)
	if len(ts) == 0 {
		return
	}
	m.mu.Lock()
	for _, t := range ts {
		m.owned[t] = true
	}
	m.mu.Unlock()
	m.cfg.Logger.Info("topics assigned", "topics", ts)
	m.cfg.Assigned(ts)
}

func (m *Member) revoked(r map[string][]int32, lost bool) {
	ts := names(r)
	if len(ts) == 0 {
		return
	}
	m.mu.Lock()
	for _, t := range ts {
		delete(m.owned, t)
	}
	m.mu.Unlock()
	if lost {
		m.cfg.Logger.Warn("topics lost: the group membership expired (was this replica paused or cut off?)", "topics", ts)
	} else {
		m.cfg.Logger.Info("topics revoked", "topics", ts)
	}
	m.cfg.Revoked(ts, lost)
}

// SetTopics makes topics the ones this replica shares with the group (every
// replica passes the same list, the registry's): topics added are joined,
// topics removed are left. The client never fetches them.
func (m *Member) SetTopics(topics []string) {
	topics = slices.Clone(topics)
	sort.Strings(topics)
	m.mu.Lock()
	old := m.topics
	m.topics = topics
	m.mu.Unlock()
	var added, removed []string
	for _, t := range topics {
		if _, ok := slices.BinarySearch(old, t); !ok {
			added = append(added, t)
		}
	}
	for _, t := range old {
		if _, ok := slices.BinarySearch(topics, t); !ok {
			removed = append(removed, t)
		}
	}
	if len(added) > 0 {
		m.cl.PauseFetchTopics(added...) // assignment only: never fetch
		m.cl.AddConsumeTopics(added...)
		m.cfg.Logger.Info("sharing topics through the consumer group", "group", m.cfg.Group, "topics", added)
	}
	if len(removed) > 0 {
		m.cl.PurgeTopicsFromConsuming(removed...)
		m.mu.Lock()
		for _, t := range removed {
			delete(m.owned, t)
		}
		m.mu.Unlock()
		m.cfg.Logger.Info("no longer sharing topics (the registry has no generation of them)", "topics", removed)
	}
}

// Owned lists the topics assigned to this replica, sorted.
func (m *Member) Owned() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]string, 0, len(m.owned))
	for t := range m.owned {
		out = append(out, t)
	}
	sort.Strings(out)
	return out
}

// Run polls the group client until ctx ends, logging the errors it reports
// (a broker that refuses the group, for example). It returns no records:
// every topic is paused.
func (m *Member) Run(ctx context.Context) {
	for ctx.Err() == nil {
		fs := m.cl.PollFetches(ctx)
		if fs.IsClientClosed() {
			return
		}
		fs.EachError(func(topic string, _ int32, err error) {
			if ctx.Err() == nil && !errors.Is(err, context.Canceled) {
				m.cfg.Logger.Warn("consumer group", "topic", topic, "err", err)
			}
		})
	}
}

// Close leaves the group: the topics this replica owns are revoked first
// (Revoked returns once their consumers stopped), then the others take
// them at once. Call it after Run's ctx ended, never from a callback.
func (m *Member) Close() {
	m.cl.Close()
}
