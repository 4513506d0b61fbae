// Package feed is the cache-producer's read side: it reads a compacted
// topic and turns its records into decoded batches. It owns the one Reader
// that both the live fan-out (package fanout) and backfills (package
// backfill) consume through, the decoding of a record (its events envelope
// and, with a JSON scanner of its own, its payload) and the fetch size.
//
// A Reader consumes partition 0 of one topic from a given offset,
// read-committed. Control records (transaction markers) are consumed, so the
// position a batch reports (Batch.Next) moves past them and a marker at the
// end of the log never looks like lag, but they are left out of the batch.
// Each record is decoded once, keeping only the payload fields its
// projections read (Fields), for every generation it feeds; what to write
// is package projector's business.
package feed

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/distcache/distcache/libs/events"
	"github.com/distcache/distcache/libs/projection"
)

// Record is one decoded topic record, shared by every generation it feeds.
type Record struct {
	Offset    int64
	Partition int32
	Topic     string
	// Key is the source (aggregate) key, the record key.
	Key string
	// Delete is set for a tombstone.
	Delete bool
	// SourceTime is the envelope's source time (dc-source-ts: the outbox
	// row's commit at the core); zero when the record could not be decoded
	// or was read keys-only.
	SourceTime time.Time
	// Payload is the decoded JSON object of an upsert (only the members the
	// generations read, see DecodeFields); it is only read.
	Payload projection.Members
	// Err says why the record cannot be used at all (malformed envelope,
	// payload not a JSON object); it is then dead-lettered by every
	// generation, and the source key's projected value is removed.
	Err error
}

// Decode decodes a record once for every generation it feeds, keeping
// every payload field.
func Decode(r *kgo.Record) Record { return DecodeFields(r, nil) }

// DecodeFields is Decode keeping only the payload fields in keep (every
// field when nil): FieldsOf the projections the record feeds. The whole
// payload is still checked.
func DecodeFields(r *kgo.Record, keep Fields) Record {
	rec := Record{Offset: r.Offset, Partition: r.Partition, Topic: r.Topic, Key: string(r.Key)}
	e, err := events.FromRecordLazy(r) // the payload is checked by its parse below
	if err != nil {
		rec.Err = err
		return rec
	}
	rec.SourceTime = e.SourceTime
	if e.Op == events.OpDelete {
		rec.Delete = true
		return rec
	}
	if rec.Payload, rec.Err = decodePayload(e.Payload, keep); rec.Err != nil {
		// Not valid JSON: report it as FromRecord does.
		if _, ferr := events.FromRecord(r); ferr != nil {
			rec.Err = ferr
		}
	}
	return rec
}

// DecodeAll decodes rs (DecodeFields), spreading a large batch over the
// CPUs.
func DecodeAll(rs []*kgo.Record, keep Fields) []Record {
	out := make([]Record, len(rs))
	const chunk = 512
	if len(rs) <= chunk || runtime.GOMAXPROCS(0) == 1 {
		for i, r := range rs {
			out[i] = DecodeFields(r, keep)
		}
		return out
	}
	var wg sync.WaitGroup
	for lo := 0; lo < len(rs); lo += chunk {
		hi := min(lo+chunk, len(rs))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := lo; i < hi; i++ {
				out[i] = DecodeFields(rs[i], keep)
			}
		}()
	}
	wg.Wait()
	return out
}

// FetchBytes is the most a topic fetch brings (kgo.FetchMaxPartitionBytes):
// a default batch of 5000 records of ~300 bytes fits in it with room to
// spare. Bigger fetches do not read faster once records flow (the client
// fetches ahead), but the first one, which a starting consumer or backfill
// waits for, takes about 27 ms per MiB here: 16 MiB kept the first batch
// ~430 ms away, 4 MiB ~80 ms.
const FetchBytes = 4 << 20

// DefaultMaxRecords is the most records of a batch unless
// Config.MaxRecords says otherwise.
const DefaultMaxRecords = 5000

// fetchRetryWait is how long a Reader waits after a fetch that failed and
// brought nothing (a topic not created yet, a broker away) before it polls
// again, so that it does not spin.
const fetchRetryWait = 250 * time.Millisecond

// Batch is one slice of a topic: its records, decoded, in offset order, and
// the position after them.
type Batch struct {
	// From is the position the batch starts at (the Next of the batch
	// before, or Config.From): every offset from From to Next was read.
	From    int64
	Records []Record
	// Next is the offset after the batch: every record before it has been
	// read (control records and offsets compaction removed included).
	Next int64
	// End is the topic's end offset as last seen (its high watermark, or
	// Config.Until for a Reader that stops there; -1 or 0 if unknown). It
	// sizes a new generation's index cache up front.
	End int64
}

// Config configures a Reader.
type Config struct {
	// KafkaOpts are the base client options (seed brokers, TLS, SASL).
	KafkaOpts []kgo.Opt
	// Topic is the topic read; only its partition 0 is.
	Topic string
	// From is the first offset read.
	From int64
	// Until, when positive, is where the Reader stops: it emits the
	// records before it and Run returns once everything before it is read.
	// 0 reads until the context ends.
	Until int64
	// MaxRecords is the most records a batch holds (default
	// DefaultMaxRecords).
	MaxRecords int
	// Fields are the payload fields decoded (nil: every field).
	Fields Fields
	// KeysOnly leaves records undecoded: each Record holds its offset,
	// partition, topic and key only (LastOffsets).
	KeysOnly bool
	// OnFetchError is called with each failed fetch; the Reader keeps
	// polling (default: nothing is called).
	OnFetchError func(error)
}

// Reader reads one topic's partition 0 from an offset and emits its
// records decoded, in batches. A Reader runs once.
type Reader struct {
	cfg Config
	cl  *kgo.Client
}

// NewReader returns a Reader for cfg, with its Kafka client created (not
// connected yet). Close releases it.
func NewReader(cfg Config) (*Reader, error) {
	if cfg.Topic == "" {
		return nil, errors.New("feed: Config.Topic is empty")
	}
	if cfg.From < 0 {
		return nil, fmt.Errorf("feed: Config.From is %d (must be >= 0)", cfg.From)
	}
	if cfg.MaxRecords <= 0 {
		cfg.MaxRecords = DefaultMaxRecords
	}
	cl, err := kgo.NewClient(append(slices.Clone(cfg.KafkaOpts),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{cfg.Topic: {0: kgo.NewOffset().At(cfg.From)}}),
		// Never move the position behind the caller's back: an offset out
		// of range (a topic re-created below it, a log start past it) is
		// ErrPositionLost, for the caller to decide.
		kgo.ConsumeResetOffset(kgo.NoResetOffset()),
		kgo.KeepControlRecords(),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.FetchMaxPartitionBytes(FetchBytes),
	)...)
	if err != nil {
		return nil, fmt.Errorf("create kafka client: %w", err)
	}
	return &Reader{cfg: cfg, cl: cl}, nil
}

// Close closes the Reader's Kafka client.
func (r *Reader) Close() { r.cl.Close() }

// ErrPositionLost is wrapped by the error Run returns when the topic no
// longer holds the Reader's position: the broker answered that the offset
// is out of range (the topic was re-created with fewer records, or its log
// start moved past the position) or that it no longer hosts the topic the
// Reader was consuming (deleted, perhaps re-created: a new incarnation has a
// new topic ID). The Reader does not move on by itself; the caller compares
// its position with the topic's Bounds and decides.
var ErrPositionLost = errors.New("the topic no longer holds the consumer's position")

// PositionLostError is the error Run returns with ErrPositionLost.
type PositionLostError struct {
	Topic  string
	Offset int64 // the position the Reader was at
	Err    error // the broker's answer
}

func (e *PositionLostError) Error() string {
	return fmt.Sprintf("%s at offset %d: %v: %v", e.Topic, e.Offset, ErrPositionLost, e.Err)
}

// Unwrap returns ErrPositionLost and the broker's answer.
func (e *PositionLostError) Unwrap() []error { return []error{ErrPositionLost, e.Err} }

// positionLost reports whether a fetch error means the position is gone.
func positionLost(err error) bool {
	return errors.Is(err, kerr.OffsetOutOfRange) || errors.Is(err, kerr.UnknownTopicID)
}

// Run reads the topic and hands emit each batch that moves the position,
// in order, until ctx ends (Run returns ctx's error), emit fails (its
// error), the position is lost (a *PositionLostError), or, with
// Config.Until, everything before Until is read (nil). emit may keep the
// batch; its records are not reused.
func (r *Reader) Run(ctx context.Context, emit func(Batch) error) error {
	until := r.cfg.Until
	next, hwm := r.cfg.From, int64(-1)
	for until <= 0 || next < until {
		fs := r.cl.PollRecords(ctx, r.cfg.MaxRecords)
		if err := ctx.Err(); err != nil {
			return err
		}
		failed := false
		var lost error
		fs.EachError(func(t string, p int32, err error) {
			if errors.Is(err, context.Canceled) {
				return
			}
			failed = true
			if positionLost(err) && lost == nil {
				lost = err
			}
			if r.cfg.OnFetchError != nil {
				r.cfg.OnFetchError(fmt.Errorf("fetch %s partition %d: %w", t, p, err))
			}
		})
		if lost != nil && fs.NumRecords() == 0 {
			return &PositionLostError{Topic: r.cfg.Topic, Offset: next, Err: lost}
		}
		if failed && fs.NumRecords() == 0 {
			t := time.NewTimer(fetchRetryWait)
			select {
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			case <-t.C:
			}
			continue
		}
		var raw []*kgo.Record
		from, moved := next, false
		fs.EachPartition(func(p kgo.FetchTopicPartition) {
			if p.Partition != 0 {
				return
			}
			if p.HighWatermark >= 0 {
				hwm = p.HighWatermark
			}
			for _, rec := range p.Records {
				switch {
				case rec.Offset < next: // read already
					continue
				case until > 0 && rec.Offset >= until:
					next, moved = until, true // everything before the end is read
					return
				}
				next, moved = rec.Offset+1, true
				if !rec.Attrs.IsControl() {
					raw = append(raw, rec)
				}
			}
		})
		if !moved {
			continue
		}
		var recs []Record
		if r.cfg.KeysOnly {
			recs = make([]Record, len(raw))
			for i, rec := range raw {
				recs[i] = Record{Offset: rec.Offset, Partition: rec.Partition, Topic: rec.Topic, Key: string(rec.Key)}
			}
		} else {
			recs = DecodeAll(raw, r.cfg.Fields)
		}
		b := Batch{From: from, Records: recs, Next: next, End: hwm}
		if until > 0 {
			b.End = until
		}
		if err := emit(b); err != nil {
			return err
		}
	}
	return nil
}
