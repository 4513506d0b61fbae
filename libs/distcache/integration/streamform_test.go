package integration_test

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/distcache/distcache/libs/distcache"
	"github.com/distcache/distcache/tools/devstacktest"
)

// TestUnknownEntryFormRevalidates: a change-stream entry of a form from the future is never
// skipped silently. The client counts it and refetches the keys it holds, so a change that
// entry carried (here written to Redis with no readable stream entry) reaches it all the same;
// later entries of the known forms still apply.
func TestUnknownEntryFormRevalidates(t *testing.T) {
	t.Parallel()
	_, rdb, pub := standalone(t)
	ctx := ctxT(t)
	mustSet(t, pub, proj, 1, keyN(0), 1)
	mustSet(t, pub, proj, 1, keyN(1), 1)
	mustCutover(t, pub, proj, 1)
	c := newClient(t, distcache.WithRedis(rdb), distcache.WithProjections(proj))
	for i := range 2 {
		if _, err := c.Get(ctx, proj, keyN(i)); err != nil {
			t.Fatal(err)
		}
	}
	before := stats(c, proj)

	// A newer writer's change of key 0 at version 5: the value in Redis, and a stream entry
	// whose marker byte (0x7f) this library does not know.
	stored := fmt.Sprintf("%016x", 5) + "s" + string(val(keyN(0), 5))
	if err := rdb.Set(ctx, distcache.ValueKey(proj, 1, keyN(0)), stored, 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.XAdd(ctx, &redis.XAddArgs{Stream: distcache.StreamKey(proj, 1),
		Values: []any{"", "\x7f future form"}}).Err(); err != nil {
		t.Fatal(err)
	}
	devstacktest.Eventually(t, wait, func() bool {
		v, err := c.Get(ctx, proj, keyN(0))
		return err == nil && bytes.Equal(v, val(keyN(0), 5))
	}, "the held key was not refetched after an entry of an unknown form")
	st := stats(c, proj)
	if st.UnknownEntries != 1 {
		t.Fatalf("UnknownEntries = %d, want 1", st.UnknownEntries)
	}
	if st.Rebuilds <= before.Rebuilds {
		t.Fatalf("Rebuilds = %d (before %d), want a revalidation", st.Rebuilds, before.Rebuilds)
	}

	// The tail reads on: a normal change after the unknown entry is applied.
	mustSet(t, pub, proj, 1, keyN(1), 6)
	devstacktest.Eventually(t, wait, func() bool {
		v, err := c.Get(ctx, proj, keyN(1))
		return err == nil && bytes.Equal(v, val(keyN(1), 6))
	}, "a change after the unknown entry was not applied")
}
