package distcache

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

const (
	zeroID        = "0-0"
	prerollWindow = 2 * time.Second // replica lag the recent-version table covers
	prerollMax    = 10_000
	rebuildBatch  = 500
)

// start resolves the projection's live generation and stream positions.
// Order matters: the control stream's position is read before the pointer,
// and the change stream's position before any fill, so that nothing after
// them is missed.
func (p *projection) start(ctx context.Context) error {
	rdb := p.c.cfg.primary
	pipe := rdb.Pipeline()
	ctrl := pipe.XRevRangeN(ctx, ControlKey(p.name), "+", "-", 1)
	ptr := pipe.Get(ctx, PointerKey(p.name))
	// A sample of the keys sizes the new store (presize.go). It may fail
	// (an ACL without DBSIZE) without failing the start. A failed handshake
	// shows only in Exec's error; a broken connection fails every command,
	// the sample's too, so the start's own commands are checked as well.
	sample := p.queueSample(ctx, pipe)
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) && !sample.failedWith(err) {
		return err
	}
	for _, cmd := range []redis.Cmder{ctrl, ptr} {
		if err := cmd.Err(); err != nil && !errors.Is(err, redis.Nil) {
			return err
		}
	}
	p.ctrlPos = zeroID
	if msgs := ctrl.Val(); len(msgs) > 0 {
		p.ctrlPos = msgs[0].ID
	}
	var gen int64
	if s, err := ptr.Result(); err == nil {
		if gen, err = parsePointer(p.name, s); err != nil {
			return err
		}
	}
	p.pointerSeen = gen > 0
	if gen > 0 {
		pos, err := p.lastStreamID(ctx, rdb, gen)
		if err != nil {
			return err
		}
		st, err := newStore(p.name, gen, p.c.cfg.shards, p.c.base, sample.hint(ctx, p, rdb, gen))
		if err != nil {
			return err
		}
		p.streamPos = pos
		p.store.Store(st)
		p.preroll(ctx, st, pos)
	}
	p.connected.Store(true)
	p.lastContact.Store(time.Now().UnixNano())
	return nil
}

func (p *projection) lastStreamID(ctx context.Context, rdb redis.UniversalClient, gen int64) (string, error) {
	msgs, err := rdb.XRevRangeN(ctx, StreamKey(p.name, gen), "+", "-", 1).Result()
	if err != nil {
		return "", fmt.Errorf("read change stream position: %w", err)
	}
	if len(msgs) == 0 {
		return zeroID, nil
	}
	return msgs[0].ID, nil
}

// preroll feeds the last prerollWindow of the change stream before pos into
// the recent-version table, so that fills from a lagging replica right after
// a start or a rebuild do not store values older than what the stream
// already holds.
func (p *projection) preroll(ctx context.Context, st *store, pos string) {
	if pos == zeroID {
		return
	}
	ms, _, _ := strings.Cut(pos, "-")
	t, err := strconv.ParseInt(ms, 10, 64)
	if err != nil {
		return
	}
	from := strconv.FormatInt(max(t-prerollWindow.Milliseconds(), 0), 10)
	msgs, err := p.node.XRangeN(ctx, StreamKey(p.name, st.gen), from, pos, prerollMax).Result()
	if err != nil {
		return
	}
	for _, m := range msgs {
		_ = EachStreamChange(m.Values, func(key, s string) {
			if version, _, _, err := decodeValue(s); err == nil {
				h := hashKey(key)
				st := p.stripe(h)
				st.Lock()
				p.recordRecent(h, version)
				st.Unlock()
			}
		})
	}
}

// tail follows the projection until ctx is done: the control stream (for
// cutovers) and the live generation's change stream, resuming from its last
// position after any error (or from a loaded snapshot's position).
func (p *projection) tail(ctx context.Context) {
	const minBackoff, maxBackoff = 20 * time.Millisecond, 2 * time.Second
	backoff := minBackoff
	catchup, replaying := true, p.resuming.Load()
	for ctx.Err() == nil {
		if !p.onReplica && p.replicaIdx >= 0 && !p.inLoss() && !time.Now().Before(p.replicaAt) {
			p.tryReplica(ctx)
		}
		var err error
		if catchup {
			catchup, err = p.catchup(ctx, replaying)
			if err == nil && !catchup {
				replaying = false
				if p.resuming.Swap(false) {
					p.c.log.Info("distcache: caught up after a start from a snapshot",
						slog.String(logKeyProjection, p.name), slog.Int64(logKeyGeneration, p.curGen()))
				}
			}
		} else if p.revalidate {
			p.revalidate = false
			err = p.rebuild(ctx, p.curGen(), rebuildRefetch)
		} else if p.lossDue(time.Now()) {
			err = p.lossStep(ctx)
		} else if p.wantCompact.Load() {
			p.wantCompact.Store(false)
			err = p.rebuild(ctx, p.curGen(), rebuildCompact)
		} else {
			catchup, err = p.waitAndApply(ctx)
		}
		if err == nil {
			p.maybeEndLoss()
		}
		p.publishSnap()
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if p.onReplica {
				// The replica failed or hung: on to the primary at once.
				p.toPrimary("a call failed", err, true)
				catchup, replaying = true, true
				continue
			}
			p.needRunID = true // a reconnect: was it a restart?
			if p.connected.Swap(false) {
				p.c.log.Warn("distcache: lost contact with redis; serving from memory",
					slog.String(logKeyProjection, p.name), slog.Any(logKeyError, err))
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, maxBackoff)
			catchup, replaying = true, true
			continue
		}
		backoff = minBackoff
		now := time.Now().UnixNano()
		p.lastContact.Store(now)
		if !p.connected.Swap(true) {
			p.reconnects.Add(1)
			p.c.log.Info("distcache: redis contact restored", slog.String(logKeyProjection, p.name))
		}
		if p.health.Load() != healthFresh {
			p.health.Store(p.c.healthOf(p, now)) // fresh again without waiting for the watch loop
		}
	}
}

func (p *projection) curGen() int64 {
	if st := p.store.Load(); st != nil {
		return st.gen
	}
	return 0
}

func rangeStart(pos string) string {
	if pos == zeroID {
		return "-"
	}
	return pos
}

// catchup reads what follows the last positions without blocking, checks
// the pointer, detects gaps and losses of Redis's data (loss.go). It reports
// whether more remains to read. On a replica, it decides nothing the replica
// may be wrong about: anything but a plain read moves the tail to the
// primary, which decides (tailnode.go).
func (p *projection) catchup(ctx context.Context, replaying bool) (bool, error) {
	rdb := p.node
	gen := p.curGen()
	restarted := false
	if !p.onReplica && (p.needRunID || !time.Now().Before(p.runIDAt)) {
		changed, err := p.checkRunID(ctx)
		if err != nil {
			return true, err
		}
		restarted = changed
	}
	batch := p.c.cfg.tailBatch
	pipe := rdb.Pipeline()
	ctrl := pipe.XRangeN(ctx, ControlKey(p.name), rangeStart(p.ctrlPos), "+", 100)
	ctrlLast := pipe.XRevRangeN(ctx, ControlKey(p.name), "+", "-", 1)
	ptr := pipe.Get(ctx, PointerKey(p.name))
	var changes, last *redis.XMessageSliceCmd
	var exists *redis.IntCmd
	if gen > 0 {
		changes = pipe.XRangeN(ctx, StreamKey(p.name, gen), rangeStart(p.streamPos), "+", batch+1)
		last = pipe.XRevRangeN(ctx, StreamKey(p.name, gen), "+", "-", 1)
		exists = pipe.Exists(ctx, StreamKey(p.name, gen))
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return true, err
	}
	streamGone := gen > 0 && p.streamPos != zeroID && exists.Val() == 0
	var live int64
	if s, err := ptr.Result(); err == nil {
		live, _ = parsePointer(p.name, s)
	}
	if p.onReplica {
		switch {
		case streamGone, p.ctrlPos != zeroID && lastID(ctrlLast) == "", p.pointerSeen && live == 0:
			// Gone on the replica: lost, or not replicated yet.
			p.toPrimary("a stream or the pointer is missing on the replica", nil, false)
			return true, nil
		case behind(lastID(ctrlLast), p.ctrlPos) || (gen > 0 && behind(lastID(last), p.streamPos)):
			// Behind the tail's positions (taken on the primary): XREAD
			// waits for it, for a while.
			now := time.Now()
			if p.behindSince.IsZero() {
				p.behindSince = now
			}
			if now.Sub(p.behindSince) > p.replicaRetry() {
				p.toPrimary("the replica stays behind the tail's position", nil, false)
				return true, nil
			}
			return false, nil
		}
		p.behindSince = time.Time{}
	}
	deleted := false
	if msgs := ctrl.Val(); len(msgs) > 0 {
		p.ctrlPos = msgs[len(msgs)-1].ID
		for _, m := range msgs {
			if t, _ := m.Values["t"].(string); t == controlDelete {
				deleted = true
			}
		}
	}
	if p.onReplica && live > 0 && live != gen {
		p.toPrimary("the pointer names another generation on the replica", nil, false)
		return true, nil
	}
	if live > 0 && live != gen {
		if err := p.switchGeneration(ctx, gen, live); err != nil {
			return true, err
		}
		p.pointerSeen = true
		if p.inLoss() {
			p.lossRevalidated = true // refetched from the generation the pointer names
			p.lossRetryAt = time.Now().Add(p.lossBackoff)
		}
		return true, nil
	}
	// Only an explicit delete event drops what the client holds: a pointer that
	// is merely missing may be a Redis that lost its data.
	if live == 0 && deleted && gen > 0 {
		p.dropGeneration()
		p.pointerSeen = false
		p.endLoss("the projection was deleted")
		return false, nil
	}
	if gen == 0 {
		p.pointerSeen = live > 0
		return false, nil
	}
	if moved := p.detectLoss(restarted, streamGone, live, lastID(last), lastID(ctrlLast)); moved {
		return true, nil // read again from the positions the loss left
	}
	if p.inLoss() && live == gen && !p.lossRevalidated {
		// The pointer is back: refetch what is held, keeping what Redis
		// does not give back yet.
		if err := p.rebuild(ctx, gen, rebuildRefetch); err != nil {
			return true, err
		}
		p.lossRevalidated = true
		p.lossRetryAt = time.Now().Add(p.lossBackoff)
		return true, nil
	}
	if p.prerollPending {
		// First contact after a start from a snapshot: what start does.
		p.prerollPending = false
		p.preroll(ctx, p.store.Load(), p.streamPos)
	}
	msgs := changes.Val()
	gap := false
	if p.streamPos != zeroID {
		gap = len(msgs) == 0 || msgs[0].ID != p.streamPos
		if !gap {
			msgs = msgs[1:]
		}
	} else if len(msgs) > 0 {
		info, err := rdb.XInfoStream(ctx, StreamKey(p.name, gen)).Result()
		if err != nil {
			return true, err
		}
		gap = info.EntriesAdded > info.Length
	}
	if gap && p.onReplica {
		p.toPrimary("a gap on the replica", nil, false)
		return true, nil
	}
	if gap {
		p.gaps.Add(1)
		p.c.log.Warn("distcache: change stream gap; revalidating projection",
			slog.String(logKeyProjection, p.name), slog.Int64(logKeyGeneration, gen), slog.String("position", p.streamPos))
		return true, p.rebuild(ctx, gen, rebuildRefetch)
	}
	p.applyMessages(msgs, replaying)
	return int64(len(msgs)) >= batch, nil
}

// detectLoss classifies what catchup read on the primary (see loss.go): a
// restart, a change stream that vanished or ends before the tail's position,
// or a pointer that vanished without a delete event. On a loss it moves the
// positions to what the streams now hold, reporting whether it did.
func (p *projection) detectLoss(restarted, streamGone bool, live int64, streamLast, ctrlLast string) bool {
	reason := noLoss
	switch {
	case restarted:
		reason = LossRestart
	case streamGone:
		reason = LossStreamVanished
	case p.streamPos != zeroID && streamLast != "" && idLess(streamLast, p.streamPos):
		reason = LossStreamRewound
	case p.pointerSeen && live == 0:
		reason = LossPointerVanished
	}
	p.pointerSeen = live > 0
	if reason == noLoss {
		return false
	}
	p.enterLoss(reason)
	moved := false
	switch {
	case streamGone:
		p.streamPos, moved = zeroID, true
	case p.streamPos != zeroID && streamLast != "" && idLess(streamLast, p.streamPos):
		p.streamPos, moved = streamLast, true
	}
	if p.ctrlPos != zeroID && behind(ctrlLast, p.ctrlPos) {
		p.ctrlPos, moved = cmp.Or(ctrlLast, zeroID), true
	}
	return moved
}

func (p *projection) applyMessages(msgs []redis.XMessage, replaying bool) {
	if len(msgs) == 0 {
		return
	}
	st := p.store.Load()
	changes := 0
	onChange := p.c.cfg.onChange
	for _, m := range msgs {
		err := EachStreamChange(m.Values, func(key, s string) {
			if version, op, payload, err := decodeValue(s); err == nil && validateKey(key) == nil {
				updated := p.applyChange(st, key, version, op, payload)
				changes++
				if onChange != nil {
					o := OpSet
					if op == opDelete {
						o = OpDelete
					}
					onChange(AppliedChange{Projection: p.name, Generation: st.gen, Key: key, Version: version, Op: o,
						Updated: updated, Replayed: replaying})
				}
			}
		})
		if err != nil {
			p.unreadable(m.ID, err)
		}
	}
	last := msgs[len(msgs)-1].ID
	p.streamPos = last
	p.seen.Add(uint64(changes))
	if replaying {
		p.replays.Add(uint64(changes))
	}
	if ms, _, ok := strings.Cut(last, "-"); ok {
		if t, err := strconv.ParseInt(ms, 10, 64); err == nil {
			p.lagNanos.Store(max(time.Now().UnixNano()-t*int64(time.Millisecond), 0))
		}
	}
}

// waitAndApply blocks on the control and change streams together (they
// share a slot) and applies what arrives. It reports whether to catch up
// next (a cutover, or a full batch that may hide a gap).
func (p *projection) waitAndApply(ctx context.Context) (bool, error) {
	gen := p.curGen()
	if now := time.Now(); !now.Before(p.verifyAt) {
		// Once per tail block: is the data still there (a FLUSHALL, or a
		// restart go-redis reconnected through, shows no error)?
		p.verifyAt = now.Add(p.c.cfg.tailBlock)
		if p.inLoss() || (!p.onReplica && !now.Before(p.runIDAt)) {
			return true, nil // catchup checks the pointer, the streams and the run_id
		}
		var keys []string
		if p.pointerSeen {
			keys = append(keys, PointerKey(p.name))
		}
		if gen > 0 && p.streamPos != zeroID {
			keys = append(keys, StreamKey(p.name, gen)) // same slot as the pointer
		}
		if len(keys) > 0 {
			cctx, cancel := context.WithTimeout(ctx, p.callSlack())
			n, err := p.node.Exists(cctx, keys...).Result()
			cancel()
			if err != nil {
				return true, err
			}
			if n < int64(len(keys)) {
				return true, nil
			}
		}
	}
	streams := []string{ControlKey(p.name)}
	ids := []string{p.ctrlPos}
	if gen > 0 {
		streams = append(streams, StreamKey(p.name, gen))
		ids = append(ids, p.streamPos)
	}
	// Bounded, so that a hung node (a stopped replica) fails the call soon
	// after the block instead of after go-redis's block + 10 s.
	cctx, cancel := context.WithTimeout(ctx, p.c.cfg.tailBlock+p.callSlack())
	defer cancel()
	res, err := p.node.XRead(cctx, &redis.XReadArgs{
		Streams: append(streams, ids...),
		Count:   p.c.cfg.tailBatch,
		Block:   p.c.cfg.tailBlock,
	}).Result()
	if errors.Is(err, redis.Nil) {
		p.lagNanos.Store(0)
		return false, nil
	}
	if err != nil {
		return true, err
	}
	more := false
	for _, s := range res {
		if s.Stream == ControlKey(p.name) {
			for _, m := range s.Messages {
				p.ctrlPos = m.ID
				switch t, _ := m.Values["t"].(string); t {
				case controlCutover:
					g, _ := m.Values["gen"].(string)
					if live, err := strconv.ParseInt(g, 10, 64); err == nil && live > 0 && live != gen {
						return true, p.switchGeneration(ctx, gen, live)
					} else if p.inLoss() {
						return true, nil // the pointer is back: catchup revalidates
					}
				case controlDelete:
					if gen > 0 {
						p.dropGeneration()
						// Catch up next: the pointer tells whether a cutover followed.
						return true, nil
					}
				}
			}
			continue
		}
		p.applyMessages(s.Messages, false)
		if int64(len(s.Messages)) >= p.c.cfg.tailBatch {
			more = true
		}
	}
	return more, nil
}

// unreadable handles a change-stream entry whose changes could not all be
// read (a form from a newer writer, or a malformed packed entry): it is never
// skipped silently. The projection is revalidated (every held key refetched)
// before the tail reads on, the entry is counted, and each unknown form is
// logged once.
func (p *projection) unreadable(id string, err error) {
	p.revalidate = true
	var uf *UnknownEntryForm
	if errors.As(err, &uf) {
		p.unknownEntries.Add(1)
		if p.loggedForms == nil {
			p.loggedForms = map[int]bool{}
		}
		if p.loggedForms[uf.Marker] {
			return
		}
		p.loggedForms[uf.Marker] = true
	}
	p.c.log.Warn("distcache: unreadable change-stream entry; revalidating the projection",
		slog.String(logKeyProjection, p.name), slog.String("id", id), slog.Any(logKeyError, err))
}

// Control-stream event types (field "t"), written by Publisher.Cutover and
// Publisher.DeletePointer.
const (
	controlCutover = "cutover"
	controlDelete  = "delete"
)

// dropGeneration forgets the local store after the projection was deleted:
// reads answer ErrNoGeneration until a cutover makes a generation live again.
func (p *projection) dropGeneration() {
	old := p.store.Load()
	if old == nil {
		return
	}
	p.c.log.Info("distcache: projection deleted; dropping its entries", slog.String(logKeyProjection, p.name),
		slog.Int64(logKeyGeneration, old.gen))
	p.store.Store(nil)
	p.streamPos = zeroID
	p.deletes.Add(1)
	old.close()
}

func (p *projection) switchGeneration(ctx context.Context, from, to int64) error {
	p.c.log.Info("distcache: cutover", slog.String(logKeyProjection, p.name),
		slog.Int64("from", from), slog.Int64("to", to))
	return p.rebuild(ctx, to, rebuildRefetch)
}

type rebuildMode int

const (
	rebuildRefetch rebuildMode = iota // re-read every held key from Redis (cutover, gap)
	rebuildCompact                    // copy local entries (reclaim bigcache's dead space)
)

// rebuild builds a new local store for generation gen from the keys the
// current one holds, oldest first and keeping their ages, then swaps it in.
// Reads keep using the old store meanwhile, so a cutover or a revalidation
// costs no cold misses. Refetches read the primary, after taking the new
// stream position, so that replaying from that position makes the result
// current.
func (p *projection) rebuild(ctx context.Context, gen int64, mode rebuildMode) error {
	old := p.store.Load()
	pos := p.streamPos
	if mode == rebuildRefetch {
		var err error
		if pos, err = p.lastStreamID(ctx, p.node, gen); err != nil {
			return err
		}
	}
	ns, err := newStore(p.name, gen, p.c.cfg.shards, p.c.base, p.hintFrom(old))
	if err != nil {
		return err
	}
	// While Redis is recovering from a loss, a key it does not give back is
	// kept (pending), not dropped.
	keepAbsent := mode == rebuildRefetch && p.inLoss() && !p.lossFinal
	var pending map[string]int64
	if old != nil {
		if pending, err = p.copyInto(ctx, old, ns, mode, keepAbsent); err != nil {
			ns.close()
			return err
		}
	}
	if mode == rebuildRefetch && p.inLoss() {
		p.pending = pending
		p.pendingCount.Store(int64(len(pending)))
	}
	// Count before the swap, so that whoever sees the new store sees it
	// counted.
	switch {
	case mode == rebuildCompact:
		p.compactions.Add(1)
	case old != nil && old.gen != gen:
		p.cutovers.Add(1)
		p.rebuilds.Add(1)
	case old == nil:
		p.cutovers.Add(1)
	default:
		p.rebuilds.Add(1)
	}
	p.store.Store(ns)
	p.streamPos = pos
	if old != nil {
		old.close()
	}
	if mode == rebuildRefetch {
		p.preroll(ctx, ns, pos)
	}
	return nil
}

type heldEntry struct {
	key     string
	value   []byte // the local entry (compaction only)
	version int64
}

// copyInto moves old's entries (refetched or copied) into ns, in old's ring
// order with their original fill times. With keepAbsent, a held value whose
// key Redis does not hold, or holds at an older version, is kept; those keys
// are returned with their held versions.
func (p *projection) copyInto(ctx context.Context, old, ns *store, mode rebuildMode, keepAbsent bool) (map[string]int64, error) {
	var pending map[string]int64
	if keepAbsent {
		pending = map[string]int64{}
	}
	held := make(map[uint64]heldEntry, old.items.Load())
	it := old.cache.Iterator()
	for it.SetNext() {
		e, err := it.Value()
		if err != nil {
			continue
		}
		he := heldEntry{key: e.Key()}
		if v := e.Value(); len(v) >= entryHeaderLen {
			he.version = entryVersion(v)
		}
		if mode == rebuildCompact {
			he.value = e.Value()
		}
		held[e.Hash()] = he
	}
	old.ringMu.Lock()
	hashes := make([]uint64, 0, old.ring.n)
	times := make([]uint32, 0, old.ring.n)
	for i := 0; i < old.ring.n; i++ {
		j := (old.ring.head + i) & (len(old.ring.hashes) - 1)
		hashes = append(hashes, old.ring.hashes[j])
		times = append(times, old.ring.times[j])
	}
	old.ringMu.Unlock()

	sameGen := old.gen == ns.gen
	type item struct {
		h uint64
		t uint32
		heldEntry
	}
	batch := make([]item, 0, rebuildBatch)
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		defer func() { batch = batch[:0] }()
		if mode == rebuildCompact {
			for _, it := range batch {
				p.putAt(ns, it.key, it.h, it.value, it.t)
			}
			return nil
		}
		rkeys := make([]string, len(batch))
		for i, it := range batch {
			rkeys[i] = ValueKey(p.name, ns.gen, it.key)
		}
		// From the tail's node, where the position was just taken: the
		// values are at least as new as that position.
		vals, found, err := fetchFrom(ctx, p.node, rkeys, p.c.reader.cluster)
		if err != nil {
			return fmt.Errorf("refetch %d keys: %w", len(rkeys), err)
		}
		for i, it := range batch {
			if !found[i] {
				if oe, ok := old.get(it.key); ok && keepAbsent && !entryNegative(oe) {
					p.putAt(ns, it.key, it.h, oe, it.t)
					pending[it.key] = entryVersion(oe)
				}
				continue
			}
			version, op, payload, err := decodeValue(vals[i])
			if err != nil {
				continue
			}
			if sameGen && version < it.version {
				// Redis holds an older version than the one held (a Redis
				// that lost writes, e.g. restarted from an append-only file
				// fsynced every second): an older version never wins.
				if oe, ok := old.get(it.key); ok && entryVersion(oe) > version {
					p.putAt(ns, it.key, it.h, oe, it.t)
					if keepAbsent && !entryNegative(oe) {
						pending[it.key] = entryVersion(oe)
					}
					continue
				}
			}
			var e []byte
			if op == opDelete {
				e = makeNegative(version, time.Now().Add(p.c.cfg.negativeTTL).UnixNano())
			} else if len(payload) <= p.c.cfg.maxValue {
				e = makePositiveString(version, payload)
			} else {
				continue
			}
			p.putAt(ns, it.key, it.h, e, it.t)
		}
		p.lastContact.Store(time.Now().UnixNano()) // a long rebuild is contact too
		return nil
	}
	for i, h := range hashes {
		he, ok := held[h]
		if !ok {
			continue
		}
		delete(held, h)
		batch = append(batch, item{h: h, t: times[i], heldEntry: he})
		if len(batch) == rebuildBatch {
			if err := flush(); err != nil {
				return nil, err
			}
		}
	}
	if err := flush(); err != nil {
		return nil, err
	}
	return pending, nil
}

// putAt inserts a new entry with a given fill time (rebuilds only; ns is not
// yet visible, so no other writer touches it).
func (p *projection) putAt(ns *store, key string, h uint64, entry []byte, t uint32) {
	if err := ns.cache.Set(key, entry); err != nil {
		return
	}
	ns.bytes.Add(int64(len(key) + len(entry)))
	ns.items.Add(1)
	ns.ringMu.Lock()
	ns.ring.push(h, t)
	ns.ringMu.Unlock()
}
