package integration_test

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/distcache/distcache/libs/distcache"
	"github.com/distcache/distcache/tools/devstacktest"
)

// commandStats returns the calls of every command a Redis server has executed, by name as INFO
// commandstats spells it ("get", "client|list").
func commandStats(t *testing.T, ctx context.Context, rdb *redis.Client) map[string]int64 {
	t.Helper()
	info, err := rdb.Info(ctx, "commandstats").Result()
	if err != nil {
		t.Fatalf("INFO commandstats: %v", err)
	}
	out := map[string]int64{}
	for line := range strings.Lines(info) {
		name, rest, ok := strings.Cut(strings.TrimSpace(line), ":calls=")
		if !ok {
			continue
		}
		n, err := strconv.ParseInt(rest[:strings.IndexByte(rest, ',')], 10, 64)
		if err != nil {
			t.Fatalf("commandstats %q: %v", line, err)
		}
		out[strings.TrimPrefix(name, "cmdstat_")] = n
	}
	return out
}

// commandsSince returns the commands a server executed since before (see commandStats), leaving
// out the ones this test sends itself to look (INFO, CLIENT LIST) and those named in skip.
func commandsSince(t *testing.T, ctx context.Context, rdb *redis.Client, before map[string]int64, skip ...string) map[string]int64 {
	t.Helper()
	d := map[string]int64{}
	for name, n := range commandStats(t, ctx, rdb) {
		if name == "info" || name == "client|list" || slices.Contains(skip, name) || n == before[name] {
			continue
		}
		d[name] = n - before[name]
	}
	return d
}

func fmtCommands(m map[string]int64) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s=%d", k, m[k]))
	}
	return "{" + strings.Join(parts, " ") + "}"
}

// TestMissIsOneCommandOnOneReplica counts, with Redis's own INFO commandstats on the primary and on
// the replica, what misses of a held projection cost an edge built with WithAddrs(primary,
// replica): each miss of Get (and GetEntry, GetAppend) is exactly one GET executed by the replica,
// and nothing on the primary; a GetMany of 50 misses is one MGET there. Any second command (a
// pointer read, a retry on the other node, a PING) fails it. The tail is parked first (blocked in
// its XREAD on the replica, with a 3 s block, and the primary's replication PINGs off) so that
// little else runs meanwhile: should its block end during a count, the XREAD and EXISTS it then
// sends the replica are the only commands left out. A connection's handshake is paid by a miss
// before the counts (it is per connection, not per miss).
func TestMissIsOneCommandOnOneReplica(t *testing.T) {
	t.Parallel()
	primary, replica := devstacktest.RedisReplicated(t)
	prdb, rrdb := primary.Client(), replica.Client()
	t.Cleanup(func() { _ = prdb.Close(); _ = rrdb.Close() })
	ctx := ctxT(t)
	if err := prdb.ConfigSet(ctx, "repl-ping-replica-period", "3600").Err(); err != nil {
		t.Fatal(err)
	}
	pub := newPublisher(t, prdb)
	const keys = 400
	seed := make([]distcache.Change, keys)
	for i := range seed {
		seed[i] = distcache.Change{Key: keyN(i), Value: val(keyN(i), 1), Version: 1}
	}
	if _, err := pub.Apply(ctx, proj, 1, seed); err != nil {
		t.Fatal(err)
	}
	mustCutover(t, pub, proj, 1)
	if n, err := prdb.Wait(ctx, 1, wait).Result(); err != nil || n != 1 {
		t.Fatalf("WAIT for the replica: %d, %v", n, err)
	}

	c := newClient(t, distcache.WithAddrs(primary.Addr, replica.Addr), distcache.WithProjections(proj),
		distcache.WithTailBlock(3*time.Second))
	devstacktest.Eventually(t, wait, func() bool {
		return stats(c, proj).TailFromReplica && blockedXRead(ctx, rrdb)
	}, "the tail did not block on the replica")
	if _, err := c.Get(ctx, proj, keyN(0)); err != nil { // dials the misses' connection
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name string
		read func(key string) error
	}{
		{"Get", func(k string) error { _, err := c.Get(ctx, proj, k); return err }},
		{"GetEntry", func(k string) error { _, err := c.GetEntry(ctx, proj, k); return err }},
		{"GetAppend", func(k string) error { _, err := c.GetAppend(ctx, proj, k, nil); return err }},
	} {
		pBefore, rBefore := commandStats(t, ctx, prdb), commandStats(t, ctx, rrdb)
		const misses = 100
		for i := range misses {
			if err := tc.read(keyN(missKey(tc.name, i))); err != nil {
				t.Fatalf("%s: %v", tc.name, err)
			}
		}
		onPrimary, onReplica := commandsSince(t, ctx, prdb, pBefore), commandsSince(t, ctx, rrdb, rBefore, tailCommands...)
		if len(onPrimary) != 0 {
			t.Errorf("%s: %d misses executed %s on the primary; want nothing", tc.name, misses, fmtCommands(onPrimary))
		}
		if want := map[string]int64{"get": misses}; !maps.Equal(onReplica, want) {
			t.Errorf("%s: %d misses executed %s on the replica; want %s (one GET per miss)", tc.name, misses,
				fmtCommands(onReplica), fmtCommands(want))
		}
		if got := stats(c, proj).TailFromReplica; !got {
			t.Fatalf("%s: the tail left the replica", tc.name)
		}
	}

	pBefore, rBefore := commandStats(t, ctx, prdb), commandStats(t, ctx, rrdb)
	batch := make([]string, 50)
	for i := range batch {
		batch[i] = keyN(350 + i)
	}
	es, err := c.GetMany(ctx, proj, batch)
	if err != nil {
		t.Fatal(err)
	}
	for i, e := range es {
		if !e.Found || e.Version != 1 {
			t.Fatalf("GetMany %s: %+v", batch[i], e)
		}
	}
	onPrimary, onReplica := commandsSince(t, ctx, prdb, pBefore), commandsSince(t, ctx, rrdb, rBefore, tailCommands...)
	if len(onPrimary) != 0 {
		t.Errorf("GetMany of %d misses executed %s on the primary; want nothing", len(batch), fmtCommands(onPrimary))
	}
	if want := map[string]int64{"mget": 1}; !maps.Equal(onReplica, want) {
		t.Errorf("GetMany of %d misses executed %s on the replica; want %s", len(batch), fmtCommands(onReplica), fmtCommands(want))
	}
}

// tailCommands are what a parked tail sends its node when its block ends.
var tailCommands = []string{"xread", "exists"}

// missKey spreads the cases of TestMissIsOneCommandOnOneReplica over distinct keys (1..300).
func missKey(name string, i int) int {
	switch name {
	case "GetEntry":
		return 101 + i
	case "GetAppend":
		return 201 + i
	}
	return 1 + i
}
