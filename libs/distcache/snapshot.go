package distcache

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"

	"github.com/cespare/xxhash/v2"
)

// The snapshot file format, version 1. This comment is the contract (also
// recorded in docs/architecture.md): a reader that meets another format
// version byte rejects the file (and starts without it), so a change of the
// layout below needs a new version byte.
//
// One file per projection, <dir>/<projection>.snapshot, written by
// Client.saveSnapshot and read by projection.loadSnapshot. Integers are
// unsigned varints (encoding/binary's Uvarint) unless noted; "ID" is a
// Redis stream ID "ms-seq" written as two varints (0-0 for none).
//
//	magic        6 bytes "DCSNAP"
//	version      1 byte  0x01
//	projection   varint length (1..MaxProjectionNameLen), the name
//	generation   varint (>= 1)
//	stream pos   ID: the change-stream position every entry below is current to
//	control pos  ID: the control-stream position
//	written at   8 bytes, little-endian, unix nanoseconds
//	last contact 8 bytes, little-endian, unix nanoseconds: the Client's last
//	             contact with Redis (what the staleness bound runs from)
//	entries      repeated: varint key length (1..MaxKeyLen), key,
//	             varint version (>= 1), varint value length, value
//	end          one 0 byte (a key length of 0)
//	order        varint n (the number of entries), then n times:
//	             varint index of an entry (each of 0..n-1 exactly once),
//	             varint age in milliseconds at "written at" (< 2^32);
//	             oldest first: the order and ages of the eviction ring
//	checksum     8 bytes, little-endian: xxhash64 of every byte before it
//
// Varints are in their shortest form (a reader rejects others), so a file has
// exactly one encoding. Only values are written; entries remembering an
// absent key are not (they live for WithNegativeTTL, seconds).
const (
	snapshotMagic   = "DCSNAP"
	snapshotVersion = 1
	snapshotSuffix  = ".snapshot"
	checksumLen     = 8
)

// SnapshotRejectReason says why a snapshot file was not loaded.
type SnapshotRejectReason int

const (
	// SnapshotRejectIO: the file could not be opened or read.
	SnapshotRejectIO SnapshotRejectReason = iota
	// SnapshotRejectMagic: the file does not start with the snapshot magic.
	SnapshotRejectMagic
	// SnapshotRejectVersion: a format version this library does not know.
	SnapshotRejectVersion
	// SnapshotRejectTruncated: the file ends before its structure does
	// (an empty file included).
	SnapshotRejectTruncated
	// SnapshotRejectMalformed: a field out of its range, a bad order
	// section, or bytes after the structure.
	SnapshotRejectMalformed
	// SnapshotRejectChecksum: the content does not match its checksum.
	SnapshotRejectChecksum
	// SnapshotRejectMismatch: a well-formed file of another projection, or
	// with duplicate keys.
	SnapshotRejectMismatch

	numSnapshotRejectReasons = iota
)

// SnapshotRejectReasons lists every SnapshotRejectReason.
var SnapshotRejectReasons = []SnapshotRejectReason{SnapshotRejectIO, SnapshotRejectMagic, SnapshotRejectVersion,
	SnapshotRejectTruncated, SnapshotRejectMalformed, SnapshotRejectChecksum, SnapshotRejectMismatch}

// String returns the reason's metric label: "io", "magic", "version",
// "truncated", "malformed", "checksum" or "mismatch".
func (r SnapshotRejectReason) String() string {
	switch r {
	case SnapshotRejectIO:
		return "io"
	case SnapshotRejectMagic:
		return "magic"
	case SnapshotRejectVersion:
		return "version"
	case SnapshotRejectTruncated:
		return "truncated"
	case SnapshotRejectMalformed:
		return "malformed"
	case SnapshotRejectChecksum:
		return "checksum"
	case SnapshotRejectMismatch:
		return "mismatch"
	}
	return "unknown"
}

// snapshotError is why a snapshot did not decode.
type snapshotError struct {
	reason SnapshotRejectReason
	err    error
}

func (e *snapshotError) Error() string { return fmt.Sprintf("snapshot %s: %v", e.reason, e.err) }
func (e *snapshotError) Unwrap() error { return e.err }

func rejectf(reason SnapshotRejectReason, format string, args ...any) error {
	return &snapshotError{reason: reason, err: fmt.Errorf(format, args...)}
}

// rejectReason returns err's reason (SnapshotRejectIO for an error that is
// not a snapshotError).
func rejectReason(err error) SnapshotRejectReason {
	var se *snapshotError
	if errors.As(err, &se) {
		return se.reason
	}
	return SnapshotRejectIO
}

// snapshotHeader is what a snapshot says about its projection.
type snapshotHeader struct {
	proj        string
	gen         int64
	streamPos   string
	ctrlPos     string
	writtenAt   int64 // unix nanoseconds
	lastContact int64 // unix nanoseconds
}

// parseStreamID splits a stream ID "ms-seq".
func parseStreamID(id string) (ms, seq uint64, err error) {
	a, b, ok := strings.Cut(id, "-")
	if !ok {
		return 0, 0, fmt.Errorf("stream id %q: no '-'", id)
	}
	if ms, err = strconv.ParseUint(a, 10, 64); err != nil {
		return 0, 0, fmt.Errorf("stream id %q: %w", id, err)
	}
	if seq, err = strconv.ParseUint(b, 10, 64); err != nil {
		return 0, 0, fmt.Errorf("stream id %q: %w", id, err)
	}
	return ms, seq, nil
}

func formatStreamID(ms, seq uint64) string {
	return strconv.FormatUint(ms, 10) + "-" + strconv.FormatUint(seq, 10)
}

// snapshotEncoder writes a snapshot, streamed: the header, then entries one
// by one, then the order section and the checksum. Errors stick; finish
// reports the first.
type snapshotEncoder struct {
	dst     io.Writer
	w       *bufio.Writer
	h       *xxhash.Digest
	entries int
	written int64
	err     error
	scratch [binary.MaxVarintLen64]byte
}

func newSnapshotEncoder(dst io.Writer, hdr snapshotHeader, bufSize int) *snapshotEncoder {
	e := &snapshotEncoder{dst: dst, h: xxhash.New()}
	e.w = bufio.NewWriterSize(io.MultiWriter(dst, e.h), bufSize)
	e.writeString(snapshotMagic)
	e.write([]byte{snapshotVersion})
	e.uvarint(uint64(len(hdr.proj)))
	e.writeString(hdr.proj)
	e.uvarint(uint64(hdr.gen))
	for _, id := range []string{hdr.streamPos, hdr.ctrlPos} {
		ms, seq, err := parseStreamID(id)
		if err != nil && e.err == nil {
			e.err = err
		}
		e.uvarint(ms)
		e.uvarint(seq)
	}
	e.fixed64(uint64(hdr.writtenAt))
	e.fixed64(uint64(hdr.lastContact))
	return e
}

func (e *snapshotEncoder) write(b []byte) {
	if e.err != nil {
		return
	}
	n, err := e.w.Write(b)
	e.written += int64(n)
	e.err = err
}

func (e *snapshotEncoder) writeString(s string) {
	if e.err != nil {
		return
	}
	n, err := e.w.WriteString(s)
	e.written += int64(n)
	e.err = err
}

func (e *snapshotEncoder) uvarint(v uint64) {
	e.write(binary.AppendUvarint(e.scratch[:0], v))
}

func (e *snapshotEncoder) fixed64(v uint64) {
	e.write(binary.LittleEndian.AppendUint64(e.scratch[:0], v))
}

// entry appends one entry; key must be 1..MaxKeyLen bytes and version >= 1.
func (e *snapshotEncoder) entry(key string, version int64, value []byte) {
	if e.err == nil && (key == "" || len(key) > MaxKeyLen || version < 1) {
		e.err = fmt.Errorf("snapshot entry %q version %d: out of range", key, version)
	}
	e.uvarint(uint64(len(key)))
	e.writeString(key)
	e.uvarint(uint64(version))
	e.uvarint(uint64(len(value)))
	e.write(value)
	e.entries++
}

// endEntries closes the entries and opens the order section.
func (e *snapshotEncoder) endEntries() {
	e.write([]byte{0})
	e.uvarint(uint64(e.entries))
}

// order appends one record of the order section.
func (e *snapshotEncoder) order(index int, ageMs uint32) {
	e.uvarint(uint64(index))
	e.uvarint(uint64(ageMs))
}

// finish writes the checksum. It returns the first error and the bytes
// written.
func (e *snapshotEncoder) finish() (int64, error) {
	if e.err == nil {
		e.err = e.w.Flush()
	}
	if e.err != nil {
		return e.written, e.err
	}
	n, err := e.dst.Write(binary.LittleEndian.AppendUint64(nil, e.h.Sum64()))
	e.written += int64(n)
	return e.written, err
}

// snapshotVisitor receives what decodeSnapshot reads, as it reads it: the
// file is verified (checksum, structure) only at its end, so what a visitor
// builds must not be used before decodeSnapshot returns nil.
type snapshotVisitor struct {
	// header gets the header, before any entry.
	header func(snapshotHeader) error
	// entry gets each entry; key and value are valid only during the call.
	entry func(key []byte, version int64, value []byte) error
	// order gets each record of the order section.
	order func(index int, ageMs uint32) error
}

// snapReader reads a snapshot body, counting what it consumed.
type snapReader struct {
	br   *bufio.Reader
	n    int64 // bytes consumed
	size int64 // body size
}

func (r *snapReader) remaining() int64 { return r.size - r.n }

func (r *snapReader) truncated(what string) error {
	return rejectf(SnapshotRejectTruncated, "file ends in %s at byte %d", what, r.n)
}

func (r *snapReader) uvarint(what string) (uint64, error) {
	var v uint64
	for i := 0; ; i++ {
		b, err := r.br.ReadByte()
		if err != nil {
			return 0, r.truncated(what)
		}
		r.n++
		if i == binary.MaxVarintLen64-1 && b > 1 {
			return 0, rejectf(SnapshotRejectMalformed, "%s at byte %d: varint overflows 64 bits", what, r.n)
		}
		if i > 0 && b == 0 {
			// Only the shortest form is accepted, so that a file has one
			// encoding (and re-encodes to itself).
			return 0, rejectf(SnapshotRejectMalformed, "%s at byte %d: varint not in its shortest form", what, r.n)
		}
		v |= uint64(b&0x7f) << (7 * i)
		if b < 0x80 {
			return v, nil
		}
	}
}

func (r *snapReader) full(buf []byte, what string) error {
	if int64(len(buf)) > r.remaining() {
		return r.truncated(what)
	}
	n, err := io.ReadFull(r.br, buf)
	r.n += int64(n)
	if err != nil {
		return r.truncated(what)
	}
	return nil
}

// bounded reads a varint that must be within lo..hi.
func (r *snapReader) bounded(what string, lo, hi uint64) (uint64, error) {
	v, err := r.uvarint(what)
	if err != nil {
		return 0, err
	}
	if v < lo || v > hi {
		return 0, rejectf(SnapshotRejectMalformed, "%s %d at byte %d: want %d..%d", what, v, r.n, lo, hi)
	}
	return v, nil
}

// decodeSnapshot reads a snapshot of size bytes from src, calling v as it
// goes, and verifies its structure and checksum. It returns the header and
// the number of entries; every error is a *snapshotError naming a reason.
func decodeSnapshot(src io.ReaderAt, size int64, v snapshotVisitor) (snapshotHeader, int, error) {
	var hdr snapshotHeader
	head := make([]byte, len(snapshotMagic)+1)
	n, _ := src.ReadAt(head[:min(int64(len(head)), max(size, 0))], 0)
	if n < len(snapshotMagic) || string(head[:len(snapshotMagic)]) != snapshotMagic {
		if size < int64(len(snapshotMagic)) && string(head[:n]) == snapshotMagic[:n] {
			return hdr, 0, rejectf(SnapshotRejectTruncated, "%d bytes: shorter than the magic", size)
		}
		return hdr, 0, rejectf(SnapshotRejectMagic, "no %q magic", snapshotMagic)
	}
	if n < len(head) {
		return hdr, 0, rejectf(SnapshotRejectTruncated, "%d bytes: no format version", size)
	}
	if head[len(snapshotMagic)] != snapshotVersion {
		return hdr, 0, rejectf(SnapshotRejectVersion, "format version %d (this library reads %d)", head[len(snapshotMagic)], snapshotVersion)
	}
	if size < int64(len(head))+checksumLen {
		return hdr, 0, rejectf(SnapshotRejectTruncated, "%d bytes: no checksum", size)
	}
	h := xxhash.New()
	body := io.TeeReader(io.NewSectionReader(src, 0, size-checksumLen), h)
	r := &snapReader{br: bufio.NewReaderSize(body, int(min(max(size, 16), 1<<20))), size: size - checksumLen}
	if err := r.full(head, "magic"); err != nil {
		return hdr, 0, err
	}

	nameLen, err := r.bounded("projection name length", 1, MaxProjectionNameLen)
	if err != nil {
		return hdr, 0, err
	}
	name := make([]byte, nameLen)
	if err := r.full(name, "projection name"); err != nil {
		return hdr, 0, err
	}
	hdr.proj = string(name)
	gen, err := r.bounded("generation", 1, math.MaxInt64)
	if err != nil {
		return hdr, 0, err
	}
	hdr.gen = int64(gen)
	var ids [4]uint64
	for i := range ids {
		if ids[i], err = r.uvarint("stream position"); err != nil {
			return hdr, 0, err
		}
	}
	hdr.streamPos, hdr.ctrlPos = formatStreamID(ids[0], ids[1]), formatStreamID(ids[2], ids[3])
	var times [16]byte
	if err := r.full(times[:], "header times"); err != nil {
		return hdr, 0, err
	}
	hdr.writtenAt = int64(binary.LittleEndian.Uint64(times[:8]))
	hdr.lastContact = int64(binary.LittleEndian.Uint64(times[8:]))
	if v.header != nil {
		if err := v.header(hdr); err != nil {
			return hdr, 0, err
		}
	}

	var key, value []byte
	entries := 0
	for {
		kl, err := r.bounded("key length", 0, MaxKeyLen)
		if err != nil {
			return hdr, 0, err
		}
		if kl == 0 {
			break
		}
		key = grow(key, int(kl))
		if err := r.full(key, "key"); err != nil {
			return hdr, 0, err
		}
		version, err := r.bounded("version", 1, math.MaxInt64)
		if err != nil {
			return hdr, 0, err
		}
		vl, err := r.uvarint("value length")
		if err != nil {
			return hdr, 0, err
		}
		if vl > uint64(r.remaining()) {
			return hdr, 0, r.truncated("a value")
		}
		value = grow(value, int(vl))
		if err := r.full(value, "a value"); err != nil {
			return hdr, 0, err
		}
		if v.entry != nil {
			if err := v.entry(key, int64(version), value); err != nil {
				return hdr, 0, err
			}
		}
		entries++
	}

	count, err := r.uvarint("order count")
	if err != nil {
		return hdr, 0, err
	}
	if count != uint64(entries) {
		return hdr, 0, rejectf(SnapshotRejectMalformed, "order section of %d records for %d entries", count, entries)
	}
	seen := make([]uint64, (entries+63)/64)
	for range entries {
		i, err := r.bounded("order index", 0, uint64(entries-1))
		if err != nil {
			return hdr, 0, err
		}
		if seen[i/64]&(1<<(i%64)) != 0 {
			return hdr, 0, rejectf(SnapshotRejectMalformed, "order index %d twice", i)
		}
		seen[i/64] |= 1 << (i % 64)
		age, err := r.bounded("age", 0, math.MaxUint32)
		if err != nil {
			return hdr, 0, err
		}
		if v.order != nil {
			if err := v.order(int(i), uint32(age)); err != nil {
				return hdr, 0, err
			}
		}
	}
	if r.remaining() != 0 {
		return hdr, 0, rejectf(SnapshotRejectMalformed, "%d bytes after the order section", r.remaining())
	}
	var sum [checksumLen]byte
	if _, err := src.ReadAt(sum[:], size-checksumLen); err != nil {
		return hdr, 0, rejectf(SnapshotRejectIO, "read checksum: %w", err)
	}
	if got, want := h.Sum64(), binary.LittleEndian.Uint64(sum[:]); got != want {
		return hdr, 0, rejectf(SnapshotRejectChecksum, "content hashes to %016x, file says %016x", got, want)
	}
	return hdr, entries, nil
}

// grow returns b resized to n bytes, reusing its array when it is large
// enough.
func grow(b []byte, n int) []byte {
	if cap(b) >= n {
		return b[:n]
	}
	return make([]byte, n)
}
