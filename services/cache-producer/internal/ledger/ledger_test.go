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
	for _, k := range []string{OffsetKey("p", 3), IndexKey("p", 3, "s"), IndexBucketKey("p", 3, "s"), IndexFormatKey("p", 3), IndexCountKey("p", 3), DeadLetterKey("p", 3), EpochKey("p", 3)} {
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

// TestEpochKeySharesTheOffsetSlot: on Redis Cluster the epoch must live in the offset's slot (one
// MGET reads both, one script creates both): its hash tag is the offset key's whole name, which
// has no tag of its own.
func TestEpochKeySharesTheOffsetSlot(t *testing.T) {
	t.Parallel()
	off, ep := OffsetKey("users.by-email_1", 12), EpochKey("users.by-email_1", 12)
	if strings.ContainsAny(off, "{}") {
		t.Fatalf("the offset key %q has a hash tag of its own", off)
	}
	if got := hashTag(ep); got != off {
		t.Errorf("hash tag of %q = %q, want the offset key %q", ep, got, off)
	}
	if ep != "dc:users.by-email_1:producer:g12:epoch{dc:users.by-email_1:producer:g12:offset}" {
		t.Errorf("EpochKey = %q", ep)
	}
}

// hashTag is what Redis Cluster hashes of key: the part between the first { and the next }, when
// not empty; else the whole key.
func hashTag(key string) string {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			return key[i+1 : i+1+j]
		}
	}
	return key
}

func TestNewEpoch(t *testing.T) {
	t.Parallel()
	a, b := NewEpoch(), NewEpoch()
	if len(a) != 16 || a == b {
		t.Errorf("NewEpoch = %q, %q; want 16 hex digits, different each time", a, b)
	}
}
