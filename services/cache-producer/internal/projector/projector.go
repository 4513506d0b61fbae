// Package projector turns records of a compacted topic into writes of one
// projection generation: it decodes each record once (Decode), and for every
// generation it feeds (Writer.WriteBatch) renders the projected key and
// value, deletes what a source key no longer owns (re-keys, tombstones,
// records the filter now rejects, records that cannot be projected), writes
// through distcache.Publisher in one pipelined batch, and then records the
// source-key index, the dead letters and the consumed offset (package ledger).
//
// Versions. The version of every write is the record's offset + 1, not the
// record's dc-version header. Source versions are monotonic per source key,
// but a projected key can pass from one source key to another (a user gives
// up an e-mail address, another user takes it), and the versions of two
// source keys cannot be compared. Offsets of the topic's single partition
// order every record, survive compaction unchanged and are the same on every
// replay, so "a write with an older version never wins" holds per projected
// key whoever owns it, and a replay writes exactly the versions of the first
// run.
//
// Exactly-once outcome. A batch is written in this order: values (version
// guarded), then index entries, dead letters and offset. A crash anywhere
// replays the batch from the stored offset; every write it repeats carries
// the same version and is a no-op, and an index that is behind or ahead of the
// values only leads to deletes that the version guard refuses (see
// Writer.WriteBatch). Redis therefore ends exactly as after one clean run.
//
// Ownership. A source key deletes the projected key it wrote only while that
// key still holds its write (same version): if another source key wrote the
// same projected key since, the delete is skipped, so moving away from a key
// never removes a value someone else put there.
package projector

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/distcache/distcache/libs/distcache"
	"github.com/distcache/distcache/libs/events"
	"github.com/distcache/distcache/services/cache-producer/internal/ledger"
	"github.com/distcache/distcache/workflows/projection"
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
	// Payload is the decoded JSON object of an upsert; it is only read.
	Payload map[string]any
	// Err says why the record cannot be used at all (malformed envelope,
	// payload not a JSON object); it is then dead-lettered by every
	// generation, and the source key's projected value is removed.
	Err error
}

// Decode decodes a record once for every generation it feeds.
func Decode(r *kgo.Record) Record {
	rec := Record{Offset: r.Offset, Partition: r.Partition, Topic: r.Topic, Key: string(r.Key)}
	e, err := events.FromRecord(r)
	if err != nil {
		rec.Err = err
		return rec
	}
	if e.Op == events.OpDelete {
		rec.Delete = true
		return rec
	}
	rec.Payload, rec.Err = projection.DecodePayload(e.Payload)
	return rec
}

// Version is the version of every write a record makes.
func Version(offset int64) int64 { return offset + 1 }

// Target is one generation of one projection.
type Target struct {
	Projection string
	Generation int64
	Compiled   *projection.Projection
}

func (t Target) String() string { return fmt.Sprintf("%s/g%d", t.Projection, t.Generation) }

// Stats counts what one WriteBatch did.
type Stats struct {
	Records     int // records of the batch
	Sets        int // value writes sent
	Deletes     int // deletes sent (re-keys, tombstones, filtered, unprojectable)
	Applied     int // writes that changed Redis (not replays)
	Filtered    int // records the filter rejected
	DeadLetters int
	// DeadReasons counts dead letters by reason class (see ReasonClass).
	DeadReasons map[string]int
}

// Fault lets tests stop a batch between its steps, as a crash would: a
// non-nil error abandons the batch there.
type Fault func(ctx context.Context, t Target, step Step) error

// Step names the points between the writes of a batch.
type Step int

// Steps of WriteBatch, in order.
const (
	BeforeValues Step = iota + 1 // index read, nothing written yet
	AfterValues                  // values written, index/offset not yet
)

// Writer writes batches of records into generations. It is safe for
// concurrent use by batches of different generations; batches of one
// generation must be written one after the other.
type Writer struct {
	pub    *distcache.Publisher
	ledger *ledger.Ledger
	log    *slog.Logger
	fault  Fault
}

// Option configures a Writer.
type Option func(*Writer)

// WithLogger sets the logger (default: discard).
func WithLogger(l *slog.Logger) Option { return func(w *Writer) { w.log = l } }

// WithFault installs a fault hook (tests only).
func WithFault(f Fault) Option { return func(w *Writer) { w.fault = f } }

// NewWriter returns a Writer writing values through pub and bookkeeping
// through l.
func NewWriter(pub *distcache.Publisher, l *ledger.Ledger, opts ...Option) *Writer {
	w := &Writer{pub: pub, ledger: l, log: slog.New(slog.DiscardHandler)}
	for _, o := range opts {
		o(w)
	}
	return w
}

// Ledger returns the Writer's ledger.
func (w *Writer) Ledger() *ledger.Ledger { return w.ledger }

// Reason classes of dead letters (the metric label).
const (
	ReasonMalformed   = "malformed_record" // envelope/headers invalid
	ReasonNotJSON     = "payload_not_json" // payload is not a JSON object
	ReasonMissingKey  = "missing_key_field"
	ReasonBadKey      = "bad_key_field" // not a scalar, too long, empty
	ReasonRefused     = "refused_by_publisher"
	ReasonProjectFail = "project_failed"
)

// ReasonClass maps a record error to its metric label.
func ReasonClass(err error) string {
	switch {
	case errors.Is(err, projection.ErrPayload):
		return ReasonNotJSON
	case errors.Is(err, events.ErrMalformedRecord):
		var re *events.RecordError
		if errors.As(err, &re) && re.Part == "value" {
			return ReasonNotJSON
		}
		return ReasonMalformed
	case errors.Is(err, projection.ErrMissingField):
		return ReasonMissingKey
	case errors.Is(err, projection.ErrNotScalar), errors.Is(err, projection.ErrEmptyKey):
		return ReasonBadKey
	case errors.Is(err, distcache.ErrValueTooLarge), errors.Is(err, distcache.ErrInvalidKey):
		return ReasonRefused
	}
	return ReasonProjectFail
}

// outcome is what one record means for one generation.
type outcome struct {
	rec    *Record
	remove bool   // the source key owns nothing after this record
	key    string // projected key (when !remove)
	value  []byte
	dead   error // dead-letter reason, with remove
}

// WriteBatch writes recs (in offset order, all at or after the generation's
// stored offset) into t and then stores next as t's next offset. It returns
// only once everything is written; on error nothing is known to be stored
// and the caller retries the same batch.
func (w *Writer) WriteBatch(ctx context.Context, t Target, recs []Record, next int64) (Stats, error) {
	st := Stats{Records: len(recs)}
	outs := make([]outcome, len(recs))
	for i := range recs {
		outs[i] = w.project(t, &recs[i], &st)
	}

	// Index entries of the batch's source keys, before the batch.
	skeys := make([]string, 0, len(recs))
	pos := make(map[string]int, len(recs))
	for i := range recs {
		k := recs[i].Key
		if k == "" {
			continue
		}
		if _, ok := pos[k]; !ok {
			pos[k] = len(skeys)
			skeys = append(skeys, k)
		}
	}
	before, err := w.ledger.Index(ctx, t.Projection, t.Generation, skeys)
	if err != nil {
		return st, err
	}

	// Versions of the projected keys the batch may delete that it has not
	// written itself before: the pre-batch index entries a source key leaves.
	var checkKeys []string
	checkIdx := map[string]int{}
	seen := make(map[string]bool, len(skeys))
	for i := range outs {
		o := &outs[i]
		k := o.rec.Key
		if k == "" || seen[k] {
			continue
		}
		seen[k] = true
		old := before[pos[k]]
		if old.Key == "" || (!o.remove && o.key == old.Key) {
			continue
		}
		if _, ok := checkIdx[old.Key]; !ok {
			checkIdx[old.Key] = len(checkKeys)
			checkKeys = append(checkKeys, old.Key)
		}
	}
	var stored []int64
	if len(checkKeys) > 0 {
		vkeys := make([]string, len(checkKeys))
		for i, k := range checkKeys {
			vkeys[i] = distcache.ValueKey(t.Projection, t.Generation, k)
		}
		if stored, err = w.ledger.Versions(ctx, vkeys); err != nil {
			return st, err
		}
	}

	// Replay the batch in order against the index and the written versions.
	idx := make(map[string]ledger.Entry, len(skeys))
	for i, k := range skeys {
		idx[k] = before[i]
	}
	written := make(map[string]int64, len(recs))
	currentVersion := func(pk string) int64 {
		if v, ok := written[pk]; ok {
			return v
		}
		if j, ok := checkIdx[pk]; ok {
			return stored[j]
		}
		return -1 // unknown: not a key a source left in this batch
	}
	changes := make([]distcache.Change, 0, len(recs)+8)
	origin := make([]int, 0, len(recs)+8) // record index of each change
	var dead []ledger.DeadLetter
	for i := range outs {
		o := &outs[i]
		r := o.rec
		v := Version(r.Offset)
		if o.dead != nil {
			dead = append(dead, ledger.DeadLetter{Topic: r.Topic, Partition: r.Partition, Offset: r.Offset, Key: r.Key, Reason: o.dead.Error()})
			st.DeadLetters++
			if st.DeadReasons == nil {
				st.DeadReasons = map[string]int{}
			}
			st.DeadReasons[ReasonClass(o.dead)]++
		}
		if r.Key == "" {
			continue
		}
		old := idx[r.Key]
		if old.Key != "" && (o.remove || old.Key != o.key) {
			if currentVersion(old.Key) == old.Version {
				changes = append(changes, distcache.Change{Key: old.Key, Version: v, Op: distcache.OpDelete})
				origin = append(origin, i)
				written[old.Key] = v
				st.Deletes++
			}
		}
		if o.remove {
			idx[r.Key] = ledger.Entry{}
			continue
		}
		changes = append(changes, distcache.Change{Key: o.key, Value: o.value, Version: v, Op: distcache.OpSet})
		origin = append(origin, i)
		written[o.key] = v
		idx[r.Key] = ledger.Entry{Key: o.key, Version: v}
		st.Sets++
	}

	if w.fault != nil {
		if err := w.fault(ctx, t, BeforeValues); err != nil {
			return st, err
		}
	}
	if len(changes) > 0 {
		res, err := w.pub.Apply(ctx, t.Projection, t.Generation, changes)
		if err != nil {
			return st, fmt.Errorf("write %s: %w", t, err)
		}
		for j, r := range res {
			if r.Applied {
				st.Applied++
			}
			if r.Err != nil {
				rec := outs[origin[j]].rec
				st.DeadLetters++
				if st.DeadReasons == nil {
					st.DeadReasons = map[string]int{}
				}
				st.DeadReasons[ReasonClass(r.Err)]++
				dead = append(dead, ledger.DeadLetter{Topic: rec.Topic, Partition: rec.Partition, Offset: rec.Offset, Key: rec.Key, Reason: r.Err.Error()})
			}
		}
	}
	if w.fault != nil {
		if err := w.fault(ctx, t, AfterValues); err != nil {
			return st, err
		}
	}

	c := ledger.Commit{Dead: dead, Next: next}
	for k, e := range idx {
		b := before[pos[k]]
		switch {
		case e == b:
		case e.Key == "":
			c.Delete = append(c.Delete, k)
		default:
			if c.Set == nil {
				c.Set = make(map[string]ledger.Entry)
			}
			c.Set[k] = e
		}
	}
	if err := w.ledger.Write(ctx, t.Projection, t.Generation, c); err != nil {
		return st, err
	}
	return st, nil
}

func (w *Writer) project(t Target, r *Record, st *Stats) outcome {
	o := outcome{rec: r}
	switch {
	case r.Err != nil:
		o.remove, o.dead = true, r.Err
	case r.Delete:
		o.remove = true
	default:
		key, err := t.Compiled.Key(r.Payload)
		if err != nil {
			o.remove, o.dead = true, err
			return o
		}
		if !t.Compiled.Match(r.Payload) {
			o.remove = true
			st.Filtered++
			return o
		}
		val, err := t.Compiled.Project(r.Payload)
		if err != nil {
			o.remove, o.dead = true, err
			return o
		}
		o.key, o.value = key, val
	}
	return o
}

// Retry runs f until it succeeds or ctx ends, backing off from 50 ms to 5 s.
// onErr is called with each failure.
func Retry(ctx context.Context, f func() error, onErr func(error)) error {
	backoff := 50 * time.Millisecond
	for {
		err := f()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if onErr != nil {
			onErr(err)
		}
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}
