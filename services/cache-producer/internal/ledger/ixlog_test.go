package ledger

import (
	"errors"
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"
)

func TestLogEntryRoundTrip(t *testing.T) {
	t.Parallel()
	set := []SourceEntry{{Source: "1", Entry: Entry{Key: "a@x.io", Version: 1}}, {Source: "ü{tag}", Entry: Entry{Key: "k:" + string(make([]byte, 300)), Version: 1<<62 - 1}}}
	del := []string{"2", "", "long" + string(make([]byte, 200))}
	b := AppendLogEntry(nil, 12345, set, del)
	var gotSet []SourceEntry
	var gotDel []string
	tag, err := DecodeLogEntry(b, func(se SourceEntry) { gotSet = append(gotSet, se) }, func(s string) { gotDel = append(gotDel, s) })
	if err != nil || tag != 12345 || !slices.Equal(gotSet, set) || !slices.Equal(gotDel, del) {
		t.Fatalf("DecodeLogEntry = %d, %+v, %q, %v", tag, gotSet, gotDel, err)
	}
	var snap []SourceEntry
	if err := DecodeSnapshotChunk(AppendSnapshotChunk(nil, set), func(se SourceEntry) { snap = append(snap, se) }); err != nil || !slices.Equal(snap, set) {
		t.Fatalf("DecodeSnapshotChunk = %+v, %v", snap, err)
	}
	// Every truncation, and a byte too many, is refused (never a panic).
	for n := range len(b) {
		if _, err := DecodeLogEntry(b[:n], func(SourceEntry) {}, func(string) {}); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("DecodeLogEntry of %d of %d bytes: err = %v, want ErrCorrupt", n, len(b), err)
		}
	}
	if _, err := DecodeLogEntry(append(b, 0), func(SourceEntry) {}, func(string) {}); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("DecodeLogEntry with a trailing byte: err = %v", err)
	}
	// A snapshot chunk is not a log entry, and an entry without a key is refused.
	if _, err := DecodeLogEntry(AppendSnapshotChunk(nil, set), func(SourceEntry) {}, func(string) {}); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("a snapshot chunk decoded as a log entry: %v", err)
	}
	if _, err := DecodeLogEntry(AppendLogEntry(nil, 1, []SourceEntry{{Source: "s"}}, nil), func(SourceEntry) {}, func(string) {}); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("an entry without a projected key: %v", err)
	}
}

// FuzzDecodeLogEntry: arbitrary bytes are decoded or refused with ErrCorrupt, never a
// panic, and what decodes survives encoding again.
func FuzzDecodeLogEntry(f *testing.F) {
	f.Add(AppendLogEntry(nil, 7, []SourceEntry{{Source: "1", Entry: Entry{Key: "k", Version: 8}}}, []string{"2"}))
	f.Add([]byte{'L', 1, 0, 0, 0})
	f.Add([]byte{'L', 1, 0, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Add([]byte{'L', 1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		var set []SourceEntry
		var del []string
		tag, err := DecodeLogEntry(b, func(se SourceEntry) { set = append(set, se) }, func(s string) { del = append(del, s) })
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("err = %v, want ErrCorrupt", err)
			}
			return
		}
		// What decodes encodes to bytes that decode to the same (bytes may differ: a
		// varint need not be minimal).
		var set2 []SourceEntry
		var del2 []string
		tag2, err := DecodeLogEntry(AppendLogEntry(nil, tag, set, del), func(se SourceEntry) { set2 = append(set2, se) }, func(s string) { del2 = append(del2, s) })
		if err != nil || tag2 != tag || !slices.Equal(set, set2) || !slices.Equal(del, del2) {
			t.Fatalf("re-encoding %x: %d %v %q, %v", b, tag2, set2, del2, err)
		}
	})
}

// TestFormatOf: the layout a generation's offset and mark select.
func TestFormatOf(t *testing.T) {
	t.Parallel()
	single, cluster := &Ledger{}, &Ledger{cluster: true}
	for _, tc := range []struct {
		l     *Ledger
		known bool
		mark  string
		want  Format
	}{
		{single, false, "", FormatLog},
		{single, true, "", FormatPerKey},
		{single, true, "hash16", FormatBucketed},
		{single, false, "hash16", FormatBucketed},
		{single, true, "log1", FormatLog},
		{cluster, false, "", FormatPerKey},
		{cluster, true, "log1", FormatPerKey},
	} {
		if got := tc.l.FormatOf(tc.known, tc.mark); got != tc.want {
			t.Errorf("FormatOf(cluster %v, known %v, %q) = %v, want %v", tc.l.cluster, tc.known, tc.mark, got, tc.want)
		}
	}
	if m := FormatMark(FormatLog); m != "log1" || FormatMark(FormatBucketed) != "hash16" || FormatMark(FormatPerKey) != "" {
		t.Errorf("FormatMark: log %q", m)
	}
	// Every key of the log layout is in the offset's slot and under the generation's pattern.
	for _, k := range []string{IndexLogKey("p", 3), IndexSnapshotKey("p", 3), IndexSnapshotListKey("p", 3, "ab")} {
		if want := "{" + OffsetKey("p", 3) + "}"; k[len(k)-len(want):] != want || k[:len("dc:p:producer:g3:")] != "dc:p:producer:g3:" {
			t.Errorf("key %q: not tagged with the offset key or not under the generation's prefix", k)
		}
	}
}

// TestSnapshotChunksRandom: random indexes survive AppendSnapshotChunk/Decode.
func TestSnapshotChunksRandom(t *testing.T) {
	t.Parallel()
	r := rand.New(rand.NewPCG(1, 2))
	for range 50 {
		n := r.IntN(300)
		es := make([]SourceEntry, n)
		for i := range es {
			es[i] = SourceEntry{Source: strconv.Itoa(r.IntN(1 << 30)), Entry: Entry{Key: "k" + strconv.Itoa(i), Version: r.Int64N(1 << 50)}}
		}
		var got []SourceEntry
		if err := DecodeSnapshotChunk(AppendSnapshotChunk(nil, es), func(se SourceEntry) { got = append(got, se) }); err != nil || !slices.Equal(got, es) {
			t.Fatalf("round trip of %d entries: %v", n, err)
		}
	}
}
