package fanout

import (
	"context"
	"errors"
	"log/slog"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/distcache/distcache/libs/projection"
	"github.com/distcache/distcache/services/cache-producer/internal/feed"
	"github.com/distcache/distcache/services/cache-producer/internal/ledger"
	"github.com/distcache/distcache/services/cache-producer/internal/projector"
	"github.com/distcache/distcache/services/cache-producer/internal/rebuild"
)

// topicPoll is how often a consumer asks whether its topic exists, while it
// does not.
const topicPoll = 500 * time.Millisecond

// restartWait is the pause before a consumer that lost its position reads
// again.
const restartWait = 100 * time.Millisecond

// runner is one topic's consumer.
type runner struct {
	m     *Manager
	topic string
	gens  []Generation
	log   *slog.Logger

	stopOnce sync.Once
	stopc    chan struct{}
	done     chan struct{}

	mu       sync.Mutex
	states   map[string]string
	next     []int64           // per gen
	rebuilds []*ledger.Rebuild // per gen: the rebuild in progress
	requests []*rebuild.Cause  // per gen: a rebuild asked for (Manager.Rebuild)
	// supersede, per gen being rebuilt: the records before the rebuild's
	// end that a later record of their source key replaces, which it skips
	supersede []*feed.Superseded
	restart   func() // ends the current read, to start over
	hwm       atomic.Int64
	fresh     *freshness // newest source time and dead letters per gen (freshness.go)

	// claim is this consumer's writer claim (ledger.WriterKey) of its
	// generations; claimed[i] is set once generation i holds it (or, for a
	// consumer that took over its predecessor's claim, from the start:
	// it then claims only generations that hold no claim).
	claim   string
	claimed []bool
	// fenced is set when another replica claimed one of the generations:
	// the consumer stops and does not claim them back (Manager.Assign
	// starts a new one).
	fenced atomic.Bool
}

// newRunner returns topic's consumer of gens. claim "" gives it a new
// claim, which it stores over any other (the topic was just assigned to
// this replica); otherwise it continues its predecessor's claim (the
// generations of a topic this replica owns changed).
func newRunner(m *Manager, topic string, gens []Generation, claim string) *runner {
	r := &runner{m: m, topic: topic, gens: gens, log: m.cfg.Logger.With("topic", topic),
		stopc: make(chan struct{}), done: make(chan struct{}), states: map[string]string{}}
	r.claim = claim
	r.claimed = make([]bool, len(gens))
	if claim == "" {
		r.claim = ledger.NewClaim(m.cfg.Replica)
	} else {
		for i := range r.claimed {
			r.claimed[i] = true
		}
	}
	r.next = make([]int64, len(gens))
	for i := range r.next {
		r.next[i] = -1
	}
	r.rebuilds = make([]*ledger.Rebuild, len(gens))
	r.requests = make([]*rebuild.Cause, len(gens))
	r.supersede = make([]*feed.Superseded, len(gens))
	r.fresh = newFreshness(len(gens))
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
	now := time.Now()
	out := make([]Status, len(r.gens))
	for i, g := range r.gens {
		s := Status{Projection: g.Target.Projection, Generation: g.Target.Generation, Topic: r.topic,
			State: r.states[g.id()], Next: r.next[i], HighWatermark: hwm, Owner: r.m.cfg.Replica}
		r.fresh.fill(i, &s, now)
		if hwm >= 0 && r.next[i] >= 0 {
			s.Lag = max(hwm-r.next[i], 0)
		}
		if rb := r.rebuilds[i]; rb != nil {
			s.Rebuild = &RebuildStatus{Reason: rb.Reason, Detail: rb.Detail, Since: rb.Started,
				ReplacedOffset: rb.From, EndOffset: rb.End}
		}
		out[i] = s
	}
	return out
}

// requestRebuild hands generation i a rebuild for cause and makes the
// consumer start over to begin it.
func (r *runner) requestRebuild(i int, cause rebuild.Cause) {
	r.mu.Lock()
	r.requests[i] = &cause
	restart := r.restart
	r.mu.Unlock()
	if restart != nil {
		restart()
	}
}

// startOver ends the current read so the consumer checks its positions
// again.
func (r *runner) startOver() {
	r.mu.Lock()
	restart := r.restart
	r.mu.Unlock()
	if restart != nil {
		restart()
	}
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
	for r.consume(pollCtx, writeCtx) {
		t := time.NewTimer(restartWait)
		select {
		case <-pollCtx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// consume checks every generation's position against the topic (prepare),
// then reads the topic and writes each generation until the consumer stops
// (false) or must start over (true): the reader lost its position, a write
// found an offset moved back, or a rebuild was asked for.
func (r *runner) consume(pollCtx, writeCtx context.Context) bool {
	readCtx, stopRead := context.WithCancel(pollCtx)
	defer stopRead()
	var again atomic.Bool
	r.mu.Lock()
	r.restart = func() {
		again.Store(true)
		stopRead()
	}
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		r.restart = nil
		r.mu.Unlock()
	}()

	start, ok := r.prepare(pollCtx)
	if !ok {
		return false
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
		return false
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
	wg.Add(1)
	go func() {
		defer wg.Done()
		r.watchBookkeeping(readCtx)
	}()
	err = rd.Run(readCtx, r.dispatcher(readCtx, ins)) // ends with readCtx
	stopRead()                                        // and so does watchBookkeeping
	for _, in := range ins {
		close(in)
	}
	wg.Wait()
	if r.fenced.Load() {
		return false
	}
	if errors.Is(err, feed.ErrPositionLost) {
		r.log.Warn("the topic no longer holds the consumer's position; checking every generation's position again", "err", err)
		return pollCtx.Err() == nil
	}
	return again.Load() && pollCtx.Err() == nil
}

// fence stops the consumer for good: another replica claimed generation
// i (this one was paused past the group's session timeout, or the group
// moved the topic while this replica did not hear of it). What the Writer
// cached of the topic's generations is dropped; the consumer does not
// claim them back.
func (r *runner) fence(i int, detail string) {
	if r.fenced.Swap(true) {
		return
	}
	g := r.gens[i]
	r.m.cfg.Observer.Fenced(g.Target)
	r.log.Warn("another replica claimed the generation: this replica stops writing the topic", "generation", g.id(), "detail", detail)
	for _, g := range r.gens {
		r.m.cfg.Writer.Forget(g.Target)
		r.m.cfg.Observer.Forget(g.Target)
	}
	r.startOver()
}

// prepare reads each generation's stored offset (storing its start offset
// when it has none), waits for the topic to exist, and checks every
// position against the topic's bounds: a generation whose offset counts in
// an earlier incarnation of the topic, or whose rebuild was asked for, is
// rebuilt (rebuild.Begin), one whose offset the log start passed skips to
// the log start, one whose rebuild reached its end is swept. It returns
// where the reader starts; false when ctx ended first.
func (r *runner) prepare(ctx context.Context) (int64, bool) {
	led := r.m.cfg.Writer.Ledger()
	retry := func(stage string, what string, f func() error) bool {
		return projector.Retry(ctx, f, func(err error) {
			r.m.cfg.Observer.Failure(stage)
			r.log.Warn(what, "err", err)
		}) == nil
	}
	// Each generation's start: its stored offset, or the registry's; or a
	// rebuild, when Redis lost the generation's data.
	offs := make([]int64, len(r.gens))
	losses := make([]*rebuild.Cause, len(r.gens))
	for i, g := range r.gens {
		var ok bool
		if offs[i], losses[i], ok = r.position(ctx, i, retry); !ok {
			return 0, false
		}
		r.mu.Lock()
		r.next[i] = offs[i]
		r.mu.Unlock()
		r.m.cfg.Observer.Position(g.Target, offs[i], r.hwm.Load())
	}

	var b feed.Bounds
	for waited := false; ; waited = true {
		if !retry("fetch", "read topic bounds", func() error {
			var err error
			b, err = feed.ReadBounds(ctx, r.m.cfg.KafkaOpts, r.topic)
			return err
		}) {
			return 0, false
		}
		if b.Exists {
			break
		}
		if !waited {
			r.log.Info("waiting for the topic to exist")
		}
		t := time.NewTimer(topicPoll)
		select {
		case <-ctx.Done():
			t.Stop()
			return 0, false
		case <-t.C:
		}
	}
	r.hwm.Store(b.End)

	start := int64(-1)
	for i, g := range r.gens {
		t := g.Target
		log := r.log.With("generation", g.id())
		var (
			rb       ledger.Rebuild
			has      bool
			storedID string
		)
		if !retry("offset", "read rebuild state of "+g.id(), func() error {
			var err error
			if rb, has, err = led.RebuildOf(ctx, t.Projection, t.Generation); err != nil {
				return err
			}
			storedID, err = led.TopicID(ctx, t.Projection, t.Generation)
			return err
		}) {
			return 0, false
		}
		cause, reset := rebuild.Check(offs[i], storedID, b)
		if !reset && losses[i] != nil {
			cause, reset = *losses[i], true
		}
		r.mu.Lock()
		if req := r.requests[i]; req != nil {
			if !reset {
				cause, reset = *req, true
			}
			r.requests[i] = nil
		}
		r.mu.Unlock()
		switch {
		case reset:
			log.Warn("rebuilding the generation in place from the topic's start", "reason", cause.Reason, "detail", cause.Detail,
				"stored_offset", offs[i], "log_start", b.Start, "end", b.End)
			if !retry("rebuild", "begin rebuild of "+g.id(), func() error {
				var err error
				rb, err = rebuild.Begin(ctx, r.m.cfg.Writer, t, cause, b)
				return err
			}) {
				return 0, false
			}
			has, offs[i] = true, rb.Start
			r.m.cfg.Observer.Rebuilding(t, rb.Reason, true)
		case offs[i] < b.Start:
			// Records between the offset and the log start were deleted
			// before they were read: say so, and go on from the log start.
			skipped := b.Start - offs[i]
			log.Warn("the topic's log start passed the generation's offset: records deleted before they were read are skipped",
				"stored_offset", offs[i], "log_start", b.Start, "skipped_offsets", skipped)
			var moved bool
			if !retry("offset", "advance offset of "+g.id(), func() error {
				var err error
				moved, err = led.AdvanceOffset(ctx, t.Projection, t.Generation, offs[i], b.Start)
				return err
			}) {
				return 0, false
			}
			if moved {
				r.m.cfg.Observer.Skipped(t, skipped)
			}
			offs[i] = b.Start // (if another writer moved it, the write guard sends us here again)
		}
		if !reset && storedID == "" && b.ID != "" {
			if !retry("offset", "store topic id of "+g.id(), func() error {
				_, err := led.InitTopicID(ctx, t.Projection, t.Generation, b.ID)
				return err
			}) {
				return 0, false
			}
		}
		if has && !reset {
			r.m.cfg.Observer.Rebuilding(t, rb.Reason, false)
		}
		r.mu.Lock()
		r.next[i] = offs[i]
		if has {
			r.rebuilds[i] = &rb
		} else {
			r.rebuilds[i] = nil
		}
		r.mu.Unlock()
		if has && rebuild.Due(rb, offs[i]) {
			if !r.finish(ctx, i) {
				return 0, false
			}
		}
		r.m.cfg.Observer.Position(t, offs[i], b.End)
		if start < 0 || offs[i] < start {
			start = offs[i]
		}
	}
	r.readSuperseded(ctx, offs)
	return start, true
}

// readSuperseded reads, for the generations being rebuilt, which records
// between their offset and their rebuild's end a later record of the same
// source key replaces (feed.Superseded), once per end: a rebuild applies
// each source key's last record of that range only, so that readers go
// from the old content to the new one without seeing the history in
// between. Without it (the read failed) a rebuild applies every record: the
// same result, through the history.
func (r *runner) readSuperseded(ctx context.Context, offs []int64) {
	from := map[int64]int64{} // rebuild end → the smallest offset of a generation rebuilt to it
	r.mu.Lock()
	for i, rb := range r.rebuilds {
		if rb == nil || offs[i] >= rb.End {
			continue
		}
		if f, ok := from[rb.End]; !ok || offs[i] < f {
			from[rb.End] = offs[i]
		}
	}
	r.mu.Unlock()
	byEnd := map[int64]*feed.Superseded{}
	for end, f := range from {
		t0 := time.Now()
		s, err := feed.ReadSuperseded(ctx, r.m.cfg.KafkaOpts, r.topic, f, end)
		if err != nil {
			if ctx.Err() == nil {
				r.log.Warn("reading which records the rebuild may skip failed: it applies every record", "from", f, "end", end, "err", err)
			}
			continue
		}
		byEnd[end] = s
		r.log.Info("the rebuild applies each source key's last record before its end", "from", f, "end", end,
			"keys_with_several_records", s.Keys(), "took", time.Since(t0).Round(time.Millisecond))
	}
	r.mu.Lock()
	for i, rb := range r.rebuilds {
		r.supersede[i] = nil
		if rb != nil {
			r.supersede[i] = byEnd[rb.End]
		}
	}
	r.mu.Unlock()
}

// position reads generation g's stored position and decides where it
// starts (rebuild.Lost): a generation whose data Redis lost returns the
// cause of its rebuild (which prepare begins); one that has no offset yet
// gets the registry's start offset and a new epoch; one whose bookkeeping
// predates epochs gets an epoch. The Writer's Mark of g is then what is
// stored. false when ctx ended first.
func (r *runner) position(ctx context.Context, i int, retry func(stage, what string, f func() error) bool) (int64, *rebuild.Cause, bool) {
	g := r.gens[i]
	w, t := r.m.cfg.Writer, g.Target
	led := w.Ledger()
	var (
		pos        ledger.Position
		base       int64
		rb         ledger.Rebuild
		rebuilding bool
	)
	if !retry("offset", "read the position of "+g.id(), func() error {
		var err error
		if pos, err = led.Position(ctx, t.Projection, t.Generation); err != nil {
			return err
		}
		if base, err = led.VersionBase(ctx, t.Projection, t.Generation); err != nil {
			return err
		}
		rb, rebuilding, err = led.RebuildOf(ctx, t.Projection, t.Generation)
		return err
	}) {
		return 0, nil, false
	}
	mark, marked := w.Mark(t)
	if cause, lost := rebuild.Lost(t, mark, marked, pos, rb, rebuilding, g.StartOffset); lost {
		r.log.Error("Redis lost the generation's data: rebuilding it from the topic's start", "generation", g.id(),
			"detail", cause.Detail, "registry_start_offset", g.StartOffset)
		if !r.takeClaim(ctx, i, pos.Writer, retry) {
			return 0, nil, false
		}
		return pos.Offset, &cause, true
	}
	switch {
	case !pos.OffsetKnown:
		if !retry("offset", "init the offset of "+g.id(), func() error {
			var err error
			pos, _, err = led.InitPosition(ctx, t.Projection, t.Generation, g.StartOffset, ledger.NewEpoch())
			return err
		}) {
			return 0, nil, false
		}
	case pos.Epoch == "":
		if !retry("offset", "store the epoch of "+g.id(), func() error {
			var err error
			pos, err = led.AdoptEpoch(ctx, t.Projection, t.Generation, ledger.NewEpoch())
			return err
		}) {
			return 0, nil, false
		}
	}
	if marked && mark.Epoch != pos.Epoch {
		// Another producer rebuilt the generation: what this one cached of
		// its index is not what is stored.
		r.log.Info("the generation was rebuilt elsewhere: taking its new epoch", "generation", g.id(),
			"epoch", pos.Epoch, "was", mark.Epoch)
		w.Forget(t)
	}
	w.SetMark(t, projector.Mark{Epoch: pos.Epoch, Offset: pos.Offset, Base: base})
	if !r.takeClaim(ctx, i, pos.Writer, retry) {
		return 0, nil, false
	}
	return pos.Offset, nil, true
}

// takeClaim makes generation i's writer claim this consumer's (stored is
// the claim read with its position): the first time, over any other claim
// (the topic was assigned to this replica); after that only where none is
// stored (a new generation, or Redis lost the claim). Another claim stored
// since fences the consumer. false when ctx ended or the consumer is
// fenced.
func (r *runner) takeClaim(ctx context.Context, i int, stored string, retry func(stage, what string, f func() error) bool) bool {
	g := r.gens[i]
	t := g.Target
	led := r.m.cfg.Writer.Ledger()
	if r.m.cfg.Unclaimed {
		return true
	}
	switch {
	case stored == r.claim:
	case r.claimed[i] && stored != "":
		r.fence(i, "its writer is "+ledger.ClaimReplica(stored))
		return false
	default:
		var prev string
		onlyIfFree := r.claimed[i]
		if !retry("offset", "claim "+g.id(), func() error {
			var err error
			prev, err = led.ClaimIf(ctx, t.Projection, t.Generation, r.claim, onlyIfFree)
			return err
		}) {
			return false
		}
		if onlyIfFree && prev != "" && prev != r.claim {
			r.fence(i, "its writer is "+ledger.ClaimReplica(prev))
			return false
		}
		if prev != "" && prev != r.claim {
			r.log.Info("took over the generation", "generation", g.id(), "from", ledger.ClaimReplica(prev))
		}
		// On Redis Cluster the change stream (another slot) is claimed too,
		// before the first batch: a replica paused between its values and
		// its stream entries then appends nothing older after this one's.
		if !retry("offset", "claim the change stream of "+g.id(), func() error {
			return r.m.cfg.Writer.ClaimStream(ctx, t, r.claim)
		}) {
			return false
		}
	}
	r.claimed[i] = true
	r.m.cfg.Writer.SetClaim(t, r.claim)
	return true
}

// watchBookkeeping checks, every Config.LossCheckInterval until ctx ends,
// that every generation's offset and epoch in Redis are what the Writer's
// Mark says, so that a loss is noticed while no record arrives (a batch
// checks them too); on a difference the consumer starts over and prepare
// decides.
func (r *runner) watchBookkeeping(ctx context.Context) {
	w := r.m.cfg.Writer
	tick := time.NewTicker(r.m.cfg.LossCheckInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		for i, g := range r.gens {
			mark, ok := w.Mark(g.Target) // before the read: commits only move it forward
			if !ok {
				continue
			}
			pos, err := w.Ledger().Position(ctx, g.Target.Projection, g.Target.Generation)
			if err != nil {
				continue // Redis down: the writes say so
			}
			if why := mark.Differs(pos.OffsetKnown, pos.Offset, pos.Epoch); why != "" {
				r.log.Warn("the generation's bookkeeping is not what this producer committed; checking it", "generation", g.id(), "detail", why)
				r.startOver()
				return
			}
			if pos.Writer != "" && pos.Writer != r.claim && !r.m.cfg.Unclaimed {
				r.fence(i, "its writer is "+ledger.ClaimReplica(pos.Writer))
				return
			}
		}
	}
}

// finish sweeps generation i's rebuild, retrying until it succeeds or ctx
// ends (false).
func (r *runner) finish(ctx context.Context, i int) bool {
	r.mu.Lock()
	rb := r.rebuilds[i]
	r.mu.Unlock()
	if rb == nil {
		return true
	}
	t := r.gens[i].Target
	var removed int
	err := projector.Retry(ctx, func() error {
		var err error
		removed, err = rebuild.Finish(ctx, r.m.cfg.Writer, t, *rb)
		return err
	}, func(err error) {
		r.m.cfg.Observer.Failure("rebuild")
		r.log.Warn("finish rebuild", "generation", r.gens[i].id(), "err", err)
	})
	if err != nil {
		return false
	}
	r.mu.Lock()
	r.rebuilds[i] = nil
	r.supersede[i] = nil
	r.mu.Unlock()
	r.m.cfg.Observer.Rebuilt(t, removed)
	r.log.Info("rebuild finished", "generation", r.gens[i].id(), "reason", rb.Reason,
		"end", rb.End, "removed_source_keys", removed, "took", time.Since(rb.Started).Round(time.Millisecond))
	return true
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
		rb := r.rebuilds[i]
		r.mu.Unlock()
		r.fresh.written(i, next, st.DeadLetters, time.Now())
		r.m.cfg.Observer.Batch(g.Target, st, took)
		r.m.cfg.Observer.Position(g.Target, next, r.hwm.Load())
		if rb != nil && rebuild.Due(*rb, next) {
			r.finish(ctx, i) // before the next batch: on a cluster no batch may run meanwhile
		}
	})
	if failing {
		r.m.failing.Add(-1)
	}
	switch {
	case errors.Is(err, projector.ErrPositionMoved):
		r.log.Warn("the generation's offset was moved back (a rebuild elsewhere?); reading again", "generation", g.id(), "err", err)
		r.startOver()
	case errors.Is(err, projector.ErrBookkeepingLost):
		r.log.Warn("the generation's bookkeeping is not what this producer committed; checking it", "generation", g.id(), "err", err)
		r.startOver()
	case errors.Is(err, projector.ErrFenced):
		r.fence(i, err.Error())
	case err != nil && ctx.Err() == nil:
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
	supersede := make([]*feed.Superseded, len(r.gens))
	r.mu.Lock()
	copy(dispatched, r.next)
	r.mu.Unlock()
	r.fresh.restart()
	return func(b feed.Batch) error {
		if b.End >= 0 {
			r.hwm.Store(b.End)
		}
		r.m.cfg.Observer.Consumed(r.topic, len(b.Records))
		r.mu.Lock()
		copy(supersede, r.supersede)
		r.mu.Unlock()
		for i := range r.gens {
			if b.Next <= dispatched[i] {
				continue // this generation is past the batch
			}
			sub := b
			sub.From = max(b.From, dispatched[i])
			if len(sub.Records) > 0 && sub.Records[0].Offset < dispatched[i] {
				j := sort.Search(len(sub.Records), func(j int) bool { return sub.Records[j].Offset >= dispatched[i] })
				sub.Records = sub.Records[j:]
			}
			if s := supersede[i]; s.Keys() > 0 && len(sub.Records) > 0 && sub.Records[0].Offset < s.Until {
				kept := make([]feed.Record, 0, len(sub.Records)) // the batch is shared: a copy
				for j := range sub.Records {
					if !s.Has(&sub.Records[j]) {
						kept = append(kept, sub.Records[j])
					}
				}
				sub.Records = kept
			}
			r.fresh.dispatched(i, sub) // before the writer can commit it
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
