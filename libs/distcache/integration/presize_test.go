package integration_test

import (
	"bytes"
	"strings"
	"testing"

	"github.com/distcache/distcache/libs/distcache"
	"github.com/distcache/distcache/tools/devstacktest"
)

// TestLocalPresize: a client that starts on a projection of n keys (half of
// the database's) reserves its local store for them from a sample of Redis
// (Stats.Capacity), so that
// reading every key grows it little; WithLocalPresize bounds or disables
// the reservation; a cutover sizes the new generation's store from what the
// old one held; and a Redis user who may not run the sample's commands
// still gets a working client, with a small store.
func TestLocalPresize(t *testing.T) {
	t.Parallel()
	// The ACL user may not run the sample's commands.
	r, admin := edgeUserRedis(t, "-dbsize", "-randomkey")
	ctx := ctxT(t)
	pub := newPublisher(t, admin)
	const n = 20_000
	value := bytes.Repeat([]byte("v"), 200)
	changes := make([]distcache.Change, 0, 1000)
	// Another projection as large shares the database: the sample finds
	// about half its keys in the followed generation.
	for _, pr := range []string{proj, "other"} {
		for i := range n {
			changes = append(changes, distcache.Change{Key: keyN(i), Value: value, Version: 1})
			if len(changes) == cap(changes) {
				if _, err := pub.Apply(ctx, pr, 1, changes); err != nil {
					t.Fatal(err)
				}
				changes = changes[:0]
			}
		}
		mustCutover(t, pub, pr, 1)
	}
	held := int64(n * (len(keyN(n/2)) + 9 + len(value))) // keys, entry headers, values: Stats.Bytes once all are read

	c := newClient(t, distcache.WithRedis(admin), distcache.WithProjections(proj))
	start := stats(c, proj).Capacity
	t.Logf("reserved at the start: %d bytes, %.2f× the %d bytes held once every key is read", start, float64(start)/float64(held), held)
	if start < held || start > 2*held {
		t.Fatalf("a client starting on %d keys (%d bytes held once read) reserved %d bytes", n, held, start)
	}
	for i := range n {
		if v, err := c.Get(ctx, proj, keyN(i)); err != nil || !bytes.Equal(v, value) {
			t.Fatalf("Get(%s) = %q, %v", keyN(i), v, err)
		}
	}
	s := stats(c, proj)
	if s.Bytes < held*9/10 || s.Capacity > start+start/4 {
		t.Fatalf("after reading every key: %d bytes held, capacity %d (reserved %d at the start)", s.Bytes, s.Capacity, start)
	}

	// A cutover to a generation of the same keys: the new store is made for
	// what the old one held.
	for lo := 0; lo < n; lo += 1000 {
		changes = changes[:0]
		for i := lo; i < lo+1000; i++ {
			changes = append(changes, distcache.Change{Key: keyN(i), Value: value, Version: 2})
		}
		if _, err := pub.Apply(ctx, proj, 2, changes); err != nil {
			t.Fatal(err)
		}
	}
	mustCutover(t, pub, proj, 2)
	devstacktest.Eventually(t, wait, func() bool { return stats(c, proj).Generation == 2 }, "no cutover: %+v", stats(c, proj))
	if s := stats(c, proj); s.Items != n || s.Capacity < s.Bytes || s.Capacity > s.Bytes*3/2 {
		t.Fatalf("after the cutover: %d items, %d bytes held, capacity %d", s.Items, s.Bytes, s.Capacity)
	}

	bounded := newClient(t, distcache.WithRedis(admin), distcache.WithProjections(proj), distcache.WithLocalPresize(1<<20))
	if got := stats(bounded, proj).Capacity; got > (1<<20)*5/4 || got < 1<<19 {
		t.Fatalf("WithLocalPresize(1 MiB): capacity %d", got)
	}
	off := newClient(t, distcache.WithRedis(admin), distcache.WithProjections(proj), distcache.WithLocalPresize(0))
	small := stats(off, proj).Capacity
	if small <= 0 || small > held/8 {
		t.Fatalf("WithLocalPresize(0): capacity %d (held %d)", small, held)
	}

	// A user who may not run DBSIZE or RANDOMKEY: the start does not fail
	// and the store starts small.
	limited := newClient(t, distcache.WithAddrs(r.Addr), distcache.WithAuth("edge", "edgepw"), distcache.WithProjections(proj))
	if got := stats(limited, proj).Capacity; got != small {
		t.Fatalf("a user without DBSIZE and RANDOMKEY: capacity %d, want the unsized %d", got, small)
	}
	if v, err := limited.Get(ctx, proj, keyN(7)); err != nil || !bytes.Equal(v, value) {
		t.Fatalf("Get as the limited user = %q, %v", v, err)
	}
}

// TestNewRejectsNegativePresize: a negative bound is refused by name.
func TestNewRejectsNegativePresize(t *testing.T) {
	t.Parallel()
	_, rdb, _ := standalone(t)
	_, err := distcache.New(ctxT(t), distcache.WithRedis(rdb), distcache.WithProjections(proj), distcache.WithLocalPresize(-1))
	if err == nil || !strings.Contains(err.Error(), "WithLocalPresize(-1)") {
		t.Fatalf("New with WithLocalPresize(-1): %v", err)
	}
}
