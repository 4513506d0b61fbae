// Package rebuild rebuilds a generation in place: from the start of its
// topic, into the same generation number, while edges keep reading it. It is
// the one mechanism for every case where a generation's position no longer
// describes what it holds:
//
//   - the topic was deleted and re-created (ReasonTopicReset): the stored
//     offset counts in the old topic, so it is past the new topic's end (the
//     consumer would wait there forever while its lag reads 0) or, worse,
//     inside it (the consumer would skip the new topic's first records);
//   - Redis lost the generation's data (ReasonDataLoss, issue #15): a
//     restart without persistence, a FLUSHALL, a failover to an empty or
//     older replica. Lost tells it from a generation nothing was written to
//     yet (see "Data loss" below).
//
// # Versions
//
// A generation writes every record with version base + offset + 1
// (projector). The base is 0 until a rebuild: Begin raises it to
// max(base + stored offset, highest version in the change stream) + 1, so
// every write of the rebuild is newer than anything the generation holds.
// That is what lets the rebuild write over live data: the version guards
// (Publisher.Apply on a cluster, every edge's local copy, the edges'
// recent-version table) accept each rewritten value as an update, and an
// edge moves from the old content to the new one key by key, without a
// cold start and without ever seeing a value go back. Re-applying a record
// whose value equals what is stored still writes it with a newer version,
// so it counts as met again.
//
// # Mark and sweep
//
// Begin (one transaction under the WATCH of the offset on a single Redis
// node) stores the new base, sets the offset to the topic's start and
// records the rebuild (ledger.Rebuild: reason, the offset it replaced, the
// topic's end E when it began, the base). The generation's consumer then
// reads the topic from its start through the ordinary write path: a record
// whose source key has an index entry from before the rebuild re-keys,
// tombstones or overwrites exactly as a later update would, and leaves an
// entry newer than the base. Once the generation's offset reaches E, every
// source key of the topic (as of the rebuild's start) has been met, so an
// index entry still at or below the base belongs to a source key the new
// topic does not have: Finish sweeps them (projector.Writer.Sweep), each
// removed as a tombstone of its source key would remove it, with version
// base + E (above every old version, below every record at or past E), and
// then removes the rebuild's marker. Records written after E may have met
// stale entries first; they overwrite or re-key them as updates, and the
// sweep skips entries written again.
//
// # Crashes and concurrency
//
// Everything a rebuild needs is in Redis: a producer that restarts in the
// middle reads the marker (ledger.RebuildOf) and goes on reading; one that
// restarts after E and before the marker is removed sweeps again (nothing is
// left to remove). On a single node a writer of the generation that read its
// batch before Begin finds the offset moved back under its WATCH and stops
// (projector.ErrPositionMoved) instead of writing past the records in
// between; a second Begin (two producers detecting the reset) raises the
// base again and starts over, which only costs time. On Redis Cluster Begin
// writes base, offset, marker and topic ID one after the other; a crash
// between offset and marker leaves a generation at the topic's start without
// a marker, which the topic ID check starts again on brokers with topic IDs
// (without them, keys the new topic lacks would stay until the next
// rebuild).
//
// # Data loss
//
// Each generation's bookkeeping has an epoch (ledger.EpochKey), created with
// its offset and replaced by every Begin; the producer remembers the epoch
// and the offset it committed (projector.Mark) and every batch reads both,
// in the round trip that reads the offset. Lost decides: the offset gone,
// the epoch gone or another one (unless another producer's rebuild stored
// it: its marker names that epoch), or the offset below what this producer
// committed, is a loss. A producer that starts with no memory of the
// generation relies on the registry: a generation in tailing, live or
// retiring whose registry row records a backfill (a backfill offset above
// 0) must have an offset in Redis, since the backfill stored it; none means
// the data was lost, and starting at the registry's backfill offset would
// skip every record before it without a word. Either way the generation is
// rebuilt from the log start with a new epoch, and its base is raised above
// every version it may have held: the change stream's last version is lost
// with the rest, so Begin also takes the Writer's Mark (base + committed
// offset) and, for a data loss, ClockFloor, which exceeds every base an
// earlier rebuild can have set unless the clock went back or two losses come
// less than about a second apart per million offsets.
//
// The generation's number, its registry row and its pointer do not change:
// nobody else takes part. Its consumer does (package fanout): it detects a
// reset (Check) before it reads, and whenever the reader loses its position
// (feed.ErrPositionLost), calls Begin, reads from the start and calls Finish
// when the generation reaches End; Manager.Rebuild asks it for a rebuild
// with another Cause.
package rebuild

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/distcache/distcache/libs/distcache"
	"github.com/distcache/distcache/services/cache-producer/internal/feed"
	"github.com/distcache/distcache/services/cache-producer/internal/ledger"
	"github.com/distcache/distcache/services/cache-producer/internal/projector"
)

// Reasons of a rebuild (the values of Cause.Reason and of the
// distcache_producer_generation_rebuilds_total reason label).
const (
	// ReasonTopicReset: the topic was deleted and re-created.
	ReasonTopicReset = "topic_reset"
	// ReasonDataLoss: Redis lost the generation's offset or index.
	ReasonDataLoss = "data_loss"
)

// Cause says why a generation is rebuilt.
type Cause struct {
	Reason string // one of the Reason constants
	Detail string // in words, for logs and status
}

func (c Cause) String() string { return c.Detail }

// Check tells whether a generation whose stored offset is offset, counted in
// the topic incarnation storedID ("" when unknown), must be rebuilt now that
// the topic's bounds are b. A topic that does not exist (deleted, not
// re-created yet) says nothing.
func Check(offset int64, storedID string, b feed.Bounds) (Cause, bool) {
	switch {
	case !b.Exists:
		return Cause{}, false
	case offset > b.End:
		return Cause{Reason: ReasonTopicReset, Detail: fmt.Sprintf("topic reset: stored offset %d > end %d", offset, b.End)}, true
	case storedID != "" && b.ID != "" && storedID != b.ID:
		// The offset fits in the new topic, but counts in the old one.
		return Cause{Reason: ReasonTopicReset, Detail: fmt.Sprintf(
			"topic re-created: topic id %s, the stored offset %d counts in %s (end now %d)", b.ID, offset, storedID, b.End)}, true
	}
	return Cause{}, false
}

// Lost tells whether generation t's bookkeeping as stored (pos, and its
// rebuild in progress rb when rebuilding) shows that Redis lost its data,
// given what this producer knows of it (mark, when marked) and the
// registry's backfill offset of the generation (backfilled; 0 when it
// records none). See "Data loss" above.
func Lost(t projector.Target, mark projector.Mark, marked bool, pos ledger.Position, rb ledger.Rebuild, rebuilding bool, backfilled int64) (Cause, bool) {
	lost := func(format string, args ...any) (Cause, bool) {
		return Cause{Reason: ReasonDataLoss, Detail: "data loss: " + fmt.Sprintf(format, args...)}, true
	}
	if marked {
		why := mark.Differs(pos.OffsetKnown, pos.Offset, pos.Epoch)
		switch {
		case why == "":
			return Cause{}, false
		case pos.OffsetKnown && pos.Epoch != "" && rebuilding && rb.Epoch == pos.Epoch:
			return Cause{}, false // another producer rebuilt it: its new epoch
		}
		return lost("%s: %s", t, why)
	}
	switch {
	case !pos.OffsetKnown && backfilled > 0:
		return lost("%s has no offset in Redis, but the registry records its backfill to offset %d", t, backfilled)
	case !pos.OffsetKnown && pos.Epoch != "":
		return lost("%s: its offset is gone (its epoch %s is left)", t, pos.Epoch)
	}
	return Cause{}, false
}

// ClockFloor is a version base that grows with the clock: the time in
// milliseconds, times 2^20. A data-loss rebuild raises the base to at least
// it, because what bounded the versions the generation held (its base, its
// offset, its change stream) may be lost with the rest. It stays below
// 2^63 until the year 2248.
func ClockFloor(now time.Time) int64 { return now.UnixMilli() << 20 }

// Begin starts rebuilding generation t from the start of its topic, whose
// bounds are b: it raises the version base above every version the
// generation holds (its stored base and offset, the change stream's last
// version, what w's Mark says it committed, and ClockFloor for a data
// loss), sets the offset to b.Start under a new epoch, stores the rebuild
// (ledger.Rebuild, ending at b.End) and b.ID as the generation's topic
// incarnation, drops w's in-memory index of t and marks the new
// bookkeeping in w. The generation's writer in this process must be
// stopped.
func Begin(ctx context.Context, w *projector.Writer, t projector.Target, c Cause, b feed.Bounds) (ledger.Rebuild, error) {
	floor, err := streamVersion(ctx, w.Ledger().Client(), t)
	if err != nil {
		return ledger.Rebuild{}, fmt.Errorf("begin rebuild of %s: %w", t, err)
	}
	if m, ok := w.Mark(t); ok {
		floor = max(floor, m.Base+m.Offset)
	}
	now := time.Now()
	if c.Reason == ReasonDataLoss {
		floor = max(floor, ClockFloor(now))
	}
	w.Forget(t)
	rb, err := w.Ledger().BeginRebuild(ctx, t.Projection, t.Generation, ledger.BeginRebuild{
		Reason: c.Reason, Detail: c.Detail, Start: b.Start, End: b.End, TopicID: b.ID, Floor: floor,
		Epoch: ledger.NewEpoch(), Now: now,
	})
	w.Forget(t)
	if err == nil {
		w.SetMark(t, projector.Mark{Epoch: rb.Epoch, Offset: rb.Start, Base: rb.Base})
	}
	return rb, err
}

// Due reports whether the rebuild rb is ready to be finished: the
// generation's offset next reached its end.
func Due(rb ledger.Rebuild, next int64) bool { return next >= rb.End }

// Finish sweeps what the rebuild rb did not meet again from generation t
// (every source key whose entry is at or below rb.Base) and then ends the
// rebuild. It returns how many source keys it removed. The generation's
// offset must have reached rb.End; it may be called again after a failure.
func Finish(ctx context.Context, w *projector.Writer, t projector.Target, rb ledger.Rebuild) (int, error) {
	n, err := w.Sweep(ctx, t, rb.Base, rb.SweepVersion())
	if err != nil {
		return n, fmt.Errorf("finish rebuild of %s: %w", t, err)
	}
	if err := w.Ledger().EndRebuild(ctx, t.Projection, t.Generation, rb.Base); err != nil {
		return n, err
	}
	return n, nil
}

// streamVersion is the highest version of the last entry of t's change
// stream (0 when empty): versions grow along the stream, so the base stays
// above every value even when the stored offset was lost.
func streamVersion(ctx context.Context, rdb redis.UniversalClient, t projector.Target) (int64, error) {
	msgs, err := rdb.XRevRangeN(ctx, distcache.StreamKey(t.Projection, t.Generation), "+", "-", 1).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return 0, fmt.Errorf("read change stream: %w", err)
	}
	var top int64
	for _, m := range msgs {
		err := distcache.EachStreamChange(m.Values, func(_, stored string) {
			if v, err := distcache.ParseVersionHex(stored); err == nil {
				top = max(top, v)
			}
		})
		if err != nil {
			return 0, fmt.Errorf("read change stream entry %s: %w", m.ID, err)
		}
	}
	return top, nil
}
