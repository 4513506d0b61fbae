// Package projector is the cache-producer's write side: it writes batches of
// decoded records (package feed) into the generations of projections
// (Targets), through distcache.Publisher for the values and change streams and
// package ledger for its own bookkeeping (offset, source-key index, dead
// letters).
//
// A batch goes through four steps, in this order:
//
//  1. Read the state the batch needs (state.go): the generation's stored
//     offset (records before it are written already), the index entries of
//     the batch's source keys (from the in-memory index cache, else Redis)
//     and the versions of the projected keys the batch may delete.
//  2. Plan (plan.go): a pure function of the batch and that state renders
//     each record's projected key and value and decides every write: values,
//     deletes of what a source key no longer owns (re-keys, tombstones,
//     records the filter now rejects, records that cannot be projected),
//     index changes, dead letters and the next offset. No I/O.
//  3. Execute: on a single Redis node one MULTI/EXEC transaction (tx.go); on
//     Redis Cluster the values first, then the bookkeeping (cluster.go).
//  4. Record the outcome: the index cache takes the committed entries and the
//     caller is told the batch's Stats.
//
// Versions. The version of every write is the record's offset + 1, not the
// record's dc-version header. Source versions are monotonic per source key,
// but a projected key can pass from one source key to another (a user gives
// up an e-mail address, another user takes it), and the versions of two
// source keys cannot be compared. Offsets of the topic's single partition
// order every record, survive compaction unchanged and are the same on every
// replay, so "a write with an older version never wins" holds per projected
// key whoever owns it, and a replay writes exactly the versions of the first
// run. Precisely, the version is the generation's version base plus offset
// + 1; the base is 0 until the generation is rebuilt in place from a topic
// whose offsets restarted (package rebuild), which raises it above every
// version the generation holds.
//
// Exactly-once outcome. On a single Redis node (standalone or replicated) a
// batch is one optimistic transaction holding its values, index, dead
// letters and offset, so it lands whole or not at all (see tx.go). On Redis
// Cluster a batch is written in this order: values (version guarded), then
// index entries, dead letters and offset. A crash anywhere replays the batch
// from the stored offset; every write it repeats carries the same version and
// is a no-op, and an index that is behind or ahead of the values only leads to
// deletes that the version guard refuses (see cluster.go). Either way Redis
// ends exactly as after one clean run.
//
// Ownership. A source key deletes the projected key it wrote only while that
// key still holds its write (same version): if another source key wrote the
// same projected key since, the delete is skipped, so moving away from a key
// never removes a value someone else put there.
package projector

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/distcache/distcache/libs/distcache"
	"github.com/distcache/distcache/libs/projection"
	"github.com/distcache/distcache/services/cache-producer/internal/feed"
	"github.com/distcache/distcache/services/cache-producer/internal/ledger"
)

// Version is the version of every write a record makes, in a generation
// whose version base is 0 (in general: base + Version(offset), see package
// rebuild).
func Version(offset int64) int64 { return offset + 1 }

// Target is one generation of one projection.
type Target struct {
	Projection string
	Generation int64
	Compiled   *projection.Projection
}

func (t Target) String() string { return fmt.Sprintf("%s/g%d", t.Projection, t.Generation) }

// Stats counts what one batch did.
type Stats struct {
	Records     int // records of the batch
	Skipped     int // records found written already (by an earlier run or another writer)
	Sets        int // value writes sent
	Deletes     int // deletes sent (re-keys, tombstones, filtered, unprojectable)
	Applied     int // writes that changed Redis (not replays)
	Filtered    int // records the filter rejected
	DeadLetters int
	// DeadReasons counts dead letters by reason class (see ReasonClass).
	DeadReasons map[string]int
	// OldestSourceTime is the oldest source time (the core's commit) among
	// the batch's records, zero when none has one: the batch's commit minus
	// it is the worst commit-to-Redis latency of the batch.
	OldestSourceTime time.Time
}

// oldestSource returns the oldest non-zero SourceTime of recs.
func oldestSource(recs []feed.Record) time.Time {
	var oldest time.Time
	for i := range recs {
		if st := recs[i].SourceTime; !st.IsZero() && (oldest.IsZero() || st.Before(oldest)) {
			oldest = st
		}
	}
	return oldest
}

// Fault lets tests stop a batch between its steps, as a crash would: a
// non-nil error abandons the batch there.
type Fault func(ctx context.Context, t Target, step Step) error

// Step names the points between the writes of a batch.
type Step int

// Steps of a batch, in order.
const (
	BeforeValues Step = iota + 1 // state read and batch planned, nothing written yet
	AfterValues                  // values written (on Cluster: index and offset not yet)
	// SnapshotWritten: a compaction wrote a new index snapshot (log layout)
	// and the transaction that switches it in has not run.
	SnapshotWritten
)

// Writer writes batches of records into generations. It is safe for
// concurrent use by batches of different generations; batches of one
// generation must be written one after the other.
type Writer struct {
	pub       *distcache.Publisher
	ledger    *ledger.Ledger
	log       *slog.Logger
	fault     Fault
	conflicts atomic.Int64
	cacheMax  int
	// compactMin is the least log size (bytes) that makes a log-layout
	// index compacted (DefaultCompactBytes).
	compactMin int64

	mu     sync.Mutex
	caches map[string]*indexCache // by Target.String()
	marks  map[string]Mark        // by Target.String() (mark.go)
	claims map[string]string      // by Target.String(): the writer claim batches check (mark.go)
}

// Option configures a Writer.
type Option func(*Writer)

// WithLogger sets the logger (default: discard).
func WithLogger(l *slog.Logger) Option { return func(w *Writer) { w.log = l } }

// WithIndexCache bounds the in-memory index caches of all generations
// together to n entries, each generation holding at most an equal share
// (default DefaultIndexCacheEntries; 0 disables them).
func WithIndexCache(n int) Option { return func(w *Writer) { w.cacheMax = max(n, 0) } }

// WithFault installs a fault hook (tests only).
func WithFault(f Fault) Option { return func(w *Writer) { w.fault = f } }

// NewWriter returns a Writer writing values through pub and bookkeeping
// through l.
func NewWriter(pub *distcache.Publisher, l *ledger.Ledger, opts ...Option) *Writer {
	w := &Writer{pub: pub, ledger: l, log: slog.New(slog.DiscardHandler), cacheMax: DefaultIndexCacheEntries, compactMin: DefaultCompactBytes}
	for _, o := range opts {
		o(w)
	}
	return w
}

// Ledger returns the Writer's ledger.
func (w *Writer) Ledger() *ledger.Ledger { return w.ledger }

// transactional reports whether batches are written in one transaction
// (a single Redis node) rather than in the Cluster sequence.
func (w *Writer) transactional() bool { return !w.ledger.Cluster() }

// WriteBatch writes recs (in offset order, all at or after the generation's
// stored offset) into t and then stores next as t's next offset (next < 0
// leaves it alone). It returns only once everything is written; on error
// nothing is known to be stored and the caller retries the same batch.
func (w *Writer) WriteBatch(ctx context.Context, t Target, recs []feed.Record, next int64) (Stats, error) {
	if w.transactional() {
		st, _, err := w.writeTx(ctx, nil, t, projectAll(t, recs), -1, next, 0)
		return st, err
	}
	return w.writeCluster(ctx, t, recs, next)
}

// Run writes the batches of in into t in order, each through the steps the
// package documents, overlapping consecutive batches (the next batch is
// projected, and on Cluster planned, while one is written). Failed steps are
// retried until ctx ends, onErr hearing of each failure. committed is called
// after each batch's commit, in order, with the offset stored. Run returns
// when in is closed and drained, or with ctx's error.
func (w *Writer) Run(ctx context.Context, t Target, in <-chan feed.Batch, onErr func(error), committed func(next int64, st Stats, took time.Duration)) error {
	if w.transactional() {
		return w.runTx(ctx, t, in, onErr, committed)
	}
	return w.runCluster(ctx, t, in, onErr, committed)
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
