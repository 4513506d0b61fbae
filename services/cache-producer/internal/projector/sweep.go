package projector

import (
	"context"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/distcache/distcache/services/cache-producer/internal/feed"
	"github.com/distcache/distcache/services/cache-producer/internal/ledger"
)

// Sweeping: removing from a generation the source keys a rebuild did not
// meet again (package rebuild). A source key is removed exactly as a
// tombstone of it would remove it: its projected key is deleted if it still
// holds the source key's write (Ownership), and its index entry goes. Each
// chunk of source keys is planned by planBatch from synthetic tombstones and
// written as a batch that leaves the offset alone: on a single node one
// transaction under the WATCH of the offset (a writer that commits meanwhile
// makes the chunk start over, with the index as it left it), on a cluster
// values first, then the index.

// Sweep removes from generation t every source key whose index entry has a
// version at or below below, deleting its projected key with version
// version, and returns how many source keys it removed. version must exceed
// every version at or below below and stay below the versions of the
// records written after the sweep. On Redis Cluster, batches of t must not be
// written meanwhile.
func (w *Writer) Sweep(ctx context.Context, t Target, below, version int64) (int, error) {
	format, err := w.ledger.IndexFormat(ctx, t.Projection, t.Generation)
	if err != nil {
		return 0, err
	}
	removed := 0
	err = w.ledger.ScanIndex(ctx, t.Projection, t.Generation, format, func(chunk []ledger.SourceEntry) error {
		var stale []string
		for _, se := range chunk {
			if se.Version <= below {
				stale = append(stale, se.Source)
			}
		}
		if len(stale) == 0 {
			return nil
		}
		var n int
		var err error
		if w.transactional() {
			n, err = w.removeTx(ctx, t, stale, below, version)
		} else {
			n, err = w.removeCluster(ctx, t, stale, below, version)
		}
		removed += n
		return err
	})
	if err != nil {
		return removed, fmt.Errorf("sweep %s: %w", t, err)
	}
	return removed, nil
}

// staleOutcomes reads the index entries of skeys and returns a tombstone
// outcome, at offset, for each source key whose entry is still at or below
// below.
func staleOutcomes(read indexReader, skeys []string, below, offset int64) ([]outcome, error) {
	entries, err := read(skeys)
	if err != nil {
		return nil, err
	}
	var outs []outcome
	for i, e := range entries {
		if e.Key == "" || e.Version > below {
			continue // removed, or written again, since the scan
		}
		outs = append(outs, outcome{rec: &feed.Record{Offset: offset, Key: skeys[i], Delete: true}, remove: true})
	}
	return outs, nil
}

// removeTx removes the stale source keys among skeys in one transaction
// (single Redis node).
func (w *Writer) removeTx(ctx context.Context, t Target, skeys []string, below, version int64) (int, error) {
	cache := w.cacheOf(t)
	cache.mu.Lock()
	defer cache.mu.Unlock()
	for range maxTxConflicts {
		var (
			h    head
			p    *Plan
			outs []outcome
		)
		err := w.watched(ctx, nil, t, func(tx txCmdable, exec execFn, rd watchReads) error {
			var err error
			if h, err = w.readHead(t, rd); err != nil {
				return err
			}
			cache.sync(h, 0, w.cacheMax)
			if h.format == ledger.FormatLog {
				if _, err := w.syncLog(ctx, tx, t, cache, h, 0); err != nil {
					return err
				}
			}
			read := cache.reader(ctx, w.ledger, tx, t, h)
			// A synthetic offset whose version (base + offset + 1) is version.
			if outs, err = staleOutcomes(read, skeys, below, version-h.base-1); err != nil {
				return err
			}
			if len(outs) == 0 {
				return tx.Do(ctx, "UNWATCH").Err()
			}
			src := groupSources(outs)
			st, err := readState(outs, &src, nil, read, w.versionsOn(ctx, tx, t))
			if err != nil {
				return err
			}
			st.Base = h.base
			p = planBatch(t, outs, &src, st, -1, false)
			if cache.log {
				if h.lc, err = w.planLog(ctx, tx, t, cache, p, h); err != nil {
					return err
				}
			}
			return w.execTx(ctx, exec, t, p, h)
		})
		w.logDone(ctx, t, h.lc, err)
		if errors.Is(err, redis.TxFailedErr) {
			w.conflicts.Add(1)
			continue
		}
		if err != nil {
			cache.at = -1 // the transaction may or may not have landed
			return 0, err
		}
		if p == nil {
			return 0, nil
		}
		cache.applyLog(h.lc)
		cache.apply(p, h.offset, w.cacheMax)
		if h.lc != nil && h.lc.leave {
			cache.shrink(w.share())
		}
		return len(outs), nil
	}
	return 0, fmt.Errorf("sweep %s: %w (%d conflicts in a row)", t, errConflict, maxTxConflicts)
}

// removeCluster removes the stale source keys among skeys on Redis Cluster:
// values (version guarded), then the index.
func (w *Writer) removeCluster(ctx context.Context, t Target, skeys []string, below, version int64) (int, error) {
	c := w.ledger.Client()
	base, err := w.ledger.VersionBase(ctx, t.Projection, t.Generation)
	if err != nil {
		return 0, err
	}
	read := func(skeys []string) ([]ledger.Entry, error) {
		return w.ledger.IndexOn(ctx, c, t.Projection, t.Generation, false, skeys)
	}
	outs, err := staleOutcomes(read, skeys, below, version-base-1)
	if err != nil || len(outs) == 0 {
		return 0, err
	}
	src := groupSources(outs)
	st, err := readState(outs, &src, nil, read, w.versionsOn(ctx, c, t))
	if err != nil {
		return 0, err
	}
	st.Base = base
	p := planBatch(t, outs, &src, st, -1, true)
	if err := w.applyValues(ctx, p); err != nil {
		return 0, err
	}
	if err := w.commit(ctx, p); err != nil {
		return 0, err
	}
	return len(outs), nil
}
