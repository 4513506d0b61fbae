package ledger

import (
	"errors"
	"strings"
	"testing"
)

func TestEntryRoundTrip(t *testing.T) {
	t.Parallel()
	for _, e := range []Entry{{Key: "a@x.io", Version: 1}, {Key: "k:{tag}:ü", Version: 1<<62 + 5}, {Key: "0000000000000001s", Version: 42}} {
		got, err := DecodeEntry(e.Encode())
		if err != nil || got != e {
			t.Errorf("DecodeEntry(Encode(%+v)) = %+v, %v", e, got, err)
		}
	}
	// The stored form: 16 lowercase hex digits of the version, then the key.
	if got := (Entry{Key: "a@x", Version: 0x1f2e}).Encode(); got != "0000000000001f2ea@x" {
		t.Errorf("Encode = %q, want 0000000000001f2ea@x", got)
	}
}

func TestDecodeEntryRejects(t *testing.T) {
	t.Parallel()
	for _, s := range []string{"", "0000000000000001", "zz00000000000001key", "8000000000000000key"} {
		if _, err := DecodeEntry(s); !errors.Is(err, ErrCorrupt) {
			t.Errorf("DecodeEntry(%q) err = %v, want ErrCorrupt", s, err)
		}
	}
}

func TestKeysOutsideGenerationPattern(t *testing.T) {
	t.Parallel()
	// dc:P:gN:* is scanned by edges as values; the ledger's keys must never match it.
	for _, k := range []string{OffsetKey("p", 3), IndexKey("p", 3, "s"), IndexBucketKey("p", 3, "s"), IndexFormatKey("p", 3), IndexCountKey("p", 3), DeadLetterKey("p", 3)} {
		if strings.HasPrefix(k, "dc:p:g3:") {
			t.Errorf("%q lies under the generation's value pattern", k)
		}
		if !strings.HasPrefix(k, strings.TrimSuffix(Pattern("p", 3), "*")) {
			t.Errorf("%q is not matched by Pattern", k)
		}
	}
	if strings.HasPrefix(OffsetKey("p", 3), strings.TrimSuffix(Pattern("p", 31), "*")) {
		t.Error("generation 31's pattern matches generation 3's keys")
	}
}

// TestIndexBucketIsStable: the bucket of a source key is part of the stored
// layout; a change would lose every bucketed index already written.
func TestIndexBucketIsStable(t *testing.T) {
	t.Parallel()
	for skey, want := range map[string]int{"": 5, "1": 12, "42": 3, "ada@example.com": 2, "ü": 10} {
		if got := indexBucket(skey); got != want {
			t.Errorf("indexBucket(%q) = %d, want %d", skey, got, want)
		}
	}
	if got := IndexBucketKey("p", 3, "1"); got != "dc:p:producer:g3:ixh:12" {
		t.Errorf("IndexBucketKey = %q", got)
	}
}
