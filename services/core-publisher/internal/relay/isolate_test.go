package relay

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/distcache/distcache/services/core-publisher/internal/producer"
	"github.com/jackc/pgx/v5"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// batchBlamingProducer stands in for a broker that refuses whole record
// batches: a call holding a "bad" record fails, blaming the call's record
// at blame (the broker refused the batch, not the record). Successful calls
// are the committed transactions.
type batchBlamingProducer struct {
	blame     int
	committed [][]string
	fail      error // returned by every call when set
}

func (p *batchBlamingProducer) EnsureTopic(context.Context, string) error { return nil }
func (p *batchBlamingProducer) Close()                                    {}

func (p *batchBlamingProducer) Produce(_ context.Context, recs []*kgo.Record) error {
	if p.fail != nil {
		return p.fail
	}
	var keys []string
	for _, r := range recs {
		keys = append(keys, string(r.Key))
	}
	if slices.ContainsFunc(keys, func(k string) bool { return strings.HasPrefix(k, "bad") }) {
		return &producer.RecordError{Index: min(p.blame, len(recs)-1), Topic: "t", Err: kerr.MessageTooLarge}
	}
	p.committed = append(p.committed, keys)
	return nil
}

func TestProduceAllIsolatesRefusedRecords(t *testing.T) {
	t.Parallel()
	keys := []string{"a", "b", "bad1", "c", "d", "bad2", "e"}
	for _, blame := range []int{0, 1, 2, 100} {
		t.Run(fmt.Sprintf("blame=%d", blame), func(t *testing.T) {
			t.Parallel()
			p := &batchBlamingProducer{blame: blame}
			r, err := New(&pgx.ConnConfig{}, func(string) (Producer, error) { return p, nil })
			if err != nil {
				t.Fatal(err)
			}
			r.prod = p
			recs := make([]*kgo.Record, len(keys))
			for i, k := range keys {
				recs[i] = &kgo.Record{Topic: "t", Key: []byte(k)}
			}
			refused := map[int]string{}
			if err := r.produceAll(context.Background(), recs, 0, refused); err != nil {
				t.Fatalf("produceAll: %v", err)
			}
			if len(refused) != 2 || !strings.Contains(refused[2], "MESSAGE_TOO_LARGE") || !strings.Contains(refused[5], "MESSAGE_TOO_LARGE") {
				t.Errorf("refused: got %v, want indexes 2 and 5 with the broker's reason", refused)
			}
			var got []string
			for _, c := range p.committed {
				got = append(got, c...)
			}
			if want := []string{"a", "b", "c", "d", "e"}; !slices.Equal(got, want) {
				t.Errorf("committed in order: got %v, want %v", got, want)
			}

			b := &batch{recs: recs, recID: []int64{1, 2, 3, 4, 5, 6, 7}, recAgg: make([]string, 7), recCreated: make([]time.Time, 7)}
			b.refused(refused)
			if !slices.Equal(b.deadIDs, []int64{3, 6}) || !slices.Equal(b.recID, []int64{1, 2, 4, 5, 7}) || len(b.recs) != 5 {
				t.Errorf("batch after refusals: dead %v, published ids %v (%d records), want dead [3 6], published [1 2 4 5 7]", b.deadIDs, b.recID, len(b.recs))
			}
		})
	}
}

func TestProduceAllOtherErrorsEndTheBatch(t *testing.T) {
	t.Parallel()
	boom := errors.New("produce to t: NOT_ENOUGH_REPLICAS")
	p := &batchBlamingProducer{fail: boom}
	r, err := New(&pgx.ConnConfig{}, func(string) (Producer, error) { return p, nil })
	if err != nil {
		t.Fatal(err)
	}
	r.prod = p
	refused := map[int]string{}
	err = r.produceAll(context.Background(), []*kgo.Record{{Topic: "t", Key: []byte("a")}}, 0, refused)
	if !errors.Is(err, boom) || len(refused) != 0 {
		t.Errorf("got err %v refused %v, want %v and nothing refused", err, refused, boom)
	}
}
