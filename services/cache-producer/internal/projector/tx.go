package projector

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/distcache/distcache/services/cache-producer/internal/ledger"
)

// Transactional writes (standalone and replicated Redis).
//
// Where one node holds every key of a generation, a batch is written in one
// optimistic transaction instead of the three version-guarded steps that a
// Redis Cluster needs:
//
//	WATCH <offset key>
//	GET <offset key>                     → S; records before S are written already
//	MGET <index keys>, GETRANGE <values> → the plan, read under the WATCH
//	MULTI
//	  SET values, XADD change stream      (distcache.Publisher.WriteTx)
//	  MSET/UNLINK index, XADD dead letters, SET offset Next
//	EXEC                                  → nil if anyone wrote the offset since the WATCH
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

// Conflicts counts the transactions that lost to another writer of the
// same generation (and were planned again).
func (w *Writer) Conflicts() int64 { return w.conflicts.Load() }

// transactional reports whether batches are written in one transaction.
func (w *Writer) transactional() bool { return !w.ledger.Cluster() }

// prepared is a batch with its records projected.
type prepared struct {
	outs []outcome
	next int64
	t0   time.Time
}

// indexCache is a generation's source-key index as this Writer last
// committed it, so that a batch need not read the entries back from Redis.
// It is trusted only while the stored offset is the one it was left at
// (nobody else committed since); complete means it holds every stored
// entry, so a key it lacks has none.
type indexCache struct {
	// mu is held while the cache is read or changed: two writers of one
	// generation in one process (a zombie backfill attempt next to the live
	// consumer) must not touch it at once.
	mu       sync.Mutex
	at       int64 // stored offset the cache matches; -1: none
	complete bool
	entries  map[string]ledger.Entry
}

// DefaultIndexCacheEntries bounds a generation's index cache (about 100
// bytes an entry). Past it, keys not cached are read from Redis.
const DefaultIndexCacheEntries = 1_000_000

func (w *Writer) cacheOf(t Target) *indexCache {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.caches == nil {
		w.caches = map[string]*indexCache{}
	}
	c, ok := w.caches[t.String()]
	if !ok {
		c = &indexCache{at: -1}
		w.caches[t.String()] = c
	}
	return c
}

// Forget drops what the Writer keeps in memory for t (its index cache),
// when t is retired or no longer written by this process.
func (w *Writer) Forget(t Target) {
	w.mu.Lock()
	delete(w.caches, t.String())
	w.mu.Unlock()
}

// writeTx writes one projected batch in one optimistic transaction (see
// above). It returns what it did and the generation's stored offset after
// it. Batches of one generation must not be written concurrently.
func (w *Writer) writeTx(ctx context.Context, t Target, outs []outcome, next int64) (Stats, int64, error) {
	rdb := w.ledger.Client()
	offKey := ledger.OffsetKey(t.Projection, t.Generation)
	cache := w.cacheOf(t)
	cache.mu.Lock()
	defer cache.mu.Unlock()
	for range maxTxConflicts {
		var (
			st      Stats
			stored  int64
			applied func()
		)
		err := rdb.Watch(ctx, func(tx *redis.Tx) error {
			pipe := tx.Pipeline()
			offCmd := pipe.Get(ctx, offKey)
			cntCmd := pipe.Get(ctx, ledger.IndexCountKey(t.Projection, t.Generation))
			if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
				return fmt.Errorf("read offset of %s: %w", t, err)
			}
			s, known := int64(0), offCmd.Err() == nil
			if known {
				var err error
				if s, err = strconv.ParseInt(offCmd.Val(), 10, 64); err != nil || s < 0 {
					return fmt.Errorf("%w: offset of %s is %q", ledger.ErrCorrupt, t, offCmd.Val())
				}
			}
			count, counted := int64(0), cntCmd.Err() == nil
			if counted {
				var err error
				if count, err = strconv.ParseInt(cntCmd.Val(), 10, 64); err != nil {
					counted = false
				}
			}
			fresh := !known // nothing was ever committed: no index either
			if !known || s != cache.at {
				// Someone else committed (or this Writer is new): start
				// over from what is stored.
				cache.at = -1
				cache.entries = map[string]ledger.Entry{}
				cache.complete = fresh || (counted && count == 0)
			}
			todo := outs
			if known {
				j := sort.Search(len(outs), func(i int) bool { return outs[i].rec.Offset >= s })
				todo = outs[j:]
				if len(todo) == 0 && next <= s {
					stored = s // written already (a replay, or another writer)
					st = Stats{Records: len(outs), Skipped: len(outs)}
					return nil
				}
			}
			index := func(skeys []string) ([]ledger.Entry, error) {
				out := make([]ledger.Entry, len(skeys))
				var miss []string
				var missAt []int
				for i, k := range skeys {
					if e, ok := cache.entries[k]; ok {
						out[i] = e
					} else if !cache.complete {
						miss = append(miss, k)
						missAt = append(missAt, i)
					}
				}
				if len(miss) == 0 {
					return out, nil
				}
				got, err := w.ledger.IndexOn(ctx, tx, t.Projection, t.Generation, miss)
				if err != nil {
					return nil, err
				}
				for j, i := range missAt {
					out[i] = got[j]
				}
				return out, nil
			}
			p, err := w.planOn(ctx, tx, t, todo, next, nil, index)
			if err != nil {
				return err
			}
			if err := w.execPlan(ctx, tx, t, p, fresh, counted); err != nil {
				return err
			}
			st = p.stats
			st.Records, st.Skipped = len(outs), len(outs)-len(todo)
			stored = s
			if next >= 0 {
				stored = next
			}
			applied = func() { cache.apply(p, stored, w.cacheMax) }
			return nil
		}, offKey)
		if errors.Is(err, redis.TxFailedErr) {
			w.conflicts.Add(1)
			continue
		}
		if err != nil {
			cache.at = -1 // the transaction may or may not have landed
			return Stats{}, 0, err
		}
		if applied != nil {
			applied()
		}
		if w.fault != nil {
			if err := w.fault(ctx, t, AfterValues); err != nil {
				return Stats{}, 0, err
			}
		}
		return st, stored, nil
	}
	return Stats{}, 0, fmt.Errorf("write %s: %w (%d conflicts in a row)", t, errConflict, maxTxConflicts)
}

// execPlan writes p in one MULTI/EXEC on tx (under the caller's WATCH).
// fresh: nothing was ever committed to the generation; counted: its index
// count exists. Both decide how the count is maintained.
func (w *Writer) execPlan(ctx context.Context, tx *redis.Tx, t Target, p *Plan, fresh, counted bool) error {
	if w.fault != nil {
		if err := w.fault(ctx, t, BeforeValues); err != nil {
			return err
		}
	}
	var q ledger.Queued
	nValues := 0
	cmds, err := tx.TxPipelined(ctx, func(pipe redis.Pipeliner) error {
		if len(p.changes) > 0 {
			res, err := w.pub.WriteTx(ctx, pipe, t.Projection, t.Generation, p.changes)
			if err != nil {
				return err
			}
			p.results(res) // refusals become dead letters, queued below
			nValues = pipe.Len()
		}
		c := p.commit()
		if fresh || counted {
			c.Count, c.CountFresh = true, fresh
			for k, e := range p.idx {
				switch b := p.before[k]; {
				case b.Key == "" && e.Key != "":
					c.CountDelta++
				case b.Key != "" && e.Key == "":
					c.CountDelta--
				}
			}
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

// apply records a committed plan in the cache, which then matches the
// stored offset stored.
func (c *indexCache) apply(p *Plan, stored int64, cacheMax int) {
	for k, e := range p.idx {
		if e.Key == "" && c.complete {
			delete(c.entries, k) // absent means no entry
			continue
		}
		// (An incomplete cache also remembers "no entry".)
		if len(c.entries) < cacheMax {
			c.entries[k] = e
		} else if _, ok := c.entries[k]; ok {
			c.entries[k] = e
		} else {
			c.complete = false // full: keys not cached are read
		}
	}
	c.at = stored
}

// errStale is returned when a plan made ahead finds the stored offset is not
// the one it was made for.
var errStale = errors.New("stored offset moved: plan made ahead is stale")

// execAhead writes p, planned ahead for stored offset from, if the offset
// is still from.
func (w *Writer) execAhead(ctx context.Context, t Target, p *Plan, from int64) error {
	rdb := w.ledger.Client()
	offKey := ledger.OffsetKey(t.Projection, t.Generation)
	err := rdb.Watch(ctx, func(tx *redis.Tx) error {
		pipe := tx.Pipeline()
		offCmd := pipe.Get(ctx, offKey)
		cntCmd := pipe.Get(ctx, ledger.IndexCountKey(t.Projection, t.Generation))
		if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
			return fmt.Errorf("read offset of %s: %w", t, err)
		}
		if offCmd.Err() != nil || offCmd.Val() != strconv.FormatInt(from, 10) {
			return errStale
		}
		_, cerr := strconv.ParseInt(cntCmd.Val(), 10, 64)
		return w.execPlan(ctx, tx, t, p, false, cntCmd.Err() == nil && cerr == nil)
	}, offKey)
	if errors.Is(err, redis.TxFailedErr) {
		w.conflicts.Add(1)
		return errStale
	}
	if err != nil {
		return err
	}
	if w.fault != nil {
		return w.fault(ctx, t, AfterValues)
	}
	return nil
}

// runTx is Run for transactional writes. Batches are projected (CPU only)
// one ahead, and while one batch's transaction is in flight the next is
// planned against the index as that transaction will leave it (the cache
// overlaid with the plan in flight), so Redis and the Writer work at the
// same time. A plan made ahead is used only if the stored offset is, at its
// turn, the one the batch before committed; anything else (another writer, a
// failed transaction) sends the batch through writeTx, which plans it again
// under its WATCH.
func (w *Writer) runTx(ctx context.Context, t Target, in <-chan Batch, onErr func(error), committed func(next int64, st Stats, took time.Duration)) error {
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
				p := prepared{outs: w.projectAll(t, b.Records), next: b.Next, t0: time.Now()}
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
	cache := w.cacheOf(t)
	report := func(stored int64, st Stats, p prepared) {
		if committed != nil {
			committed(stored, st, time.Since(p.t0))
		}
	}
	// slow writes p through writeTx, retrying until ctx ends.
	slow := func(p prepared) error {
		var (
			st     Stats
			stored int64
		)
		err := Retry(ctx, func() error {
			var err error
			st, stored, err = w.writeTx(ctx, t, p.outs, p.next)
			return err
		}, onErr)
		if err == nil {
			report(stored, st, p)
		}
		return err
	}
	type flight struct {
		p    prepared
		plan *Plan
		from int64
		done chan error
	}
	var fl *flight
	// land waits for the transaction in flight; if it did not land, the
	// batch goes through writeTx. It reports whether the plan made ahead of
	// the next batch still holds.
	land := func(err error) (bool, error) {
		f := fl
		fl = nil
		if err == nil {
			cache.mu.Lock()
			cache.apply(f.plan, f.plan.next, w.cacheMax)
			cache.mu.Unlock()
			st := f.plan.stats
			st.Records, st.Skipped = len(f.p.outs), len(f.p.outs)-f.plan.stats.Records
			report(f.plan.next, st, f.p)
			return true, nil
		}
		if ctx.Err() != nil {
			return false, ctx.Err()
		}
		if !errors.Is(err, errStale) && onErr != nil {
			onErr(err)
		}
		cache.mu.Lock()
		cache.at = -1
		cache.mu.Unlock()
		return false, slow(f.p)
	}
	fail := func(err error) error {
		cancel()
		if fl != nil {
			<-fl.done
		}
		for range ready {
		}
		return err
	}
	for {
		var p prepared
		if fl != nil {
			// Land the flight as soon as it ends, batch or no batch (a live
			// consumer may wait long for the next one).
			select {
			case err := <-fl.done:
				if _, err := land(err); err != nil {
					return fail(err)
				}
				continue
			case next, ok := <-ready:
				if !ok {
					if _, err := land(<-fl.done); err != nil {
						return fail(err)
					}
					return ctx.Err()
				}
				p = next
			}
		} else {
			next, ok := <-ready
			if !ok {
				return ctx.Err()
			}
			p = next
		}
		// Plan p ahead, against the cache as the flight will leave it.
		var (
			plan *Plan
			from int64 = -1
		)
		cache.mu.Lock()
		switch {
		case fl != nil && cache.at == fl.from:
			from = fl.plan.next
		case fl == nil && cache.at >= 0:
			from = cache.at
		}
		if from >= 0 {
			j := sort.Search(len(p.outs), func(i int) bool { return p.outs[i].rec.Offset >= from })
			if j == len(p.outs) && p.next <= from {
				from = -1 // nothing to write: writeTx finds it so and reports
			} else {
				var pending []*Plan
				if fl != nil {
					pending = []*Plan{fl.plan}
				}
				var err error
				plan, err = w.planOn(ctx, w.ledger.Client(), t, p.outs[j:], p.next, pending, w.cachedIndex(ctx, t, cache))
				if err != nil {
					plan = nil // planned again by writeTx
				}
			}
		}
		cache.mu.Unlock()
		if fl != nil {
			ok, err := land(<-fl.done)
			if err != nil {
				return fail(err)
			}
			if !ok {
				plan = nil
			}
		}
		if plan == nil {
			if err := slow(p); err != nil {
				return fail(err)
			}
			continue
		}
		f := &flight{p: p, plan: plan, from: from, done: make(chan error, 1)}
		go func() { f.done <- w.execAhead(ctx, t, f.plan, f.from) }()
		fl = f
	}
}

// cachedIndex reads index entries from the cache, and from Redis for keys
// it lacks when it is not complete.
func (w *Writer) cachedIndex(ctx context.Context, t Target, cache *indexCache) func([]string) ([]ledger.Entry, error) {
	return func(skeys []string) ([]ledger.Entry, error) {
		out := make([]ledger.Entry, len(skeys))
		var miss []string
		var missAt []int
		for i, k := range skeys {
			if e, ok := cache.entries[k]; ok {
				out[i] = e
			} else if !cache.complete {
				miss = append(miss, k)
				missAt = append(missAt, i)
			}
		}
		if len(miss) == 0 {
			return out, nil
		}
		got, err := w.ledger.Index(ctx, t.Projection, t.Generation, miss)
		if err != nil {
			return nil, err
		}
		for j, i := range missAt {
			out[i] = got[j]
		}
		return out, nil
	}
}
