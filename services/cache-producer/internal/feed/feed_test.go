package feed_test

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/distcache/distcache/services/cache-producer/internal/feed"
	"github.com/distcache/distcache/services/cache-producer/internal/prodtest"
	"github.com/distcache/distcache/tools/devstacktest"
)

func TestMain(m *testing.M) { devstacktest.Main(m) }

// topicWithTransactions fills a topic with, in this order: 5 upserts
// (offsets 0–4), an aborted transaction of 2 upserts and its marker, a
// committed transaction of 2 upserts and its marker, so the log ends with a
// control record. It returns the topic, the offsets a read-committed reader
// must emit, and the end offset.
func topicWithTransactions(t *testing.T, addr string) (string, []int64, int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	p := prodtest.NewProducer(t, addr, "distcache", "users")
	var recs []*kgo.Record
	for i := range 5 {
		id := strconv.Itoa(i)
		recs = append(recs, p.Upsert(id, map[string]any{"id": id}))
	}
	want := p.Produce(recs...)

	tx, err := kgo.NewClient(kgo.SeedBrokers(addr), kgo.TransactionalID("feed-test-"+p.Topic),
		kgo.RecordPartitioner(kgo.ManualPartitioner()))
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Close()
	for _, commit := range []kgo.TransactionEndTry{kgo.TryAbort, kgo.TryCommit} {
		if err := tx.BeginTransaction(); err != nil {
			t.Fatal(err)
		}
		res := tx.ProduceSync(ctx, p.Upsert("tx", map[string]any{"id": "tx"}), p.Upsert("tx", map[string]any{"id": "tx2"}))
		if err := res.FirstErr(); err != nil {
			t.Fatal(err)
		}
		if err := tx.EndTransaction(ctx, commit); err != nil {
			t.Fatal(err)
		}
		if commit == kgo.TryCommit {
			for _, r := range res {
				want = append(want, r.Record.Offset)
			}
		}
	}
	// The committed transaction's marker is the last offset.
	end := want[len(want)-1] + 2
	devstacktest.Eventually(t, 10*time.Second, func() bool {
		o, err := endOffset(ctx, addr, p.Topic)
		return err == nil && o == end
	}, "the topic ends at %d", end)
	return p.Topic, want, end
}

func endOffset(ctx context.Context, addr, topic string) (int64, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(addr))
	if err != nil {
		return 0, err
	}
	defer cl.Close()
	ends, err := kadm.NewClient(cl).ListEndOffsets(ctx, topic)
	if err != nil {
		return 0, err
	}
	o, ok := ends.Lookup(topic, 0)
	if !ok {
		return 0, errors.New("no partition 0")
	}
	return o.Offset, o.Err
}

// read runs a Reader over cfg until it returns (or, without Until, until
// the position reaches stopAt) and returns the batches it emitted.
func read(t *testing.T, cfg feed.Config, stopAt int64) ([]feed.Batch, error) {
	t.Helper()
	rd, err := feed.NewReader(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var got []feed.Batch
	errStop := errors.New("stop")
	err = rd.Run(ctx, func(b feed.Batch) error {
		got = append(got, b)
		if stopAt > 0 && b.Next >= stopAt {
			return errStop
		}
		return nil
	})
	if errors.Is(err, errStop) {
		err = nil
	}
	return got, err
}

// TestReader reads a topic holding an aborted and a committed transaction:
// only committed records come out, decoded, in offset order, in batches of
// at most MaxRecords, starting at From; the position moves past the
// control records (a marker at the end of the log is not lag); a Reader
// with Until stops there by itself.
func TestReader(t *testing.T) {
	t.Parallel()
	addr := devstacktest.Kafka(t).Addr
	topic, want, end := topicWithTransactions(t, addr)
	opts := []kgo.Opt{kgo.SeedBrokers(addr)}

	for _, tc := range []struct {
		name  string
		from  int64
		until int64
		max   int
	}{
		{"to the end", 0, 0, 0},
		{"until the end", 0, end, 0},
		{"from 3, until 7, by 2", 3, 7, 2},
		{"by 1", 0, end, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			stopAt := tc.until
			if stopAt == 0 {
				stopAt = end
			}
			batches, err := read(t, feed.Config{KafkaOpts: opts, Topic: topic, From: tc.from, Until: tc.until, MaxRecords: tc.max}, stopAt)
			if err != nil {
				t.Fatalf("Run = %v", err)
			}
			var offsets []int64
			last := tc.from
			for _, b := range batches {
				if b.Next <= last {
					t.Errorf("batch position %d does not move past %d", b.Next, last)
				}
				if tc.max > 0 && len(b.Records) > tc.max {
					t.Errorf("batch of %d records, want at most %d", len(b.Records), tc.max)
				}
				wantEnd := end
				if tc.until > 0 {
					wantEnd = tc.until
				}
				if b.End != wantEnd {
					t.Errorf("batch End = %d, want %d", b.End, wantEnd)
				}
				for _, r := range b.Records {
					if r.Offset < last || r.Offset >= b.Next {
						t.Errorf("record at %d in a batch over [%d, %d)", r.Offset, last, b.Next)
					}
					if r.Err != nil || r.Key == "" || r.Topic != topic {
						t.Errorf("record at %d decoded as %+v", r.Offset, r)
					}
					offsets = append(offsets, r.Offset)
				}
				last = b.Next
			}
			if last != stopAt {
				t.Errorf("position after the last batch = %d, want %d", last, stopAt)
			}
			var wantOffsets []int64
			for _, o := range want {
				if o >= tc.from && o < stopAt {
					wantOffsets = append(wantOffsets, o)
				}
			}
			if !slices.Equal(offsets, wantOffsets) {
				t.Errorf("records at %v, want %v", offsets, wantOffsets)
			}
		})
	}
}

// TestReaderStops: Run returns emit's error, and ctx's when it ends.
func TestReaderStops(t *testing.T) {
	t.Parallel()
	addr := devstacktest.Kafka(t).Addr
	p := prodtest.NewProducer(t, addr, "distcache", "users")
	p.Produce(p.Upsert("1", map[string]any{"id": "1"}))
	reader := func() *feed.Reader {
		rd, err := feed.NewReader(feed.Config{KafkaOpts: []kgo.Opt{kgo.SeedBrokers(addr)}, Topic: p.Topic})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(rd.Close)
		return rd
	}
	boom := errors.New("boom")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := reader().Run(ctx, func(feed.Batch) error { return boom }); !errors.Is(err, boom) {
		t.Errorf("Run with a failing emit = %v, want %v", err, boom)
	}
	// The topic's one record is read; then the Reader waits for more until
	// its context ends.
	short, cancelShort := context.WithTimeout(context.Background(), time.Second)
	defer cancelShort()
	n := 0
	if err := reader().Run(short, func(b feed.Batch) error { n += len(b.Records); return nil }); !errors.Is(err, context.DeadlineExceeded) || n != 1 {
		t.Errorf("Run past its context = %v after %d records, want %v after 1", err, n, context.DeadlineExceeded)
	}
	if _, err := feed.NewReader(feed.Config{Topic: ""}); err == nil {
		t.Error("NewReader without a topic succeeded")
	}
}
