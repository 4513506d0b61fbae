package ledger

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"

	"github.com/redis/go-redis/v9"
)

// The log-structured index (format "log1", issue #19 §3). A generation a
// producer creates on a single Redis node keeps its index as
//
//	dc:P:producer:gN:ixlog{dc:P:producer:gN:offset}
//	        list of packed entries, one per committed batch that changed the
//	        index (AppendLogEntry), appended by the batch's own MULTI/EXEC
//	dc:P:producer:gN:ixsnap{dc:P:producer:gN:offset}
//	        string: the name of the current snapshot list ("" or absent:
//	        no snapshot, the log starts from an empty index)
//	dc:P:producer:gN:ixsnap:<id>{dc:P:producer:gN:offset}
//	        list of packed snapshot chunks (AppendSnapshotChunk): the whole
//	        index as of the moment the snapshot was switched in
//
// The index is the snapshot with every log entry applied in list order. The
// writer that holds the generation keeps the whole index in memory and
// never reads it back per batch; it reads snapshot and log only when its
// copy is not the stored one (start, takeover, someone else committed).
//
// Compaction writes a new snapshot list under a fresh name first (outside
// any transaction: nothing refers to it yet) and switches it in inside a
// batch's MULTI/EXEC under the WATCH of the offset: the pointer is set, the
// old snapshot list and the log are removed and the batch's own entry starts
// the new log, all or nothing. A crash before that EXEC leaves the old
// snapshot and log as they were (the unreferenced list is removed by Forget
// when the generation is retired); after it, the new ones.
//
// Every key is tagged with the offset key's name, so all of them share the
// offset's slot on Redis Cluster (where this format is not used yet: a
// generation on a cluster keeps per-key entries).

// formatLog is IndexFormatKey's value for the log-structured layout.
const formatLog = "log1"

// Format is a generation's index layout.
type Format int

const (
	// FormatPerKey: one string key per source key (IndexKey).
	FormatPerKey Format = iota
	// FormatBucketed: fields of IndexBuckets hashes (IndexBucketKey).
	FormatBucketed
	// FormatLog: snapshot + log of packed entries (IndexLogKey).
	FormatLog
)

func (f Format) String() string {
	switch f {
	case FormatBucketed:
		return formatBucketed
	case FormatLog:
		return formatLog
	default:
		return "per-key"
	}
}

// FormatOf is the layout of a generation whose offset exists or not
// (offsetKnown) and whose IndexFormatKey holds mark ("" when absent): a
// generation not created yet gets the log layout (single node), one created
// before layout marks existed keeps per-key entries. Always FormatPerKey on
// a cluster.
func (l *Ledger) FormatOf(offsetKnown bool, mark string) Format {
	switch {
	case l.cluster:
		return FormatPerKey
	case mark == formatLog:
		return FormatLog
	case mark == formatBucketed:
		return FormatBucketed
	case !offsetKnown:
		return l.NewFormat()
	default:
		return FormatPerKey
	}
}

// SetNewFormat makes generations created from now on (InitPosition, a first
// commit, a rebuild that found nothing left) use layout f, FormatLog or
// FormatBucketed (the layout before FormatLog; for measurements and as a way
// back): any other value is refused. Not safe to call while the Ledger is
// in use.
func (l *Ledger) SetNewFormat(f Format) error {
	if f != FormatLog && f != FormatBucketed {
		return fmt.Errorf("ledger: a new generation's index layout must be %s or %s, not %s", FormatLog, FormatBucketed, f)
	}
	l.newFormat = f
	l.newFormatSet = true
	return nil
}

// NewFormat is the layout of generations created from now on (single node).
func (l *Ledger) NewFormat() Format {
	if l.newFormatSet {
		return l.newFormat
	}
	return FormatLog
}

// ParseFormat parses a layout's name ("log1", "hash16").
func ParseFormat(s string) (Format, error) {
	switch s {
	case formatLog:
		return FormatLog, nil
	case formatBucketed:
		return FormatBucketed, nil
	}
	return 0, fmt.Errorf("ledger: unknown index layout %q (want %s or %s)", s, formatLog, formatBucketed)
}

// FormatMark is what IndexFormatKey holds for f ("" for FormatPerKey).
func FormatMark(f Format) string {
	switch f {
	case FormatBucketed:
		return formatBucketed
	case FormatLog:
		return formatLog
	}
	return ""
}

func tagged(proj string, gen int64, name string) string {
	return genPrefix(proj, gen) + name + "{" + OffsetKey(proj, gen) + "}"
}

// IndexLogKey is the list of generation gen's log entries.
func IndexLogKey(proj string, gen int64) string { return tagged(proj, gen, "ixlog") }

// IndexSnapshotKey holds the name of generation gen's current snapshot list.
func IndexSnapshotKey(proj string, gen int64) string { return tagged(proj, gen, "ixsnap") }

// IndexSnapshotListKey is the snapshot list named id.
func IndexSnapshotListKey(proj string, gen int64, id string) string {
	return tagged(proj, gen, "ixsnap:"+id)
}

// Packed encodings. A log entry:
//
//	'L' 1 uvarint(tag) uvarint(#set) { str(source) uvarint(version) str(key) }
//	              uvarint(#delete) { str(source) }
//
// a snapshot chunk:
//
//	'S' 1 uvarint(#entries) { str(source) uvarint(version) str(key) }
//
// where str is uvarint(length) and the bytes. tag is the offset the batch
// stored (informational: entries apply in list order).
const (
	logMagic  = 'L'
	snapMagic = 'S'
	packedV1  = 1
)

func appendStr(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendSourceEntry(b []byte, se SourceEntry) []byte {
	b = appendStr(b, se.Source)
	b = binary.AppendUvarint(b, uint64(se.Version))
	return appendStr(b, se.Key)
}

// AppendLogEntry appends the packed log entry of one batch's index changes
// to b.
func AppendLogEntry(b []byte, tag int64, set []SourceEntry, del []string) []byte {
	b = append(b, logMagic, packedV1)
	b = binary.AppendUvarint(b, uint64(max(tag, 0)))
	b = binary.AppendUvarint(b, uint64(len(set)))
	for _, se := range set {
		b = appendSourceEntry(b, se)
	}
	b = binary.AppendUvarint(b, uint64(len(del)))
	for _, s := range del {
		b = appendStr(b, s)
	}
	return b
}

// AppendSnapshotChunk appends a packed snapshot chunk of entries to b.
func AppendSnapshotChunk(b []byte, entries []SourceEntry) []byte {
	b = append(b, snapMagic, packedV1)
	b = binary.AppendUvarint(b, uint64(len(entries)))
	for _, se := range entries {
		b = appendSourceEntry(b, se)
	}
	return b
}

type packedReader struct {
	b   []byte
	err error
}

func (r *packedReader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.err = errors.New("truncated varint")
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *packedReader) str() string {
	n := r.uvarint()
	if r.err != nil {
		return ""
	}
	if n > uint64(len(r.b)) {
		r.err = fmt.Errorf("string of %d bytes with %d left", n, len(r.b))
		return ""
	}
	s := string(r.b[:n])
	r.b = r.b[n:]
	return s
}

func (r *packedReader) entry() SourceEntry {
	src := r.str()
	v := r.uvarint()
	key := r.str()
	if r.err == nil && (v > 1<<62 || key == "") {
		r.err = fmt.Errorf("entry of %q: version %d, key %q", src, v, key)
	}
	return SourceEntry{Source: src, Entry: Entry{Key: key, Version: int64(v)}}
}

// count reads a count of items of at least min bytes each, refusing one
// the rest of the input cannot hold.
func (r *packedReader) count(min int) int {
	n := r.uvarint()
	if r.err == nil && n > uint64(len(r.b)/min) {
		r.err = fmt.Errorf("%d items in %d bytes", n, len(r.b))
		return 0
	}
	return int(n)
}

func (r *packedReader) header(magic byte) {
	if len(r.b) < 2 || r.b[0] != magic || r.b[1] != packedV1 {
		r.err = fmt.Errorf("not a version %d %q record", packedV1, magic)
		return
	}
	r.b = r.b[2:]
}

// DecodeLogEntry parses a packed log entry: fn is handed each set entry,
// then del each deleted source key.
func DecodeLogEntry(b []byte, set func(SourceEntry), del func(string)) (tag int64, err error) {
	r := packedReader{b: b}
	r.header(logMagic)
	tag = int64(r.uvarint())
	if r.err == nil && tag < 0 {
		r.err = fmt.Errorf("tag %d", uint64(tag))
	}
	for n := r.count(4); r.err == nil && n > 0; n-- {
		se := r.entry()
		if r.err == nil {
			set(se)
		}
	}
	for n := r.count(1); r.err == nil && n > 0; n-- {
		s := r.str()
		if r.err == nil {
			del(s)
		}
	}
	if r.err == nil && len(r.b) != 0 {
		r.err = fmt.Errorf("%d bytes past the end", len(r.b))
	}
	if r.err != nil {
		return 0, fmt.Errorf("%w: index log entry: %v", ErrCorrupt, r.err)
	}
	return tag, nil
}

// DecodeSnapshotChunk parses a packed snapshot chunk, handing fn each entry.
func DecodeSnapshotChunk(b []byte, fn func(SourceEntry)) error {
	r := packedReader{b: b}
	r.header(snapMagic)
	for n := r.count(4); r.err == nil && n > 0; n-- {
		se := r.entry()
		if r.err == nil {
			fn(se)
		}
	}
	if r.err == nil && len(r.b) != 0 {
		r.err = fmt.Errorf("%d bytes past the end", len(r.b))
	}
	if r.err != nil {
		return fmt.Errorf("%w: index snapshot chunk: %v", ErrCorrupt, r.err)
	}
	return nil
}

// LogIndex is a log-format index as read from Redis, with what compaction
// needs to know about its stored form.
type LogIndex struct {
	Entries    map[string]Entry
	Snapshot   string // the current snapshot list's id ("" when none)
	SnapBytes  int64  // the snapshot's packed size
	LogBytes   int64  // the log's packed size
	LogEntries int
}

// ErrSnapshotMoved is returned by LoadLogIndex when the snapshot the
// pointer named was gone when read: a compaction by another writer ran in
// between. Reading again sees a consistent state.
var ErrSnapshotMoved = errors.New("ledger: the index snapshot was replaced while it was read")

// LoadLogIndex reads generation gen's log-format index through c: the
// snapshot named by IndexSnapshotKey, then every log entry. On c under a
// WATCH of the offset, a commit by someone else in between makes the
// caller's EXEC fail; elsewhere the caller must accept a read that may mix
// two moments (ScanIndex) or read again on ErrSnapshotMoved.
func (l *Ledger) LoadLogIndex(ctx context.Context, c redis.Cmdable, proj string, gen int64, sizeHint int) (LogIndex, error) {
	pipe := c.Pipeline()
	ptr := pipe.Get(ctx, IndexSnapshotKey(proj, gen))
	logc := pipe.LRange(ctx, IndexLogKey(proj, gen), 0, -1)
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return LogIndex{}, fmt.Errorf("read index log of %s/g%d: %w", proj, gen, err)
	}
	li := LogIndex{Entries: make(map[string]Entry, sizeHint)}
	if id := ptr.Val(); ptr.Err() == nil && id != "" {
		li.Snapshot = id
		key := IndexSnapshotListKey(proj, gen, id)
		const page = 64
		for at := int64(0); ; at += page {
			chunks, err := c.LRange(ctx, key, at, at+page-1).Result()
			if err != nil {
				return LogIndex{}, fmt.Errorf("read index snapshot of %s/g%d: %w", proj, gen, err)
			}
			if at == 0 && len(chunks) == 0 {
				return LogIndex{}, fmt.Errorf("%s/g%d: %w", proj, gen, ErrSnapshotMoved)
			}
			for _, ch := range chunks {
				li.SnapBytes += int64(len(ch))
				if err := DecodeSnapshotChunk([]byte(ch), func(se SourceEntry) { li.Entries[se.Source] = se.Entry }); err != nil {
					return LogIndex{}, fmt.Errorf("index snapshot of %s/g%d: %w", proj, gen, err)
				}
			}
			if len(chunks) < page {
				break
			}
		}
	}
	for _, e := range logc.Val() {
		li.LogBytes += int64(len(e))
		li.LogEntries++
		_, err := DecodeLogEntry([]byte(e),
			func(se SourceEntry) { li.Entries[se.Source] = se.Entry },
			func(s string) { delete(li.Entries, s) })
		if err != nil {
			return LogIndex{}, fmt.Errorf("index log of %s/g%d: %w", proj, gen, err)
		}
	}
	return li, nil
}

// SnapshotChunkBytes is about how large a snapshot chunk grows.
const SnapshotChunkBytes = 256 << 10

// WriteSnapshot stores entries as a new snapshot list of generation gen
// through c and returns its id and packed size. Nothing refers to it until
// a commit switches it in (Commit.SwitchSnapshot).
func (l *Ledger) WriteSnapshot(ctx context.Context, c redis.Cmdable, proj string, gen int64, entries map[string]Entry) (id string, size int64, err error) {
	id = NewEpoch()
	key := IndexSnapshotListKey(proj, gen, id)
	pipe := c.Pipeline()
	pipe.Unlink(ctx, key)
	var chunk []SourceEntry
	buf := make([]byte, 0, SnapshotChunkBytes+1024)
	csize := 0
	flush := func() {
		if len(chunk) == 0 {
			return
		}
		buf = AppendSnapshotChunk(buf[:0], chunk)
		size += int64(len(buf))
		pipe.RPush(ctx, key, string(buf))
		chunk, csize = chunk[:0], 0
	}
	for k, e := range entries {
		chunk = append(chunk, SourceEntry{Source: k, Entry: e})
		if csize += len(k) + len(e.Key) + 12; csize >= SnapshotChunkBytes {
			flush()
			if pipe.Len() >= 16 {
				if _, err := pipe.Exec(ctx); err != nil {
					return "", 0, fmt.Errorf("write index snapshot of %s/g%d: %w", proj, gen, err)
				}
			}
		}
	}
	flush()
	if len(entries) == 0 {
		// An empty index is an empty chunk (a list must hold something).
		buf = AppendSnapshotChunk(buf[:0], nil)
		size += int64(len(buf))
		pipe.RPush(ctx, key, string(buf))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return "", 0, fmt.Errorf("write index snapshot of %s/g%d: %w", proj, gen, err)
	}
	return id, size, nil
}

// DropSnapshot removes a snapshot list that was written but not switched in.
func (l *Ledger) DropSnapshot(ctx context.Context, proj string, gen int64, id string) error {
	return l.rdb.Unlink(ctx, IndexSnapshotListKey(proj, gen, id)).Err()
}

// queueLog queues c's index changes in the log layout: the snapshot switch
// (Commit.SwitchSnapshot) and the batch's log entry.
func (l *Ledger) queueLog(ctx context.Context, pipe redis.Pipeliner, proj string, gen int64, c Commit, add func(redis.Cmder)) {
	logKey := IndexLogKey(proj, gen)
	if c.SwitchSnapshot != "" {
		add(pipe.Set(ctx, IndexSnapshotKey(proj, gen), c.SwitchSnapshot, 0))
		del := []any{"unlink", logKey}
		if c.OldSnapshot != "" {
			del = append(del, IndexSnapshotListKey(proj, gen, c.OldSnapshot))
		}
		add(pipe.Do(ctx, del...))
	}
	if len(c.LogEntry) > 0 {
		add(pipe.Do(ctx, "rpush", logKey, c.LogEntry))
	}
}

// queueLeaveLog queues what moves a log-format generation to the bucketed
// layout (Commit.LeaveLog): the log layout's keys go.
func (l *Ledger) queueLeaveLog(ctx context.Context, pipe redis.Pipeliner, proj string, gen int64, c Commit, add func(redis.Cmder)) {
	del := []any{"unlink", IndexLogKey(proj, gen), IndexSnapshotKey(proj, gen)}
	if c.OldSnapshot != "" {
		del = append(del, IndexSnapshotListKey(proj, gen, c.OldSnapshot))
	}
	add(pipe.Do(ctx, del...))
}

// AppendIndexLog appends one log entry to a log-format generation outside
// any writer (a test's stand-in for an entry some writer left), with the
// index count, and sets the offset to what it is so every writer's watch
// and copy of the index see a change.
func (l *Ledger) AppendIndexLog(ctx context.Context, proj string, gen int64, set []SourceEntry, del []string) error {
	off, known, err := l.Offset(ctx, proj, gen)
	if err != nil {
		return err
	}
	_, err = l.rdb.TxPipelined(ctx, func(pipe redis.Pipeliner) error {
		pipe.RPush(ctx, IndexLogKey(proj, gen), AppendLogEntry(nil, off, set, del))
		pipe.IncrBy(ctx, IndexCountKey(proj, gen), int64(len(set)-len(del)))
		if known {
			pipe.Set(ctx, OffsetKey(proj, gen), strconv.FormatInt(off, 10), 0)
		}
		return nil
	})
	return err
}

// ReadIndex reads the index entries of skeys (in order; the zero Entry
// where none is stored) of generation gen in whatever layout it has: for
// tools and tests that look at a generation from outside its writer.
func (l *Ledger) ReadIndex(ctx context.Context, proj string, gen int64, skeys []string) ([]Entry, error) {
	f, err := l.IndexFormat(ctx, proj, gen)
	if err != nil {
		return nil, err
	}
	if f != FormatLog {
		return l.IndexOn(ctx, l.rdb, proj, gen, f == FormatBucketed, skeys)
	}
	li, err := l.LoadLogIndex(ctx, l.rdb, proj, gen, 0)
	if err != nil {
		return nil, err
	}
	out := make([]Entry, len(skeys))
	for i, s := range skeys {
		out[i] = li.Entries[s]
	}
	return out, nil
}
