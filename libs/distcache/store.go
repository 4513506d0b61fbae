package distcache

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/bits"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/allegro/bigcache/v3"
	"github.com/cespare/xxhash/v2"
)

// Local entry layout, stored as the bigcache value under the user key:
//
//	byte 0      flags (flagNegative: the key is absent)
//	bytes 1..8  version, little-endian (0 for "absent, never written")
//	positive:   the value follows
//	negative:   bytes 9..16: expiry, unix nanoseconds
const (
	entryHeaderLen = 9
	negEntryLen    = entryHeaderLen + 8
	flagNegative   = 1
)

func entryVersion(e []byte) int64 { return int64(binary.LittleEndian.Uint64(e[1:9])) }

func entryNegative(e []byte) bool { return e[0]&flagNegative != 0 }

func negExpiry(e []byte) int64 { return int64(binary.LittleEndian.Uint64(e[9:17])) }

func makePositiveString(version int64, value string) []byte {
	e := make([]byte, entryHeaderLen+len(value))
	binary.LittleEndian.PutUint64(e[1:9], uint64(version))
	copy(e[entryHeaderLen:], value)
	return e
}

// appendPositive appends a positive entry to b[:0]: a local entry built
// into a reused buffer (bigcache copies what it stores).
func appendPositive[T string | []byte](b []byte, version int64, value T) []byte {
	b = append(b[:0], 0)
	b = binary.LittleEndian.AppendUint64(b, uint64(version))
	return append(b, value...)
}

// appendNegative is makeNegative into b[:0].
func appendNegative(b []byte, version int64, expiry int64) []byte {
	b = append(b[:0], flagNegative)
	b = binary.LittleEndian.AppendUint64(b, uint64(version))
	return binary.LittleEndian.AppendUint64(b, uint64(expiry))
}

func makeNegative(version int64, expiry int64) []byte {
	e := make([]byte, negEntryLen)
	e[0] = flagNegative
	binary.LittleEndian.PutUint64(e[1:9], uint64(version))
	binary.LittleEndian.PutUint64(e[9:17], uint64(expiry))
	return e
}

// An unsized store's shard starts with a queue of unsizedShardEntries times
// unsizedEntryBytes (4 KiB) and a map for as many entries.
// A sized one starts its maps at sizedShardEntries (presize.go).
const (
	unsizedShardEntries = 16
	unsizedEntryBytes   = 256
	unsizedQueue        = unsizedShardEntries * unsizedEntryBytes
	sizedShardEntries   = 64
)

func hashKey(key string) uint64 { return xxhash.Sum64String(key) }

// keyHasher is the bigcache Hasher of a store. It hashes keys with xxhash,
// except for one sentinel string, backed by its own array, that hashes to the
// value written into that array: this is how the eviction scan deletes an
// entry knowing only its hash (bigcache deletes by hash without comparing the
// key). No user key can share the sentinel's backing array.
type keyHasher struct {
	sentinel [8]byte
}

func (h *keyHasher) Sum64(s string) uint64 {
	if len(s) == 8 && unsafe.StringData(s) == &h.sentinel[0] {
		return binary.LittleEndian.Uint64(h.sentinel[:])
	}
	return xxhash.Sum64String(s)
}

// store is the local cache of one generation of one projection: a bigcache
// instance, plus an insertion-ordered ring of (hash, fill time) for the
// oldest-first eviction scan. Every entry has exactly one ring record: keys
// are only ever removed by the eviction scan, which consumes the record.
// Writers hold the projection's stripe lock of the key's hash.
type store struct {
	gen    int64
	prefix string // "dc:<proj>:g<gen>:", the value keys' prefix
	cache  *bigcache.BigCache
	hasher *keyHasher
	base   time.Time // ring times are milliseconds since base

	bytes atomic.Int64
	items atomic.Int64
	// reserved is what the store's queues held when made (presize.go):
	// space a compaction has nothing to reclaim from.
	reserved int64

	ringMu sync.Mutex
	ring   fifo

	delMu sync.Mutex // guards hasher.sentinel
}

// newStore makes the store of generation gen of proj, sized for what hint
// says it will hold (presize.go; zero: it starts small and grows).
func newStore(proj string, gen int64, shards int, base time.Time, hint sizeHint) (*store, error) {
	s := &store{gen: gen, prefix: string(appendGenPrefix(nil, proj, gen)), hasher: &keyHasher{}, base: base}
	// bigcache makes each shard's queue MaxEntriesInWindow/Shards times
	// MaxEntrySize bytes and its two index maps for MaxEntriesInWindow/Shards
	// entries. A sized store sets the queue through MaxEntrySize and leaves
	// the maps to grow from sizedShardEntries as they do unsized: maps made
	// for every expected entry doubled the maps' memory (both of them, the
	// stats one never used), 50 bytes an entry at 100,000.
	queue := unsizedQueue // bytes per shard
	switch need := (hint.entries + hint.entries/8) * hint.entryBytes; {
	case hint.entryBytes <= 0 || need <= shards*queue:
	case hint.capped:
		// The store will outgrow the reservation: reserve the largest step
		// of the queues' doubling from their unsized start that fits, so
		// that they end at the capacity they would have reached unsized,
		// having skipped the first doublings.
		for 2*shards*queue <= need {
			queue *= 2
		}
	default:
		// An eighth more: keys do not spread evenly over the shards.
		queue = (need + shards - 1) / shards
	}
	entries, entrySize := shards*unsizedShardEntries, unsizedEntryBytes
	if queue > unsizedQueue {
		entries, entrySize = shards*sizedShardEntries, (queue+sizedShardEntries-1)/sizedShardEntries
		s.ring.reserve(hint.entries)
	}
	cfg := bigcache.Config{
		Shards:             shards,
		LifeWindow:         100 * 365 * 24 * time.Hour, // ages are ours: see evict.go
		CleanWindow:        0,
		MaxEntriesInWindow: entries,
		MaxEntrySize:       entrySize,
		HardMaxCacheSize:   0,
		Hasher:             s.hasher,
		Logger:             nopLogger{},
		OnRemoveWithReason: func(key string, entry []byte, _ bigcache.RemoveReason) {
			s.bytes.Add(-int64(len(key) + len(entry)))
			s.items.Add(-1)
		},
	}
	c, err := bigcache.New(context.Background(), cfg)
	if err != nil {
		return nil, fmt.Errorf("create local store: %w", err)
	}
	s.cache = c
	s.reserved = int64(c.Capacity())
	return s, nil
}

// valueKey is ValueKey(proj, s.gen, key) in one allocation.
func (s *store) valueKey(key string) string { return s.prefix + key }

type nopLogger struct{}

func (nopLogger) Printf(string, ...any) {}

func (s *store) nowMs() uint32 { return uint32(time.Since(s.base).Milliseconds()) }

// get returns a copy of key's entry.
func (s *store) get(key string) ([]byte, bool) {
	e, err := s.cache.Get(key)
	if err != nil || len(e) < entryHeaderLen {
		return nil, false
	}
	return e, true
}

// put stores entry under key (hash h), given old, the entry found by the
// caller under the same stripe lock (nil: none). The caller holds the
// stripe lock of h.
func (s *store) put(key string, h uint64, entry, old []byte) error {
	if err := s.cache.Set(key, entry); err != nil {
		return fmt.Errorf("local set: %w", err)
	}
	if old != nil {
		s.bytes.Add(int64(len(entry) - len(old)))
		return nil
	}
	s.bytes.Add(int64(len(key) + len(entry)))
	s.items.Add(1)
	s.ringMu.Lock()
	s.ring.push(h, s.nowMs())
	s.ringMu.Unlock()
	return nil
}

// deleteHash removes the entry whose key hashes to h. The caller holds the
// stripe lock of h. It reports whether there was one.
func (s *store) deleteHash(h uint64) bool {
	s.delMu.Lock()
	defer s.delMu.Unlock()
	binary.LittleEndian.PutUint64(s.hasher.sentinel[:], h)
	return s.cache.Delete(unsafe.String(&s.hasher.sentinel[0], 8)) == nil
}

func (s *store) close() { _ = s.cache.Close() }

// fifo is a growable ring of (hash, time) records, oldest first.
type fifo struct {
	hashes []uint64
	times  []uint32
	head   int
	n      int
}

// reserve makes room for n records in an empty ring.
func (f *fifo) reserve(n int) {
	if f.n == 0 && n > len(f.hashes) {
		f.resize(1 << bits.Len(uint(n-1)))
	}
}

func (f *fifo) push(h uint64, t uint32) {
	if f.n == len(f.hashes) {
		f.resize(max(64, 2*len(f.hashes)))
	}
	i := (f.head + f.n) & (len(f.hashes) - 1)
	f.hashes[i], f.times[i] = h, t
	f.n++
}

func (f *fifo) peek() (uint64, uint32, bool) {
	if f.n == 0 {
		return 0, 0, false
	}
	return f.hashes[f.head], f.times[f.head], true
}

func (f *fifo) pop() {
	if f.n == 0 {
		return
	}
	f.head = (f.head + 1) & (len(f.hashes) - 1)
	f.n--
	if len(f.hashes) > 1024 && f.n < len(f.hashes)/4 {
		f.resize(len(f.hashes) / 2)
	}
}

func (f *fifo) resize(size int) {
	hs := make([]uint64, size)
	ts := make([]uint32, size)
	for i := 0; i < f.n; i++ {
		j := (f.head + i) & (len(f.hashes) - 1)
		hs[i], ts[i] = f.hashes[j], f.times[j]
	}
	f.hashes, f.times, f.head = hs, ts, 0
}
