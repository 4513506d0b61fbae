package ledger

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Keys of an in-place rebuild (package rebuild explains the mechanism), for
// projection P and generation N:
//
//	dc:P:producer:gN:vbase     string, decimal: the version base B. Every
//	                           write of the generation has version
//	                           B + offset + 1; absent means 0.
//	dc:P:producer:gN:topic     string: the ID (base64) of the topic
//	                           incarnation the stored offset counts in;
//	                           absent when unknown.
//	dc:P:producer:gN:rebuild   hash: the rebuild in progress (fields
//	                           reason, detail, from, start, end, base,
//	                           started, epoch); absent when none.

// VersionBaseKey holds generation gen's version base.
func VersionBaseKey(proj string, gen int64) string { return genPrefix(proj, gen) + "vbase" }

// TopicIDKey holds the ID of the topic incarnation generation gen's offset
// counts in.
func TopicIDKey(proj string, gen int64) string { return genPrefix(proj, gen) + "topic" }

// RebuildKey holds generation gen's rebuild in progress.
func RebuildKey(proj string, gen int64) string { return genPrefix(proj, gen) + "rebuild" }

// Rebuild is a generation's rebuild in progress, as stored.
type Rebuild struct {
	// Reason classifies the cause (a metric label: "topic_reset", ...);
	// Detail says it in words ("topic reset: stored offset 12 > end 4").
	Reason, Detail string
	// From is the stored offset the rebuild replaced; Start the offset it
	// re-reads from and End the topic's end offset when it began: once
	// the generation's offset reaches End, the rebuild is swept.
	From, Start, End int64
	// Base is the version base the rebuild writes with: every index entry
	// at or below it was written before the rebuild.
	Base    int64
	Started time.Time
	// Epoch is the generation's epoch the rebuild began (epoch.go); "" for
	// a rebuild begun before epochs.
	Epoch string
}

// SweepVersion is the version the sweep's deletes carry: above every
// version written before the rebuild (at most Base − 1) and below every
// write of a record at or past End (Base + End + 1 and up).
func (r Rebuild) SweepVersion() int64 { return r.Base + r.End }

// BeginRebuild is what BeginRebuild stores.
type BeginRebuild struct {
	Reason, Detail string
	Start, End     int64
	// TopicID, when not empty, is stored as the generation's topic
	// incarnation.
	TopicID string
	// Floor is a version the new base must exceed besides the stored base
	// plus the stored offset (the highest version found in the
	// generation's change stream, for a generation whose offset was lost).
	Floor int64
	// Epoch, when not empty, replaces the generation's epoch (EpochKey) in
	// the same step as the offset: the bookkeeping is new.
	Epoch string
	Now   time.Time
}

// BeginRebuild starts a rebuild of generation gen: the version base becomes
// max(stored base + stored offset, Floor) + 1, so every later write is newer
// than anything the generation holds; the offset becomes b.Start and the
// rebuild's marker is stored. On a single Redis node this is one
// transaction under a WATCH of the offset, so a writer of the generation
// that committed meanwhile makes it start over and a writer that plans
// meanwhile finds the offset moved. On a cluster the keys are written in
// the order base, offset, marker, topic ID (see package rebuild for what a
// crash in between leaves).
func (l *Ledger) BeginRebuild(ctx context.Context, proj string, gen int64, b BeginRebuild) (Rebuild, error) {
	offKey, baseKey := OffsetKey(proj, gen), VersionBaseKey(proj, gen)
	rb := Rebuild{Reason: b.Reason, Detail: b.Detail, Start: b.Start, End: b.End, Started: b.Now.UTC(), Epoch: b.Epoch}
	fresh := false // single node: no bookkeeping left at all, create the log layout
	plan := func(c redis.Cmdable) error {
		off, known, err := l.OffsetOn(ctx, c, proj, gen)
		if err != nil {
			return err
		}
		if fresh = false; !known && !l.cluster {
			// Redis lost the generation's bookkeeping: if nothing of its
			// index is left either, it starts again in the log layout
			// with a count (else the layout of what is left stays, and the
			// count stays unknown).
			keys := []string{IndexFormatKey(proj, gen), IndexCountKey(proj, gen), IndexLogKey(proj, gen), IndexSnapshotKey(proj, gen)}
			for b := range IndexBuckets {
				keys = append(keys, bucketKey(genPrefix(proj, gen), b))
			}
			n, err := c.Exists(ctx, keys...).Result()
			if err != nil {
				return fmt.Errorf("read index layout of %s/g%d: %w", proj, gen, err)
			}
			fresh = n == 0
		}
		base, err := l.versionBaseOn(ctx, c, proj, gen)
		if err != nil {
			return err
		}
		rb.From, rb.Base = off, max(base+off, b.Floor)+1
		return nil
	}
	marker := []any{"reason", b.Reason, "detail", b.Detail, "start", b.Start, "end", b.End,
		"started", rb.Started.Format(time.RFC3339Nano), "epoch", b.Epoch}
	queue := func(pipe redis.Pipeliner) {
		pipe.Set(ctx, baseKey, strconv.FormatInt(rb.Base, 10), 0)
		pipe.Set(ctx, offKey, strconv.FormatInt(rb.Start, 10), 0)
		if b.Epoch != "" {
			pipe.Set(ctx, EpochKey(proj, gen), b.Epoch, 0)
		}
		if fresh {
			pipe.Set(ctx, IndexCountKey(proj, gen), "0", 0)
			pipe.Set(ctx, IndexFormatKey(proj, gen), FormatMark(l.NewFormat()), 0)
		}
		mk := RebuildKey(proj, gen)
		pipe.Del(ctx, mk)
		pipe.HSet(ctx, mk, append(marker, "from", rb.From, "base", rb.Base)...)
		if b.TopicID != "" {
			pipe.Set(ctx, TopicIDKey(proj, gen), b.TopicID, 0)
		}
	}
	if l.cluster {
		// The keys live in different slots: one at a time, in this order.
		err := plan(l.rdb)
		if err == nil {
			err = l.rdb.Set(ctx, baseKey, strconv.FormatInt(rb.Base, 10), 0).Err()
		}
		if err == nil {
			if b.Epoch != "" { // one slot: offset and epoch in one step
				err = l.rdb.MSet(ctx, offKey, strconv.FormatInt(rb.Start, 10), EpochKey(proj, gen), b.Epoch).Err()
			} else {
				err = l.rdb.Set(ctx, offKey, strconv.FormatInt(rb.Start, 10), 0).Err()
			}
		}
		if err == nil {
			mk := RebuildKey(proj, gen)
			if err = l.rdb.Del(ctx, mk).Err(); err == nil {
				err = l.rdb.HSet(ctx, mk, append(marker, "from", rb.From, "base", rb.Base)...).Err()
			}
		}
		if err == nil && b.TopicID != "" {
			err = l.rdb.Set(ctx, TopicIDKey(proj, gen), b.TopicID, 0).Err()
		}
		if err != nil {
			return Rebuild{}, fmt.Errorf("begin rebuild of %s/g%d: %w", proj, gen, err)
		}
		return rb, nil
	}
	for range 10 {
		err := l.rdb.Watch(ctx, func(tx *redis.Tx) error {
			if err := plan(tx); err != nil {
				return err
			}
			_, err := tx.TxPipelined(ctx, func(pipe redis.Pipeliner) error {
				queue(pipe)
				return nil
			})
			return err
		}, offKey)
		if errors.Is(err, redis.TxFailedErr) {
			continue // a writer committed meanwhile: read the offset again
		}
		if err != nil {
			return Rebuild{}, fmt.Errorf("begin rebuild of %s/g%d: %w", proj, gen, err)
		}
		return rb, nil
	}
	return Rebuild{}, fmt.Errorf("begin rebuild of %s/g%d: the offset kept moving", proj, gen)
}

// RebuildOf returns generation gen's rebuild in progress; ok is false when
// none is.
func (l *Ledger) RebuildOf(ctx context.Context, proj string, gen int64) (rb Rebuild, ok bool, err error) {
	m, err := l.rdb.HGetAll(ctx, RebuildKey(proj, gen)).Result()
	if err != nil {
		return Rebuild{}, false, fmt.Errorf("read rebuild of %s/g%d: %w", proj, gen, err)
	}
	if len(m) == 0 {
		return Rebuild{}, false, nil
	}
	var bad []string
	num := func(f string) int64 {
		n, err := strconv.ParseInt(m[f], 10, 64)
		if err != nil {
			bad = append(bad, f)
		}
		return n
	}
	rb = Rebuild{Reason: m["reason"], Detail: m["detail"], From: num("from"), Start: num("start"), End: num("end"), Base: num("base"),
		Epoch: m["epoch"]}
	if rb.Started, err = time.Parse(time.RFC3339Nano, m["started"]); err != nil {
		bad = append(bad, "started")
	}
	if len(bad) > 0 {
		return Rebuild{}, false, fmt.Errorf("%w: rebuild of %s/g%d: fields %s", ErrCorrupt, proj, gen, strings.Join(bad, ", "))
	}
	return rb, true, nil
}

// EndRebuild removes generation gen's rebuild marker if it is still the one
// with base (a rebuild begun again since keeps its own).
func (l *Ledger) EndRebuild(ctx context.Context, proj string, gen, base int64) error {
	err := endRebuildScript.Run(ctx, l.rdb, []string{RebuildKey(proj, gen)}, strconv.FormatInt(base, 10)).Err()
	if err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("end rebuild of %s/g%d: %w", proj, gen, err)
	}
	return nil
}

var endRebuildScript = redis.NewScript(`
if redis.call('HGET', KEYS[1], 'base') == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0`)

// VersionBase returns generation gen's version base (0 when none is
// stored).
func (l *Ledger) VersionBase(ctx context.Context, proj string, gen int64) (int64, error) {
	return l.versionBaseOn(ctx, l.rdb, proj, gen)
}

func (l *Ledger) versionBaseOn(ctx context.Context, c redis.Cmdable, proj string, gen int64) (int64, error) {
	s, err := c.Get(ctx, VersionBaseKey(proj, gen)).Result()
	if errors.Is(err, redis.Nil) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read version base of %s/g%d: %w", proj, gen, err)
	}
	return ParseVersionBase(s)
}

// ParseVersionBase parses the value of VersionBaseKey.
func ParseVersionBase(s string) (int64, error) {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%w: version base %q", ErrCorrupt, s)
	}
	return n, nil
}

// TopicID returns the topic incarnation generation gen's offset counts in
// ("" when none is stored).
func (l *Ledger) TopicID(ctx context.Context, proj string, gen int64) (string, error) {
	s, err := l.rdb.Get(ctx, TopicIDKey(proj, gen)).Result()
	if errors.Is(err, redis.Nil) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read topic id of %s/g%d: %w", proj, gen, err)
	}
	return s, nil
}

// InitTopicID stores id as generation gen's topic incarnation unless one is
// stored, and returns the stored one.
func (l *Ledger) InitTopicID(ctx context.Context, proj string, gen int64, id string) (string, error) {
	if err := l.rdb.SetNX(ctx, TopicIDKey(proj, gen), id, 0).Err(); err != nil {
		return "", fmt.Errorf("store topic id of %s/g%d: %w", proj, gen, err)
	}
	return l.TopicID(ctx, proj, gen)
}

// AdvanceOffset moves generation gen's offset from from to to, only if it
// is still from; it reports whether it did.
func (l *Ledger) AdvanceOffset(ctx context.Context, proj string, gen, from, to int64) (bool, error) {
	n, err := advanceScript.Run(ctx, l.rdb, []string{OffsetKey(proj, gen)},
		strconv.FormatInt(from, 10), strconv.FormatInt(to, 10)).Int()
	if err != nil {
		return false, fmt.Errorf("advance offset of %s/g%d: %w", proj, gen, err)
	}
	return n == 1, nil
}

var advanceScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('SET', KEYS[1], ARGV[2]) return 1 end
return 0`)

// IndexFormat reads generation gen's index layout (its offset's existence
// and layout mark).
func (l *Ledger) IndexFormat(ctx context.Context, proj string, gen int64) (Format, error) {
	if l.cluster {
		return FormatPerKey, nil
	}
	n, err := l.rdb.Exists(ctx, OffsetKey(proj, gen)).Result()
	if err != nil {
		return 0, fmt.Errorf("read index layout of %s/g%d: %w", proj, gen, err)
	}
	f, err := l.rdb.Get(ctx, IndexFormatKey(proj, gen)).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return 0, fmt.Errorf("read index layout of %s/g%d: %w", proj, gen, err)
	}
	return l.FormatOf(n == 1, f), nil
}

// ScanIndex hands fn every index entry of generation gen, in chunks of up to
// about 1000, in layout f (per-key entries are scanned on every master of a
// cluster; a log-layout index is read whole, snapshot and log, and handed
// over in chunks). An entry removed while the scan runs may or may not be
// handed over; one present throughout is handed over at least once.
func (l *Ledger) ScanIndex(ctx context.Context, proj string, gen int64, f Format, fn func([]SourceEntry) error) error {
	prefix := genPrefix(proj, gen)
	if f == FormatLog {
		var li LogIndex
		var err error
		for range 5 {
			if li, err = l.LoadLogIndex(ctx, l.rdb, proj, gen, 0); !errors.Is(err, ErrSnapshotMoved) {
				break
			}
		}
		if err != nil {
			return fmt.Errorf("scan index of %s/g%d: %w", proj, gen, err)
		}
		chunk := make([]SourceEntry, 0, 1000)
		for k, e := range li.Entries {
			if chunk = append(chunk, SourceEntry{Source: k, Entry: e}); len(chunk) == cap(chunk) {
				if err := fn(chunk); err != nil {
					return err
				}
				chunk = make([]SourceEntry, 0, 1000)
			}
		}
		if len(chunk) > 0 {
			return fn(chunk)
		}
		return nil
	}
	bucketed := f == FormatBucketed
	decode := func(skey, v string) (SourceEntry, error) {
		e, err := DecodeEntry(v)
		if err != nil {
			return SourceEntry{}, fmt.Errorf("index of %s/g%d key %q: %w", proj, gen, skey, err)
		}
		return SourceEntry{Source: skey, Entry: e}, nil
	}
	if bucketed {
		for b := range IndexBuckets {
			key := bucketKey(prefix, b)
			var cursor uint64
			for {
				kv, next, err := l.rdb.HScan(ctx, key, cursor, "", 1000).Result()
				if err != nil {
					return fmt.Errorf("scan index of %s/g%d: %w", proj, gen, err)
				}
				chunk := make([]SourceEntry, 0, len(kv)/2)
				for i := 0; i+1 < len(kv); i += 2 {
					se, err := decode(kv[i], kv[i+1])
					if err != nil {
						return err
					}
					chunk = append(chunk, se)
				}
				if len(chunk) > 0 {
					if err := fn(chunk); err != nil {
						return err
					}
				}
				if cursor = next; cursor == 0 {
					break
				}
			}
		}
		return nil
	}
	ixPrefix := IndexKey(proj, gen, "")
	scan := func(node redis.Cmdable) error {
		var cursor uint64
		for {
			keys, next, err := node.Scan(ctx, cursor, ixPrefix+"*", 1000).Result()
			if err != nil {
				return fmt.Errorf("scan index of %s/g%d: %w", proj, gen, err)
			}
			if len(keys) > 0 {
				vals, err := l.mget(ctx, node, keys)
				if err != nil {
					return fmt.Errorf("scan index of %s/g%d: %w", proj, gen, err)
				}
				chunk := make([]SourceEntry, 0, len(keys))
				for i, v := range vals {
					if v == nil {
						continue // removed meanwhile
					}
					se, err := decode(strings.TrimPrefix(keys[i], ixPrefix), *v)
					if err != nil {
						return err
					}
					chunk = append(chunk, se)
				}
				if len(chunk) > 0 {
					if err := fn(chunk); err != nil {
						return err
					}
				}
			}
			if cursor = next; cursor == 0 {
				return nil
			}
		}
	}
	if cc, ok := l.rdb.(*redis.ClusterClient); ok {
		return forEachMasterSerial(ctx, cc, func(m *redis.Client) error { return scan(m) })
	}
	return scan(l.rdb)
}
