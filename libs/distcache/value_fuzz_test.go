package distcache

import (
	"errors"
	"strconv"
	"strings"
	"testing"
)

// FuzzDecodeValue: a stored value (Redis, or a change-stream entry, both written by other
// processes) is decoded by decodeValue and ParseVersionHex without panicking, and the encoding
// is canonical: whatever decodes re-encodes (AppendVersionHex, op byte, payload) to exactly the
// same string, its version is what strconv reads from the 16 lower-case hex digits, and
// anything else is refused with errBadEncoding. Versions order like their hex forms, the
// property that lets a reader compare versions without decoding them.
func FuzzDecodeValue(f *testing.F) {
	for _, s := range []string{
		versionHex(1) + "s" + `{"id":1}`,
		versionHex(1<<40) + "d",
		versionHex(1<<63-1) + "s",
		"000000000000000As{}",
		"8000000000000000s",
		"00000000000000 1s",
		"0000000000000001x",
		"",
	} {
		f.Add(s, int64(42))
	}
	f.Fuzz(func(t *testing.T, s string, other int64) {
		version, op, payload, err := decodeValue(s)
		ref, refErr := strconv.ParseUint(s[:min(len(s), versionHexLen)], 16, 64)
		lowerHex := len(s) >= versionHexLen && strings.Trim(s[:versionHexLen], "0123456789abcdef") == ""
		wantOK := len(s) >= valueHeaderLen && lowerHex && refErr == nil && ref <= 1<<63-1 && (s[versionHexLen] == opSet || s[versionHexLen] == opDelete)
		if (err == nil) != wantOK {
			t.Fatalf("decodeValue(%q) = %d %q %q %v; want ok=%v", s, version, op, payload, err, wantOK)
		}
		if err != nil {
			if !errors.Is(err, errBadEncoding) {
				t.Fatalf("decodeValue(%q) error %v, want errBadEncoding", s, err)
			}
			return
		}
		if uint64(version) != ref {
			t.Fatalf("decodeValue(%q) version %d, strconv reads %d", s, version, ref)
		}
		if again := string(AppendVersionHex(nil, version)) + string(op) + payload; again != s {
			t.Fatalf("decodeValue(%q) re-encodes as %q", s, again)
		}
		if other < 0 {
			other = -(other + 1)
		}
		o, err := ParseVersionHex(versionHex(other))
		if err != nil || o != other {
			t.Fatalf("ParseVersionHex(versionHex(%d)) = %d, %v", other, o, err)
		}
		if (versionHex(version) < versionHex(other)) != (version < other) {
			t.Fatalf("hex order of %d and %d differs from their order", version, other)
		}
	})
}
