package integration_test

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/distcache/distcache/libs/distcache"
	"github.com/distcache/distcache/tools/devstacktest"
)

// TestWriteTxEqualsWritesInOrder: WriteTx groups a batch's values into
// MSETs between tombstones; the outcome must be that of every change
// applied in order: the last write of a key wins, a tombstone that is last
// expires, one that is overwritten leaves no TTL, and the change stream
// holds every change in order.
func TestWriteTxEqualsWritesInOrder(t *testing.T) {
	t.Parallel()
	r, rdb, pub := standalone(t)
	ctx := ctxT(t)
	set := func(k string, v int64) distcache.Change {
		return distcache.Change{Key: k, Op: distcache.OpSet, Version: v, Value: val(k, v)}
	}
	del := func(k string, v int64) distcache.Change {
		return distcache.Change{Key: k, Op: distcache.OpDelete, Version: v}
	}
	changes := []distcache.Change{
		set("a", 1), set("b", 2), del("a", 3), set("a", 4), set("c", 5), del("c", 6),
		{Key: "", Op: distcache.OpSet, Version: 7, Value: []byte("{}")}, // refused: empty key
		set("b", 8), set("b", 9), del("d", 10),
	}
	// Enough more for several stream entries of 128 changes.
	for i := range 300 {
		changes = append(changes, set("m"+strconv.Itoa(i), int64(11+i)))
	}
	var res []distcache.Result
	_, err := rdb.TxPipelined(ctx, func(pipe redis.Pipeliner) error {
		var err error
		res, err = pub.WriteTx(ctx, pipe, proj, 1, changes)
		return err
	})
	if err != nil {
		t.Fatalf("EXEC: %v", err)
	}
	for i, r := range res {
		if wantErr := changes[i].Key == ""; (r.Err != nil) != wantErr || r.Applied == wantErr {
			t.Fatalf("result %d = %+v; want refused=%v", i, r, wantErr)
		}
	}
	if !errors.Is(res[6].Err, distcache.ErrInvalidKey) {
		t.Fatalf("empty key: %v, want ErrInvalidKey", res[6].Err)
	}

	mustCutover(t, pub, proj, 1)
	c := newClient(t, distcache.WithRedis(redis.NewClient(&redis.Options{Addr: r.Addr})), distcache.WithProjections(proj))
	for k, v := range map[string]int64{"a": 4, "b": 9, "m0": 11, "m299": 310} {
		e, err := c.GetEntry(ctx, proj, k)
		if err != nil || e.Version != v || !bytes.Equal(e.Value, val(k, v)) {
			t.Fatalf("%s = %+v, %v; want version %d", k, e, err, v)
		}
		if ttl := rdb.PTTL(ctx, distcache.ValueKey(proj, 1, k)).Val(); ttl >= 0 {
			t.Fatalf("%s has TTL %v after its tombstone was overwritten; want none", k, ttl)
		}
	}
	for _, k := range []string{"c", "d"} {
		if _, err := c.GetEntry(ctx, proj, k); !errors.Is(err, distcache.ErrNotFound) {
			t.Fatalf("%s after its delete: %v, want ErrNotFound", k, err)
		}
		if ttl := rdb.PTTL(ctx, distcache.ValueKey(proj, 1, k)).Val(); ttl <= 0 {
			t.Fatalf("tombstone %s TTL = %v, want > 0", k, ttl)
		}
	}

	var want, seen []string
	for _, ch := range changes {
		if ch.Key != "" {
			op := 's'
			if ch.Op == distcache.OpDelete {
				op = 'd'
			}
			want = append(want, fmt.Sprintf("%s@%d%c", ch.Key, ch.Version, op))
		}
	}
	msgs, err := rdb.XRange(ctx, distcache.StreamKey(proj, 1), "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range msgs {
		if _, ok := m.Values[""]; !ok || len(m.Values) != 1 {
			t.Fatalf("entry %s has fields %v; want one packed field", m.ID, m.Values)
		}
		err := distcache.EachStreamChange(m.Values, func(key, v string) { // <16 hex digits of version><op><payload>
			ver, err := strconv.ParseUint(v[:min(16, len(v))], 16, 64)
			if err != nil || len(v) < 17 {
				t.Fatalf("stream value %q: %v", v, err)
			}
			seen = append(seen, fmt.Sprintf("%s@%d%c", key, ver, v[16]))
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if len(msgs) != 3 { // 309 changes in entries of up to 128
		t.Fatalf("%d stream entries, want 3", len(msgs))
	}
	if fmt.Sprint(seen) != fmt.Sprint(want) {
		t.Fatalf("change stream = %v, want %v", seen, want)
	}

	// An edge holding "a" gets the next packed batch pushed into its local
	// copy: a new value of "a" and a delete of "b".
	if _, err := rdb.TxPipelined(ctx, func(pipe redis.Pipeliner) error {
		_, err := pub.WriteTx(ctx, pipe, proj, 1, []distcache.Change{set("a", 400), del("b", 401)})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	devstacktest.Eventually(t, wait, func() bool {
		e, err := c.GetEntry(ctx, proj, "a")
		_, berr := c.GetEntry(ctx, proj, "b")
		return err == nil && e.Version == 400 && errors.Is(berr, distcache.ErrNotFound)
	}, "the packed change-stream entry never reached the edge")
	if s := stats(c, proj); s.Updates < 1 {
		t.Fatalf("stats = %+v; want the update applied from the stream", s)
	}
}
