package distcache

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// When Redis loses data. A Redis restarted without persistence, flushed, or
// failed over to a replica that lagged comes back with less than the edge
// holds: no pointer, no values, no change stream, or a stream that ends before
// the edge's position. The cache-producer rebuilds the generation in place (same
// number, versions equal to or higher than before) and the control-plane
// restores the pointer with Publisher.Cutover; until then an absence read from
// Redis is not an answer. The tail detects the loss on the primary (the node
// that holds the projection's pointer and streams; on a replica every anomaly is
// checked on the primary first):
//
//   - Redis's run_id (INFO server) changed since the tail last talked to it: a
//     restart (LossRestart), checked after every reconnect and every
//     runIDEvery tail blocks;
//   - the change stream vanished while the tail has a position in it
//     (LossStreamVanished), or its last entry is before that position
//     (LossStreamRewound);
//   - the pointer vanished without a delete event on the control stream
//     (LossPointerVanished).
//
// While in the loss (ProjectionStats.InLoss):
//
//   - held entries keep being served, marked Stale, and the staleness bound runs
//     from the last contact before the loss;
//   - a miss that reads "absent" is answered with ErrRedisDataLost (wrapping
//     ErrUnavailable), not ErrNotFound, and not remembered as absent;
//   - once the pointer names the generation again, the held keys are
//     refetched (a revalidation): a value found at a version at least the held
//     one replaces it, an older one never does, and a key Redis does not hold
//     (yet) keeps its held value and is "pending". Pending keys are refetched
//     with a backoff, and a change on the stream at a version at least the held
//     one settles them too. An explicit tombstone still deletes.
//
// The rule for "the rebuild has caught up": the loss ends when the pointer is
// back and every held key has been found in Redis again (or was settled by the
// stream). A key that never comes back (deleted at the source meanwhile) is
// kept at most until the staleness bound has passed since the loss (the loss
// grace): then the held keys Redis still lacks are dropped (remembered as
// absent) and the loss ends. An explicit delete event (Publisher.DeletePointer)
// ends it too.

// LossReason says how the Client found that Redis had lost a projection's data.
type LossReason int

const (
	// LossRestart: Redis's run_id changed (a restart, or a failover to another
	// node).
	LossRestart LossReason = iota
	// LossStreamVanished: the change stream the tail had a position in is gone.
	LossStreamVanished
	// LossStreamRewound: the change stream ends before the tail's position.
	LossStreamRewound
	// LossPointerVanished: the pointer is gone without a delete event.
	LossPointerVanished

	numLossReasons = iota
)

// LossReasons lists every LossReason.
var LossReasons = []LossReason{LossRestart, LossStreamVanished, LossStreamRewound, LossPointerVanished}

// String returns the reason's metric label: "restart", "stream_vanished",
// "stream_rewound" or "pointer_vanished".
func (r LossReason) String() string {
	switch r {
	case LossRestart:
		return "restart"
	case LossStreamVanished:
		return "stream_vanished"
	case LossStreamRewound:
		return "stream_rewound"
	case LossPointerVanished:
		return "pointer_vanished"
	}
	return "unknown"
}

const (
	noLoss LossReason = -1

	// runIDEvery: the primary's run_id is read again after this many tail
	// blocks (and after every reconnect).
	runIDEvery = 10
	// Pending keys are refetched after lossRetryMin, doubling up to
	// lossRetryMax.
	lossRetryMin = 100 * time.Millisecond
	lossRetryMax = 5 * time.Second
)

func (p *projection) inLoss() bool { return p.lossSince.Load() != 0 }

// runIDClient returns the client of the node that holds the projection's
// pointer and streams: the primary, or on Redis Cluster the master of their
// slot.
func (p *projection) runIDClient(ctx context.Context) (redis.UniversalClient, error) {
	if cc, ok := p.c.cfg.primary.(*redis.ClusterClient); ok {
		return cc.MasterForKey(ctx, ControlKey(p.name))
	}
	return p.c.cfg.primary, nil
}

// checkRunID reads the primary's run_id and reports whether it changed since
// the last check (never on the first).
func (p *projection) checkRunID(ctx context.Context) (bool, error) {
	rdb, err := p.runIDClient(ctx)
	if err != nil {
		return false, fmt.Errorf("find the projection's node: %w", err)
	}
	info, err := rdb.Info(ctx, "server").Result()
	if err != nil && !refused(err) {
		// Not reached: the next catchup, after the reconnect, asks again first (a restart
		// found then is a restart, not the stream it emptied).
		p.needRunID = true
		return false, fmt.Errorf("info server: %w", err)
	}
	p.needRunID = false
	p.runIDAt = time.Now().Add(runIDEvery * p.c.cfg.tailBlock)
	if refused(err) {
		// An ACL without INFO (the least an edge needs is +@read), or a proxy
		// that does not serve it: restarts are then found by what they
		// leave (a vanished pointer or stream) only.
		if !p.runIDRefused {
			p.runIDRefused = true
			p.c.log.Info("distcache: redis refuses INFO; a restart is found only by the data it lost "+
				"(grant the edge's user +info to compare run_ids)", slog.String(logKeyProjection, p.name), slog.Any(logKeyError, err))
		}
		return false, nil
	}
	id := infoField(info, "run_id")
	if id == "" {
		return false, nil // a server that does not say
	}
	changed := p.runID != "" && p.runID != id
	p.runID = id
	return changed, nil
}

// refused reports whether err is Redis's refusal of a command (an error
// reply such as NOPERM or an unknown command), as opposed to a failure to
// reach it.
func refused(err error) bool {
	var rerr redis.Error
	return err != nil && errors.As(err, &rerr) && !errors.Is(err, redis.Nil)
}

// infoField returns the value of field in an INFO reply ("" if absent).
func infoField(info, field string) string {
	for line := range strings.Lines(info) {
		if v, ok := strings.CutPrefix(strings.TrimRight(line, "\r\n"), field+":"); ok {
			return v
		}
	}
	return ""
}

// enterLoss records a loss found for reason. A pointer that vanished again
// during a loss changes nothing; a stream that vanished or rewound, or a
// restart, during a loss means the data went again: the held keys are
// revalidated again once the pointer is back.
func (p *projection) enterLoss(reason LossReason) {
	if p.inLoss() {
		if reason != LossPointerVanished {
			p.lossRevalidated = false
			p.c.log.Warn("distcache: redis lost the projection's data again during the recovery",
				slog.String(logKeyProjection, p.name), slog.String("reason", reason.String()))
		}
		return
	}
	// The data was last known good at the last contact before this one.
	p.lossSince.Store(max(p.lastContact.Load(), 1))
	p.losses[reason].Add(1)
	p.lossRevalidated, p.lossFinal = false, false
	p.lossBackoff = lossRetryMin
	p.health.Store(p.c.healthOf(p, time.Now().UnixNano()))
	p.c.log.Warn("distcache: redis lost the projection's data; serving held entries as stale until it is back",
		slog.String(logKeyProjection, p.name), slog.Int64(logKeyGeneration, p.curGen()),
		slog.String("reason", reason.String()), slog.Int64("held", p.heldItems()))
}

// endLoss leaves the loss state.
func (p *projection) endLoss(why string) {
	if !p.inLoss() {
		return
	}
	since := time.Duration(time.Now().UnixNano() - p.lossSince.Load())
	dropped := p.lossDropped
	p.lossSince.Store(0)
	p.pending, p.lossDropped = nil, 0
	p.pendingCount.Store(0)
	p.lossRevalidated, p.lossFinal = false, false
	p.health.Store(p.c.healthOf(p, time.Now().UnixNano()))
	p.c.log.Info("distcache: recovered from the redis data loss", slog.String(logKeyProjection, p.name),
		slog.Int64(logKeyGeneration, p.curGen()), slog.String("how", why), slog.Duration("after", since),
		slog.Int("dropped", dropped))
}

func (p *projection) heldItems() int64 {
	if st := p.store.Load(); st != nil {
		return st.items.Load()
	}
	return 0
}

// lossDue reports whether the tail has loss work to do now: the pending keys'
// next refetch, or the end of the loss grace.
func (p *projection) lossDue(now time.Time) bool {
	if !p.inLoss() {
		return false
	}
	if p.graceOver(now) {
		return true
	}
	return p.lossRevalidated && len(p.pending) > 0 && !now.Before(p.lossRetryAt)
}

func (p *projection) graceOver(now time.Time) bool {
	return now.UnixNano()-p.lossSince.Load() > int64(p.c.cfg.staleBound)
}

// lossStep refetches the pending keys, or ends the loss once the grace is
// over: the held keys Redis still lacks are then dropped.
func (p *projection) lossStep(ctx context.Context) error {
	gen := p.curGen()
	if gen == 0 {
		p.endLoss("no generation")
		return nil
	}
	if p.graceOver(time.Now()) {
		p.lossFinal = true
		if p.lossRevalidated {
			if err := p.refreshPending(ctx, true); err != nil {
				return err
			}
		} else if err := p.rebuild(ctx, gen, rebuildRefetch); err != nil {
			// The pointer never came back: a plain revalidation of what is held.
			return err
		}
		p.endLoss("loss grace (the staleness bound) over")
		return nil
	}
	if err := p.refreshPending(ctx, false); err != nil {
		return err
	}
	p.lossRetryAt = time.Now().Add(p.lossBackoff)
	p.lossBackoff = min(2*p.lossBackoff, lossRetryMax)
	return nil
}

// maybeEndLoss ends the loss once the pointer is back and every held key was
// found again.
func (p *projection) maybeEndLoss() {
	if p.inLoss() && p.lossRevalidated && len(p.pending) == 0 {
		p.endLoss("every held key is back")
	}
}

// settlePending is called (under the key's stripe lock, tail goroutine) for
// each change the stream carries: one at a version at least the held one
// settles a pending key.
func (p *projection) settlePending(key string, version int64) {
	if held, ok := p.pending[key]; ok && version >= held {
		delete(p.pending, key)
		p.pendingCount.Store(int64(len(p.pending)))
	}
}

// refreshPending refetches the pending keys from the tail's node. A key found
// at a version at least the held one replaces it (a tombstone deletes it) and
// is settled; an older one never replaces it. With final (the loss grace is
// over), a key still absent is dropped (remembered as absent) and every key is
// settled.
func (p *projection) refreshPending(ctx context.Context, final bool) error {
	st := p.store.Load()
	if st == nil || len(p.pending) == 0 {
		return nil
	}
	keys := make([]string, 0, len(p.pending))
	for k := range p.pending {
		keys = append(keys, k)
	}
	for len(keys) > 0 {
		batch := keys[:min(len(keys), rebuildBatch)]
		keys = keys[len(batch):]
		rkeys := make([]string, len(batch))
		for i, k := range batch {
			rkeys[i] = ValueKey(p.name, st.gen, k)
		}
		vals, found, err := fetchFrom(ctx, p.node, rkeys, p.c.reader.cluster)
		if err != nil {
			return fmt.Errorf("refetch %d keys held through the loss: %w", len(rkeys), err)
		}
		for i, k := range batch {
			p.refreshOne(st, k, vals[i], found[i], final)
		}
		p.lastContact.Store(time.Now().UnixNano())
	}
	p.pendingCount.Store(int64(len(p.pending)))
	return nil
}

func (p *projection) refreshOne(st *store, key, raw string, found, final bool) {
	h := hashKey(key)
	s := p.stripe(h)
	s.Lock()
	defer s.Unlock()
	old, ok := st.get(key)
	if !ok || entryNegative(old) {
		delete(p.pending, key) // evicted or deleted meanwhile
		return
	}
	if !found {
		if final {
			// Redis never gave it back: drop it (version 0, so that any later
			// write fills it again).
			if err := st.put(key, h, makeNegative(0, time.Now().Add(p.c.cfg.negativeTTL).UnixNano()), old); err == nil {
				p.lossDropped++
			}
			delete(p.pending, key)
		}
		return
	}
	version, op, payload, err := decodeValue(raw)
	if err != nil {
		return
	}
	if version < entryVersion(old) {
		if final {
			delete(p.pending, key) // keep the newer held value: an older version never wins
		}
		return
	}
	var e []byte
	switch {
	case op == opDelete:
		e = makeNegative(version, time.Now().Add(p.c.cfg.negativeTTL).UnixNano())
	case len(payload) > p.c.cfg.maxValue:
		e = makeNegative(version, 0)
	default:
		e = makePositiveString(version, payload)
	}
	p.recordRecent(h, version)
	if err := st.put(key, h, e, old); err == nil {
		p.updates.Add(1)
	}
	delete(p.pending, key)
}

// lostData is the error of a miss that read "absent" from a Redis that lost
// its data.
func (p *projection) lostData(key string) error {
	return fmt.Errorf("get %s/%s: %w: %w: recovering since %s", p.name, key, ErrUnavailable, ErrRedisDataLost,
		time.Unix(0, p.lossSince.Load()).UTC().Format(time.RFC3339))
}

// Stream IDs, compared. "" stands for no entry.

// idLess reports whether stream ID a is before b.
func idLess(a, b string) bool {
	ams, aseq, aerr := parseStreamID(a)
	bms, bseq, berr := parseStreamID(b)
	if aerr != nil || berr != nil {
		return false
	}
	return ams < bms || (ams == bms && aseq < bseq)
}

// lastID returns the ID of the one message of an XREVRANGE + - COUNT 1 (""
// when the stream is empty or missing).
func lastID(cmd *redis.XMessageSliceCmd) string {
	if cmd == nil {
		return ""
	}
	if msgs := cmd.Val(); len(msgs) > 0 {
		return msgs[0].ID
	}
	return ""
}

// behind reports whether a node whose stream ends at last ("" for none) has
// not reached pos yet.
func behind(last, pos string) bool {
	if pos == zeroID {
		return false
	}
	return last == "" || idLess(last, pos)
}
