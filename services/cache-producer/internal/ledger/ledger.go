// Package ledger holds the cache-producer's own bookkeeping in Redis, next to
// the values libs/distcache's Publisher writes: for each generation, the
// consumed offset, the source-key index used for re-keying, and the
// dead-letter stream. distcache.Publisher stays the only writer of values and
// change streams; this package never touches them.
//
// Layout, for projection P and generation N:
//
//	dc:P:producer:gN:offset      string, decimal: the next offset to consume
//	                             (every record before it is written)
//	dc:P:producer:gN:ix:<skey>   string: 16 hex digits of the version the
//	                             source key <skey> last wrote, then the
//	                             projected key it wrote
//	dc:P:producer:gN:dead        stream: dead letters, entry id <version>-0
//	                             (the record's write version, see
//	                             VersionBaseKey), fields topic, partition,
//	                             offset, key, reason
//	dc:P:producer:gN:ixcount     string, decimal: how many index entries
//	                             exist (single-node Redis only, kept in the
//	                             same transaction as the index; absent when
//	                             unknown, e.g. a generation written before it
//	                             existed). 0 lets a writer know the index is
//	                             empty without reading it.
//	dc:P:producer:gN:vbase       string, decimal: the version base (every
//	dc:P:producer:gN:topic       write's version is base + offset + 1), the
//	dc:P:producer:gN:rebuild     topic incarnation and the rebuild in
//	                             progress: see rebuild.go and package rebuild
//	dc:P:producer:gN:epoch{…}    string: the identity of the generation's
//	                             bookkeeping, in the offset's slot (epoch.go)
//
// These keys deliberately do not match distcache.GenerationPattern
// (dc:P:gN:*): that pattern is SCANned by edge clients' warm start, which
// reads every matching key as a value; a million index keys there would crowd
// out the real values and could not be decoded. They live under dc: so an
// ACL that grants ~dc:* covers them, carry no hash tag so the index spreads
// over a Redis Cluster like the values do, and are removed with Forget when a
// generation is retired (Pattern is their SCAN pattern).
package ledger

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/distcache/distcache/libs/distcache"
)

// ErrCorrupt is wrapped when a bookkeeping key holds something this package
// did not write.
var ErrCorrupt = errors.New("ledger: malformed bookkeeping value")

// VersionHexLen is the length of the version prefix of an index entry (the
// same 16 hex digits as a distcache value's, distcache.ParseVersionHex).
const VersionHexLen = 16

func genPrefix(proj string, gen int64) string {
	return "dc:" + proj + ":producer:g" + strconv.FormatInt(gen, 10) + ":"
}

// OffsetKey is the key holding generation gen's next offset.
func OffsetKey(proj string, gen int64) string { return genPrefix(proj, gen) + "offset" }

// IndexKey is the key of source key skey's index entry in generation gen.
func IndexKey(proj string, gen int64, skey string) string {
	return genPrefix(proj, gen) + "ix:" + skey
}

// Index layouts. On Redis Cluster, and for generations a producer before
// the bucketed layout created, each index entry is a string key (IndexKey).
// On a single Redis node a new generation keeps its entries as fields of
// IndexBuckets hashes (IndexBucketKey, field = source key, value = the
// entry): a field costs Redis about a fifth less CPU than a key of its own,
// and a batch's entries go out as one HSET per bucket. Few buckets, because
// a hash holds its first 128 fields in a listpack that every insert scans
// (256 buckets kept that phase going for 32k entries and were slower than
// per-key entries); a bucket is a hash table from its 129th field. A
// generation's layout never changes; IndexFormatKey marks the bucketed one
// and is created in the same atomic step as the generation's offset.
const IndexBuckets = 16

// formatBucketed is IndexFormatKey's value for the bucketed layout.
const formatBucketed = "hash16"

// IndexFormatKey marks a generation whose index uses the bucketed layout.
func IndexFormatKey(proj string, gen int64) string { return genPrefix(proj, gen) + "ixfmt" }

// IndexBucketKey is the hash holding source key skey's entry in the
// bucketed layout.
func IndexBucketKey(proj string, gen int64, skey string) string {
	return bucketKey(genPrefix(proj, gen), indexBucket(skey))
}

func bucketKey(prefix string, b int) string { return prefix + "ixh:" + strconv.Itoa(b) }

// indexBucket is FNV-1a of skey modulo IndexBuckets (part of the stored
// layout: it must never change).
func indexBucket(skey string) int {
	h := uint32(2166136261)
	for i := 0; i < len(skey); i++ {
		h ^= uint32(skey[i])
		h *= 16777619
	}
	return int(h % IndexBuckets)
}

// IndexCountKey holds the number of generation gen's index entries.
func IndexCountKey(proj string, gen int64) string { return genPrefix(proj, gen) + "ixcount" }

// DeadLetterKey is generation gen's dead-letter stream.
func DeadLetterKey(proj string, gen int64) string { return genPrefix(proj, gen) + "dead" }

// Pattern is the SCAN MATCH pattern of every bookkeeping key of generation
// gen. proj must be a valid projection name (no glob characters).
func Pattern(proj string, gen int64) string { return genPrefix(proj, gen) + "*" }

// Entry is one source key's index entry: the projected key it last wrote and
// the version of that write. The zero Entry means "owns nothing".
type Entry struct {
	Key     string
	Version int64
}

// Encode returns the stored form of e.
func (e Entry) Encode() string { return string(e.append(make([]byte, 0, 16+len(e.Key)))) }

// append appends e's stored form to b.
func (e Entry) append(b []byte) []byte {
	return append(distcache.AppendVersionHex(b, e.Version), e.Key...)
}

// DecodeEntry parses a stored index entry.
func DecodeEntry(s string) (Entry, error) {
	v, err := distcache.ParseVersionHex(s)
	if err != nil || len(s) == VersionHexLen {
		return Entry{}, fmt.Errorf("%w: index entry %q", ErrCorrupt, s)
	}
	return Entry{Key: s[VersionHexLen:], Version: v}, nil
}

// Ledger reads and writes the bookkeeping keys.
type Ledger struct {
	rdb     redis.UniversalClient
	cluster bool
	deadMax int64
	// newFormat is the layout of new generations, when newFormatSet
	// (SetNewFormat); else FormatLog.
	newFormat    Format
	newFormatSet bool
}

// DefaultDeadLetterMaxLen caps each dead-letter stream (approximately).
const DefaultDeadLetterMaxLen = 10_000

// New returns a Ledger over rdb. deadMax caps dead-letter streams (0:
// DefaultDeadLetterMaxLen).
func New(rdb redis.UniversalClient, deadMax int64) *Ledger {
	if deadMax <= 0 {
		deadMax = DefaultDeadLetterMaxLen
	}
	_, cluster := rdb.(*redis.ClusterClient)
	return &Ledger{rdb: rdb, cluster: cluster, deadMax: deadMax}
}

// Client returns the Redis client.
func (l *Ledger) Client() redis.UniversalClient { return l.rdb }

// Cluster reports whether the client is a Redis Cluster client.
func (l *Ledger) Cluster() bool { return l.cluster }

// Offset returns generation gen's stored next offset; ok is false when none
// is stored.
func (l *Ledger) Offset(ctx context.Context, proj string, gen int64) (offset int64, ok bool, err error) {
	return l.OffsetOn(ctx, l.rdb, proj, gen)
}

// OffsetOn is Offset read through c.
func (l *Ledger) OffsetOn(ctx context.Context, c redis.Cmdable, proj string, gen int64) (offset int64, ok bool, err error) {
	s, err := c.Get(ctx, OffsetKey(proj, gen)).Result()
	if errors.Is(err, redis.Nil) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("read offset of %s/g%d: %w", proj, gen, err)
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return 0, false, fmt.Errorf("%w: offset of %s/g%d is %q", ErrCorrupt, proj, gen, s)
	}
	return n, true, nil
}

// InitOffset stores offset as generation gen's next offset unless one is
// stored already, and returns the stored one. A generation it creates gets a
// fresh epoch and, on a single Redis node, an index count of 0 and the
// bucketed index layout, in the same atomic step (InitPosition).
func (l *Ledger) InitOffset(ctx context.Context, proj string, gen, offset int64) (int64, error) {
	p, _, err := l.InitPosition(ctx, proj, gen, offset, NewEpoch())
	return p.Offset, err
}

// Layout is what decides a generation's index layout, read together with
// its offset: whether the offset and the bucketed-layout mark exist.
type Layout struct {
	OffsetKnown bool
	Marked      bool
}

// Bucketed reports whether the generation's index is (or, for a generation
// not created yet, will be) bucketed. Always false on a cluster.
func (l *Ledger) Bucketed(ly Layout) bool { return !l.cluster && (ly.Marked || !ly.OffsetKnown) }

// IsFormatMark reports whether s, the value of IndexFormatKey, marks the
// bucketed layout.
func IsFormatMark(s string) bool { return s == formatBucketed }

// IndexOn reads the index entries of skeys (in order; the zero Entry where
// none is stored) through c (a connection under WATCH, for one), in the
// bucketed layout when bucketed, else the per-key one.
func (l *Ledger) IndexOn(ctx context.Context, c redis.Cmdable, proj string, gen int64, bucketed bool, skeys []string) ([]Entry, error) {
	out := make([]Entry, len(skeys))
	if len(skeys) == 0 {
		return out, nil
	}
	var vals []*string
	var err error
	if bucketed {
		vals, err = l.hmget(ctx, c, genPrefix(proj, gen), skeys)
	} else {
		keys := make([]string, len(skeys))
		for i, s := range skeys {
			keys[i] = IndexKey(proj, gen, s)
		}
		vals, err = l.mget(ctx, c, keys)
	}
	if err != nil {
		return nil, fmt.Errorf("read index of %s/g%d: %w", proj, gen, err)
	}
	for i, v := range vals {
		if v == nil {
			continue
		}
		e, err := DecodeEntry(*v)
		if err != nil {
			return nil, fmt.Errorf("index of %s/g%d key %q: %w", proj, gen, skeys[i], err)
		}
		out[i] = e
	}
	return out, nil
}

// hmget reads skeys' fields from their buckets: one HMGET per bucket, in
// one pipeline.
func (l *Ledger) hmget(ctx context.Context, c redis.Cmdable, prefix string, skeys []string) ([]*string, error) {
	byBucket := map[int][]int{}
	for i, s := range skeys {
		b := indexBucket(s)
		byBucket[b] = append(byBucket[b], i)
	}
	pipe := c.Pipeline()
	type read struct {
		at  []int
		cmd *redis.SliceCmd
	}
	reads := make([]read, 0, len(byBucket))
	for b, at := range byBucket {
		fields := make([]string, len(at))
		for j, i := range at {
			fields[j] = skeys[i]
		}
		reads = append(reads, read{at, pipe.HMGet(ctx, bucketKey(prefix, b), fields...)})
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, err
	}
	out := make([]*string, len(skeys))
	for _, r := range reads {
		vals, err := r.cmd.Result()
		if err != nil {
			return nil, err
		}
		for j, v := range vals {
			if s, ok := v.(string); ok {
				out[r.at[j]] = &s
			}
		}
	}
	return out, nil
}

// Versions reads the version of each value key (the first 16 bytes of a
// distcache value, read with GETRANGE so large values are not transferred);
// 0 where the key is absent or does not hold a distcache value.
func (l *Ledger) Versions(ctx context.Context, valueKeys []string) ([]int64, error) {
	return l.VersionsOn(ctx, l.rdb, valueKeys)
}

// VersionsOn is Versions read through c.
func (l *Ledger) VersionsOn(ctx context.Context, c redis.Cmdable, valueKeys []string) ([]int64, error) {
	out := make([]int64, len(valueKeys))
	if len(valueKeys) == 0 {
		return out, nil
	}
	pipe := c.Pipeline()
	cmds := make([]*redis.StringCmd, len(valueKeys))
	for i, k := range valueKeys {
		cmds[i] = pipe.GetRange(ctx, k, 0, VersionHexLen-1)
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("read versions: %w", err)
	}
	for i, c := range cmds {
		s, err := c.Result()
		if err != nil {
			continue // absent or another type: owned by nobody we know
		}
		if v, err := distcache.ParseVersionHex(s); err == nil {
			out[i] = v
		}
	}
	return out, nil
}

func (l *Ledger) mget(ctx context.Context, c redis.Cmdable, keys []string) ([]*string, error) {
	out := make([]*string, len(keys))
	if !l.cluster {
		res, err := c.MGet(ctx, keys...).Result()
		if err != nil {
			return nil, err
		}
		for i, v := range res {
			if s, ok := v.(string); ok {
				out[i] = &s
			}
		}
		return out, nil
	}
	pipe := c.Pipeline()
	cmds := make([]*redis.StringCmd, len(keys))
	for i, k := range keys {
		cmds[i] = pipe.Get(ctx, k)
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, err
	}
	for i, c := range cmds {
		s, err := c.Result()
		if err == nil {
			out[i] = &s
		}
	}
	return out, nil
}

// DeadLetter is one record that could not be projected.
type DeadLetter struct {
	Topic     string
	Partition int32
	Offset    int64
	// Version is the version the record writes with (its stream id is
	// <Version>-0, so a replay does not record it twice and a rebuild,
	// whose versions are higher, records it again); 0 means Offset + 1.
	Version int64
	Key     string
	Reason  string
}

// Commit is what a batch leaves behind once its values are written: index
// changes, dead letters and the new next offset.
type Commit struct {
	// Bucketed writes the index in the bucketed layout (single node only).
	Bucketed bool
	// Log writes the index in the log layout (single node only, ixlog.go):
	// LogEntry is appended as is (nothing when empty); Set and Delete are
	// not written.
	Log      bool
	LogEntry []byte
	// SwitchSnapshot, with Log, makes the snapshot list of that id (written
	// by WriteSnapshot as of the offset this commit starts from) the
	// generation's snapshot and empties the log before LogEntry is
	// appended; OldSnapshot, the id of the snapshot it replaces, is
	// removed. With LeaveLog, OldSnapshot is removed too.
	SwitchSnapshot, OldSnapshot string
	// LeaveLog, with Bucketed, moves a log-layout generation to the
	// bucketed layout: the log layout's keys go, Set must then hold the
	// whole index, and Mark (with CountFresh) is needed.
	LeaveLog bool
	// Mark stores the layout's mark (IndexFormatKey): the first commit of a
	// generation no InitOffset created, or LeaveLog.
	Mark   bool
	Set    []SourceEntry // new entries (each source key at most once)
	Delete []string      // source keys that own nothing any more
	// DeleteBefore, on Redis Cluster, holds each Delete's entry as the plan read it: the entry
	// is removed only while it is still that one (see indexSetScript).
	DeleteBefore []Entry
	Dead         []DeadLetter
	Next         int64 // new next offset; < 0 leaves the offset alone
	// Epoch, when not empty, is stored as the generation's epoch (a
	// generation's first commit, or one whose bookkeeping predates epochs),
	// next to the offset.
	Epoch string
	// Count maintains IndexCountKey: it is increased by CountDelta, or set
	// to CountDelta with CountFresh (a generation nothing was written to).
	Count      bool
	CountFresh bool
	CountDelta int64
	// Claim, on Redis Cluster, stores the offset only while Claim is the
	// generation's writer (WriterKey); a commit refused for it fails with
	// ErrFenced. Off a cluster the caller's transaction guards the claim.
	Claim string
}

// SourceEntry is a source key's index entry.
type SourceEntry struct {
	Source string
	Entry
}

// errStreamIDTooSmall is Redis's reply to an XADD whose explicit id is not
// above the stream's last id: the dead letter was recorded by an earlier run.
const errStreamIDTooSmall = "ERR The ID specified in XADD is equal or smaller"

// Write stores c for generation gen in one pipeline: index entries, dead
// letters (each with the id <offset+1>-0, so a replayed batch does not record
// them twice) and, last, the offset.
func (l *Ledger) Write(ctx context.Context, proj string, gen int64, c Commit) error {
	pipe := l.rdb.Pipeline()
	q := l.Queue(ctx, pipe, proj, gen, c)
	if q.n == 0 {
		return nil
	}
	cmds, err := pipe.Exec(ctx)
	if err == nil {
		return nil
	}
	if len(cmds) == 0 {
		return fmt.Errorf("commit %s/g%d: %w", proj, gen, err)
	}
	return q.Check(proj, gen)
}

// Guarded index writes (Redis Cluster). A batch's index entries live in other slots than its
// offset, so the writer claim cannot guard them in one script; each entry is guarded by its own
// version instead, as values are: an entry is written only over an entry of a version not
// above its own (a replay writes the same entry again), and removed only while it is still the
// entry the batch planned from. A replica that was paused between its plan and its commit (a
// zombie whose offset the claim then refuses) cannot put an older entry over the one the
// replica that took over wrote.
var (
	indexSetScript = redis.NewScript(`
local cur = redis.call('GET', KEYS[1])
if cur and string.sub(cur, 1, 16) > string.sub(ARGV[1], 1, 16) then return 0 end
redis.call('SET', KEYS[1], ARGV[1])
return 1`)
	indexDelScript = redis.NewScript(`
local cur = redis.call('GET', KEYS[1])
if cur and cur ~= ARGV[1] then return 0 end
redis.call('UNLINK', KEYS[1])
return 1`)
)

// Queued is what Queue added to a pipeline; Check reads its outcome.
type Queued struct {
	n    int
	cmds []redis.Cmder
	dead map[redis.Cmder]bool
}

// Check returns the first error of the queued commands, ignoring a dead
// letter that an earlier run of the same batch recorded already.
func (q Queued) Check(proj string, gen int64) error {
	for _, cmd := range q.cmds {
		cerr := cmd.Err()
		if cerr == nil {
			continue
		}
		if q.dead[cmd] && strings.HasPrefix(cerr.Error(), errStreamIDTooSmall) {
			continue
		}
		if isFencedReply(cerr) {
			return fmt.Errorf("commit %s/g%d: %w", proj, gen, ErrFenced)
		}
		return fmt.Errorf("commit %s/g%d: %w", proj, gen, cerr)
	}
	return nil
}

// Queue adds c's writes to pipe (a pipeline, or a MULTI/EXEC transaction):
// index entries, dead letters and, last, the offset. The caller executes
// pipe and then calls Check on the result. Off a cluster it queues only
// commands whose reply reader also accepts a "+QUEUED" status (SET, MSET,
// XADD and Do), so it can be queued inside a MULTI that the caller sends
// as a plain pipeline.
func (l *Ledger) Queue(ctx context.Context, pipe redis.Pipeliner, proj string, gen int64, c Commit) Queued {
	q := Queued{dead: map[redis.Cmder]bool{}}
	add := func(cmd redis.Cmder) {
		q.cmds = append(q.cmds, cmd)
		q.n++
	}
	bucketed := c.Bucketed && !l.cluster
	logged := c.Log && !l.cluster && !bucketed
	if c.LeaveLog && bucketed {
		l.queueLeaveLog(ctx, pipe, proj, gen, c, add)
	}
	if logged {
		l.queueLog(ctx, pipe, proj, gen, c, add)
	} else if bucketed {
		l.queueBuckets(ctx, pipe, genPrefix(proj, gen), c, add)
	} else if len(c.Set) > 0 {
		if l.cluster {
			for _, se := range c.Set {
				add(indexSetScript.Eval(ctx, pipe, []string{IndexKey(proj, gen, se.Source)}, se.Encode()))
			}
		} else {
			// Keys and entries laid out in one string, handed over as
			// pointers into one slice: no allocation per entry.
			prefix := IndexKey(proj, gen, "")
			size := 0
			for _, se := range c.Set {
				size += len(prefix) + len(se.Source) + 16 + len(se.Key)
			}
			buf := make([]byte, 0, size)
			for _, se := range c.Set {
				buf = append(buf, prefix...)
				buf = append(buf, se.Source...)
				buf = se.append(buf)
			}
			all := string(buf)
			strs := make([]string, 2*len(c.Set))
			pairs := make([]any, 2*len(c.Set))
			at := 0
			for i, se := range c.Set {
				kl, el := len(prefix)+len(se.Source), 16+len(se.Key)
				strs[2*i], strs[2*i+1] = all[at:at+kl], all[at+kl:at+kl+el]
				pairs[2*i], pairs[2*i+1] = &strs[2*i], &strs[2*i+1]
				at += kl + el
			}
			add(pipe.MSet(ctx, pairs...))
		}
	}
	if len(c.Delete) > 0 && !bucketed && !logged {
		keys := make([]string, len(c.Delete))
		for i, sk := range c.Delete {
			keys[i] = IndexKey(proj, gen, sk)
		}
		if l.cluster {
			for i, k := range keys {
				if i < len(c.DeleteBefore) {
					add(indexDelScript.Eval(ctx, pipe, []string{k}, c.DeleteBefore[i].Encode()))
				} else {
					add(pipe.Unlink(ctx, k))
				}
			}
		} else {
			args := make([]any, 0, 1+len(keys))
			args = append(args, "unlink")
			for _, k := range keys {
				args = append(args, k)
			}
			add(pipe.Do(ctx, args...))
		}
	}
	dead := DeadLetterKey(proj, gen)
	for _, d := range c.Dead {
		id := d.Version
		if id <= 0 {
			id = d.Offset + 1
		}
		cmd := pipe.XAdd(ctx, &redis.XAddArgs{
			Stream: dead,
			MaxLen: l.deadMax,
			Approx: true,
			ID:     strconv.FormatInt(id, 10) + "-0",
			Values: []any{"topic", d.Topic, "partition", strconv.FormatInt(int64(d.Partition), 10),
				"offset", strconv.FormatInt(d.Offset, 10), "key", d.Key, "reason", d.Reason},
		})
		q.dead[cmd] = true
		add(cmd)
	}
	switch {
	case c.Count && c.CountFresh:
		add(pipe.Set(ctx, IndexCountKey(proj, gen), strconv.FormatInt(c.CountDelta, 10), 0))
	case c.Count && c.CountDelta != 0:
		add(pipe.Do(ctx, "incrby", IndexCountKey(proj, gen), c.CountDelta))
	}
	switch {
	case c.Mark && logged:
		add(pipe.Set(ctx, IndexFormatKey(proj, gen), formatLog, 0))
	case c.Mark && bucketed:
		add(pipe.Set(ctx, IndexFormatKey(proj, gen), formatBucketed, 0))
	}
	if c.Epoch != "" {
		add(pipe.Set(ctx, EpochKey(proj, gen), c.Epoch, 0))
	}
	switch {
	case c.Next >= 0 && c.Claim != "" && l.cluster:
		add(fencedOffsetScript.Eval(ctx, pipe, []string{OffsetKey(proj, gen), WriterKey(proj, gen)},
			strconv.FormatInt(c.Next, 10), c.Claim))
	case c.Next >= 0:
		add(pipe.Set(ctx, OffsetKey(proj, gen), strconv.FormatInt(c.Next, 10), 0))
	}
	return q
}

// queueBuckets queues c's index changes in the bucketed layout: one HSET
// and one HDEL per bucket touched. Entries are laid out in one string and
// handed over as pointers into one slice (no allocation per entry).
func (l *Ledger) queueBuckets(ctx context.Context, pipe redis.Pipeliner, prefix string, c Commit, add func(redis.Cmder)) {
	type bucket struct{ set, del []any }
	buckets := map[int]*bucket{}
	of := func(skey string) *bucket {
		b := indexBucket(skey)
		x, ok := buckets[b]
		if !ok {
			x = &bucket{}
			buckets[b] = x
		}
		return x
	}
	if len(c.Set) > 0 {
		size := 0
		for _, se := range c.Set {
			size += len(se.Source) + 16 + len(se.Key)
		}
		buf := make([]byte, 0, size)
		for _, se := range c.Set {
			buf = append(buf, se.Source...)
			buf = se.append(buf)
		}
		all := string(buf)
		strs := make([]string, 2*len(c.Set))
		at := 0
		for i, se := range c.Set {
			kl, el := len(se.Source), 16+len(se.Key)
			strs[2*i], strs[2*i+1] = all[at:at+kl], all[at+kl:at+kl+el]
			at += kl + el
			x := of(se.Source)
			x.set = append(x.set, &strs[2*i], &strs[2*i+1])
		}
	}
	for i := range c.Delete {
		x := of(c.Delete[i])
		x.del = append(x.del, &c.Delete[i])
	}
	order := make([]int, 0, len(buckets))
	for b := range buckets {
		order = append(order, b)
	}
	slices.Sort(order) // a deterministic command order
	for _, b := range order {
		x, key := buckets[b], bucketKey(prefix, b)
		if len(x.set) > 0 {
			add(pipe.Do(ctx, append([]any{"hset", key}, x.set...)...))
		}
		if len(x.del) > 0 {
			add(pipe.Do(ctx, append([]any{"hdel", key}, x.del...)...))
		}
	}
}

// Forget removes every bookkeeping key of generation gen (SCAN + UNLINK, on
// every master of a cluster); the offset key goes last, so a Forget that is
// interrupted is found again by HasBookkeeping and finished. It returns how
// many keys it removed.
func (l *Ledger) Forget(ctx context.Context, proj string, gen int64) (int64, error) {
	pattern := Pattern(proj, gen)
	offsetKey := OffsetKey(proj, gen)
	var total int64
	scan := func(ctx context.Context, node redis.Cmdable) error {
		var cursor uint64
		for {
			keys, next, err := node.Scan(ctx, cursor, pattern, 1000).Result()
			if err != nil {
				return err
			}
			batch := keys[:0]
			for _, k := range keys {
				if k != offsetKey {
					batch = append(batch, k)
				}
			}
			if len(batch) > 0 {
				pipe := node.Pipeline()
				for _, k := range batch {
					pipe.Unlink(ctx, k)
				}
				if _, err := pipe.Exec(ctx); err != nil {
					return err
				}
				total += int64(len(batch))
			}
			if cursor = next; cursor == 0 {
				return nil
			}
		}
	}
	var err error
	if cc, ok := l.rdb.(*redis.ClusterClient); ok {
		err = forEachMasterSerial(ctx, cc, func(m *redis.Client) error { return scan(ctx, m) })
	} else {
		err = scan(ctx, l.rdb)
	}
	if err != nil {
		return total, fmt.Errorf("forget %s/g%d: %w", proj, gen, err)
	}
	n, err := l.rdb.Unlink(ctx, offsetKey).Result()
	if err != nil {
		return total, fmt.Errorf("forget %s/g%d: %w", proj, gen, err)
	}
	return total + n, nil
}

func forEachMasterSerial(ctx context.Context, cc *redis.ClusterClient, f func(*redis.Client) error) error {
	ch := make(chan *redis.Client, 64)
	errc := make(chan error, 1)
	go func() {
		errc <- cc.ForEachMaster(ctx, func(_ context.Context, m *redis.Client) error {
			ch <- m
			return nil
		})
		close(ch)
	}()
	var masters []*redis.Client
	for m := range ch {
		masters = append(masters, m)
	}
	if err := <-errc; err != nil {
		return err
	}
	for _, m := range masters {
		if err := f(m); err != nil {
			return err
		}
	}
	return nil
}

// HasBookkeeping reports whether generation gen still has its offset key
// (the marker Forget removes last).
func (l *Ledger) HasBookkeeping(ctx context.Context, proj string, gen int64) (bool, error) {
	n, err := l.rdb.Exists(ctx, OffsetKey(proj, gen)).Result()
	if err != nil {
		return false, fmt.Errorf("check bookkeeping of %s/g%d: %w", proj, gen, err)
	}
	return n == 1, nil
}
