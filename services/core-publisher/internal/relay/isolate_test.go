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
	fail      error  // returned by every call when set
	locked    string // a topic that refuses writes (an ACL), when set
}

func (p *batchBlamingProducer) EnsureTopic(context.Context, string) error { return nil }
func (p *batchBlamingProducer) Close()                                    {}

func (p *batchBlamingProducer) Produce(_ context.Context, recs []*kgo.Record) error {
	if p.fail != nil {
		return p.fail
	}
	var keys []string
	for _, r := range recs {
		if p.locked != "" && r.Topic == p.locked {
			return &producer.TopicError{Topic: r.Topic, Reason: "writes refused: TOPIC_AUTHORIZATION_FAILED"}
		}
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
			out := &produceOutcome{refused: map[int]string{}, held: map[string]error{}}
			if err := r.produceAll(context.Background(), recs, indices(len(recs)), out); err != nil {
				t.Fatalf("produceAll: %v", err)
			}
			refused := out.refused
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

			b := &batch{recs: recs, recID: []int64{1, 2, 3, 4, 5, 6, 7}, recAgg: make([]string, 7), recCreated: make([]time.Time, 7),
				recKey: make([]string, 7), recVer: make([]int64, 7)}
			b.settle(refused, nil)
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
	out := &produceOutcome{refused: map[int]string{}, held: map[string]error{}}
	err = r.produceAll(context.Background(), []*kgo.Record{{Topic: "t", Key: []byte("a")}}, indices(1), out)
	if !errors.Is(err, boom) || len(out.refused) != 0 || len(out.held) != 0 {
		t.Errorf("got err %v refused %v held %v, want %v and nothing refused or held", err, out.refused, out.held, boom)
	}
}

// TestProduceAllHoldsRefusedTopic: a topic that refuses writes (an ACL)
// takes its records out of the batch, still in the outbox, while the other
// topics' records are produced in order, a refused record among them
// isolated as before.
func TestProduceAllHoldsRefusedTopic(t *testing.T) {
	t.Parallel()
	p := &batchBlamingProducer{locked: "locked"}
	r, err := New(&pgx.ConnConfig{}, func(string) (Producer, error) { return p, nil })
	if err != nil {
		t.Fatal(err)
	}
	r.prod = p
	type rec struct{ topic, key string }
	in := []rec{{"t", "a"}, {"locked", "l1"}, {"t", "b"}, {"t", "bad1"}, {"locked", "l2"}, {"t", "c"}}
	recs := make([]*kgo.Record, len(in))
	for i, x := range in {
		recs[i] = &kgo.Record{Topic: x.topic, Key: []byte(x.key)}
	}
	out := &produceOutcome{refused: map[int]string{}, held: map[string]error{}}
	if err := r.produceAll(context.Background(), recs, indices(len(recs)), out); err != nil {
		t.Fatalf("produceAll: %v", err)
	}
	var got []string
	for _, c := range p.committed {
		got = append(got, c...)
	}
	if want := []string{"a", "b", "c"}; !slices.Equal(got, want) {
		t.Errorf("committed in order: got %v, want %v", got, want)
	}
	if _, ok := out.held["locked"]; !ok || len(out.held) != 1 {
		t.Errorf("held topics: got %v, want [locked]", out.held)
	}
	if len(out.refused) != 1 || out.refused[3] == "" {
		t.Errorf("refused: got %v, want index 3 (bad1)", out.refused)
	}
	b := &batch{recs: recs, recID: []int64{1, 2, 3, 4, 5, 6}, recAgg: make([]string, 6), recCreated: make([]time.Time, 6),
		recKey: make([]string, 6), recVer: make([]int64, 6), done: []int64{1, 2, 3, 4, 5, 6}}
	b.settle(out.refused, out.held)
	if !slices.Equal(b.recID, []int64{1, 3, 6}) || !slices.Equal(b.deadIDs, []int64{4}) || !slices.Equal(b.done, []int64{1, 3, 4, 6}) {
		t.Errorf("batch after settle: published %v, dead %v, done %v; want published [1 3 6], dead [4], done [1 3 4 6] (held rows 2 and 5 stay in the outbox)",
			b.recID, b.deadIDs, b.done)
	}
}
