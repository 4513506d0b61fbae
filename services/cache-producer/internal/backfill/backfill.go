// Package backfill implements the cache-producer's Temporal activities on
// workflows.CacheProducerTaskQueue:
//
//   - workflows.ActivityBackfill replays a topic from its start (or from the
//     offset of the last heartbeat, after a worker crash) up to the end offset
//     fixed when the backfill first started, into a new generation, through
//     the same reader (feed.Reader) and writer (projector.Writer) as the
//     live consumers. It heartbeats a
//     workflows.BackfillProgress. When it returns, the workflow moves the
//     generation to state tailing and the live consumers (package fanout)
//     continue from the offset the backfill stored in Redis.
//     A retried attempt resumes at its last heartbeat only while Redis
//     holds the generation's offset at or past it; otherwise Redis lost what
//     the attempts before wrote and the backfill starts over (a batch that
//     finds the generation's bookkeeping gone fails the attempt:
//     projector.ErrBookkeepingLost).
//   - workflows.ActivityCaughtUp tells whether a tailing generation has
//     consumed everything that was in the topic when the check started: it
//     captures the end offset E (ListEndOffsets) first, then waits a little
//     for the generation's stored position to reach E − MaxLag. The position is
//     the next offset to read, so a compacted log whose last offsets hold no
//     records is never mistaken for lag (the HWM − 1 trap).
//
// Neither trusts a parameter it can check (verify.go): before it reads or
// writes anything, each reads the generation from the registry and refuses,
// with a non-retryable error naming what does not match, a generation the
// registry does not list, one not in the activity's state (backfilling,
// tailing), a topic that is not <topic prefix>.<the registry's model>, and
// (Backfill) a definition that is not the one the registry recorded for it.
package backfill

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.temporal.io/sdk/activity"
	"go.temporal.io/sdk/temporal"

	"github.com/distcache/distcache/libs/projection"
	"github.com/distcache/distcache/services/cache-producer/internal/feed"
	"github.com/distcache/distcache/services/cache-producer/internal/projector"
	"github.com/distcache/distcache/workflows"
)

// Observer receives backfill progress (metrics).
type Observer interface {
	BackfillBatch(t projector.Target, st projector.Stats, took time.Duration)
}

// Activities are the cache-producer's activities.
type Activities struct {
	// KafkaOpts are the base client options (seed brokers, TLS, SASL).
	KafkaOpts []kgo.Opt
	Writer    *projector.Writer
	// BatchSize is the most records written per batch (default 5000).
	BatchSize int
	// HeartbeatEvery is the interval between heartbeats (default 1 s).
	HeartbeatEvery time.Duration
	// CaughtUpWait is how long one CaughtUp attempt waits for the position
	// to reach the end offset before answering NotCaughtUp (default 10 s).
	CaughtUpWait time.Duration
	// Registry is where the activities check their parameters (workflows/registry.Store):
	// required; without it every call is refused.
	Registry Registry
	// TopicPrefix is the producer's topic prefix (default events.DefaultTopicPrefix): a
	// generation's topic is <prefix>.<the registry's model>.
	TopicPrefix string
	Observer    Observer
	Logger      *slog.Logger
}

// Register registers the activities on w under their workflows.Activity*
// names.
func Register(w interface {
	RegisterActivityWithOptions(a interface{}, options activity.RegisterOptions)
}, a *Activities) {
	w.RegisterActivityWithOptions(a.Backfill, activity.RegisterOptions{Name: workflows.ActivityBackfill})
	w.RegisterActivityWithOptions(a.CaughtUp, activity.RegisterOptions{Name: workflows.ActivityCaughtUp})
}

func (a *Activities) log() *slog.Logger {
	if a.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return a.Logger
}

// Backfill implements workflows.ActivityBackfill.
func (a *Activities) Backfill(ctx context.Context, p workflows.BackfillParams) (workflows.BackfillProgress, error) {
	def := p.Definition
	if def.Name == "" {
		def.Name = p.Projection
	}
	compiled, err := projection.Compile(def)
	if err != nil {
		return workflows.BackfillProgress{}, temporal.NewNonRetryableApplicationError(err.Error(), workflows.ErrTypeInvalidDefinition, err)
	}
	if p.Topic == "" || p.Generation <= 0 || p.Projection == "" {
		err := fmt.Errorf("backfill: projection, generation and topic are required (got %q, %d, %q)", p.Projection, p.Generation, p.Topic)
		return workflows.BackfillProgress{}, temporal.NewNonRetryableApplicationError(err.Error(), workflows.ErrTypeInvalidDefinition, err)
	}
	// Nothing is read or written for a generation the registry does not list as backfilling
	// with this topic and definition.
	if err := a.verify(ctx, "backfill", p.Projection, p.Generation, p.Topic, workflows.StateBackfilling, &def); err != nil {
		return workflows.BackfillProgress{}, err
	}
	t := projector.Target{Projection: p.Projection, Generation: p.Generation, Compiled: compiled}

	var pr workflows.BackfillProgress
	resumed := false
	if activity.HasHeartbeatDetails(ctx) {
		if err := activity.GetHeartbeatDetails(ctx, &pr); err == nil {
			resumed = true
			pr.Phase, pr.ETASeconds = "", 0 // heartbeat-only fields (Heartbeat), not the result's
		}
	}
	if !resumed {
		end, err := EndOffset(ctx, a.KafkaOpts, p.Topic)
		if err != nil {
			return pr, err
		}
		pr = workflows.BackfillProgress{Offset: max(p.StartOffset, 0), EndOffset: end}
	}
	log := a.log().With("projection", p.Projection, "generation", p.Generation, "topic", p.Topic)
	if start := max(p.StartOffset, 0); resumed && pr.Offset > start {
		// The last heartbeat counts only if Redis still holds what the attempts before wrote:
		// each heartbeat follows a commit, so an offset gone or behind it means Redis lost the
		// generation's data (a restart without persistence, a FLUSHALL), and resuming would
		// leave out every record before the heartbeat.
		pos, err := a.Writer.Ledger().Position(ctx, p.Projection, p.Generation)
		if err != nil {
			return pr, err
		}
		if !pos.OffsetKnown || pos.Offset < pr.Offset {
			log.Warn("the generation's offset in Redis is gone or behind the last heartbeat (Redis lost data): the backfill starts over",
				"heartbeat_offset", pr.Offset, "stored_offset", pos.Offset, "stored", pos.OffsetKnown)
			pr = workflows.BackfillProgress{Offset: start, EndOffset: pr.EndOffset}
		}
	}
	log.Info("backfill starting", "offset", pr.Offset, "end_offset", pr.EndOffset, "resumed", resumed)
	activity.RecordHeartbeat(ctx, pr.Heartbeat())

	every := a.HeartbeatEvery
	if every <= 0 {
		every = time.Second
	}
	last := time.Now()
	out, err := Replay(ctx, ReplayConfig{
		KafkaOpts: a.KafkaOpts, Writer: a.Writer, BatchSize: a.BatchSize, Observer: a.Observer, Logger: log,
	}, t, p.Topic, pr, func(cur workflows.BackfillProgress) {
		if time.Since(last) >= every {
			last = time.Now()
			activity.RecordHeartbeat(ctx, cur.Heartbeat())
		}
	})
	if err != nil {
		return out, fmt.Errorf("backfill %s: %w", t, err)
	}
	activity.RecordHeartbeat(ctx, out.Heartbeat())
	log.Info("backfill done", "records", out.RecordsDone, "end_offset", out.EndOffset)
	return out, nil
}

// EndOffset returns the topic's end offset (high watermark of partition 0),
// 0 when the topic does not exist yet.
func EndOffset(ctx context.Context, opts []kgo.Opt, topic string) (int64, error) {
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return 0, fmt.Errorf("kafka client: %w", err)
	}
	defer cl.Close()
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, topic)
	if err != nil {
		return 0, fmt.Errorf("list end offsets of %s: %w", topic, err)
	}
	o, ok := ends.Lookup(topic, 0)
	if !ok {
		return 0, nil
	}
	if o.Err != nil {
		if errors.Is(o.Err, kerr.UnknownTopicOrPartition) {
			return 0, nil
		}
		return 0, fmt.Errorf("list end offsets of %s: %w", topic, o.Err)
	}
	return o.Offset, nil
}

// ReplayConfig configures Replay.
type ReplayConfig struct {
	KafkaOpts []kgo.Opt
	Writer    *projector.Writer
	BatchSize int
	Observer  Observer
	// Logger hears of offsets skipped because the topic's log start passed
	// them (default: discard).
	Logger *slog.Logger
}

// Replay writes the records of topic from from.Offset up to (not including)
// from.EndOffset into t and stores the generation's offset after each batch,
// calling progress after each batch. Records at or past EndOffset are left
// to the live consumer. It returns the final progress (Offset == EndOffset).
// It drops the Writer's in-memory index of t when it returns.
func Replay(ctx context.Context, cfg ReplayConfig, t projector.Target, topic string, from workflows.BackfillProgress,
	progress func(workflows.BackfillProgress)) (workflows.BackfillProgress, error) {
	// The generation's live consumer may run in another process: keep no
	// index cache for it here (a million entries are ~100 MB).
	defer cfg.Writer.Forget(t)
	pr := from
	// Records below the log start are gone: start there (the reader never
	// moves its position by itself, see feed.ErrPositionLost).
	if pr.Offset < pr.EndOffset {
		if b, err := feed.ReadBounds(ctx, cfg.KafkaOpts, topic); err == nil && b.Exists && pr.Offset < b.Start {
			if cfg.Logger != nil {
				cfg.Logger.Warn("the topic's log start passed the backfill's offset: records deleted before they were read are skipped",
					"projection", t.Projection, "generation", t.Generation, "offset", pr.Offset, "log_start", b.Start)
			}
			pr.Offset = b.Start
		}
	}
	if pr.Offset >= pr.EndOffset {
		pr.Offset = max(pr.Offset, pr.EndOffset)
		if err := storeOffset(ctx, cfg.Writer, t, pr.EndOffset); err != nil {
			return pr, err
		}
		return pr, nil
	}
	rd, err := feed.NewReader(feed.Config{
		KafkaOpts: cfg.KafkaOpts, Topic: topic, From: pr.Offset, Until: pr.EndOffset,
		MaxRecords: cfg.BatchSize, Fields: feed.FieldsOf(t.Compiled),
	})
	if err != nil {
		return pr, err
	}
	defer rd.Close()

	in := make(chan feed.Batch, 2)
	readCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	readErr := make(chan error, 1)
	go func() {
		defer close(in)
		readErr <- rd.Run(readCtx, func(b feed.Batch) error {
			select {
			case in <- b:
				return nil
			case <-readCtx.Done():
				return readCtx.Err()
			}
		})
	}()

	rate := newRate()
	err = cfg.Writer.Run(ctx, t, in, nil, func(next int64, st projector.Stats, took time.Duration) {
		if cfg.Observer != nil {
			cfg.Observer.BackfillBatch(t, st, took)
		}
		pr.Offset = next
		pr.RecordsDone += int64(st.Records)
		pr.RatePerSec = rate.add(st.Records)
		if progress != nil {
			progress(pr)
		}
	})
	cancel()
	// The writer drains what the reader sent and then returns nil even when the reader stopped
	// early (a lost position): its error is the outcome then.
	if rerr := <-readErr; err == nil && rerr != nil {
		err = fmt.Errorf("read %s: %w", topic, rerr)
	}
	if err == nil && pr.Offset < pr.EndOffset {
		err = fmt.Errorf("read %s: stopped at offset %d before the end offset %d", topic, pr.Offset, pr.EndOffset)
	}
	if err != nil {
		return pr, err
	}
	return pr, nil
}

func storeOffset(ctx context.Context, w *projector.Writer, t projector.Target, next int64) error {
	return projector.Retry(ctx, func() error {
		_, err := w.WriteBatch(ctx, t, nil, next)
		return err
	}, nil)
}

// rate is a rate over the last few seconds.
type rate struct {
	start time.Time
	n     int
	last  float64
}

func newRate() *rate { return &rate{start: time.Now()} }

func (r *rate) add(n int) float64 {
	r.n += n
	if el := time.Since(r.start); el >= 2*time.Second {
		r.last = float64(r.n) / el.Seconds()
		r.start, r.n = time.Now(), 0
	} else if r.last == 0 && el > 0 {
		return float64(r.n) / el.Seconds()
	}
	return r.last
}

// CaughtUp implements workflows.ActivityCaughtUp.
func (a *Activities) CaughtUp(ctx context.Context, p workflows.CaughtUpParams) (workflows.CaughtUpResult, error) {
	if p.Projection == "" || p.Generation <= 0 || p.Topic == "" || p.MaxLag < 0 {
		err := fmt.Errorf("caught up: projection, generation, topic and max_lag >= 0 are required")
		return workflows.CaughtUpResult{}, temporal.NewNonRetryableApplicationError(err.Error(), workflows.ErrTypeInvalidDefinition, err)
	}
	if err := a.verify(ctx, "caught up", p.Projection, p.Generation, p.Topic, workflows.StateTailing, nil); err != nil {
		return workflows.CaughtUpResult{}, err
	}
	end, err := EndOffset(ctx, a.KafkaOpts, p.Topic)
	if err != nil {
		return workflows.CaughtUpResult{}, err
	}
	wait := a.CaughtUpWait
	if wait <= 0 {
		wait = 10 * time.Second
	}
	deadline := time.Now().Add(wait)
	if dl, ok := ctx.Deadline(); ok && dl.Add(-2*time.Second).Before(deadline) {
		deadline = dl.Add(-2 * time.Second)
	}
	l := a.Writer.Ledger()
	pos, known := int64(0), false
	for {
		pos, known, err = l.Offset(ctx, p.Projection, p.Generation)
		if err != nil {
			return workflows.CaughtUpResult{}, err
		}
		if known && end-pos <= p.MaxLag {
			return workflows.CaughtUpResult{Offset: pos, HighWatermark: end, Lag: max(end-pos, 0)}, nil
		}
		if !time.Now().Before(deadline) {
			break
		}
		tm := time.NewTimer(50 * time.Millisecond)
		select {
		case <-ctx.Done():
			tm.Stop()
			return workflows.CaughtUpResult{}, ctx.Err()
		case <-tm.C:
		}
	}
	msg := fmt.Sprintf("%s/g%d not caught up: position %d, end offset %d, max lag %d", p.Projection, p.Generation, pos, end, p.MaxLag)
	if !known {
		msg = fmt.Sprintf("%s/g%d has no consumer position yet (end offset %d)", p.Projection, p.Generation, end)
	}
	return workflows.CaughtUpResult{}, temporal.NewApplicationError(msg, workflows.ErrTypeNotCaughtUp,
		workflows.CaughtUpResult{Offset: pos, HighWatermark: end, Lag: end - pos})
}
