package backfill_test

import (
	"context"
	"errors"
	"strconv"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/twmb/franz-go/pkg/kgo"
	"go.temporal.io/sdk/testsuite"

	"github.com/distcache/distcache/libs/distcache"
	"github.com/distcache/distcache/services/cache-producer/internal/backfill"
	"github.com/distcache/distcache/services/cache-producer/internal/fanout"
	"github.com/distcache/distcache/services/cache-producer/internal/feed"
	"github.com/distcache/distcache/services/cache-producer/internal/ledger"
	"github.com/distcache/distcache/services/cache-producer/internal/prodtest"
	"github.com/distcache/distcache/services/cache-producer/internal/projector"
	"github.com/distcache/distcache/tools/devstacktest"
	"github.com/distcache/distcache/workflows"
)

// TestBackfillStartsOverAfterDataLoss: Redis loses a generation's data in the middle of its
// backfill. The attempt that was writing fails at its next batch (the generation's bookkeeping is
// gone: projector.ErrBookkeepingLost) instead of going on without the records before, and the
// retried attempt, whose last heartbeat says offset 60, finds the generation's offset gone and
// starts over from the start: the generation ends equal to the whole topic's projection. (Before,
// the retry resumed at the heartbeat and the generation lacked every record before it.)
func TestBackfillStartsOverAfterDataLoss(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb := redis.NewClient(&redis.Options{Addr: devstacktest.Redis(t).Addr})
	defer rdb.Close()
	k := devstacktest.Kafka(t)
	pub, err := distcache.NewPublisher(rdb)
	if err != nil {
		t.Fatal(err)
	}
	led := ledger.New(rdb, 0)
	p := prodtest.NewProducer(t, k.Addr, "distcache", "users")
	var recs []*kgo.Record
	for i := range 100 {
		id := strconv.Itoa(i)
		recs = append(recs, p.Upsert(id, map[string]any{"id": id, "email": "u" + id + "@x.io"}))
	}
	p.Produce(recs...)
	kopts := []kgo.Opt{kgo.SeedBrokers(k.Addr)}
	tg, err := fanout.CompileTarget(byEmail.Name, 1, byEmail)
	if err != nil {
		t.Fatal(err)
	}
	w := projector.NewWriter(pub, led)

	// An attempt wrote records 0–59 (and heartbeat offset 60) ...
	if _, err := w.WriteBatch(ctx, tg, decoded(recs[:60]), 60); err != nil {
		t.Fatal(err)
	}
	// ... then Redis lost everything: its next batch fails rather than write without the rest.
	if err := rdb.FlushAll(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := w.WriteBatch(ctx, tg, decoded(recs[60:70]), 70); !errors.Is(err, projector.ErrBookkeepingLost) {
		t.Fatalf("the attempt's next batch after the loss = %v, want ErrBookkeepingLost", err)
	}

	// The retry, on another worker, from the heartbeat.
	reg := registered(t, byEmail, workflows.StateBackfilling)
	acts := &backfill.Activities{KafkaOpts: kopts, Writer: projector.NewWriter(pub, led), BatchSize: 30, Registry: reg}
	var ts testsuite.WorkflowTestSuite
	env := ts.NewTestActivityEnvironment()
	env.RegisterActivityWithOptions(acts.Backfill, activityOpts(workflows.ActivityBackfill))
	env.SetHeartbeatDetails(workflows.BackfillProgress{Offset: 60, EndOffset: 100, RecordsDone: 60})
	val, err := env.ExecuteActivity(workflows.ActivityBackfill,
		workflows.BackfillParams{Projection: byEmail.Name, Generation: 1, Topic: p.Topic, Definition: byEmail})
	if err != nil {
		t.Fatalf("the retried backfill: %v", err)
	}
	var out workflows.BackfillProgress
	if err := val.Get(&out); err != nil {
		t.Fatal(err)
	}
	if out.Offset != 100 || out.RecordsDone != 100 {
		t.Errorf("result = %+v, want offset 100 with all 100 records written again", out)
	}
	model := prodtest.NewModel(t, byEmail)
	for _, r := range recs {
		model.Apply(r.Offset, string(r.Key), r.Value)
	}
	got, err := prodtest.ReadGeneration(ctx, rdb, byEmail.Name, 1)
	if err != nil {
		t.Fatal(err)
	}
	if d := prodtest.Diff(got, model.Live()); d != "" {
		t.Errorf("generation after the retried backfill (%d keys, want %d):\n%s", len(got), len(model.Live()), d)
	}
}

// decoded turns produced records into the feed's records, as a Reader would decode them.
func decoded(recs []*kgo.Record) []feed.Record {
	out := make([]feed.Record, len(recs))
	for i, r := range recs {
		out[i] = feed.Decode(r)
	}
	return out
}
