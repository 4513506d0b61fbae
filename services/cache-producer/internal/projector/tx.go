package projector

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/distcache/distcache/services/cache-producer/internal/feed"
	"github.com/distcache/distcache/services/cache-producer/internal/ledger"
)

// Transactional writes (standalone and replicated Redis).
//
// Where one node holds every key of a generation, a batch is written in one
// optimistic transaction instead of the three version-guarded steps that a
// Redis Cluster needs:
//
//	WATCH <offset key>; GET <offset key>, <index count>, <layout mark>, <version base>, <epoch>
//	                                      → S; records before S are written already;
//	                                      the epoch and S checked against the Writer's Mark
//	[HMGET/MGET <index>, GETRANGE <values>] only what the in-memory index
//	                                      cache cannot answer, under the WATCH
//	                                      (steps 1 and 2: read the state, plan)
//	MULTI                                 (step 3: execute)
//	  MSET values, XADD change stream     (distcache.Publisher.WriteTx)
//	  MSET/UNLINK index, INCRBY index count, XADD dead letters, SET offset Next
//	EXEC                                  → nil if anyone wrote the offset since the WATCH
//	WATCH <offset key>; GET <offset key>, <index count>, <layout mark>   for the next batch
//
// and then (step 4) the index cache takes the plan's entries.
//
// A Run keeps one dedicated connection for this (txConn) and sends the
// transaction and the next batch's WATCH in one pipeline, so a batch costs
// one round trip when the in-memory index cache answers its plan.
//
// The values, their stream entries, the index and the offset land together
// or not at all, so a batch is never half applied and never applied twice:
// after a crash the batch is replayed from S, and records before S are
// dropped rather than rewritten. Every version written is the record's
// offset + 1 and only records at or past S are written, so each write is
// newer than anything stored, and the per-key version guard of
// distcache.Publisher.Apply (a Lua script per change, about half of Redis's
// CPU per write) is not needed. Two writers of one generation (a zombie
// backfill attempt, two producers during a rollout) cannot interleave
// badly: the one whose EXEC comes second finds the offset moved, re-reads
// it and drops what the other wrote.

// maxTxConflicts bounds the immediate retries of a batch whose transaction
// lost to another writer; past it the batch fails and is retried with
// back-off (Retry).
const maxTxConflicts = 5

// errConflict is returned when another writer kept moving the generation's
// offset.
var errConflict = errors.New("the generation's offset moved under another writer")

// ErrPositionMoved is wrapped by Run's error when a batch starts past the
// generation's stored offset: someone moved the offset back (a rebuild begun
// by another producer), so the records in between must be read again. Run
// stops; the caller starts reading again from the stored offset.
var ErrPositionMoved = errors.New("the generation's stored offset is before the batch: it was moved back")

// Conflicts counts the transactions that lost to another writer of the
// same generation (and were planned again).
func (w *Writer) Conflicts() int64 { return w.conflicts.Load() }

// txCmdable is a connection a transaction runs on: a redis.Tx or the
// dedicated redis.Conn of a txConn.
type txCmdable interface {
	redis.Cmdable
	Do(ctx context.Context, args ...any) *redis.Cmd
	TxPipelined(ctx context.Context, fn func(redis.Pipeliner) error) ([]redis.Cmder, error)
}

// txConn is the dedicated connection one generation writer runs its
// transactions on. A batch costs one round trip: the transaction is sent as
// a plain pipeline, MULTI … EXEC followed by WATCH <offset key>, GET
// <offset key>, GET <index count>, so the watch and the stored offset the
// next batch needs come back with this batch's reply (go-redis's
// Client.Watch would add a round trip for WATCH and one for UNWATCH, and on
// a busy Redis each round trip waits behind the other generations' EXECs).
type txConn struct {
	rdb  *redis.Client // nil: use Client.Watch
	conn *redis.Conn
	// watching is the offset key the connection WATCHes, since the reply
	// that brought off and cnt; "" when none.
	watching string
	reads    watchReads
}

// watchReads are the reads a batch plans with, made under the watch: the
// generation's offset, index count, index layout mark, version base and
// epoch.
type watchReads struct {
	off, cnt, format, base, epoch, writer *redis.StringCmd
}

func queueReads(ctx context.Context, pipe redis.Pipeliner, t Target) watchReads {
	return watchReads{
		off:    pipe.Get(ctx, ledger.OffsetKey(t.Projection, t.Generation)),
		cnt:    pipe.Get(ctx, ledger.IndexCountKey(t.Projection, t.Generation)),
		format: pipe.Get(ctx, ledger.IndexFormatKey(t.Projection, t.Generation)),
		base:   pipe.Get(ctx, ledger.VersionBaseKey(t.Projection, t.Generation)),
		epoch:  pipe.Get(ctx, ledger.EpochKey(t.Projection, t.Generation)),
		writer: pipe.Get(ctx, ledger.WriterKey(t.Projection, t.Generation)),
	}
}

func (w *Writer) newTxConn() *txConn {
	rc, _ := w.ledger.Client().(*redis.Client)
	return &txConn{rdb: rc}
}

func (c *txConn) close() {
	if c != nil && c.conn != nil {
		_ = c.conn.Close()
		c.conn = nil
	}
	if c != nil {
		c.watching = ""
	}
}

// execFn sends the commands queue adds as one MULTI/EXEC transaction and
// returns them, each with its own outcome, and the first error among them;
// redis.TxFailedErr when the watch aborted the transaction.
type execFn func(queue func(redis.Pipeliner) error) ([]redis.Cmder, error)

// watched runs fn under a WATCH of generation t's offset key, handing it
// the offset and the index count read under that watch and the function
// that executes its transaction. fn ends with exec (which ends the watch),
// or the watch is cleared after it.
func (w *Writer) watched(ctx context.Context, tc *txConn, t Target, fn func(tx txCmdable, exec execFn, rd watchReads) error) error {
	offKey := ledger.OffsetKey(t.Projection, t.Generation)
	if tc == nil || tc.rdb == nil {
		return w.ledger.Client().Watch(ctx, func(tx *redis.Tx) error {
			pipe := tx.Pipeline()
			rd := queueReads(ctx, pipe, t)
			if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
				return fmt.Errorf("read offset of %s: %w", t, err)
			}
			exec := func(queue func(redis.Pipeliner) error) ([]redis.Cmder, error) { return tx.TxPipelined(ctx, queue) }
			return fn(tx, exec, rd)
		}, offKey, ledger.WriterKey(t.Projection, t.Generation))
	}
	if tc.conn == nil {
		tc.conn = tc.rdb.Conn()
	}
	conn := tc.conn
	if tc.watching != offKey {
		pipe := conn.Pipeline()
		if tc.watching != "" {
			pipe.Do(ctx, "unwatch")
		}
		watch := pipe.Do(ctx, "watch", offKey, ledger.WriterKey(t.Projection, t.Generation))
		rd := queueReads(ctx, pipe, t)
		if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) || watch.Err() != nil {
			tc.close()
			return fmt.Errorf("read offset of %s: %w", t, errors.Join(err, watch.Err()))
		}
		tc.watching, tc.reads = offKey, rd
	}
	rd := tc.reads
	tc.watching = "" // the EXEC or UNWATCH that ends fn ends this watch; exec arms the next
	exec := func(queue func(redis.Pipeliner) error) ([]redis.Cmder, error) {
		return tc.multiExec(ctx, t, queue)
	}
	err := fn(conn, exec, rd)
	var rerr redis.Error
	switch {
	case err == nil, errors.Is(err, redis.TxFailedErr):
		// EXEC ran and re-armed the watch (a fn that returns nil without
		// it unwatches itself).
	case errors.As(err, &rerr):
		tc.watching = ""
		if uerr := conn.Do(ctx, "unwatch").Err(); uerr != nil {
			tc.close()
		}
	default:
		tc.close() // the connection's state is unknown
	}
	return err
}

// multiExec is execFn on the dedicated connection: MULTI, the queued
// commands and EXEC, then WATCH and the reads of the next batch, in one
// pipeline. The queued commands' replies are "+QUEUED", so only commands
// whose reader accepts a status reply may be queued (status, string and
// generic commands: SET, MSET, XADD, Do); their outcome is set from EXEC's
// reply.
func (c *txConn) multiExec(ctx context.Context, t Target, queue func(redis.Pipeliner) error) ([]redis.Cmder, error) {
	offKey := ledger.OffsetKey(t.Projection, t.Generation)
	pipe := c.conn.Pipeline()
	pipe.Do(ctx, "multi")
	if err := queue(pipe); err != nil {
		return nil, err // nothing was sent
	}
	n := pipe.Len()
	exec := pipe.Do(ctx, "exec")
	watch := pipe.Do(ctx, "watch", offKey, ledger.WriterKey(t.Projection, t.Generation))
	rd := queueReads(ctx, pipe, t)
	cmds := pipe.Cmds()
	for _, cmd := range cmds[1:n] {
		switch cmd.(type) {
		case *redis.StatusCmd, *redis.StringCmd, *redis.Cmd:
		default:
			return nil, fmt.Errorf("internal error: %q cannot be queued in a pipelined transaction (its reply reader refuses +QUEUED)", cmd.Name())
		}
	}
	_, _ = pipe.Exec(ctx)
	queued := cmds[1:n]
	for _, cmd := range cmds {
		if err := cmd.Err(); err != nil && !errors.Is(err, redis.Nil) && !isRedisError(err) {
			c.close() // transport failure: whether EXEC ran is unknown
			return nil, err
		}
	}
	if watch.Err() == nil {
		c.watching, c.reads = offKey, rd
	}
	switch err := exec.Err(); {
	case errors.Is(err, redis.Nil):
		return queued, redis.TxFailedErr
	case err != nil: // EXECABORT: a command was refused when queued
		for _, q := range queued {
			if q.Err() != nil {
				return queued, fmt.Errorf("%w (%s)", q.Err(), err)
			}
		}
		return queued, err
	}
	res, ok := exec.Val().([]any)
	if !ok || len(res) != len(queued) {
		c.close()
		return nil, fmt.Errorf("EXEC answered %T with %d replies for %d commands", exec.Val(), len(res), len(queued))
	}
	var first error
	for i, q := range queued {
		e, _ := res[i].(error)
		q.SetErr(e)
		if e != nil && first == nil {
			first = e
		}
	}
	return queued, first
}

func isRedisError(err error) bool {
	var rerr redis.Error
	return errors.As(err, &rerr)
}

// head is what a transaction reads of its generation first, under the
// WATCH: the stored offset, the index count and the index layout.
type head struct {
	offset   int64 // stored next offset S; 0 when !known
	known    bool  // an offset is stored: something was committed (or InitOffset ran)
	count    int64 // index entries, when counted
	counted  bool
	marked   bool // the mark of the index layout exists
	format   ledger.Format
	bucketed bool  // format == ledger.FormatBucketed
	base     int64 // the version base (0 when none is stored)
	epoch    string
	writer   string // the writer claim ("" when none)
	// newEpoch, when not empty, is stored as the epoch by the batch's
	// commit (none is stored).
	newEpoch string
	// lc is how a log-layout index is committed (ixlog.go).
	lc *logCommit
}

// readHead parses the reads of rd.
func (w *Writer) readHead(t Target, rd watchReads) (head, error) {
	var h head
	if h.known = rd.off.Err() == nil; h.known {
		var err error
		if h.offset, err = strconv.ParseInt(rd.off.Val(), 10, 64); err != nil || h.offset < 0 {
			return head{}, fmt.Errorf("%w: offset of %s is %q", ledger.ErrCorrupt, t, rd.off.Val())
		}
	}
	if rd.cnt.Err() == nil {
		n, err := strconv.ParseInt(rd.cnt.Val(), 10, 64)
		h.count, h.counted = n, err == nil
	}
	mark := ""
	if rd.format.Err() == nil {
		mark = rd.format.Val()
	}
	h.format = w.ledger.FormatOf(h.known, mark)
	h.marked = mark != "" && mark == ledger.FormatMark(h.format)
	if rd.base.Err() == nil {
		var err error
		if h.base, err = ledger.ParseVersionBase(rd.base.Val()); err != nil {
			return head{}, fmt.Errorf("%s: %w", t, err)
		}
	}
	if rd.epoch.Err() == nil {
		h.epoch = rd.epoch.Val()
	}
	if rd.writer.Err() == nil {
		h.writer = rd.writer.Val()
	}
	h.bucketed = h.format == ledger.FormatBucketed
	return h, nil
}

// unwritten returns the records of outs at or past the stored offset.
func (h head) unwritten(outs []outcome) []outcome {
	if !h.known {
		return outs
	}
	return outs[sort.Search(len(outs), func(i int) bool { return outs[i].rec.Offset >= h.offset }):]
}

// writeTx writes one projected batch in one optimistic transaction (see
// above). It returns what it did and the generation's stored offset after
// it. from is where the batch starts (feed.Batch.From; < 0: unknown), end
// the topic's end offset if known (else 0). Batches of one generation must
// not be written concurrently.
func (w *Writer) writeTx(ctx context.Context, tc *txConn, t Target, outs []outcome, from, next, end int64) (Stats, int64, error) {
	cache := w.cacheOf(t)
	cache.mu.Lock()
	defer cache.mu.Unlock()
	for range maxTxConflicts {
		var (
			h    head
			todo []outcome
			p    *Plan // nil: the batch was written already
		)
		err := w.watched(ctx, tc, t, func(tx txCmdable, exec execFn, rd watchReads) error {
			// 1. Read the state the batch needs, under the WATCH.
			var err error
			if h, err = w.readHead(t, rd); err != nil {
				return err
			}
			if err := w.checkMark(t, h.known, h.offset, h.epoch); err != nil {
				_ = tx.Do(ctx, "UNWATCH").Err()
				return err
			}
			if err := w.checkClaim(t, h.writer); err != nil {
				_ = tx.Do(ctx, "UNWATCH").Err()
				return err
			}
			if from >= 0 && h.known && h.offset < from {
				// Records between the stored offset and the batch were
				// never written here: the offset was moved back (a rebuild
				// begun by another producer) since this batch was read.
				_ = tx.Do(ctx, "UNWATCH").Err()
				return fmt.Errorf("write %s: %w: stored offset %d, batch from %d", t, ErrPositionMoved, h.offset, from)
			}
			cache.sync(h, end, w.cacheMax)
			loaded := false
			if h.format == ledger.FormatLog {
				if loaded, err = w.syncLog(ctx, tx, t, cache, h, end); err != nil {
					return err
				}
			}
			if todo = h.unwritten(outs); len(todo) == 0 && h.known && next <= h.offset {
				if loaded {
					cache.at = -1 // read without an EXEC to prove it consistent
				}
				return tx.Do(ctx, "UNWATCH").Err() // written already (a replay, or another writer)
			}
			if h.epoch == "" && next >= 0 {
				h.newEpoch = ledger.NewEpoch() // a first commit, or bookkeeping from before epochs
			}
			src := groupSources(todo)
			st, err := readState(todo, &src, nil, cache.reader(ctx, w.ledger, tx, t, h), w.versionsOn(ctx, tx, t))
			if err != nil {
				return err
			}
			st.Base = h.base
			// 2. Plan.
			p = planBatch(t, todo, &src, st, next, false)
			if cache.log {
				if h.lc, err = w.planLog(ctx, tx, t, cache, p, h); err != nil {
					return err
				}
			}
			// 3. Execute.
			return w.execTx(ctx, exec, t, p, h)
		})
		w.logDone(ctx, t, h.lc, err)
		if errors.Is(err, redis.TxFailedErr) {
			w.conflicts.Add(1)
			continue
		}
		if err != nil {
			cache.at = -1 // the transaction may or may not have landed
			return Stats{}, 0, err
		}
		// 4. Record the outcome.
		stored, st := h.offset, Stats{Records: len(outs), Skipped: len(outs)}
		epoch := h.epoch
		if p != nil {
			if next >= 0 {
				stored = next
			}
			if h.newEpoch != "" {
				epoch = h.newEpoch
			}
			cache.applyLog(h.lc)
			cache.apply(p, stored, w.cacheMax)
			if h.lc != nil && h.lc.leave {
				cache.shrink(w.share())
			}
			st = p.stats
			st.Records, st.Skipped = len(outs), len(outs)-len(todo)
		}
		w.advanceMark(t, epoch, stored, h.base)
		if w.fault != nil {
			if err := w.fault(ctx, t, AfterValues); err != nil {
				return Stats{}, 0, err
			}
		}
		return st, stored, nil
	}
	return Stats{}, 0, fmt.Errorf("write %s: %w (%d conflicts in a row)", t, errConflict, maxTxConflicts)
}

// execTx writes p in one MULTI/EXEC through exec (under the caller's
// WATCH). h decides how the index is written: its layout, whether its count
// is set (nothing was ever committed), kept up (it exists) or left alone,
// and whether the transaction creates the bucketed layout's mark (a
// generation's first commit, when no InitOffset created it).
func (w *Writer) execTx(ctx context.Context, exec execFn, t Target, p *Plan, h head) error {
	if w.fault != nil {
		if err := w.fault(ctx, t, BeforeValues); err != nil {
			return err
		}
	}
	var q ledger.Queued
	nValues := 0
	cmds, err := exec(func(pipe redis.Pipeliner) error {
		base := pipe.Len() // what exec queued itself (MULTI)
		if len(p.changes) > 0 {
			res, err := w.pub.WriteTx(ctx, pipe, t.Projection, t.Generation, p.changes)
			if err != nil {
				return err
			}
			p.results(res) // refusals become dead letters, queued below
			nValues = pipe.Len() - base
		}
		c := p.commit()
		c.Bucketed, c.Mark = h.bucketed, (h.bucketed || h.format == ledger.FormatLog) && !h.marked
		c.Epoch = h.newEpoch
		if fresh := !h.known; fresh || h.counted {
			c.Count, c.CountFresh = true, fresh
			for _, sl := range p.slots {
				switch {
				case sl.before.Key == "" && sl.after.Key != "":
					c.CountDelta++
				case sl.before.Key != "" && sl.after.Key == "":
					c.CountDelta--
				}
			}
		}
		if h.lc != nil {
			h.lc.commit(&c, h)
		}
		q = w.ledger.Queue(ctx, pipe, t.Projection, t.Generation, c)
		return nil
	})
	if errors.Is(err, redis.TxFailedErr) {
		return err
	}
	if err != nil {
		if len(cmds) == 0 {
			return fmt.Errorf("write %s: %w", t, err)
		}
		// Values (before the ledger's part) must not fail; the ledger
		// tolerates a dead letter recorded earlier.
		for _, c := range cmds[:min(nValues, len(cmds))] {
			if c.Err() != nil {
				return fmt.Errorf("write %s: %w", t, c.Err())
			}
		}
		if err := q.Check(t.Projection, t.Generation); err != nil {
			return err
		}
	}
	return nil
}

// prepared is a batch with its records projected.
type prepared struct {
	outs []outcome
	from int64 // feed.Batch.From
	next int64
	end  int64 // feed.Batch.End
	t0   time.Time
	// oldest is the batch's oldest source time (Stats.OldestSourceTime).
	oldest time.Time
}

// runTx is Run for transactional writes: batches are projected (CPU only)
// one ahead of the transaction that writes the batch before, and every
// transaction of the generation runs on one dedicated connection (one round
// trip a batch when the index cache answers its plan).
func (w *Writer) runTx(ctx context.Context, t Target, in <-chan feed.Batch, onErr func(error), committed func(next int64, st Stats, took time.Duration)) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ready := make(chan prepared, 1)
	go func() {
		defer close(ready)
		for {
			select {
			case b, ok := <-in:
				if !ok {
					return
				}
				p := prepared{outs: projectAll(t, b.Records), from: b.From, next: b.Next, end: b.End, t0: time.Now(), oldest: oldestSource(b.Records)}
				select {
				case ready <- p:
				case <-ctx.Done():
					return
				}
			case <-ctx.Done():
				return
			}
		}
	}()
	tc := w.newTxConn()
	defer tc.close()
	for p := range ready {
		var (
			st     Stats
			stored int64
		)
		var moved error
		err := Retry(ctx, func() error {
			var err error
			st, stored, err = w.writeTx(ctx, tc, t, p.outs, p.from, p.next, p.end)
			if errors.Is(err, ErrPositionMoved) || errors.Is(err, ErrBookkeepingLost) || errors.Is(err, ErrFenced) {
				moved = err // retrying cannot help: the caller reads again
				return nil
			}
			return err
		}, onErr)
		if err == nil {
			err = moved
		}
		if err != nil {
			cancel()
			for range ready {
			}
			return err
		}
		if committed != nil {
			st.OldestSourceTime = p.oldest
			committed(stored, st, time.Since(p.t0))
		}
	}
	return ctx.Err()
}
