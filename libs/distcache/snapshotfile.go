package distcache

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"time"
)

// Snapshots (WithSnapshot). The tail goroutine of each projection publishes
// the store it applies changes to together with the positions that store is
// current to (snapState); the snapshot writer, in a goroutine of its own,
// writes what was last published. Every change up to the published stream
// position has been applied to the published store before publication, and
// entries may be newer than the position (a change replayed twice is
// harmless: versions guard it), so resuming from the saved position makes a
// loaded snapshot current.
//
// The writer takes no stripe lock: bigcache's iterator holds each shard's
// read lock only while it copies that shard's hashes, then each entry, so
// Gets (which take the same read locks) are not held up, and writers wait
// for one entry's copy at most. The eviction ring is copied under its lock
// (12 bytes per entry, a few milliseconds per million entries), which holds
// up fills of new keys for that long.

// snapState is what the tail last published for the snapshot writer.
type snapState struct {
	store     *store // nil: no live generation (the file is removed)
	streamPos string
	ctrlPos   string
}

// snapshotWriteBuffer is the write buffer of a snapshot file.
const snapshotWriteBuffer = 256 << 10

func snapshotPath(dir, proj string) string { return filepath.Join(dir, proj+snapshotSuffix) }

// snapshotTempPattern names a snapshot's temporary files (hidden, so that no
// one takes one for a snapshot).
func snapshotTempPattern(proj string) string { return "." + proj + snapshotSuffix + ".tmp-*" }

// publishSnap publishes the projection's store and positions for the
// snapshot writer. Tail goroutine only (or before the tail starts).
func (p *projection) publishSnap() {
	if p.c.cfg.snapshotDir == "" {
		return
	}
	st := p.store.Load()
	if cur := p.snap.Load(); cur != nil && cur.store == st && cur.streamPos == p.streamPos && cur.ctrlPos == p.ctrlPos {
		return
	}
	p.snap.Store(&snapState{store: st, streamPos: p.streamPos, ctrlPos: p.ctrlPos})
}

func (c *Client) snapshotLoop() {
	defer c.wg.Done()
	t := time.NewTicker(c.cfg.snapshotEvery)
	defer t.Stop()
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-t.C:
			_ = c.saveSnapshots(c.ctx)
		}
	}
}

// saveSnapshots writes the snapshot of every followed projection.
func (c *Client) saveSnapshots(ctx context.Context) error {
	var errs []error
	for _, p := range *c.projs.Load() {
		if err := p.saveSnapshot(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// saveSnapshot writes the projection's snapshot (or removes it when the
// projection has no live generation), counting and logging a failure. An
// abort because ctx ended is neither.
func (p *projection) saveSnapshot(ctx context.Context) error {
	s := p.snap.Load()
	if s == nil {
		return nil
	}
	path := snapshotPath(p.c.cfg.snapshotDir, p.name)
	if s.store == nil {
		if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			p.snapWriteErrors.Add(1)
			return fmt.Errorf("remove snapshot of %s: %w", p.name, err)
		}
		return nil
	}
	start := time.Now()
	size, entries, err := p.writeSnapshot(ctx, path, s)
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("write snapshot of %s: %w", p.name, ctx.Err())
		}
		p.snapWriteErrors.Add(1)
		p.c.log.Warn("distcache: snapshot write failed; the previous snapshot stays",
			slog.String(logKeyProjection, p.name), slog.String("path", path), slog.Any(logKeyError, err))
		return fmt.Errorf("write snapshot of %s: %w", p.name, err)
	}
	p.snapWrites.Add(1)
	p.snapBytes.Store(size)
	p.c.log.Debug("distcache: snapshot written", slog.String(logKeyProjection, p.name), slog.String("path", path),
		slog.Int("entries", entries), slog.Int64("bytes", size), slog.Duration("took", time.Since(start)))
	return nil
}

// ringRecord is one eviction-ring record as the writer copies it.
type ringRecord struct {
	hash  uint64
	ageMs uint32
}

// writeSnapshot writes s to path: a temporary file in the same directory,
// fsynced, renamed over path, then the directory fsynced. It returns the
// file's size and its number of entries.
func (p *projection) writeSnapshot(ctx context.Context, path string, s *snapState) (size int64, entries int, err error) {
	st := s.store
	hdr := snapshotHeader{
		proj: p.name, gen: st.gen, streamPos: s.streamPos, ctrlPos: s.ctrlPos,
		writtenAt: time.Now().UnixNano(), lastContact: p.lastContact.Load(),
	}
	// The ring first: an entry filled after this copy has no record here and
	// is written as the newest, which it is.
	st.ringMu.Lock()
	now := st.nowMs()
	ring := make([]ringRecord, st.ring.n)
	for i := range ring {
		j := (st.ring.head + i) & (len(st.ring.hashes) - 1)
		ring[i] = ringRecord{hash: st.ring.hashes[j], ageMs: now - st.ring.times[j]}
	}
	st.ringMu.Unlock()

	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, snapshotTempPattern(p.name)) // mode 0600
	if err != nil {
		return 0, 0, err
	}
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(f.Name())
		}
	}()
	enc := newSnapshotEncoder(f, hdr, snapshotWriteBuffer)
	hashes := make([]uint64, 0, max(st.items.Load(), 0))
	it := st.cache.Iterator()
	for it.SetNext() {
		e, ierr := it.Value()
		if ierr != nil {
			continue
		}
		v := e.Value()
		if len(v) < entryHeaderLen || entryNegative(v) || entryVersion(v) < 1 {
			continue
		}
		enc.entry(e.Key(), entryVersion(v), v[entryHeaderLen:])
		hashes = append(hashes, e.Hash())
		if len(hashes)%4096 == 0 {
			if err := ctx.Err(); err != nil {
				return 0, 0, err
			}
			if enc.err != nil {
				break
			}
		}
	}
	enc.endEntries()
	writeOrder(enc, ring, hashes)
	if size, err = enc.finish(); err != nil {
		return 0, 0, err
	}
	if err = f.Sync(); err != nil {
		return 0, 0, err
	}
	if err = f.Close(); err != nil {
		return 0, 0, err
	}
	if err = os.Rename(f.Name(), path); err != nil {
		return 0, 0, err
	}
	return size, len(hashes), syncDir(dir)
}

// writeOrder writes the order section: the ring's records of the entries
// written (hashes, in file order), oldest first, then the entries the ring
// copy did not have, as the newest.
func writeOrder(enc *snapshotEncoder, ring []ringRecord, hashes []uint64) {
	index := newHashIndex(len(hashes))
	for i, h := range hashes {
		index.put(h, uint32(i))
	}
	done := make([]bool, len(hashes))
	for _, r := range ring {
		i, ok := index.get(r.hash)
		if !ok || done[i] {
			continue
		}
		done[i] = true
		enc.order(int(i), r.ageMs)
	}
	for i, d := range done {
		if !d {
			enc.order(i, 0)
		}
	}
}

// hashIndex maps entry hashes (uniform already) to file indexes: open
// addressing with linear probing, at most half full. A map costs about three
// times as much here, and sorting with binary searches ten.
type hashIndex struct {
	hashes []uint64
	slots  []uint32 // index+1; 0: empty
	mask   uint64
}

func newHashIndex(n int) *hashIndex {
	size := 16
	for size < 2*n {
		size <<= 1
	}
	return &hashIndex{hashes: make([]uint64, size), slots: make([]uint32, size), mask: uint64(size - 1)}
}

// put records h at index i (the first index of a hash wins).
func (x *hashIndex) put(h uint64, i uint32) {
	for j := h & x.mask; ; j = (j + 1) & x.mask {
		if x.slots[j] == 0 {
			x.hashes[j], x.slots[j] = h, i+1
			return
		}
		if x.hashes[j] == h {
			return
		}
	}
}

func (x *hashIndex) get(h uint64) (uint32, bool) {
	for j := h & x.mask; ; j = (j + 1) & x.mask {
		if x.slots[j] == 0 {
			return 0, false
		}
		if x.hashes[j] == h {
			return x.slots[j] - 1, true
		}
	}
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// loadSnapshot loads the projection's snapshot, if there is one, into a new
// store and makes it the projection's: entries served Stale until the tail
// has caught up from the saved position. It reports whether it did. A file
// that does not verify is logged and counted, and nothing of it is used.
// Before the tail starts only.
func (p *projection) loadSnapshot() bool {
	dir := p.c.cfg.snapshotDir
	path := snapshotPath(dir, p.name)
	// Temporary files of a writer that was killed mid-write.
	if stale, _ := filepath.Glob(filepath.Join(dir, snapshotTempPattern(p.name))); len(stale) > 0 {
		for _, f := range stale {
			_ = os.Remove(f)
		}
	}
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false
	}
	if err != nil {
		p.rejectSnapshot(path, &snapshotError{reason: SnapshotRejectIO, err: err})
		return false
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		p.rejectSnapshot(path, &snapshotError{reason: SnapshotRejectIO, err: err})
		return false
	}
	start := time.Now()
	st, hdr, loaded, err := p.decodeInto(f, fi.Size())
	if err == nil && st.cache.Len() != loaded {
		err = rejectf(SnapshotRejectMismatch, "%d entries make %d keys: duplicate keys", loaded, st.cache.Len())
	}
	if err != nil {
		if st != nil {
			st.close()
		}
		p.rejectSnapshot(path, err)
		return false
	}
	st.gen, st.prefix = hdr.gen, string(appendGenPrefix(nil, p.name, hdr.gen))
	p.store.Store(st)
	p.streamPos, p.ctrlPos = hdr.streamPos, hdr.ctrlPos
	p.lastContact.Store(hdr.lastContact)
	p.connected.Store(false)
	p.resuming.Store(true)
	p.prerollPending = true
	p.pointerSeen = true // it named this generation: missing at the first contact, it was lost
	p.fromSnapshot = true
	p.snapLoaded.Add(uint64(loaded))
	p.health.Store(p.c.healthOf(p, time.Now().UnixNano()))
	p.c.log.Info("distcache: loaded snapshot; serving it as stale until the change stream is caught up",
		slog.String(logKeyProjection, p.name), slog.Int64(logKeyGeneration, hdr.gen), slog.String("path", path),
		slog.Int("entries", loaded), slog.String("position", hdr.streamPos),
		slog.Duration("since_last_contact", time.Duration(time.Now().UnixNano()-hdr.lastContact)),
		slog.Duration("took", time.Since(start)))
	return true
}

// decodeInto decodes a snapshot into a new store (not yet visible to
// readers): entries with their ring records, ages carried over from the
// file's write time. It returns the store (nil if the header did not
// decode), the header and the number of entries stored.
func (p *projection) decodeInto(f *os.File, size int64) (*store, snapshotHeader, int, error) {
	var (
		st      *store
		elapsed uint64 // ms from the file's write time to now
		now     uint32
		entry   []byte
		hashes  []uint64
		skipped map[int]bool
		loaded  int
		maxAge  = uint64(maxTTLLimit.Milliseconds())
	)
	hdr, _, err := decodeSnapshot(f, size, snapshotVisitor{
		header: func(h snapshotHeader) error {
			if h.proj != p.name {
				return rejectf(SnapshotRejectMismatch, "the file holds projection %q", h.proj)
			}
			elapsed = uint64(max(time.Now().UnixNano()-h.writtenAt, 0) / int64(time.Millisecond))
			var err error
			if st, err = newStore(p.name, 0, p.c.cfg.shards, p.c.base, sizeHint{}); err != nil {
				return &snapshotError{reason: SnapshotRejectIO, err: err}
			}
			now = st.nowMs()
			hashes = make([]uint64, 0, min(size/64, 1<<20))
			return nil
		},
		entry: func(key []byte, version int64, value []byte) error {
			if len(value) > p.c.cfg.maxValue {
				if skipped == nil {
					skipped = map[int]bool{}
				}
				skipped[len(hashes)] = true
				hashes = append(hashes, 0)
				return nil
			}
			entry = grow(entry, entryHeaderLen+len(value))
			entry[0] = 0
			binary.LittleEndian.PutUint64(entry[1:entryHeaderLen], uint64(version))
			copy(entry[entryHeaderLen:], value)
			k := string(key)
			if err := st.cache.Set(k, entry); err != nil {
				return &snapshotError{reason: SnapshotRejectIO, err: err}
			}
			st.bytes.Add(int64(len(k) + len(entry)))
			st.items.Add(1)
			hashes = append(hashes, hashKey(k))
			loaded++
			return nil
		},
		order: func(index int, ageMs uint32) error {
			if skipped[index] {
				return nil
			}
			age := min(uint64(ageMs)+elapsed, maxAge)
			st.ring.push(hashes[index], now-uint32(age))
			return nil
		},
	})
	return st, hdr, loaded, err
}

// rejectSnapshot logs and counts a snapshot that was not loaded.
func (p *projection) rejectSnapshot(path string, err error) {
	reason := rejectReason(err)
	p.snapRejects[reason].Add(1)
	p.c.log.Warn("distcache: snapshot rejected; starting without it",
		slog.String(logKeyProjection, p.name), slog.String("path", path),
		slog.String("reason", reason.String()), slog.Any(logKeyError, err))
}
