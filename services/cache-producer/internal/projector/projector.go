// Package projector turns records of a compacted topic, decoded once by
// package feed, into writes of one projection generation: for every
// generation they feed (Writer.WriteBatch) it renders the projected key and
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
// Exactly-once outcome. On a single Redis node (standalone or replicated) a
// batch is one optimistic transaction holding its values, index, dead
// letters and offset, so it lands whole or not at all (see tx.go). On Redis
// Cluster a batch is written in this order: values (version guarded), then
// index entries, dead letters and offset. A crash anywhere replays the batch
// from the stored offset; every write it repeats carries the same version and
// is a no-op, and an index that is behind or ahead of the values only leads to
// deletes that the version guard refuses (see Writer.WriteBatch). Either way
// Redis ends exactly as after one clean run.
//
// Ownership. A source key deletes the projected key it wrote only while that
// key still holds its write (same version): if another source key wrote the
// same projected key since, the delete is skipped, so moving away from a key
// never removes a value someone else put there.
package projector

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/distcache/distcache/libs/distcache"
	"github.com/distcache/distcache/libs/events"
	"github.com/distcache/distcache/libs/projection"
	"github.com/distcache/distcache/services/cache-producer/internal/feed"
	"github.com/distcache/distcache/services/cache-producer/internal/ledger"
)

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
	Skipped     int // records found written already (by an earlier run or another writer)
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
	pub       *distcache.Publisher
	ledger    *ledger.Ledger
	log       *slog.Logger
	fault     Fault
	conflicts atomic.Int64
	cacheMax  int

	mu     sync.Mutex
	caches map[string]*indexCache // by Target.String()
}

// Option configures a Writer.
type Option func(*Writer)

// WithLogger sets the logger (default: discard).
func WithLogger(l *slog.Logger) Option { return func(w *Writer) { w.log = l } }

// WithIndexCache bounds each generation's in-memory index cache to n
// entries (default DefaultIndexCacheEntries; 0 disables it).
func WithIndexCache(n int) Option { return func(w *Writer) { w.cacheMax = max(n, 0) } }

// WithFault installs a fault hook (tests only).
func WithFault(f Fault) Option { return func(w *Writer) { w.fault = f } }

// NewWriter returns a Writer writing values through pub and bookkeeping
// through l.
func NewWriter(pub *distcache.Publisher, l *ledger.Ledger, opts ...Option) *Writer {
	w := &Writer{pub: pub, ledger: l, log: slog.New(slog.DiscardHandler), cacheMax: DefaultIndexCacheEntries}
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
	rec    *feed.Record
	remove bool   // the source key owns nothing after this record
	key    string // projected key (when !remove)
	value  []byte
	dead   error // dead-letter reason, with remove
	// filtered: the filter rejected the record (with remove)
	filtered bool
}

// Plan is one batch of one generation, simulated and ready to write: the
// value changes, and the index entries, dead letters and offset to commit
// once the values are written.
type Plan struct {
	t       Target
	changes []distcache.Change
	origin  []*feed.Record // the record of each change
	dead    []ledger.DeadLetter
	// slots holds the index entry of every source key the batch touches,
	// before and after it, in the order the batch first meets them; pos
	// finds a source key's slot.
	slots []slot
	pos   map[string]int32
	// written: projected key → version of the batch's last write to it.
	// It is kept only where a delete can need it (always off the
	// transactional path, where later plans overlay this one).
	written map[string]int64
	next    int64
	stats   Stats
}

// slot is one source key's index entry before and after a batch.
type slot struct {
	skey          string
	before, after ledger.Entry
}

// after is the index entry of source key k after the plan, if the plan
// touches k.
func (p *Plan) after(k string) (ledger.Entry, bool) {
	j, ok := p.pos[k]
	if !ok {
		return ledger.Entry{}, false
	}
	return p.slots[j].after, true
}

// Next is the offset the plan commits.
func (p *Plan) Next() int64 { return p.next }

// Stats is what the plan does (Applied and refusals are known after Apply).
func (p *Plan) Stats() Stats { return p.stats }

// WriteBatch writes recs (in offset order, all at or after the generation's
// stored offset) into t and then stores next as t's next offset (next < 0
// leaves it alone). It returns only once everything is written; on error
// nothing is known to be stored and the caller retries the same batch.
func (w *Writer) WriteBatch(ctx context.Context, t Target, recs []feed.Record, next int64) (Stats, error) {
	if w.transactional() {
		st, _, err := w.writeTx(ctx, nil, t, w.projectAll(t, recs), next, 0)
		return st, err
	}
	p, err := w.Plan(ctx, t, recs, next, nil)
	if err != nil {
		return Stats{}, err
	}
	if err := w.ApplyValues(ctx, p); err != nil {
		return p.stats, err
	}
	if err := w.Commit(ctx, p); err != nil {
		return p.stats, err
	}
	return p.stats, nil
}

// Plan simulates recs against the generation: the index as stored in Redis,
// overlaid with pending (plans of the same generation, in order, whose
// commit may not have landed yet), and the versions their deletes must
// check. It writes nothing.
func (w *Writer) Plan(ctx context.Context, t Target, recs []feed.Record, next int64, pending []*Plan) (*Plan, error) {
	c := w.ledger.Client()
	index := func(skeys []string) ([]ledger.Entry, error) {
		return w.ledger.IndexOn(ctx, c, t.Projection, t.Generation, false, skeys) // Cluster: per-key layout
	}
	return w.planOn(ctx, c, t, w.projectAll(t, recs), next, pending, index)
}

// projectAll projects every record of a batch (no I/O).
func (w *Writer) projectAll(t Target, recs []feed.Record) []outcome {
	outs := make([]outcome, len(recs))
	for i := range recs {
		outs[i] = w.project(t, &recs[i])
	}
	return outs
}

// planOn is Plan over projected records, reading through c.
func (w *Writer) planOn(ctx context.Context, c redis.Cmdable, t Target, outs []outcome, next int64, pending []*Plan,
	index func(skeys []string) ([]ledger.Entry, error)) (*Plan, error) {
	p := &Plan{t: t, next: next, stats: Stats{Records: len(outs)}}

	// One slot per source key; slotOf[i] is record i's (-1: no key).
	slotOf := make([]int32, len(outs))
	p.pos = make(map[string]int32, len(outs))
	p.slots = make([]slot, 0, len(outs))
	skeys := make([]string, 0, len(outs))
	repeated := false
	for i := range outs {
		if outs[i].filtered {
			p.stats.Filtered++
		}
		k := outs[i].rec.Key
		if k == "" {
			slotOf[i] = -1
			continue
		}
		j, ok := p.pos[k]
		if ok {
			repeated = true
		} else {
			j = int32(len(p.slots))
			p.pos[k] = j
			p.slots = append(p.slots, slot{skey: k})
			skeys = append(skeys, k)
		}
		slotOf[i] = j
	}

	// Index entries of the batch's source keys, before the batch.
	stored, err := index(skeys)
	if err != nil {
		return nil, err
	}
	for j := range p.slots {
		e := stored[j]
		for _, pp := range pending {
			if pe, ok := pp.after(p.slots[j].skey); ok {
				e = pe
			}
		}
		p.slots[j].before, p.slots[j].after = e, e
	}

	// Versions of the projected keys the batch may delete that it has not
	// written itself before: the index entries a source key leaves.
	var checkKeys []string
	var checkVer map[string]int64
	met := make([]bool, len(p.slots))
	for i := range outs {
		o := &outs[i]
		j := slotOf[i]
		if j < 0 || met[j] {
			continue
		}
		met[j] = true
		old := p.slots[j].before
		if old.Key == "" || (!o.remove && o.key == old.Key) {
			continue
		}
		if checkVer == nil {
			checkVer = map[string]int64{}
		}
		if _, ok := checkVer[old.Key]; ok {
			continue
		}
		found := false
		for j := len(pending) - 1; j >= 0; j-- {
			if v, ok := pending[j].written[old.Key]; ok {
				checkVer[old.Key], found = v, true
				break
			}
		}
		if !found {
			checkVer[old.Key] = 0
			checkKeys = append(checkKeys, old.Key)
		}
	}
	if len(checkKeys) > 0 {
		vkeys := make([]string, len(checkKeys))
		for i, k := range checkKeys {
			vkeys[i] = distcache.ValueKey(t.Projection, t.Generation, k)
		}
		vers, err := w.ledger.VersionsOn(ctx, c, vkeys)
		if err != nil {
			return nil, err
		}
		for i, k := range checkKeys {
			checkVer[k] = vers[i]
		}
	}

	// Replay the batch in order against the index and the written
	// versions. Where every source key appears once and none leaves a
	// projected key (a first load, updates that keep their keys), no
	// delete is possible and the transactional path keeps no written map.
	if !w.transactional() || repeated || len(checkVer) > 0 {
		p.written = make(map[string]int64, len(outs))
	}
	currentVersion := func(pk string) int64 {
		if v, ok := p.written[pk]; ok {
			return v
		}
		return checkVer[pk]
	}
	p.changes = make([]distcache.Change, 0, len(outs)+8)
	p.origin = make([]*feed.Record, 0, len(outs)+8)
	for i := range outs {
		o := &outs[i]
		r := o.rec
		v := Version(r.Offset)
		if o.dead != nil {
			p.deadLetter(r, o.dead)
		}
		if slotOf[i] < 0 {
			continue
		}
		sl := &p.slots[slotOf[i]]
		old := sl.after
		if old.Key != "" && (o.remove || old.Key != o.key) {
			if currentVersion(old.Key) == old.Version {
				p.changes = append(p.changes, distcache.Change{Key: old.Key, Version: v, Op: distcache.OpDelete})
				p.origin = append(p.origin, r)
				if p.written != nil {
					p.written[old.Key] = v
				}
				p.stats.Deletes++
			}
		}
		if o.remove {
			sl.after = ledger.Entry{}
			continue
		}
		p.changes = append(p.changes, distcache.Change{Key: o.key, Value: o.value, Version: v, Op: distcache.OpSet})
		p.origin = append(p.origin, r)
		if p.written != nil {
			p.written[o.key] = v
		}
		sl.after = ledger.Entry{Key: o.key, Version: v}
		p.stats.Sets++
	}
	return p, nil
}

func (p *Plan) deadLetter(r *feed.Record, err error) {
	p.dead = append(p.dead, ledger.DeadLetter{Topic: r.Topic, Partition: r.Partition, Offset: r.Offset, Key: r.Key, Reason: err.Error()})
	p.stats.DeadLetters++
	if p.stats.DeadReasons == nil {
		p.stats.DeadReasons = map[string]int{}
	}
	p.stats.DeadReasons[ReasonClass(err)]++
}

// ApplyValues writes the plan's values through the Publisher. It may be
// repeated after an error.
func (w *Writer) ApplyValues(ctx context.Context, p *Plan) error {
	if w.fault != nil {
		if err := w.fault(ctx, p.t, BeforeValues); err != nil {
			return err
		}
	}
	if len(p.changes) > 0 {
		res, err := w.pub.Apply(ctx, p.t.Projection, p.t.Generation, p.changes)
		if err != nil {
			return fmt.Errorf("write %s: %w", p.t, err)
		}
		p.results(res)
	}
	if w.fault != nil {
		if err := w.fault(ctx, p.t, AfterValues); err != nil {
			return err
		}
	}
	return nil
}

// results records the outcome of the plan's value writes: how many were
// applied, and a dead letter for each change the Publisher refused.
func (p *Plan) results(res []distcache.Result) {
	p.stats.Applied = 0
	for j, r := range res {
		if r.Applied {
			p.stats.Applied++
		}
		if r.Err != nil && !p.refused(p.origin[j]) {
			p.deadLetter(p.origin[j], r.Err)
		}
	}
}

// refused reports whether r already has a dead letter (a repeated Apply).
func (p *Plan) refused(r *feed.Record) bool {
	for _, d := range p.dead {
		if d.Offset == r.Offset {
			return true
		}
	}
	return false
}

// Commit stores the plan's index entries, dead letters and offset. It must
// follow ApplyValues, and the commits of one generation must follow each
// other in plan order.
func (w *Writer) Commit(ctx context.Context, p *Plan) error {
	return w.ledger.Write(ctx, p.t.Projection, p.t.Generation, p.commit())
}

// commit is the bookkeeping the plan leaves once its values are written.
func (p *Plan) commit() ledger.Commit {
	dead := slices.Clone(p.dead) // stream ids must grow: offset order
	slices.SortFunc(dead, func(a, b ledger.DeadLetter) int { return cmp.Compare(a.Offset, b.Offset) })
	c := ledger.Commit{Dead: dead, Next: p.next}
	for _, sl := range p.slots {
		switch {
		case sl.after == sl.before:
		case sl.after.Key == "":
			c.Delete = append(c.Delete, sl.skey)
		default:
			c.Set = append(c.Set, ledger.SourceEntry{Source: sl.skey, Entry: sl.after})
		}
	}
	return c
}

// Run writes the batches of in into t in order, overlapping the work of
// consecutive batches: while one batch's values are written, the next is
// planned (its index read and overlaid with the batches not yet committed)
// and the one before is committed. Failed steps are retried until ctx ends.
// committed is called after each batch's commit, in order. Run returns when
// in is closed and drained, or with ctx's error.
func (w *Writer) Run(ctx context.Context, t Target, in <-chan feed.Batch, onErr func(error), committed func(next int64, st Stats, took time.Duration)) error {
	if w.transactional() {
		return w.runTx(ctx, t, in, onErr, committed)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		mu      sync.Mutex
		pending []*Plan // planned, not yet committed, in order
	)
	type timed struct {
		p  *Plan
		t0 time.Time
	}
	toApply := make(chan timed, 1)
	toCommit := make(chan timed, 1)
	errc := make(chan error, 3)
	go func() { // plan
		defer close(toApply)
		for {
			var b feed.Batch
			var ok bool
			select {
			case b, ok = <-in:
			case <-ctx.Done():
				errc <- ctx.Err()
				return
			}
			if !ok {
				break
			}
			t0 := time.Now()
			var p *Plan
			err := Retry(ctx, func() error {
				mu.Lock()
				snap := append([]*Plan(nil), pending...)
				mu.Unlock()
				var err error
				p, err = w.Plan(ctx, t, b.Records, b.Next, snap)
				return err
			}, onErr)
			if err != nil {
				errc <- err
				return
			}
			mu.Lock()
			pending = append(pending, p)
			mu.Unlock()
			select {
			case toApply <- timed{p, t0}:
			case <-ctx.Done():
				errc <- ctx.Err()
				return
			}
		}
		errc <- nil
	}()
	go func() { // apply values
		defer close(toCommit)
		for x := range toApply {
			if err := Retry(ctx, func() error { return w.ApplyValues(ctx, x.p) }, onErr); err != nil {
				errc <- err
				return
			}
			select {
			case toCommit <- x:
			case <-ctx.Done():
				errc <- ctx.Err()
				return
			}
		}
		errc <- nil
	}()
	var err error
	for x := range toCommit { // commit
		if err = Retry(ctx, func() error { return w.Commit(ctx, x.p) }, onErr); err != nil {
			break
		}
		mu.Lock()
		pending = pending[1:]
		mu.Unlock()
		if committed != nil {
			committed(x.p.next, x.p.stats, time.Since(x.t0))
		}
	}
	if err != nil {
		cancel()
		for range toCommit {
		}
		<-errc
		<-errc
		return err
	}
	for range 2 {
		if e := <-errc; e != nil && err == nil {
			err = e
		}
	}
	return err
}

func (w *Writer) project(t Target, r *feed.Record) outcome {
	o := outcome{rec: r}
	switch {
	case r.Err != nil:
		o.remove, o.dead = true, r.Err
	case r.Delete:
		o.remove = true
	default:
		key, err := t.Compiled.KeyMembers(r.Payload)
		if err != nil {
			o.remove, o.dead = true, err
			return o
		}
		if !t.Compiled.MatchMembers(r.Payload) {
			o.remove, o.filtered = true, true
			return o
		}
		val, err := t.Compiled.ProjectMembers(r.Payload)
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
