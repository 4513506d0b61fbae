// Package producer writes event records to Kafka with franz-go: an
// idempotent, acks=all, batching producer that creates missing topics as
// compacted single-partition topics and refuses to write into an existing
// topic that is not compacted or has more than one partition.
//
// Size limits are one number, the largest event (WithMaxEventSize, the
// relay's limit too): the client's record batch limit and the max.message.bytes
// of every topic the producer creates are that number plus BatchOverhead, so
// an event the relay accepts is never refused for its size by the client or
// by a topic the producer created.
package producer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/distcache/distcache/libs/events"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// ErrTopicUnsuitable is matched (errors.Is) by a *TopicError: the topic exists
// but cannot carry full-state records (not compacted, or more than one
// partition, so per-key order or the latest state per key is not kept), the
// broker refused to create it, or (from Produce) the broker refuses writes
// to it (an ACL, a policy): no record of that topic can be published until
// someone changes the broker.
var ErrTopicUnsuitable = errors.New("topic unsuitable for distcache")

// TopicError says why a topic was refused.
type TopicError struct {
	Topic  string
	Reason string
}

func (e *TopicError) Error() string {
	return fmt.Sprintf("topic %s refused: %s", e.Topic, e.Reason)
}

// Is makes errors.Is(err, ErrTopicUnsuitable) true.
func (e *TopicError) Is(target error) bool { return target == ErrTopicUnsuitable }

// RecordError is returned by Produce when the broker (or the client, before
// sending) refused a record for what it is rather than for a passing
// condition: too large, invalid or corrupt. Retrying it would fail again, so
// the caller should set the record aside (the relay dead-letters it) and
// produce the others again. With transactions the failed transaction was
// aborted: none of the batch's records were committed.
//
// The broker refuses a whole record batch at once, so Index is the first
// record of the call's records (in call order) that failed, which may be a
// record that only shared a batch with the culprit: produce it alone to know.
type RecordError struct {
	Index int    // in the records passed to Produce
	Topic string // the record's topic
	Err   error  // the refusal, matching a *kerr.Error
}

func (e *RecordError) Error() string {
	return fmt.Sprintf("produce to %s: record %d refused: %v", e.Topic, e.Index, e.Err)
}

func (e *RecordError) Unwrap() error { return e.Err }

// recordRefusal reports whether err refuses a record for what it is: an
// error that fails again on every retry of the same record.
func recordRefusal(err error) bool {
	for _, k := range []*kerr.Error{kerr.MessageTooLarge, kerr.RecordListTooLarge, kerr.InvalidRecord,
		kerr.CorruptMessage, kerr.InvalidTimestamp} {
		if errors.Is(err, k) {
			return true
		}
	}
	return false
}

// topicRefusal reports whether err refuses writes to a whole topic, for
// every record, until someone changes the broker's ACLs or policies.
func topicRefusal(err error) bool {
	return errors.Is(err, kerr.TopicAuthorizationFailed) || errors.Is(err, kerr.PolicyViolation)
}

// BatchOverhead is added to the largest event to get the record batch limit
// (kgo.ProducerBatchMaxBytes) and the max.message.bytes of created topics.
// events.Envelope.Size counts the key, the payload, the aggregate and the
// user headers; on the wire a record also carries the record batch header
// (61 bytes), the record's own varint lengths and attributes (under 30
// bytes), the five dc-* headers (names about 60 bytes, values a version, an
// op, a UUID, a timestamp and the aggregate: under 300 bytes) and a few
// varint bytes per user header. 64 KiB covers that with room for a thousand
// or so user headers; a record over it is still refused cleanly (a
// *RecordError), never by stalling the relay.
const BatchOverhead = 64 << 10

// BatchMaxBytes is the record batch limit and topic max.message.bytes for
// events of up to maxEventBytes: maxEventBytes + BatchOverhead.
func BatchMaxBytes(maxEventBytes int) int { return maxEventBytes + BatchOverhead }

// MaxEventBytesLimit is the largest WithMaxEventSize value: the batch limit
// must stay well within franz-go's 100 MiB broker write limit.
const MaxEventBytesLimit = 64 << 20

// Producer produces records and waits for their acknowledgement. It is safe
// for concurrent use.
type Producer struct {
	cl  *kgo.Client
	adm *kadm.Client
	cfg config

	mu      sync.Mutex
	checked map[string]topicCheck
}

type topicCheck struct {
	err error
	at  time.Time
}

// recheckRefused is how long a refused topic stays refused before it is
// checked again (someone may fix its configuration).
const recheckRefused = 30 * time.Second

type config struct {
	replicationFactor int16
	linger            time.Duration
	log               *slog.Logger
	transactionalID   string
	maxEventBytes     int
	compression       string
}

// Option configures a Producer.
type Option func(*config)

// WithReplicationFactor sets the replication factor of topics the producer
// creates. Default -1: the broker's default.replication.factor.
func WithReplicationFactor(n int) Option {
	return func(c *config) { c.replicationFactor = int16(n) }
}

// WithLinger sets how long a partition's batch waits for more records before
// it is sent. Default 2ms. Produce flushes explicitly at the end of a batch,
// so linger only shapes requests built while a batch is being handed over.
func WithLinger(d time.Duration) Option { return func(c *config) { c.linger = d } }

// WithLogger sets the logger. Default: discard.
func WithLogger(l *slog.Logger) Option { return func(c *config) { c.log = l } }

// WithTransactionalID makes Produce write each batch in a Kafka
// transaction under id. Every relay of one outbox uses the same id, so the
// broker fences a relay that lost its lease: once its successor's producer
// starts, requests of the old one still in flight are rejected (its open
// transaction is aborted), and its records can never land after the
// successor's. Default: no transactions (idempotent producer only).
func WithTransactionalID(id string) Option { return func(c *config) { c.transactionalID = id } }

// WithMaxEventSize sets the largest event (events.Envelope.Size) the
// producer must carry: the client's record batch limit and the
// max.message.bytes of topics it creates are BatchMaxBytes(n). Use the same
// n as the relay. Default events.DefaultMaxEventBytes; at most
// MaxEventBytesLimit.
func WithMaxEventSize(n int) Option { return func(c *config) { c.maxEventBytes = n } }

// Compressions are the record batch codecs WithCompression accepts.
var Compressions = []string{"none", "lz4", "zstd", "snappy", "gzip"}

// DefaultCompression is the codec of record batches when WithCompression is not given: lz4.
// Measured by `make bench -compression none,lz4,zstd` (three interleaved runs at 10,000
// events/s): lz4 cut the CPU per event of the publisher (-21%), the cache-producer (-20%) and
// the broker (-50%) against none, and the bytes fetched per event 5.3× (351 → 66 B); zstd
// fetched fewer bytes still (39 B) but cost the publisher more CPU than none.
const DefaultCompression = "lz4"

// WithCompression sets the codec of the record batches the producer sends: one of
// Compressions. Compression costs the publisher CPU to save broker bytes; every consumer pays
// its decompression. Default DefaultCompression.
func WithCompression(codec string) Option { return func(c *config) { c.compression = codec } }

// codec returns the franz-go codec of a WithCompression name.
func codec(name string) (kgo.CompressionCodec, error) {
	switch name {
	case "none":
		return kgo.NoCompression(), nil
	case "lz4":
		return kgo.Lz4Compression(), nil
	case "zstd":
		return kgo.ZstdCompression(), nil
	case "snappy":
		return kgo.SnappyCompression(), nil
	case "gzip":
		return kgo.GzipCompression(), nil
	}
	return kgo.CompressionCodec{}, fmt.Errorf("producer: compression %q, want one of %s", name, strings.Join(Compressions, ", "))
}

// New makes a producer over the connection conn: the franz-go options that
// reach the brokers (seed brokers, client id, TLS, SASL), as
// kafkaconf.Config.Opts builds them from PUBLISHER_KAFKA_*; tests pass
// kgo.SeedBrokers alone. New adds the producer's own options after them. It
// does not contact the brokers yet.
func New(conn []kgo.Opt, opts ...Option) (*Producer, error) {
	cfg := config{replicationFactor: -1, linger: 2 * time.Millisecond, maxEventBytes: events.DefaultMaxEventBytes, compression: DefaultCompression}
	for _, o := range opts {
		o(&cfg)
	}
	if len(conn) == 0 {
		return nil, errors.New("producer: no connection options (at least kgo.SeedBrokers)")
	}
	if cfg.maxEventBytes < 1 || cfg.maxEventBytes > MaxEventBytesLimit {
		return nil, fmt.Errorf("producer: max event bytes %d, want 1..%d", cfg.maxEventBytes, MaxEventBytesLimit)
	}
	comp, err := codec(cfg.compression)
	if err != nil {
		return nil, err
	}
	if cfg.log == nil {
		cfg.log = slog.New(slog.DiscardHandler)
	}
	kopts := append(slices.Clip(conn),
		kgo.RequiredAcks(kgo.AllISRAcks()), // idempotency (the default) requires acks=all
		kgo.ProducerLinger(cfg.linger),
		kgo.ProducerBatchCompression(comp),
		// The default (1,000,012) is below 1 MiB: events the relay accepts
		// would be refused here, and the relay would retry them forever.
		kgo.ProducerBatchMaxBytes(int32(BatchMaxBytes(cfg.maxEventBytes))),
		kgo.MaxBufferedRecords(200_000),
		kgo.RetryBackoffFn(func(tries int) time.Duration {
			return min(time.Duration(tries)*50*time.Millisecond, time.Second)
		}),
	)
	if cfg.transactionalID != "" {
		kopts = append(kopts, kgo.TransactionalID(cfg.transactionalID), kgo.TransactionTimeout(time.Minute))
	}
	cl, err := kgo.NewClient(kopts...)
	if err != nil {
		return nil, fmt.Errorf("producer: new client: %w", err)
	}
	return &Producer{cl: cl, adm: kadm.NewClient(cl), cfg: cfg, checked: map[string]topicCheck{}}, nil
}

// Close flushes nothing and closes the client; call Produce to completion
// first.
func (p *Producer) Close() { p.cl.Close() }

// Ping checks that a broker answers.
func (p *Producer) Ping(ctx context.Context) error {
	if err := p.cl.Ping(ctx); err != nil {
		return fmt.Errorf("ping brokers: %w", err)
	}
	return nil
}

// EnsureTopic makes sure topic exists as a compacted single-partition topic,
// creating it when missing. A successful check is cached for the life of the
// producer; a refusal (a *TopicError) is cached for recheckRefused.
func (p *Producer) EnsureTopic(ctx context.Context, topic string) error {
	p.mu.Lock()
	c, ok := p.checked[topic]
	p.mu.Unlock()
	if ok && (c.err == nil || time.Since(c.at) < recheckRefused) {
		return c.err
	}
	err := p.checkTopic(ctx, topic)
	var te *TopicError
	if err == nil || errors.As(err, &te) {
		p.mu.Lock()
		p.checked[topic] = topicCheck{err: err, at: time.Now()}
		p.mu.Unlock()
	}
	if te != nil {
		p.cfg.log.Error("refusing to publish into topic", "topic", topic, "reason", te.Reason)
	}
	return err
}

func (p *Producer) checkTopic(ctx context.Context, topic string) error {
	md, err := p.adm.Metadata(ctx, topic)
	if err != nil {
		return fmt.Errorf("topic %s: metadata: %w", topic, err)
	}
	td, ok := md.Topics[topic]
	if !ok || errors.Is(td.Err, kerr.UnknownTopicOrPartition) {
		return p.createTopic(ctx, topic)
	}
	if td.Err != nil {
		return fmt.Errorf("topic %s: metadata: %w", topic, td.Err)
	}
	if n := len(td.Partitions); n != 1 {
		return &TopicError{Topic: topic, Reason: fmt.Sprintf("has %d partitions, distcache needs exactly 1 (per-key order across the whole model)", n)}
	}
	rcs, err := p.adm.DescribeTopicConfigs(ctx, topic)
	if err != nil {
		return fmt.Errorf("topic %s: describe configs: %w", topic, err)
	}
	rc, err := rcs.On(topic, nil)
	if err != nil {
		return fmt.Errorf("topic %s: describe configs: %w", topic, err)
	}
	if rc.Err != nil {
		return fmt.Errorf("topic %s: describe configs: %w", topic, rc.Err)
	}
	policy := "delete" // Kafka's default when the config is absent
	for _, c := range rc.Configs {
		if c.Key == "cleanup.policy" && c.Value != nil {
			policy = *c.Value
		}
	}
	if !compactOnly(policy) {
		return &TopicError{Topic: topic, Reason: fmt.Sprintf("cleanup.policy=%q, distcache needs \"compact\" (without delete) so the latest state of every key is kept", policy)}
	}
	return nil
}

func compactOnly(policy string) bool {
	compact := false
	for _, p := range strings.Split(policy, ",") {
		switch strings.TrimSpace(p) {
		case "compact":
			compact = true
		case "delete":
			return false
		}
	}
	return compact
}

func (p *Producer) createTopic(ctx context.Context, topic string) error {
	compact := "compact"
	maxMessage := strconv.Itoa(BatchMaxBytes(p.cfg.maxEventBytes))
	resp, err := p.adm.CreateTopic(ctx, 1, p.cfg.replicationFactor,
		map[string]*string{"cleanup.policy": &compact, "max.message.bytes": &maxMessage}, topic)
	if err == nil {
		err = resp.Err
	}
	var ke *kerr.Error
	switch {
	case err == nil:
		p.cfg.log.Info("created topic", "topic", topic, "replication_factor", p.cfg.replicationFactor, "max_message_bytes", maxMessage)
		return nil
	case errors.Is(err, kerr.TopicAlreadyExists):
		// A concurrent creator won; check what it created.
		return p.checkTopic(ctx, topic)
	case errors.As(err, &ke) && !ke.Retriable:
		// A policy, an ACL, an invalid or colliding name, a replication
		// factor the cluster cannot meet: asking again gives the same answer
		// until someone changes the broker, so the model is held back.
		reason := "the broker refused to create it: " + ke.Message + " (" + ke.Description + ")"
		if resp.ErrMessage != "" {
			reason += ": " + resp.ErrMessage
		}
		return &TopicError{Topic: topic, Reason: reason}
	default:
		return fmt.Errorf("topic %s: create: %w", topic, err)
	}
}

// Produce sends every record and waits until all are acknowledged (acks=all)
// or one fails; with a transactional ID the batch is one transaction and
// "acknowledged" means committed. Records of one topic keep their order. On
// error some records may have been written (outside a transaction): the
// caller retries the whole batch (at least once).
func (p *Producer) Produce(ctx context.Context, recs []*kgo.Record) error {
	if len(recs) == 0 {
		return nil
	}
	txn := p.cfg.transactionalID != ""
	if txn {
		if err := p.cl.BeginTransaction(); err != nil {
			return fmt.Errorf("produce: begin transaction: %w", err)
		}
	}
	err := p.produce(ctx, recs)
	if txn {
		if err != nil {
			p.abort(ctx)
			return err
		}
		if err := p.cl.EndTransaction(ctx, kgo.TryCommit); err != nil {
			p.abort(ctx)
			return fmt.Errorf("produce: commit transaction: %w", err)
		}
	}
	return err
}

// abort ends a failed transaction; errors are left for the next
// BeginTransaction to report (a fenced client stays fenced).
func (p *Producer) abort(ctx context.Context) {
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	_ = p.cl.AbortBufferedRecords(actx)
	_ = p.cl.EndTransaction(actx, kgo.TryAbort)
}

func (p *Producer) produce(ctx context.Context, recs []*kgo.Record) error {
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	wg.Add(len(recs))
	var (
		refused     *RecordError
		topicDenied *TopicError
	)
	for i, r := range recs {
		p.cl.Produce(ctx, r, func(r *kgo.Record, err error) {
			if err != nil {
				mu.Lock()
				if topicRefusal(err) {
					if topicDenied == nil {
						topicDenied = &TopicError{Topic: r.Topic, Reason: "writes refused: " + err.Error()}
					}
				} else if recordRefusal(err) {
					if refused == nil || i < refused.Index {
						refused = &RecordError{Index: i, Topic: r.Topic, Err: err}
					}
				} else if firstErr == nil {
					firstErr = fmt.Errorf("produce to %s: %w", r.Topic, err)
				}
				mu.Unlock()
			}
			wg.Done()
		})
	}
	if err := p.cl.Flush(ctx); err != nil {
		// Promises of unsent records still fire; do not wait for records the
		// client cannot cancel (idempotent, already in flight).
		return fmt.Errorf("produce: flush: %w", err)
	}
	wg.Wait()
	if firstErr != nil {
		// Another failure (a retriable one that ran out, a fenced producer)
		// says nothing about any single record: retry the whole batch.
		return firstErr
	}
	if topicDenied != nil {
		// Before any record's refusal: the records of that topic all fail.
		return topicDenied
	}
	if refused != nil {
		return refused
	}
	return nil
}
