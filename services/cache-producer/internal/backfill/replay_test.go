package backfill_test

import (
	"context"
	"strconv"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/distcache/distcache/libs/distcache"
	"github.com/distcache/distcache/libs/projection"
	"github.com/distcache/distcache/services/cache-producer/internal/backfill"
	"github.com/distcache/distcache/services/cache-producer/internal/ledger"
	"github.com/distcache/distcache/services/cache-producer/internal/prodtest"
	"github.com/distcache/distcache/services/cache-producer/internal/projector"
	"github.com/distcache/distcache/tools/devstacktest"
	"github.com/distcache/distcache/workflows"
)

// TestReplayFromBelowLogStart: a backfill asked to start below the topic's log start (records
// deleted) starts at the log start, as it did when the reader let franz-go reset its position,
// and reaches the end offset.
func TestReplayFromBelowLogStart(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	k := devstacktest.Kafka(t)
	rdb := redis.NewClient(&redis.Options{Addr: devstacktest.Redis(t).Addr})
	defer rdb.Close()
	pub, err := distcache.NewPublisher(rdb)
	if err != nil {
		t.Fatal(err)
	}
	p := prodtest.NewProducer(t, k.Addr, "distcache", "users")
	var recs []*kgo.Record
	for i := range 10 {
		id := strconv.Itoa(i)
		recs = append(recs, p.Upsert(id, map[string]any{"id": id}))
	}
	p.Produce(recs...)
	res, err := kadm.NewClient(p.Client).DeleteRecords(ctx, kadm.Offsets{p.Topic: {0: kadm.Offset{Topic: p.Topic, Partition: 0, At: 4}}})
	if err == nil {
		err = res.Error()
	}
	if err != nil {
		t.Fatal(err)
	}
	def := projection.Definition{Name: "users_by_id", Model: "users", KeyTemplate: "{id}", Fields: []string{"id"}}
	c, err := projection.Compile(def)
	if err != nil {
		t.Fatal(err)
	}
	tg := projector.Target{Projection: def.Name, Generation: 1, Compiled: c}
	out, err := backfill.Replay(ctx, backfill.ReplayConfig{
		KafkaOpts: []kgo.Opt{kgo.SeedBrokers(k.Addr)}, Writer: projector.NewWriter(pub, ledger.New(rdb, 0)),
	}, tg, p.Topic, workflows.BackfillProgress{EndOffset: 10}, nil)
	if err != nil || out.Offset != 10 {
		t.Fatalf("Replay from below the log start = %+v, %v; want offset 10", out, err)
	}
	got, err := prodtest.ReadGeneration(ctx, rdb, def.Name, 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 6 {
		t.Errorf("generation holds %d keys, want 6 (offsets 4–9)", len(got))
	}
}
