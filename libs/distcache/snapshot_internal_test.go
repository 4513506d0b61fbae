package distcache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// snapDump is a decoded snapshot, for tests.
type snapDump struct {
	hdr     snapshotHeader
	entries []snapDumpEntry
	order   []ringRecord // hash holds the entry index
}

type snapDumpEntry struct {
	key     string
	version int64
	value   string
}

func decodeDump(data []byte) (snapDump, error) {
	var d snapDump
	hdr, n, err := decodeSnapshot(bytes.NewReader(data), int64(len(data)), snapshotVisitor{
		entry: func(key []byte, version int64, value []byte) error {
			d.entries = append(d.entries, snapDumpEntry{string(key), version, string(value)})
			return nil
		},
		order: func(index int, ageMs uint32) error {
			d.order = append(d.order, ringRecord{hash: uint64(index), ageMs: ageMs})
			return nil
		},
	})
	d.hdr = hdr
	if err == nil && n != len(d.entries) {
		err = fmt.Errorf("decodeSnapshot counted %d entries, visited %d", n, len(d.entries))
	}
	return d, err
}

func encodeDump(t testing.TB, d snapDump) []byte {
	t.Helper()
	var buf bytes.Buffer
	enc := newSnapshotEncoder(&buf, d.hdr, 64)
	for _, e := range d.entries {
		enc.entry(e.key, e.version, []byte(e.value))
	}
	enc.endEntries()
	for _, o := range d.order {
		enc.order(int(o.hash), o.ageMs)
	}
	if _, err := enc.finish(); err != nil {
		t.Fatalf("encode: %v", err)
	}
	return buf.Bytes()
}

func sampleDump() snapDump {
	return snapDump{
		hdr: snapshotHeader{proj: "users_by_email", gen: 7, streamPos: "1700000000123-4", ctrlPos: "0-0",
			writtenAt: 1_700_000_001_000_000_000, lastContact: 1_700_000_000_900_000_000},
		entries: []snapDumpEntry{
			{"ada@example.com", 42, `{"name":"Ada"}`},
			{"bob@example.com", 1 << 40, ""},
			{strings.Repeat("k", MaxKeyLen), 3, strings.Repeat("v", 300)},
		},
		order: []ringRecord{{hash: 2, ageMs: 90_000}, {hash: 0, ageMs: 5_000}, {hash: 1, ageMs: 0}},
	}
}

func TestSnapshotRoundTrip(t *testing.T) {
	t.Parallel()
	want := sampleDump()
	data := encodeDump(t, want)
	got, err := decodeDump(data)
	if err != nil {
		t.Fatalf("decode: %v", err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("decoded %+v\nwant %+v", got, want)
	}
	if again := encodeDump(t, got); !bytes.Equal(again, data) {
		t.Fatalf("re-encoding differs:\n%x\n%x", again, data)
	}
	empty := snapDump{hdr: want.hdr}
	if got, err := decodeDump(encodeDump(t, empty)); err != nil || len(got.entries) != 0 {
		t.Fatalf("empty snapshot: %+v, %v", got, err)
	}
}

// TestDecodeSnapshotRejects: every damaged file is refused with its reason,
// never half-read.
func TestDecodeSnapshotRejects(t *testing.T) {
	t.Parallel()
	valid := encodeDump(t, sampleDump())
	valueAt := bytes.Index(valid, []byte(`{"name"`))
	edit := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(valid)) }
	tests := []struct {
		name string
		data []byte
		want SnapshotRejectReason
	}{
		{"empty file", nil, SnapshotRejectTruncated},
		{"part of the magic", valid[:3], SnapshotRejectTruncated},
		{"magic only", valid[:6], SnapshotRejectTruncated},
		{"no checksum", valid[:7], SnapshotRejectTruncated},
		{"wrong magic", edit(func(b []byte) []byte { b[0] = 'X'; return b }), SnapshotRejectMagic},
		{"not a snapshot", []byte("hello, world: a text file"), SnapshotRejectMagic},
		{"unknown format version", edit(func(b []byte) []byte { b[6] = 2; return b }), SnapshotRejectVersion},
		{"cut in the middle", valid[:len(valid)/2], SnapshotRejectTruncated},
		{"cut by one byte", valid[:len(valid)-1], SnapshotRejectTruncated},
		{"a byte flipped in a value", edit(func(b []byte) []byte { b[valueAt+3] ^= 0x20; return b }), SnapshotRejectChecksum},
		{"a byte flipped in the checksum", edit(func(b []byte) []byte { b[len(b)-1] ^= 1; return b }), SnapshotRejectChecksum},
		{"a byte added", append(bytes.Clone(valid[:len(valid)-8]), append([]byte{0}, valid[len(valid)-8:]...)...), SnapshotRejectMalformed},
		{"a zero generation", edit(func(b []byte) []byte { b[7+1+len("users_by_email")] = 0; return b }), SnapshotRejectMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := decodeDump(tt.data)
			if err == nil {
				t.Fatal("decoded; want a rejection")
			}
			var se *snapshotError
			if !errors.As(err, &se) || se.reason != tt.want {
				t.Fatalf("error %v (reason %v), want reason %v", err, rejectReason(err), tt.want)
			}
		})
	}
}

// FuzzDecodeSnapshot: decoding any bytes never panics, and a file that
// decodes re-encodes to the same bytes (so to the same entries). Files built
// from the fuzzer's keys and values decode to them.
func FuzzDecodeSnapshot(f *testing.F) {
	f.Add(encodeDump(f, sampleDump()), []byte("ada@example.com"), []byte("value"))
	f.Add(encodeDump(f, snapDump{hdr: sampleDump().hdr}), []byte("k"), []byte(""))
	f.Add([]byte("DCSNAP\x01"), []byte("\x00"), []byte("\xff"))
	f.Fuzz(func(t *testing.T, data, key, value []byte) {
		if d, err := decodeDump(data); err == nil {
			if again := encodeDump(t, d); !bytes.Equal(again, data) {
				t.Fatalf("decoded file re-encodes differently:\n%x\n%x", again, data)
			}
		} else if rejectReason(err) == SnapshotRejectIO {
			t.Fatalf("in-memory decode failed with an I/O reason: %v", err)
		}
		if len(key) == 0 || len(key) > MaxKeyLen {
			return
		}
		want := sampleDump()
		want.entries = append(want.entries, snapDumpEntry{string(key), int64(len(value)) + 1, string(value)})
		want.order = append(want.order, ringRecord{hash: 3, ageMs: uint32(len(data))})
		got, err := decodeDump(encodeDump(t, want))
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Fatalf("built file decodes to %+v, %v; want %+v", got, err, want)
		}
	})
}

// testClient is a Client with no Redis, for the store-level snapshot tests.
func testClient(t *testing.T, dir string) *Client {
	t.Helper()
	return &Client{
		cfg: config{shards: 16, maxValue: DefaultMaxValueBytes, snapshotDir: dir, snapshotEvery: time.Hour,
			staleBound: time.Minute, tailBlock: time.Second, negativeTTL: time.Minute},
		log:  slog.New(slog.DiscardHandler),
		base: time.Now().Add(-time.Hour), // ring times below are ms since base
	}
}

// TestSnapshotWriteAndLoad: a store written by the snapshot writer loads into
// an equal store (keys, values, versions, the eviction ring's order and ages)
// with the saved positions, served as stale; entries for absent keys stay
// behind; the file is private and no temporary file remains.
func TestSnapshotWriteAndLoad(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	c := testClient(t, dir)
	p := newProjection(c, "users")
	st, err := newStore("users", 3, c.cfg.shards, c.base, sizeHint{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.close)
	const n = 2000
	for i := range n {
		k := fmt.Sprintf("user-%04d", i)
		p.putAt(st, k, hashKey(k), makePositiveString(int64(i+1), "value of "+k), uint32(i))
	}
	p.putAt(st, "absent", hashKey("absent"), makeNegative(9, time.Now().Add(time.Hour).UnixNano()), n)
	p.store.Store(st)
	p.streamPos, p.ctrlPos = "1700000000123-4", "1700000000001-0"
	contact := time.Now().Add(-time.Second).UnixNano()
	p.lastContact.Store(contact)
	p.publishSnap()
	if err := p.saveSnapshot(context.Background()); err != nil {
		t.Fatalf("saveSnapshot: %v", err)
	}
	path := snapshotPath(dir, "users")
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("file mode %v, want 0600", fi.Mode().Perm())
	}
	if p.snapWrites.Load() != 1 || p.snapBytes.Load() != fi.Size() {
		t.Errorf("writes %d bytes %d, want 1 and the file's %d", p.snapWrites.Load(), p.snapBytes.Load(), fi.Size())
	}
	// A temporary file left by a writer killed mid-write is cleaned up.
	if err := os.WriteFile(filepath.Join(dir, ".users.snapshot.tmp-123"), []byte("DCSN"), 0o600); err != nil {
		t.Fatal(err)
	}

	q := newProjection(c, "users")
	if !q.loadSnapshot() {
		t.Fatal("loadSnapshot = false")
	}
	lt := q.store.Load()
	t.Cleanup(lt.close)
	if lt.gen != 3 || q.streamPos != p.streamPos || q.ctrlPos != p.ctrlPos || q.lastContact.Load() != contact {
		t.Fatalf("loaded gen %d positions %s %s contact %d; want 3 %s %s %d",
			lt.gen, q.streamPos, q.ctrlPos, q.lastContact.Load(), p.streamPos, p.ctrlPos, contact)
	}
	if got := lt.items.Load(); got != n || q.snapLoaded.Load() != n {
		t.Fatalf("items %d loaded %d, want %d (the absent key's entry is not saved)", got, q.snapLoaded.Load(), n)
	}
	for i := range n {
		k := fmt.Sprintf("user-%04d", i)
		e, ok := lt.get(k)
		if !ok || entryNegative(e) || entryVersion(e) != int64(i+1) || string(e[entryHeaderLen:]) != "value of "+k {
			t.Fatalf("loaded %s = %q, %v", k, e, ok)
		}
	}
	if _, ok := lt.get("absent"); ok {
		t.Fatal("an entry for an absent key was loaded")
	}
	if lt.ring.n != n {
		t.Fatalf("ring of %d records, want %d", lt.ring.n, n)
	}
	now := lt.nowMs()
	prevAge := uint32(1 << 31)
	for i := range n {
		j := (lt.ring.head + i) & (len(lt.ring.hashes) - 1)
		if want := hashKey(fmt.Sprintf("user-%04d", i)); lt.ring.hashes[j] != want {
			t.Fatalf("ring record %d is not user-%04d: the order was lost", i, i)
		}
		age := now - lt.ring.times[j]
		if age > prevAge {
			t.Fatalf("ring record %d is younger than the next one (%d > %d ms)", i, age, prevAge)
		}
		prevAge = age
	}
	if !q.resuming.Load() || q.health.Load() != healthStale || q.connected.Load() {
		t.Fatalf("resuming %v health %d connected %v; want a stale, resuming projection",
			q.resuming.Load(), q.health.Load(), q.connected.Load())
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".*")); len(left) != 0 {
		t.Fatalf("temporary files left: %v", left)
	}

	// A projection without a live generation removes its file.
	p.store.Store(nil)
	p.publishSnap()
	if err := p.saveSnapshot(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("snapshot of a dropped projection still there: %v", err)
	}
}

// TestSnapshotLoadRejects: another projection's file, or one past the
// format, is not loaded and is counted by reason.
func TestSnapshotLoadRejects(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	c := testClient(t, dir)
	other := sampleDump()
	other.hdr.proj = "orders"
	if err := os.WriteFile(snapshotPath(dir, "users"), encodeDump(t, other), 0o600); err != nil {
		t.Fatal(err)
	}
	p := newProjection(c, "users")
	if p.loadSnapshot() {
		t.Fatal("loaded another projection's snapshot")
	}
	if got := p.snapRejects[SnapshotRejectMismatch].Load(); got != 1 || p.store.Load() != nil {
		t.Fatalf("mismatch rejections %d, store %v; want 1, nil", got, p.store.Load())
	}
	if p := newProjection(c, "nothing"); p.loadSnapshot() {
		t.Fatal("loaded a snapshot that does not exist")
	}
}

// TestWriteOrder: the order section follows the ring copy for the entries
// written (once each) and puts the entries the copy missed last, as the
// newest.
func TestWriteOrder(t *testing.T) {
	t.Parallel()
	hashes := []uint64{30, 10, 0, 40}
	ring := []ringRecord{{hash: 0, ageMs: 9}, {hash: 99, ageMs: 8}, {hash: 10, ageMs: 7}, {hash: 30, ageMs: 3}, {hash: 10, ageMs: 1}}
	var buf bytes.Buffer
	enc := newSnapshotEncoder(&buf, sampleDump().hdr, 64)
	for _, h := range hashes {
		enc.entry(fmt.Sprint(h), 1, nil)
	}
	enc.endEntries()
	writeOrder(enc, ring, hashes)
	if _, err := enc.finish(); err != nil {
		t.Fatal(err)
	}
	d, err := decodeDump(buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	want := []ringRecord{{hash: 2, ageMs: 9}, {hash: 1, ageMs: 7}, {hash: 0, ageMs: 3}, {hash: 3, ageMs: 0}}
	if !reflect.DeepEqual(d.order, want) {
		t.Fatalf("order %v, want %v", d.order, want)
	}
}

func TestHashIndex(t *testing.T) {
	t.Parallel()
	const n = 3000
	x := newHashIndex(n)
	hash := func(i int) uint64 { return hashKey(fmt.Sprint(i)) &^ 0xffff } // crowd the low bits: long probes
	for i := range n {
		x.put(hash(i), uint32(i))
	}
	x.put(hash(7), 99) // the first index of a hash stays
	for i := range n {
		if got, ok := x.get(hash(i)); !ok || got != uint32(i) {
			t.Fatalf("get(hash %d) = %d, %v", i, got, ok)
		}
	}
	if _, ok := x.get(hash(n)); ok {
		t.Fatal("found a hash never put")
	}
}

func TestSnapshotOptions(t *testing.T) {
	t.Parallel()
	for _, opts := range [][]Option{
		{WithSnapshot("")},
		{WithSnapshot(t.TempDir()), WithSnapshotInterval(0)},
	} {
		_, err := New(context.Background(), append(opts, WithAddrs("127.0.0.1:1"))...)
		if !errors.Is(err, ErrInvalidOption) {
			t.Errorf("New = %v, want ErrInvalidOption", err)
		}
	}
}
