package projector

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/distcache/distcache/libs/distcache"
	"github.com/distcache/distcache/services/cache-producer/internal/feed"
	"github.com/distcache/distcache/services/cache-producer/internal/ledger"
)

// Cluster writes (Redis Cluster: a generation's keys span slots, so no
// transaction holds a batch). Step 3 of a batch writes, in this order:
//
//	values     distcache.Publisher.Apply, version-guarded, with their
//	           change-stream entries
//	ledger     index entries, dead letters (stream id <offset+1>-0), and
//	           last the offset
//
// A crash between or inside them replays the batch from the stored offset:
// each value it writes again carries the same version and is refused by the
// guard, a dead letter's id is taken already, and the index entries are the
// same. The index is then behind the values: a delete planned from a stale
// entry finds the key holding the batch's own newer version (its check
// fails) or is refused by the guard, so the replay changes nothing already
// written.
//
// Run overlaps consecutive batches: while one batch's values are written,
// the next is planned against the index as stored overlaid with the plans
// not committed yet (state.go), and the one before is committed.

// writeCluster is WriteBatch on Redis Cluster.
func (w *Writer) writeCluster(ctx context.Context, t Target, recs []feed.Record, next int64) (Stats, error) {
	p, err := w.planCluster(ctx, t, projectAll(t, recs), next, nil)
	if err != nil {
		return Stats{}, err
	}
	if err := w.applyValues(ctx, p); err != nil {
		return p.stats, err
	}
	if err := w.commit(ctx, p); err != nil {
		return p.stats, err
	}
	if next >= 0 {
		w.advanceMark(t, p.epoch, next, p.base)
	}
	return p.stats, nil
}

// planCluster reads the state the projected batch outs needs (the index as
// stored, in the per-key layout, overlaid with pending: plans of the same
// generation, in order, whose commit may not have landed yet) and plans it.
func (w *Writer) planCluster(ctx context.Context, t Target, outs []outcome, next int64, pending []*Plan) (*Plan, error) {
	c := w.ledger.Client()
	index := func(skeys []string) ([]ledger.Entry, error) {
		return w.ledger.IndexOn(ctx, c, t.Projection, t.Generation, false, skeys)
	}
	// The base changes only when a rebuild begins, which stops the
	// generation's writer first (one producer per topic on a cluster). The
	// offset and epoch are checked against the Writer's Mark as it was
	// before they are read: commits only move the offset forward.
	mark, marked := w.Mark(t)
	base, err := w.ledger.VersionBase(ctx, t.Projection, t.Generation)
	if err != nil {
		return nil, err
	}
	pos, err := w.ledger.Position(ctx, t.Projection, t.Generation)
	if err != nil {
		return nil, err
	}
	if marked {
		if why := mark.Differs(pos.OffsetKnown, pos.Offset, pos.Epoch); why != "" {
			return nil, fmt.Errorf("write %s: %w: %s", t, ErrBookkeepingLost, why)
		}
	}
	claim := w.claimOf(t)
	if err := w.checkClaim(t, pos.Writer); err != nil {
		return nil, err
	}
	src := groupSources(outs)
	st, err := readState(outs, &src, pending, index, w.versionsOn(ctx, c, t))
	if err != nil {
		return nil, err
	}
	st.Base = base
	p := planBatch(t, outs, &src, st, next, true)
	p.epoch = pos.Epoch
	p.claim = claim
	return p, nil
}

// applyValues writes the plan's values through the Publisher. It may be
// repeated after an error.
func (w *Writer) applyValues(ctx context.Context, p *Plan) error {
	if w.fault != nil {
		if err := w.fault(ctx, p.t, BeforeValues); err != nil {
			return err
		}
	}
	if len(p.changes) > 0 {
		res, err := w.pub.ApplyAs(ctx, p.t.Projection, p.t.Generation, p.claim, p.changes)
		if errors.Is(err, distcache.ErrFenced) {
			return fmt.Errorf("write %s: %w: %v", p.t, ErrFenced, err)
		}
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

// commit stores the plan's index entries, dead letters and offset. It must
// follow applyValues, and the commits of one generation must follow each
// other in plan order.
func (w *Writer) commit(ctx context.Context, p *Plan) error {
	c := p.commit()
	c.Claim = p.claim
	return w.ledger.Write(ctx, p.t.Projection, p.t.Generation, c)
}

// runCluster is Run on Redis Cluster: three stages (plan, write values,
// commit) with one batch in each.
func (w *Writer) runCluster(ctx context.Context, t Target, in <-chan feed.Batch, onErr func(error), committed func(next int64, st Stats, took time.Duration)) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		mu      sync.Mutex
		pending []*Plan // planned, not yet committed, in order
	)
	type timed struct {
		p      *Plan
		t0     time.Time
		oldest time.Time // Stats.OldestSourceTime
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
			outs := projectAll(t, b.Records)
			var p *Plan
			var lost error
			err := Retry(ctx, func() error {
				mu.Lock()
				snap := append([]*Plan(nil), pending...)
				mu.Unlock()
				var err error
				p, err = w.planCluster(ctx, t, outs, b.Next, snap)
				if errors.Is(err, ErrBookkeepingLost) || errors.Is(err, ErrFenced) {
					lost = err // retrying cannot help: the caller looks again
					return nil
				}
				return err
			}, onErr)
			if err == nil {
				err = lost
			}
			if err != nil {
				errc <- err
				return
			}
			mu.Lock()
			pending = append(pending, p)
			mu.Unlock()
			select {
			case toApply <- timed{p, t0, oldestSource(b.Records)}:
			case <-ctx.Done():
				errc <- ctx.Err()
				return
			}
		}
		errc <- nil
	}()
	go func() { // write values
		defer close(toCommit)
		for x := range toApply {
			var fenced error
			err := Retry(ctx, func() error {
				err := w.applyValues(ctx, x.p)
				if errors.Is(err, ErrFenced) {
					fenced = err // another replica appends the change stream now
					return nil
				}
				return err
			}, onErr)
			if err == nil {
				err = fenced
			}
			if err != nil {
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
		var fenced error
		err = Retry(ctx, func() error {
			err := w.commit(ctx, x.p)
			if errors.Is(err, ErrFenced) {
				fenced = err // another replica writes the generation now
				return nil
			}
			return err
		}, onErr)
		if err == nil {
			err = fenced
		}
		if err != nil {
			break
		}
		mu.Lock()
		pending = pending[1:]
		mu.Unlock()
		if x.p.next >= 0 {
			w.advanceMark(t, x.p.epoch, x.p.next, x.p.base)
		}
		if committed != nil {
			st := x.p.stats
			st.OldestSourceTime = x.oldest
			committed(x.p.next, st, time.Since(x.t0))
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
