package projector

import (
	"context"

	"github.com/redis/go-redis/v9"

	"github.com/distcache/distcache/libs/distcache"
	"github.com/distcache/distcache/services/cache-producer/internal/ledger"
)

// Reading the state a batch's plan needs: the index entries of its source
// keys and the versions of its departures. The transactional path reads
// them under its WATCH, after the stored offset and index layout (readHead
// in tx.go), the index from the in-memory cache first (cache.go); the Cluster path reads them from Redis and overlays the plans
// of the same generation that are planned but not committed yet (pending),
// so that a batch is planned while the one before is still being written.

// indexReader reads the index entries of source keys (in order; the zero
// Entry where there is none).
type indexReader func(skeys []string) ([]ledger.Entry, error)

// versionReader reads the versions projected keys hold now (in order; 0
// where a key is absent or holds no distcache value).
type versionReader func(keys []string) ([]int64, error)

// versionsOn reads the versions of t's projected keys through c.
func (w *Writer) versionsOn(ctx context.Context, c redis.Cmdable, t Target) versionReader {
	return func(keys []string) ([]int64, error) {
		vkeys := make([]string, len(keys))
		for i, k := range keys {
			vkeys[i] = distcache.ValueKey(t.Projection, t.Generation, k)
		}
		return w.ledger.VersionsOn(ctx, c, vkeys)
	}
}

// readState reads what planning the projected batch outs needs: the index
// entries of its sources (through index) and the versions of its
// departures (through versions), both as the pending plans, in order, leave
// them. It reads versions only when some record leaves a key it owned.
func readState(outs []outcome, src *sources, pending []*Plan, index indexReader, versions versionReader) (State, error) {
	entries, err := index(src.keys)
	if err != nil {
		return State{}, err
	}
	overlayIndex(entries, src.keys, pending)
	vers := departures(outs, src, entries)
	if unknown := overlayVersions(vers, pending); len(unknown) > 0 {
		got, err := versions(unknown)
		if err != nil {
			return State{}, err
		}
		for i, k := range unknown {
			vers[k] = got[i]
		}
	}
	return State{Index: entries, Versions: vers}, nil
}

// overlayIndex replaces each entry of index (of source key keys[i]) by the
// one the last pending plan touching that key leaves.
func overlayIndex(index []ledger.Entry, keys []string, pending []*Plan) {
	if len(pending) == 0 {
		return
	}
	for j, k := range keys {
		for _, pp := range pending {
			if e, ok := pp.after(k); ok {
				index[j] = e
			}
		}
	}
}

// overlayVersions sets each key of vers to the version the last pending
// plan wrote to it, and returns the keys no pending plan wrote (to be read
// from Redis).
func overlayVersions(vers map[string]int64, pending []*Plan) (unknown []string) {
	for k := range vers {
		found := false
		for j := len(pending) - 1; j >= 0; j-- {
			if v, ok := pending[j].written[k]; ok {
				vers[k], found = v, true
				break
			}
		}
		if !found {
			unknown = append(unknown, k)
		}
	}
	return unknown
}
