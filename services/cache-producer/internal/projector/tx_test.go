package projector

import (
	"context"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/distcache/distcache/libs/distcache"
	"github.com/distcache/distcache/libs/projection"
	"github.com/distcache/distcache/services/cache-producer/internal/feed"
	"github.com/distcache/distcache/services/cache-producer/internal/ledger"
	"github.com/distcache/distcache/tools/devstacktest"
)

func TestMain(m *testing.M) { devstacktest.Main(m) }

// roundTrips counts what a client sends: each command or pipeline is one
// round trip (the connection handshake, HELLO and CLIENT, aside).
type roundTrips struct{ n atomic.Int64 }

func handshake(name string) bool { return name == "hello" || name == "client" }

func (h *roundTrips) DialHook(next redis.DialHook) redis.DialHook { return next }
func (h *roundTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if !handshake(cmd.Name()) {
			h.n.Add(1)
		}
		return next(ctx, cmd)
	}
}
func (h *roundTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if !handshake(cmds[0].Name()) {
			h.n.Add(1)
		}
		return next(ctx, cmds)
	}
}

func txTarget(t *testing.T, name string) Target {
	t.Helper()
	c, err := projection.Compile(projection.Definition{Name: name, Model: "users", KeyTemplate: "{email}", Fields: []string{"id", "email"}})
	if err != nil {
		t.Fatal(err)
	}
	return Target{Projection: name, Generation: 1, Compiled: c}
}

func upserts(from, n int) []feed.Record {
	recs := make([]feed.Record, n)
	for i := range recs {
		id := strconv.Itoa(from + i)
		recs[i] = feed.Record{Offset: int64(from + i), Topic: "t", Key: id,
			Payload: projection.Members{{Name: "id", Value: projection.Value{Kind: projection.KindNumber, Text: id}},
				{Name: "email", Value: projection.Value{Kind: projection.KindString, Text: "u" + id + "@example.com"}}}}
	}
	return recs
}

func txWriter(t *testing.T) (*Writer, *redis.Client, *roundTrips) {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: devstacktest.Redis(t).Addr})
	t.Cleanup(func() { _ = rdb.Close() })
	h := &roundTrips{}
	rdb.AddHook(h)
	pub, err := distcache.NewPublisher(rdb)
	if err != nil {
		t.Fatal(err)
	}
	return NewWriter(pub, ledger.New(rdb, 0)), rdb, h
}

// TestRunTxOneRoundTripPerBatch: once the first batch has set up the watch,
// each batch of a Run is one round trip to Redis (the transaction carries
// the next batch's WATCH), and every batch lands.
func TestRunTxOneRoundTripPerBatch(t *testing.T) {
	t.Parallel()
	w, rdb, h := txWriter(t)
	tg := txTarget(t, "rt_users")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const batches, size = 20, 50
	in := make(chan feed.Batch, batches)
	for b := range batches {
		in <- feed.Batch{Records: upserts(b*size, size), Next: int64((b + 1) * size)}
	}
	close(in)
	var done int
	before := h.n.Load()
	if err := w.Run(ctx, tg, in, func(err error) { t.Errorf("retry: %v", err) }, func(int64, Stats, time.Duration) { done++ }); err != nil {
		t.Fatal(err)
	}
	trips := h.n.Load() - before
	if done != batches || trips > batches+1 {
		t.Fatalf("%d batches committed in %d round trips; want %d in at most %d", done, trips, batches, batches+1)
	}
	off, ok, err := w.Ledger().Offset(ctx, tg.Projection, 1)
	if err != nil || !ok || off != batches*size {
		t.Fatalf("offset = %d, %v, %v; want %d", off, ok, err, batches*size)
	}
	if n := rdb.Exists(ctx, distcache.ValueKey(tg.Projection, 1, "u999@example.com")).Val(); n != 1 {
		t.Fatal("the last batch's last value is missing")
	}
}

// TestTxErrorsSurface: a command that fails inside EXEC (the change stream
// key holds a string) fails the batch with Redis's error and the connection
// keeps working once the cause is gone; another writer moving the offset
// between batches makes the next one start over from what is stored.
func TestTxErrorsSurface(t *testing.T) {
	t.Parallel()
	w, rdb, _ := txWriter(t)
	tg := txTarget(t, "err_users")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tc := w.newTxConn()
	defer tc.close()

	if _, _, err := w.writeTx(ctx, tc, tg, projectAll(tg, upserts(0, 10)), -1, 10, 0); err != nil {
		t.Fatal(err)
	}
	stream := distcache.StreamKey(tg.Projection, 1)
	saved := rdb.Dump(ctx, stream).Val()
	rdb.Del(ctx, stream)
	rdb.Set(ctx, stream, "not a stream", 0)
	_, _, err := w.writeTx(ctx, tc, tg, projectAll(tg, upserts(10, 10)), -1, 20, 0)
	if err == nil || !strings.Contains(err.Error(), "WRONGTYPE") {
		t.Fatalf("batch over a broken change stream: %v; want a WRONGTYPE error", err)
	}
	rdb.Del(ctx, stream)
	if err := rdb.Restore(ctx, stream, 0, saved).Err(); err != nil {
		t.Fatal(err)
	}

	// Another writer commits offset 20 (as if it wrote records 10..19).
	rdb.Set(ctx, ledger.OffsetKey(tg.Projection, 1), "20", 0)
	st, stored, err := w.writeTx(ctx, tc, tg, projectAll(tg, upserts(10, 20)), -1, 30, 0)
	if err != nil || stored != 30 || st.Skipped != 10 || st.Sets != 10 {
		t.Fatalf("after another writer: stats %+v, stored %d, %v; want 10 skipped, 10 set, stored 30", st, stored, err)
	}
}

// TestMultiExecRefusesCommandsItCannotRead: a command whose reply reader
// refuses "+QUEUED" is refused before anything is sent.
func TestMultiExecRefusesCommandsItCannotRead(t *testing.T) {
	t.Parallel()
	w, rdb, _ := txWriter(t)
	ctx := context.Background()
	tc := w.newTxConn()
	defer tc.close()
	tc.conn = tc.rdb.Conn()
	_, err := tc.multiExec(ctx, Target{Projection: "mx", Generation: 1}, func(pipe redis.Pipeliner) error {
		pipe.Set(ctx, "mx", "1", 0)
		pipe.Incr(ctx, "mx")
		return nil
	})
	if err == nil || !strings.Contains(err.Error(), "incr") {
		t.Fatalf("multiExec with INCR = %v; want it refused by name", err)
	}
	if n := rdb.Exists(ctx, "mx").Val(); n != 0 {
		t.Fatal("a refused transaction was sent")
	}
	cmds, err := tc.multiExec(ctx, Target{Projection: "mx", Generation: 1}, func(pipe redis.Pipeliner) error {
		pipe.Set(ctx, "mx", "1", 0)
		pipe.Do(ctx, "incr", "mx")
		return nil
	})
	if err != nil || len(cmds) != 2 || cmds[1].(*redis.Cmd).Err() != nil || rdb.Get(ctx, "mx").Val() != "2" {
		t.Fatalf("multiExec = %v, %v; want SET and INCR applied", cmds, err)
	}
}

// TestIndexLayouts: a generation InitOffset creates keeps its index in the
// log layout (snapshot + log); one created by the first commit gets the log
// layout and its mark in that commit; one marked "hash16" (created by a
// producer before the log layout) keeps its index in bucket hashes; one whose
// offset exists without the mark (from a producer before the bucketed layout)
// keeps per-key entries. In each, a writer that did not write the index (a
// restart or takeover; for the older layouts one without an index cache, so
// it reads every entry from Redis) finds the entry a re-key needs, the old
// projected key is deleted, and Forget removes every index key.
func TestIndexLayouts(t *testing.T) {
	t.Parallel()
	w, rdb, _ := txWriter(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, tc := range []struct {
		name   string
		create func(tg Target)
		format ledger.Format
	}{
		{"init", func(tg Target) {
			if _, err := w.Ledger().InitOffset(ctx, tg.Projection, 1, 0); err != nil {
				t.Fatal(err)
			}
		}, ledger.FormatLog},
		{"first_commit", func(Target) {}, ledger.FormatLog},
		{"hash16", func(tg Target) {
			rdb.Set(ctx, ledger.OffsetKey(tg.Projection, 1), "0", 0)
			rdb.Set(ctx, ledger.IndexFormatKey(tg.Projection, 1), "hash16", 0)
			rdb.Set(ctx, ledger.IndexCountKey(tg.Projection, 1), "0", 0)
		}, ledger.FormatBucketed},
		{"legacy", func(tg Target) { rdb.Set(ctx, ledger.OffsetKey(tg.Projection, 1), "0", 0) }, ledger.FormatPerKey},
	} {
		tg := txTarget(t, "layout_"+tc.name)
		tc.create(tg)
		if _, err := w.WriteBatch(ctx, tg, upserts(0, 50), 50); err != nil {
			t.Fatal(err)
		}
		// Source key "3" moves to a new e-mail, written by another Writer.
		cold := NewWriter(w.pub, w.ledger)
		if tc.format != ledger.FormatLog {
			cold = NewWriter(w.pub, w.ledger, WithIndexCache(0)) // reads every entry from Redis
		}
		moved := upserts(3, 1)
		moved[0].Offset = 50
		moved[0].Payload[1].Text = "moved3@example.com"
		if _, err := cold.WriteBatch(ctx, tg, moved, 51); err != nil {
			t.Fatal(err)
		}
		vk := func(k string) string { return distcache.ValueKey(tg.Projection, 1, k) }
		was, now := rdb.Get(ctx, vk("u3@example.com")).Val(), rdb.Get(ctx, vk("moved3@example.com")).Val()
		if len(was) < 17 || was[16] != 'd' || len(now) < 17 || now[16] != 's' { // <version><op>: a tombstone, a value
			t.Fatalf("%s: the re-key did not move u3's value", tc.name)
		}
		inBucket := rdb.HExists(ctx, ledger.IndexBucketKey(tg.Projection, 1, "3"), "3").Val()
		perKey := rdb.Exists(ctx, ledger.IndexKey(tg.Projection, 1, "3")).Val() == 1
		logged := rdb.Exists(ctx, ledger.IndexLogKey(tg.Projection, 1)).Val() == 1
		mark := rdb.Get(ctx, ledger.IndexFormatKey(tg.Projection, 1)).Val()
		if inBucket != (tc.format == ledger.FormatBucketed) || perKey != (tc.format == ledger.FormatPerKey) ||
			logged != (tc.format == ledger.FormatLog) || mark != ledger.FormatMark(tc.format) {
			t.Fatalf("%s: entry in bucket %v, per key %v, log %v, mark %q; want layout %v", tc.name, inBucket, perKey, logged, mark, tc.format)
		}
		if f, err := w.ledger.IndexFormat(ctx, tg.Projection, 1); err != nil || f != tc.format {
			t.Fatalf("%s: IndexFormat = %v, %v", tc.name, f, err)
		}
		var e []ledger.Entry
		var err error
		if tc.format == ledger.FormatLog {
			li, lerr := w.ledger.LoadLogIndex(ctx, rdb, tg.Projection, 1, 0)
			e, err = []ledger.Entry{li.Entries["3"], li.Entries["4"], li.Entries["nope"]}, lerr
		} else {
			e, err = cold.ledger.IndexOn(ctx, rdb, tg.Projection, 1, tc.format == ledger.FormatBucketed, []string{"3", "4", "nope"})
		}
		if err != nil || e[0].Key != "moved3@example.com" || e[0].Version != 51 || e[1].Key != "u4@example.com" || e[2] != (ledger.Entry{}) {
			t.Fatalf("%s: index = %+v, %v", tc.name, e, err)
		}
		if n, err := w.Ledger().Forget(ctx, tg.Projection, 1); err != nil || n == 0 {
			t.Fatalf("%s: Forget = %d, %v", tc.name, n, err)
		}
		if left := rdb.Keys(ctx, ledger.Pattern(tg.Projection, 1)).Val(); len(left) != 0 {
			t.Fatalf("%s: keys left after Forget: %q", tc.name, left)
		}
	}
}
