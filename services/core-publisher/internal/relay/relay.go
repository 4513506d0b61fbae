// Package relay moves outbox rows to Kafka in commit-safe order.
//
// One relay is active per outbox (per database): it holds a session-level
// advisory lock on a dedicated connection, and every query of the relay runs
// on that same connection, so losing the connection loses the lock and stops
// the relay at once. Other instances stand by and retry the lock every
// LeaseRetryInterval.
//
// Order. A row is read only when it is committed and final: its txid is older
// than every transaction still in progress (txid < pg_snapshot_xmin of the
// reading statement's snapshot). Each batch is the longest prefix, in id
// order, of such rows; the first visible row that is not yet final ends the
// batch. Writers allocate a key's version under the row lock of
// distcache_outbox_versions and insert the outbox row after that, in the same
// transaction, so for one key id order, version order and commit order agree,
// and a prefix in id order never holds version n+1 of a key without version n.
// Published rows are deleted (in the statement that also moves invalid rows
// to distcache_outbox_dead) only after the broker acknowledged them: delivery
// is at least once, and a redelivery replays a suffix of a key's history in
// order, which consumers that keep the highest version absorb.
//
// Fencing. Each lease term produces with a fresh producer from the
// ProducerFactory, given a Kafka transactional ID that is the same for every
// relay of the outbox; the successor's first transaction fences the former
// holder, whose requests still in flight can then never land after the
// successor's records.
package relay

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/distcache/distcache/libs/events"
	"github.com/distcache/distcache/services/core-publisher/internal/producer"
	"github.com/distcache/distcache/services/core-publisher/internal/pubmetrics"
	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kgo"
)

// LeaseLockName names the advisory lock of the relay lease; the lock key is
// hashtextextended(LeaseLockName, 0).
const LeaseLockName = "distcache_outbox_relay"

// Producer is what the relay needs from a Kafka producer.
type Producer interface {
	// EnsureTopic checks (creating if missing) that topic can carry events;
	// a refusal matches producer.ErrTopicUnsuitable.
	EnsureTopic(ctx context.Context, topic string) error
	// Produce returns once every record is acknowledged, or with an error.
	Produce(ctx context.Context, recs []*kgo.Record) error
	// Close releases the producer.
	Close()
}

// ProducerFactory makes the producer of one lease term (a fresh one each
// time the lease is taken). transactionalID is the same for every relay of
// one outbox (see producer.WithTransactionalID): a factory that uses it lets
// the broker fence a former holder's records still in flight.
type ProducerFactory func(transactionalID string) (Producer, error)

var _ Producer = (*producer.Producer)(nil)

// Relay is the outbox relay. Create it with New and run it with Run.
type Relay struct {
	connCfg     *pgx.ConnConfig
	newProducer ProducerFactory
	prod        Producer // of the current lease term
	o           options

	// The statements of this relay's options (fetchVariant).
	fetchSQL, commitFetchSQL string

	// known caches the catalog's models (WithCatalog), read again when a row
	// of another aggregate shows up (once per batch).
	known map[string]bool

	lastPrune time.Time // of distcache_outbox_dead (WithDeadLetterRetention)

	lastRead atomic.Int64 // rows of the last read, to size the next (fetch)

	mu      sync.Mutex
	status  Status
	blocked map[string]time.Time // aggregates whose topic was refused, until
	held    map[string]HeldModel // aggregates held back until their topic is accepted
}

// HeldModel is a model whose events wait in the outbox because its topic was
// refused; the others flow meanwhile. It is released once its topic is
// accepted (rechecked every 30s).
type HeldModel struct {
	Aggregate string    `json:"model"`
	Reason    string    `json:"reason"`
	Since     time.Time `json:"since"`
}

// Status is a snapshot of the relay's state, for readiness checks.
type Status struct {
	// Active is true while this instance holds the lease.
	Active bool
	// LastOK is when the relay last talked to PostgreSQL successfully (a
	// completed pass when active, a lease attempt in standby).
	LastOK time.Time
	// Err is the last error, nil after a success.
	Err error
	// Held are the models held back, by aggregate name.
	Held []HeldModel
}

type options struct {
	batchSize          int
	pollInterval       time.Duration
	leaseRetryInterval time.Duration
	shutdownTimeout    time.Duration
	topicPrefix        string
	log                *slog.Logger
	metrics            *pubmetrics.Metrics
	onActive           func(ctx context.Context)
	commitFence        bool
	maxEventBytes      int
	versionCheck       bool
	catalog            Catalog
	deadRetention      time.Duration
}

// Catalog lists the models (aggregate names) whose rows may be published.
type Catalog func(ctx context.Context) ([]string, error)

// ErrVersionNotNewer starts the dead-letter reason of a row whose version
// does not exceed the version already published for its key.
var ErrVersionNotNewer = errors.New("version not newer than the published one")

// deadPruneInterval is how often the active relay prunes old dead letters.
const deadPruneInterval = 10 * time.Minute

// Option configures a Relay.
type Option func(*options)

// WithBatchSize sets the most rows read and produced per batch. Default 2000.
func WithBatchSize(n int) Option { return func(o *options) { o.batchSize = n } }

// WithPollInterval sets how long an idle relay waits for a notification on
// channel distcache_outbox before it looks anyway. Default 1s.
func WithPollInterval(d time.Duration) Option { return func(o *options) { o.pollInterval = d } }

// WithLeaseRetryInterval sets how often a standby tries to take the lease,
// and the pause after a failed session. Default 1s.
func WithLeaseRetryInterval(d time.Duration) Option {
	return func(o *options) { o.leaseRetryInterval = d }
}

// WithShutdownTimeout bounds how long a batch in flight may take to finish
// after Run's context is cancelled. Default 15s.
func WithShutdownTimeout(d time.Duration) Option { return func(o *options) { o.shutdownTimeout = d } }

// WithTopicPrefix sets the topic prefix (events.Topic). Default "distcache".
func WithTopicPrefix(p string) Option { return func(o *options) { o.topicPrefix = p } }

// WithLogger sets the logger. Default: discard.
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.log = l } }

// WithMetrics sets the metrics. Default: a private, unexported set.
func WithMetrics(m *pubmetrics.Metrics) Option { return func(o *options) { o.metrics = m } }

// WithOnActive sets a function started (in its own goroutine) each time the
// relay takes the lease; its context ends when the lease is given up. The
// service starts pending initial backloads there. The relay waits for it to
// return before it gives up the lease. Default: none.
func WithOnActive(f func(ctx context.Context)) Option { return func(o *options) { o.onActive = f } }

// WithCommitFence turns the xid8 commit fence on or off. Default on.
//
// With the fence a batch only holds rows whose transaction is older than
// every transaction still running. Per-key order does not depend on it: a
// key's version n+1 is allocated only after version n committed, so a read
// that sees n+1 sees n too, earlier in id order, and since published rows
// are deleted rather than passed by a cursor, a row that commits late is
// read by a later batch, never skipped. The fence additionally keeps each
// batch free of rows that overtake an older transaction still in flight, at
// a price: relay latency is at least the duration of the longest concurrent
// write transaction in the cluster. Turning it off trades that property for
// latency.
func WithCommitFence(on bool) Option { return func(o *options) { o.commitFence = on } }

// WithMaxEventSize sets the largest event (events.Envelope.Size) the relay
// publishes; larger rows move to distcache_outbox_dead. Give the producer the
// same number (producer.WithMaxEventSize) so that the client and the topics
// it creates accept every event the relay does. Default
// events.DefaultMaxEventBytes.
func WithMaxEventSize(n int) Option { return func(o *options) { o.maxEventBytes = n } }

// WithVersionCheck turns on or off the refusal of rows whose version does
// not exceed the last version published for their key
// (distcache_outbox_published): such a row is dead-lettered with both
// versions and an ErrVersionNotNewer reason instead of overwriting a newer
// state at every consumer. Turn it off only when the writer owns ordering
// and means to publish older versions again: the relay then neither checks
// nor records published versions (turning it on later checks against what
// was recorded while it was on). Default on.
func WithVersionCheck(on bool) Option { return func(o *options) { o.versionCheck = on } }

// WithCatalog makes the relay publish only rows of the models c lists:
// other rows are dead-lettered as of an unknown model, and no topic is
// created for them. c is read when a row of an aggregate it did not list
// (yet) shows up, at most once per batch, so a model registered while the
// relay runs is found. Default: nil, every aggregate
// is published.
func WithCatalog(c Catalog) Option { return func(o *options) { o.catalog = c } }

// WithDeadLetterRetention makes the active relay delete dead letters older
// than d (by failed_at) every 10 minutes; 0 keeps them forever. Default 0.
func WithDeadLetterRetention(d time.Duration) Option {
	return func(o *options) { o.deadRetention = d }
}

// New returns a relay reading the outbox through connections made from
// connCfg and producing with producers from newProducer.
func New(connCfg *pgx.ConnConfig, newProducer ProducerFactory, opts ...Option) (*Relay, error) {
	o := options{
		batchSize:          2000,
		pollInterval:       time.Second,
		leaseRetryInterval: time.Second,
		shutdownTimeout:    15 * time.Second,
		topicPrefix:        events.DefaultTopicPrefix,
		commitFence:        true,
		maxEventBytes:      events.DefaultMaxEventBytes,
		versionCheck:       true,
	}
	for _, f := range opts {
		f(&o)
	}
	switch {
	case connCfg == nil:
		return nil, errors.New("relay: nil connection config")
	case newProducer == nil:
		return nil, errors.New("relay: nil producer factory")
	case o.batchSize < 1:
		return nil, fmt.Errorf("relay: batch size %d, want >= 1", o.batchSize)
	case o.pollInterval <= 0 || o.leaseRetryInterval <= 0 || o.shutdownTimeout <= 0:
		return nil, errors.New("relay: intervals must be positive")
	case o.maxEventBytes < 1:
		return nil, fmt.Errorf("relay: max event bytes %d, want >= 1", o.maxEventBytes)
	case o.deadRetention < 0:
		return nil, fmt.Errorf("relay: dead-letter retention %v, want >= 0", o.deadRetention)
	}
	if o.log == nil {
		o.log = slog.New(slog.DiscardHandler)
	}
	if o.metrics == nil {
		o.metrics = pubmetrics.New()
	}
	connCfg = connCfg.Copy()
	if connCfg.RuntimeParams == nil {
		connCfg.RuntimeParams = map[string]string{}
	}
	if _, set := connCfg.RuntimeParams["enable_seqscan"]; !set {
		// The outbox is a queue: drained, (auto)vacuum records it as empty
		// (reltuples 0), and the planner then keeps choosing sequential
		// scans for "ORDER BY id LIMIT n" and "DELETE ... id = ANY(...)"
		// while a burst fills it, each batch scanning the whole backlog,
		// until the next ANALYZE. Seen in make bench: a VACUUM before a
		// 10,000 events/s run left the relay seconds behind. The relay's
		// own session only reads and deletes by id, for which the primary
		// key index is always right.
		connCfg.RuntimeParams["enable_seqscan"] = "off"
	}
	return &Relay{
		connCfg: connCfg, newProducer: newProducer, o: o,
		fetchSQL:       fetchVariant(fetchSQL, o.commitFence, o.versionCheck),
		commitFetchSQL: fetchVariant(commitFetchSQL, o.commitFence, o.versionCheck),
		blocked:        map[string]time.Time{}, held: map[string]HeldModel{},
	}, nil
}

// knownModel reports whether aggregate is a model of the catalog (always
// true without one). An aggregate the cached catalog does not list makes it
// read the catalog again, once per batch (*reread tells whether this batch
// did), so a model registered a moment ago is never taken for unknown.
func (r *Relay) knownModel(ctx context.Context, aggregate string, reread *bool) (bool, error) {
	if r.o.catalog == nil || r.known[aggregate] {
		return true, nil
	}
	if *reread {
		return false, nil
	}
	*reread = true
	names, err := r.o.catalog(ctx)
	if err != nil {
		r.o.metrics.Errors.WithLabelValues("catalog").Inc()
		return false, fmt.Errorf("read model catalog: %w", err)
	}
	r.known = make(map[string]bool, len(names))
	for _, n := range names {
		r.known[n] = true
	}
	return r.known[aggregate], nil
}

// pruneDeadLetters deletes dead letters past the retention, in chunks, at
// most every deadPruneInterval.
func (r *Relay) pruneDeadLetters(ctx context.Context, conn *pgx.Conn) error {
	if r.o.deadRetention <= 0 || time.Since(r.lastPrune) < deadPruneInterval {
		return nil
	}
	r.lastPrune = time.Now()
	var total int64
	for {
		tag, err := conn.Exec(ctx, `DELETE FROM distcache_outbox_dead WHERE id IN (
			SELECT id FROM distcache_outbox_dead WHERE failed_at < now() - $1::interval LIMIT 10000)`,
			fmt.Sprintf("%d microseconds", r.o.deadRetention.Microseconds()))
		if err != nil {
			r.o.metrics.Errors.WithLabelValues("prune").Inc()
			return fmt.Errorf("prune dead letters: %w", err)
		}
		total += tag.RowsAffected()
		if tag.RowsAffected() < 10000 {
			break
		}
	}
	if total > 0 {
		r.o.metrics.DeadLettersPruned.Add(float64(total))
		r.o.log.Info("dead letters past their retention deleted", "deleted", total, "retention", r.o.deadRetention)
	}
	return nil
}

// Status returns the relay's current state.
func (r *Relay) Status() Status {
	r.mu.Lock()
	defer r.mu.Unlock()
	st := r.status
	for _, a := range slices.Sorted(maps.Keys(r.held)) {
		st.Held = append(st.Held, r.held[a])
	}
	return st
}

func (r *Relay) setStatus(active bool, err error) {
	r.mu.Lock()
	r.status.Active = active
	r.status.Err = err
	if err == nil {
		r.status.LastOK = time.Now()
	}
	r.mu.Unlock()
	if active {
		r.o.metrics.Active.Set(1)
	} else {
		r.o.metrics.Active.Set(0)
	}
}

// Run relays until ctx is cancelled, then finishes the batch in flight
// (bounded by the shutdown timeout), gives up the lease and returns nil.
// Database and broker failures are retried (a failed session gives up the
// lease and retries after LeaseRetryInterval), so Run returns nil.
func (r *Relay) Run(ctx context.Context) error {
	for {
		err := r.session(ctx)
		if ctx.Err() != nil {
			r.setStatus(false, nil)
			return nil
		}
		if err != nil {
			r.o.log.Warn("relay session ended", "err", err)
			r.setStatus(false, err)
		}
		select {
		case <-ctx.Done():
			r.setStatus(false, nil)
			return nil
		case <-time.After(r.o.leaseRetryInterval):
		}
	}
}

// session connects, waits for the lease and relays while holding it.
func (r *Relay) session(ctx context.Context) error {
	conn, err := pgx.ConnectConfig(ctx, r.connCfg)
	if err != nil {
		r.o.metrics.Errors.WithLabelValues("lease").Inc()
		return fmt.Errorf("connect: %w", err)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		conn.Close(cctx) // closing the session releases the lock too
	}()

	for {
		var got bool
		if err := conn.QueryRow(ctx, `SELECT pg_try_advisory_lock(hashtextextended($1, 0))`, LeaseLockName).Scan(&got); err != nil {
			r.o.metrics.Errors.WithLabelValues("lease").Inc()
			return fmt.Errorf("try lease: %w", err)
		}
		if got {
			break
		}
		// A standby reports the lag too: it shows when the active relay is
		// stuck or gone.
		if err := r.updateLag(ctx, conn); err != nil {
			return err
		}
		r.setStatus(false, nil)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(r.o.leaseRetryInterval):
		}
	}
	r.o.log.Info("relay lease acquired: active")
	r.setStatus(true, nil)
	defer r.o.log.Info("relay lease released: standby")
	// Holds belong to the lease term: a standby holds nothing back, and the
	// next term checks every topic again with its fresh producer.
	defer r.releaseAll()

	if _, err := conn.Exec(ctx, `LISTEN `+events.OutboxChannel); err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	// The relay's own writes (deleting published rows, moving dead ones)
	// need no flush to disk before the next batch: a delete lost in a crash
	// only brings rows back to be published again, which at-least-once
	// delivery allows. This takes a WAL flush out of every batch.
	if _, err := conn.Exec(ctx, `SET synchronous_commit = off`); err != nil {
		return fmt.Errorf("set synchronous_commit: %w", err)
	}
	txnID, err := transactionalID(ctx, conn)
	if err != nil {
		return err
	}
	prod, err := r.newProducer(txnID)
	if err != nil {
		return fmt.Errorf("new producer: %w", err)
	}
	r.prod = prod
	defer prod.Close()
	if r.o.onActive != nil {
		activeCtx, stopActive := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			r.o.onActive(activeCtx)
		}()
		defer func() { stopActive(); <-done }()
	}

	// hard ends work in flight: shutdownTimeout after ctx is cancelled.
	hard, cancelHard := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelHard()
	stopHard := context.AfterFunc(ctx, func() {
		t := time.AfterFunc(r.o.shutdownTimeout, cancelHard)
		context.AfterFunc(hard, func() { t.Stop() })
	})
	defer stopHard()

	return r.relayLoop(ctx, hard, conn)
}

// relayLoop relays while the lease is held. Batches are pipelined: while
// batch n is being produced, batch n+1 is read (skipping n's rows, which are
// still in the table); n+1 is produced only after n is acknowledged and
// deleted, so per-key order holds exactly as without the pipeline.
func (r *Relay) relayLoop(ctx, hard context.Context, conn *pgx.Conn) error {
	var heldSince, warned time.Time
	fenceWait := time.Duration(0)
	var cur *batch
	for {
		if cur == nil {
			var err error
			if cur, err = r.readBatch(hard, conn, nil); err != nil {
				return err
			}
		}
		if len(cur.done) > 0 {
			produced := make(chan error, 1)
			out := &produceOutcome{refused: map[int]string{}, held: map[string]error{}}
			recs := cur.recs
			go func() { produced <- r.produceAll(hard, recs, indices(len(recs)), out) }()
			var next *batch
			var nextErr error
			if cur.full && ctx.Err() == nil {
				next, nextErr = r.readBatch(hard, conn, cur)
			}
			if err := <-produced; err != nil {
				r.o.metrics.Errors.WithLabelValues("produce").Inc()
				return err
			}
			if len(out.held) > 0 {
				r.holdTopics(cur, out.held)
				if next != nil {
					// Read before the hold: its records of those topics stay
					// behind the held ones, in the outbox.
					next.holdTopics(out.held)
				}
			}
			cur.settle(out.refused, out.held)
			acked := time.Now()
			if next == nil && nextErr == nil && ctx.Err() == nil {
				// Not pipelined: delete and read on in one round trip.
				var err error
				if next, err = r.commitAndRead(hard, conn, cur, acked); err != nil {
					return err
				}
			} else if err := r.commit(hard, conn, cur, acked); err != nil {
				return err
			}
			r.setStatus(true, nil)
			if nextErr != nil {
				return nextErr
			}
			if ctx.Err() == nil && next != nil {
				// Go on with the batch read last; when it is empty or held
				// back, its flags choose the wait below.
				cur = next
				if len(cur.done) > 0 {
					continue
				}
			}
		} else {
			r.setStatus(true, nil)
		}
		if err := r.pruneDeadLetters(hard, conn); err != nil {
			return err
		}
		if ctx.Err() != nil {
			uctx, cancel := context.WithTimeout(hard, 5*time.Second)
			_, _ = conn.Exec(uctx, `SELECT pg_advisory_unlock(hashtextextended($1, 0))`, LeaseLockName)
			cancel()
			return nil
		}
		wait := r.o.pollInterval
		switch {
		case cur.full:
			if !heldSince.IsZero() {
				r.o.log.Debug("relay fence released", "held_for", time.Since(heldSince))
			}
			heldSince, fenceWait = time.Time{}, 0
			cur = nil
			continue
		case cur.heldBack:
			// A committed row waits for an older transaction to end, which
			// sends no notification: look again soon. Retry fast while the
			// fence moves as usual (transactions are short), back off to the
			// poll interval behind a long-running transaction.
			if heldSince.IsZero() {
				heldSince, warned = time.Now(), time.Time{}
			}
			limit := fenceFastLimit
			if held := time.Since(heldSince); held > time.Second {
				limit = r.o.pollInterval
				if held > 5*time.Second && time.Since(warned) > 30*time.Second {
					warned = time.Now()
					r.o.log.Warn("committed outbox rows held back by an older transaction still open (see pg_stat_activity, backend_xid)",
						"held_for", held.Round(time.Second))
				}
			}
			fenceWait = min(max(2*fenceWait, fenceFirstWait), limit, r.o.pollInterval)
			wait = fenceWait
		default:
			if !heldSince.IsZero() {
				r.o.log.Debug("relay fence released", "held_for", time.Since(heldSince))
			}
			heldSince, fenceWait = time.Time{}, 0
		}
		cur = nil
		wctx, cancel := context.WithTimeout(ctx, wait)
		_, err := conn.WaitForNotification(wctx)
		cancel()
		if err != nil && ctx.Err() == nil && !errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("wait for notification: %w", err)
		}
	}
}

// produceOutcome is what produceAll learned of a batch's records.
type produceOutcome struct {
	// refused holds, by index in the batch, the records the broker refused
	// for what they are, with the reason: they become dead letters.
	refused map[int]string
	// held holds the topics the broker refused writes to (an ACL, a
	// policy), with the refusal: their records stay in the outbox and their
	// models are held back.
	held map[string]error
}

// indices returns 0, 1, ..., n-1.
func indices(n int) []int {
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i
	}
	return idx
}

// pick returns the records of all at idx (ascending): a subslice of all when
// they are contiguous.
func pick(all []*kgo.Record, idx []int) []*kgo.Record {
	if len(idx) == 0 {
		return nil
	}
	if idx[len(idx)-1]-idx[0] == len(idx)-1 {
		return all[idx[0] : idx[len(idx)-1]+1]
	}
	out := make([]*kgo.Record, len(idx))
	for i, j := range idx {
		out[i] = all[j]
	}
	return out
}

// produceAll produces the records of all at idx, in order, and records in
// out what the broker refused:
//   - a record refused for what it is (a *producer.RecordError) goes to
//     out.refused with the reason, and the others are produced in order
//     around it. A refused record is produced alone first, to be sure it is
//     the culprit and not a record that shared its broker batch: the records
//     before it are produced (and committed) first, then it alone, then the
//     rest, so every key's order holds;
//   - a topic that refuses writes (a *producer.TopicError) goes to out.held,
//     and the records of other topics are produced again without its.
//
// Other errors end the session as before (the batch is read and produced
// again).
func (r *Relay) produceAll(ctx context.Context, all []*kgo.Record, idx []int, out *produceOutcome) error {
	for len(idx) > 0 {
		if len(out.held) > 0 {
			idx = slices.DeleteFunc(slices.Clone(idx), func(i int) bool { _, held := out.held[all[i].Topic]; return held })
			if len(idx) == 0 {
				return nil
			}
		}
		err := r.prod.Produce(ctx, pick(all, idx))
		if err == nil {
			return nil
		}
		var te *producer.TopicError
		if errors.As(err, &te) && te.Topic != "" {
			if _, again := out.held[te.Topic]; again {
				return err // a refusal for a topic no longer in the call
			}
			out.held[te.Topic] = te
			r.o.log.Warn("broker refused writes to a topic: holding its records back", "topic", te.Topic, "err", te)
			continue
		}
		var re *producer.RecordError
		if !errors.As(err, &re) || re.Index < 0 || re.Index >= len(idx) {
			return err
		}
		if len(idx) == 1 {
			out.refused[idx[0]] = "refused by the broker: " + re.Err.Error()
			return nil
		}
		j := re.Index
		r.o.log.Warn("broker refused a record: isolating it", "topic", re.Topic, "err", re.Err)
		if j > 0 {
			if err := r.produceAll(ctx, all, idx[:j], out); err != nil {
				return err
			}
		}
		if err := r.produceAll(ctx, all, idx[j:j+1], out); err != nil {
			return err
		}
		idx = idx[j+1:]
	}
	return nil
}

// holdTopics holds back the models of b's records whose topic refused writes.
func (r *Relay) holdTopics(b *batch, held map[string]error) {
	done := map[string]bool{}
	for i, rec := range b.recs {
		if err, ok := held[rec.Topic]; ok && !done[b.recAgg[i]] {
			done[b.recAgg[i]] = true
			r.o.metrics.Errors.WithLabelValues("topic").Inc()
			r.block(b.recAgg[i], err)
		}
	}
}

// Waits between passes while the fence holds committed rows back.
const (
	fenceFirstWait = 500 * time.Microsecond
	fenceFastLimit = 4 * time.Millisecond
)

// transactionalID returns the Kafka transactional ID of this outbox:
// "distcache-publisher-<database>-<relay id>", the relay id being a UUID
// made once per outbox and kept in distcache_publisher_state.
func transactionalID(ctx context.Context, conn *pgx.Conn) (string, error) {
	var db, id string
	err := conn.QueryRow(ctx, `WITH ins AS (
		INSERT INTO distcache_publisher_state (name, value) VALUES ('relay', jsonb_build_object('id', gen_random_uuid()::text))
		ON CONFLICT (name) DO NOTHING RETURNING value->>'id')
	SELECT current_database(), COALESCE((SELECT * FROM ins), (SELECT value->>'id' FROM distcache_publisher_state WHERE name = 'relay'))`).Scan(&db, &id)
	if err != nil {
		return "", fmt.Errorf("relay id: %w", err)
	}
	return "distcache-publisher-" + db + "-" + id, nil
}

// updateLag sets the lag gauge from the oldest outbox row.
func (r *Relay) updateLag(ctx context.Context, conn *pgx.Conn) error {
	var oldest *time.Time
	if err := conn.QueryRow(ctx, `SELECT (SELECT created_at FROM distcache_outbox ORDER BY id LIMIT 1)`).Scan(&oldest); err != nil {
		return fmt.Errorf("read lag: %w", err)
	}
	if oldest == nil {
		r.o.metrics.Lag.Set(0)
	} else {
		r.o.metrics.Lag.Set(max(0, time.Since(*oldest).Seconds()))
	}
	return nil
}
