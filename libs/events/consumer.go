package events

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Log attribute keys of the Consumer.
const (
	logKeyTopic     = "topic"
	logKeyPartition = "partition"
	logKeyOffset    = "offset"
	logKeyError     = "err"
)

// Handler receives one change. Tombstones arrive as OpDelete envelopes. A
// non-nil error stops Consumer.Run, which returns it.
type Handler func(ctx context.Context, e Envelope) error

// ErrConsumerClosed is returned by Consumer.Run after Close.
var ErrConsumerClosed = errors.New("events consumer closed")

// Consumer reads the topics of one or more aggregates directly (no consumer
// group: every instance sees every change) and calls a Handler per record, in
// order per topic. It is meant for services that only want change
// notifications; projections into Redis are the cache-producer's job.
type Consumer struct {
	cl        *kgo.Client
	handler   Handler
	log       *slog.Logger
	onInvalid func(*kgo.Record, error)

	closeOnce sync.Once
	closed    chan struct{}
}

type consumerConfig struct {
	prefix    string
	start     kgo.Offset
	log       *slog.Logger
	onInvalid func(*kgo.Record, error)
	kopts     []kgo.Opt
}

// ConsumerOption configures a Consumer.
type ConsumerOption func(*consumerConfig)

// WithTopicPrefix sets the topic prefix (see Topic). Default
// DefaultTopicPrefix.
func WithTopicPrefix(prefix string) ConsumerOption {
	return func(c *consumerConfig) { c.prefix = prefix }
}

// WithStartOffset sets where consumption starts in every topic. Default
// kgo.NewOffset().AtStart() (the whole compacted state, then live changes);
// use AtEnd() for live changes only.
func WithStartOffset(o kgo.Offset) ConsumerOption {
	return func(c *consumerConfig) { c.start = o }
}

// WithLogger sets the logger. Default: discard.
func WithLogger(l *slog.Logger) ConsumerOption {
	return func(c *consumerConfig) { c.log = l }
}

// WithInvalidRecordHandler sets what happens to a record FromRecord rejects.
// Default: log it at warn level and skip it.
func WithInvalidRecordHandler(f func(r *kgo.Record, err error)) ConsumerOption {
	return func(c *consumerConfig) { c.onInvalid = f }
}

// WithClientOptions adds franz-go client options (SASL, TLS, ...). The
// consumer sets the seed brokers, topics and start offset itself.
func WithClientOptions(opts ...kgo.Opt) ConsumerOption {
	return func(c *consumerConfig) { c.kopts = append(c.kopts, opts...) }
}

// NewConsumer returns a Consumer of the aggregates' topics on brokers,
// calling h for each change. Call Run to consume and Close to release it.
func NewConsumer(brokers []string, aggregates []string, h Handler, opts ...ConsumerOption) (*Consumer, error) {
	cfg := consumerConfig{
		prefix: DefaultTopicPrefix,
		start:  kgo.NewOffset().AtStart(),
		log:    slog.New(slog.DiscardHandler),
	}
	for _, o := range opts {
		o(&cfg)
	}
	if len(brokers) == 0 {
		return nil, errors.New("new events consumer: no brokers")
	}
	if len(aggregates) == 0 {
		return nil, errors.New("new events consumer: no aggregates")
	}
	if h == nil {
		return nil, errors.New("new events consumer: nil handler")
	}
	if err := ValidateTopicPrefix(cfg.prefix); err != nil {
		return nil, fmt.Errorf("new events consumer: %w", err)
	}
	topics := make([]string, len(aggregates))
	for i, a := range aggregates {
		if err := ValidateAggregateName(a); err != nil {
			return nil, fmt.Errorf("new events consumer: %w", err)
		}
		topics[i] = Topic(cfg.prefix, a)
	}
	kopts := append([]kgo.Opt{
		kgo.SeedBrokers(brokers...),
		kgo.ConsumeTopics(topics...),
		kgo.ConsumeResetOffset(cfg.start),
		// core-publisher writes with Kafka transactions: records of a relay that died mid-batch
		// are aborted and must not be delivered (its successor publishes them again).
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
	}, cfg.kopts...)
	cl, err := kgo.NewClient(kopts...)
	if err != nil {
		return nil, fmt.Errorf("new events consumer: %w", err)
	}
	c := &Consumer{cl: cl, handler: h, log: cfg.log, onInvalid: cfg.onInvalid, closed: make(chan struct{})}
	if c.onInvalid == nil {
		c.onInvalid = func(r *kgo.Record, err error) {
			c.log.Warn("skipping invalid event record", logKeyTopic, r.Topic, logKeyPartition, r.Partition, logKeyOffset, r.Offset, logKeyError, err)
		}
	}
	return c, nil
}

// Run consumes until ctx is done (returning nil), Close is called
// (ErrConsumerClosed) or the handler fails (its error, wrapped). Call it
// once: after a handler error the rest of that fetch is not delivered, so
// make a new Consumer (its start offset decides where it resumes) rather than
// calling Run again.
func (c *Consumer) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-c.closed:
			cancel()
		case <-ctx.Done():
		}
	}()
	for {
		fetches := c.cl.PollFetches(ctx)
		select {
		case <-c.closed:
			return ErrConsumerClosed
		default:
		}
		if ctx.Err() != nil {
			return nil
		}
		for _, fe := range fetches.Errors() {
			if errors.Is(fe.Err, context.Canceled) || errors.Is(fe.Err, kgo.ErrClientClosed) {
				continue
			}
			// Fetch errors are retried by the client; report them.
			c.log.Warn("events consumer fetch error", logKeyTopic, fe.Topic, logKeyPartition, fe.Partition, logKeyError, fe.Err)
		}
		var herr error
		fetches.EachRecord(func(r *kgo.Record) {
			if herr != nil {
				return
			}
			e, err := FromRecord(r)
			if err != nil {
				c.onInvalid(r, err)
				return
			}
			if err := c.handler(ctx, e); err != nil {
				herr = fmt.Errorf("events consumer: handle %s/%s version %d (offset %d): %w", e.Aggregate, e.Key, e.Version, r.Offset, err)
			}
		})
		if herr != nil {
			return herr
		}
	}
}

// Close stops Run and releases the client. It is safe to call more than once.
func (c *Consumer) Close() {
	c.closeOnce.Do(func() {
		close(c.closed)
		c.cl.Close()
	})
}
