package distcache_test

import (
	"errors"
	"testing"

	"github.com/distcache/distcache/libs/distcache"
)

// FuzzEachStreamChange: a packed entry decodes to the changes packed into
// it, in order; any other bytes give an error or changes, never a panic.
func FuzzEachStreamChange(f *testing.F) {
	f.Add([]byte("k1"), []byte("0000000000000001s{}"), []byte("\x01\x02ab\x01c"))
	f.Fuzz(func(t *testing.T, k, v, junk []byte) {
		packed := append(distcache.PackedForTest(nil, string(k), string(v)), []byte(distcache.PackedForTest(nil, "x", "y")[1:])...)
		var got []string
		if err := distcache.EachStreamChange(map[string]any{"": string(packed)}, func(key, value string) { got = append(got, key, value) }); err != nil {
			t.Fatalf("packed %q: %v", packed, err)
		}
		if len(got) != 4 || got[0] != string(k) || got[1] != string(v) || got[2] != "x" || got[3] != "y" {
			t.Fatalf("packed %q decoded to %q", packed, got)
		}
		_ = distcache.EachStreamChange(map[string]any{"": string(junk)}, func(string, string) {})
	})
}

// TestEachStreamChangeUnknownForm: the reader names the marker it does not know.
func TestEachStreamChangeUnknownForm(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		value  string
		marker int
	}{{"\x02abc", 2}, {"\xff", 0xff}, {"", -1}} {
		err := distcache.EachStreamChange(map[string]any{"": tc.value}, func(string, string) {
			t.Fatalf("a change was read from %q", tc.value)
		})
		var uf *distcache.UnknownEntryForm
		if !errors.Is(err, distcache.ErrUnknownEntryForm) || !errors.As(err, &uf) || uf.Marker != tc.marker {
			t.Fatalf("EachStreamChange(%q) = %v, want ErrUnknownEntryForm with marker %d", tc.value, err, tc.marker)
		}
	}
}
