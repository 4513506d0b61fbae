package projector

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/distcache/distcache/libs/distcache"
	"github.com/distcache/distcache/services/cache-producer/internal/feed"
	"github.com/distcache/distcache/services/cache-producer/internal/ledger"
)

// TestWriterNoticesLostBookkeeping: a generation's first commit creates its epoch; once the Writer
// has committed, a batch that finds the offset gone (FLUSHALL, DEL), the epoch gone or another
// one, or the offset below what it committed stops with ErrBookkeepingLost and writes nothing,
// through WriteBatch and through Run (which does not retry it). A Writer that forgot the
// generation takes what it finds.
func TestWriterNoticesLostBookkeeping(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		lose func(ctx context.Context, rdb *redis.Client, tg Target) error
	}{
		{"flushall", func(ctx context.Context, rdb *redis.Client, _ Target) error { return rdb.FlushAll(ctx).Err() }},
		{"offset deleted", func(ctx context.Context, rdb *redis.Client, tg Target) error {
			return rdb.Del(ctx, ledger.OffsetKey(tg.Projection, 1)).Err()
		}},
		{"epoch deleted", func(ctx context.Context, rdb *redis.Client, tg Target) error {
			return rdb.Del(ctx, ledger.EpochKey(tg.Projection, 1)).Err()
		}},
		{"another epoch", func(ctx context.Context, rdb *redis.Client, tg Target) error {
			return rdb.Set(ctx, ledger.EpochKey(tg.Projection, 1), ledger.NewEpoch(), 0).Err()
		}},
		{"offset went back", func(ctx context.Context, rdb *redis.Client, tg Target) error {
			return rdb.Set(ctx, ledger.OffsetKey(tg.Projection, 1), 5, 0).Err()
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			w, rdb, _ := txWriter(t)
			tg := txTarget(t, "lost_users")
			ctx := context.Background()
			if _, err := w.WriteBatch(ctx, tg, upserts(0, 10), 10); err != nil {
				t.Fatal(err)
			}
			pos, err := w.Ledger().Position(ctx, tg.Projection, 1)
			m, ok := w.Mark(tg)
			if err != nil || pos.Epoch == "" || !ok || m != (Mark{Epoch: pos.Epoch, Offset: 10}) {
				t.Fatalf("after the first commit: position %+v (%v), mark %+v (%v); want an epoch, marked at offset 10", pos, err, m, ok)
			}
			if err := tc.lose(ctx, rdb, tg); err != nil {
				t.Fatal(err)
			}
			if _, err := w.WriteBatch(ctx, tg, upserts(10, 10), 20); !errors.Is(err, ErrBookkeepingLost) {
				t.Fatalf("WriteBatch after the loss = %v, want ErrBookkeepingLost", err)
			}
			in := make(chan feed.Batch, 1)
			in <- feed.Batch{From: 10, Records: upserts(10, 10), Next: 20}
			close(in)
			rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			defer cancel()
			if err := w.Run(rctx, tg, in, nil, nil); !errors.Is(err, ErrBookkeepingLost) {
				t.Fatalf("Run after the loss = %v, want ErrBookkeepingLost", err)
			}
			if n := rdb.Exists(ctx, distcache.ValueKey(tg.Projection, 1, "u15@example.com")).Val(); n != 0 {
				t.Error("a batch was written after the loss")
			}

			// A Writer without a Mark takes what is there.
			w.Forget(tg)
			if _, err := w.WriteBatch(ctx, tg, upserts(20, 1), 21); err != nil {
				t.Fatalf("WriteBatch without a Mark = %v", err)
			}
			if pos, _ := w.Ledger().Position(ctx, tg.Projection, 1); pos.Epoch == "" || pos.Offset != 21 {
				t.Errorf("position after a Writer without a Mark wrote = %+v, want an epoch and offset 21", pos)
			}
		})
	}
}

func TestMarkDiffers(t *testing.T) {
	t.Parallel()
	m := Mark{Epoch: "e", Offset: 10}
	for _, tc := range []struct {
		known  bool
		offset int64
		epoch  string
		want   bool
	}{
		{true, 10, "e", false}, {true, 11, "e", false}, {false, 0, "", true}, {false, 0, "e", true},
		{true, 10, "", true}, {true, 10, "f", true}, {true, 9, "e", true},
	} {
		if got := m.Differs(tc.known, tc.offset, tc.epoch) != ""; got != tc.want {
			t.Errorf("Differs(%v, %d, %q) = %v, want %v", tc.known, tc.offset, tc.epoch, got, tc.want)
		}
	}
}
